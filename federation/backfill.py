"""Older history from peers: when a user pages back past the oldest event this server holds in a
room it joined over federation, the events before it are fetched with ``/backfill`` from a server in
the room, checked like any other PDU (signatures, hashes, auth against their own auth events and
against the state before them) and placed before the rest of the timeline."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from homeserver.events.signing import server_of
from homeserver.storage import Storage
from homeserver.storage.state import StateMap

from federation.client import FederationClient, FederationError, path
from federation.pdu_checks import CheckedPdu, PduRejected, check_against_auth_events, check_against_state
from federation.remote_state import RemoteState, RemoteStateError

if TYPE_CHECKING:
    from homeserver.services.event_creation import EventCreator

logger = logging.getLogger(__name__)

F1 = "/_matrix/federation/v1"
MAX_BACKFILL = 100


class Backfiller:
    def __init__(self, server_name: str, storage: Storage, creator: "EventCreator", client: FederationClient,
                 remote: RemoteState) -> None:
        self.server_name = server_name
        self.storage = storage
        self.creator = creator
        self.client = client
        self.remote = remote
        # Backward extremities no server could extend (e.g. history hidden from us): not asked again
        # until this server restarts.
        self._exhausted: set[str] = set()

    async def backfill(self, room_id: str, limit: int) -> bool:
        """Fetch up to ``limit`` older events of ``room_id``; True if any were added."""
        oldest = await self.storage.events.oldest_timeline_event(room_id)
        if oldest is None or oldest.type == "m.room.create":
            return False  # the whole history is here
        version = await self.storage.events.get_room_version(room_id)
        if version is None:
            return False
        extremities = [e for e in await self.storage.events.backward_extremities(room_id) if e not in self._exhausted]
        if not extremities:
            return False
        members = await self.storage.events.members(room_id, ("join",))
        servers = sorted({server_of(u) for u in members} - {self.server_name})
        creator_server = server_of(str(oldest.pdu.get("sender", "")))
        servers.sort(key=lambda s: s != creator_server)
        for server in servers:
            try:
                resp = await self.client.get_json(server, path(F1 + "/backfill/{}", room_id),
                                                  {"v": extremities, "limit": str(min(max(limit, 1), MAX_BACKFILL))})
            except FederationError as e:
                logger.info("backfill of %s from %s failed: %s", room_id, server, e)
                continue
            pdus = resp.get("pdus") if isinstance(resp, dict) else None
            if not isinstance(pdus, list):
                continue
            added = await self._take(server, room_id, version, [p for p in pdus[:MAX_BACKFILL * 2] if isinstance(p, dict)])
            if added:
                return True
        self._exhausted.update(extremities)
        return False

    async def _take(self, origin: str, room_id: str, version: str, pdus: list[dict[str, Any]]) -> int:
        checked: dict[str, CheckedPdu] = {}
        for pdu in pdus:
            c = await self.remote._checked(pdu, room_id, version)  # noqa: SLF001 - shared receipt checks
            if c is not None:
                checked[c.event_id] = c
        held = await self.storage.events.get_events(list(checked))
        new = [c for c in checked.values() if c.event_id not in held or (held[c.event_id].outlier and not held[c.event_id].soft_failed)]
        new.sort(key=lambda c: int(c.pdu.get("depth", 0)))
        batch = {c.event_id: c.pdu for c in new}
        create = await self.remote._create_event(room_id)  # noqa: SLF001
        states: dict[str, StateMap] = {}
        accepted: list[tuple[str, dict[str, Any], StateMap]] = []
        for c in new:
            try:
                await self.remote.ensure_auth_events(origin, room_id, c.event_id, c.pdu, version)
                auth_ids = list(c.pdu.get("auth_events") or [])
                auth = {k: v.pdu for k, v in (await self.storage.events.get_events(auth_ids)).items() if not v.rejected}
                check_against_auth_events(c, {**auth, **{k: v for k, v in batch.items() if k in auth_ids}}, version, create)
                sets = []
                for p in c.pdu.get("prev_events") or []:
                    st = states.get(p)
                    if st is None:
                        ev = (await self.storage.events.get_events([p])).get(p)
                        st = await self.creator.resolver.state_after(ev) if ev is not None else None
                    if st is None:
                        st = await self.remote.state_after(origin, room_id, p, version)
                    sets.append(st)
                before = await self.creator.resolver.resolve(version, sets, batch)
                await check_against_state(self.storage, before, c.event_id, c.pdu, version, "state before it", batch)
            except (PduRejected, RemoteStateError) as e:
                logger.info("backfilled event %s from %s refused: %s", c.event_id, origin, e)
                continue
            key = c.pdu.get("state_key")
            states[c.event_id] = {**before, (c.pdu["type"], key): c.event_id} if isinstance(key, str) else before
            accepted.append((c.event_id, c.pdu, before))
        await self.creator.persist_backfilled(room_id, accepted)
        return len(accepted)
