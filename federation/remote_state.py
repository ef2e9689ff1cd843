"""What a server has to learn from its peers when the room's graph has holes: the auth events an
event names that we never saw (``/event_auth``), and the state at an event whose predecessors we do
not hold (``/state_ids``, then ``/event`` for each unknown one, or ``/state`` when many are unknown).

Nothing fetched is believed on the peer's word: every event must carry valid signatures and hashes
for its own ID and pass the auth rules against its own auth events before it is kept (as an outlier:
held for the graph, never in a timeline). The peer's claim of which events *form* the state is what
Synapse also accepts; it is then resolved against every other branch we know.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from homeserver.events.hashes import create_event_id_for_room
from homeserver.storage import Storage
from homeserver.storage.state import StateMap

from federation.client import FederationClient, FederationError, path
from federation.keyring import Keyring
from federation.pdu_checks import CheckedPdu, PduRejected, check_against_auth_events, check_signatures_and_hashes

if TYPE_CHECKING:
    from homeserver.services.event_creation import EventCreator

logger = logging.getLogger(__name__)

F1 = "/_matrix/federation/v1"
FETCH_ONE_BY_ONE = 20  # beyond this many unknown events, one /state request is cheaper
MAX_STATE_IDS = 100_000
FETCH_CONCURRENCY = 8


class RemoteStateError(Exception):
    """The peer could not tell us what we needed, or told us something that does not check out."""


class RemoteState:
    def __init__(self, storage: Storage, creator: "EventCreator", keyring: Keyring, client: FederationClient) -> None:
        self.storage = storage
        self.creator = creator
        self.keyring = keyring
        self.client = client

    async def _create_event(self, room_id: str) -> dict[str, Any] | None:
        cid = await self.storage.events.get_current_state_event_id(room_id, "m.room.create", "")
        ev = (await self.storage.events.get_events([cid])).get(cid) if cid else None
        return {**ev.pdu, "event_id": cid} if ev else None

    async def _fetch_event(self, origin: str, room_id: str, eid: str, version: str) -> CheckedPdu | None:
        try:
            resp = await self.client.get_json(origin, path(F1 + "/event/{}", eid))
        except FederationError as e:
            logger.info("could not fetch %s from %s: %s", eid, origin, e)
            return None
        pdus = resp.get("pdus") if isinstance(resp, dict) else None
        if not isinstance(pdus, list) or len(pdus) != 1 or not isinstance(pdus[0], dict):
            return None
        return await self._checked(pdus[0], room_id, version, expect=eid)

    async def _checked(self, pdu: Mapping[str, Any], room_id: str, version: str, expect: str | None = None) -> CheckedPdu | None:
        implied = "room_id" not in pdu and pdu.get("type") == "m.room.create"  # room version 12's create event
        if pdu.get("room_id") != room_id and not implied:
            return None
        try:
            checked = await check_signatures_and_hashes(pdu, version, self.keyring)
        except PduRejected as e:
            logger.info("fetched event refused: %s", e)
            return None
        if (expect is not None and checked.event_id != expect) or (implied and checked.event_id != create_event_id_for_room(room_id)):
            return None
        return checked

    async def _fetch_many(self, origin: str, room_id: str, ids: Iterable[str], version: str) -> dict[str, CheckedPdu]:
        gate = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def one(eid: str) -> CheckedPdu | None:
            async with gate:
                return await self._fetch_event(origin, room_id, eid, version)

        got = await asyncio.gather(*(one(e) for e in ids))
        return {c.event_id: c for c in got if c is not None}

    async def _accept(self, room_id: str, version: str, fetched: Mapping[str, CheckedPdu]) -> set[str]:
        """Auth-check fetched events (oldest first, each against its own auth events, which must be
        held or accepted in this batch) and keep those that pass as outliers. Returns their IDs."""
        create = await self._create_event(room_id)
        if create is None:
            create = next(({**c.pdu, "event_id": c.event_id} for c in fetched.values() if c.pdu.get("type") == "m.room.create"), None)
        accepted: dict[str, dict[str, Any]] = {}
        needed = {a for c in fetched.values() for a in c.pdu.get("auth_events") or []}
        held = {eid: ev.pdu for eid, ev in (await self.storage.events.get_events(list(needed))).items() if not ev.rejected}
        for c in sorted(fetched.values(), key=lambda c: int(c.pdu.get("depth", 0))):
            if c.pdu.get("type") == "m.room.create" and not c.pdu.get("auth_events"):
                accepted[c.event_id] = c.pdu
                continue
            try:
                check_against_auth_events(c, {**held, **accepted}, version, create)
            except PduRejected as e:
                logger.info("fetched event %s fails its own auth events: %s", c.event_id, e.reason)
                continue
            accepted[c.event_id] = c.pdu
        await self.creator.persist_outliers(room_id, accepted)
        return set(accepted)

    async def ensure_auth_events(self, origin: str, room_id: str, eid: str, pdu: Mapping[str, Any], version: str) -> None:
        """Fetch (with their own auth chain) the auth events ``pdu`` names that we do not hold."""
        listed = list(pdu.get("auth_events") or [])
        if not listed or len(await self.storage.events.have_events(listed)) == len(set(listed)):
            return
        try:
            resp = await self.client.get_json(origin, path(F1 + "/event_auth/{}/{}", room_id, eid))
        except FederationError as e:
            raise RemoteStateError(f"event_auth from {origin}: {e}") from None
        chain = resp.get("auth_chain") if isinstance(resp, dict) else None
        if not isinstance(chain, list):
            raise RemoteStateError(f"{origin} sent a malformed auth chain")
        fetched: dict[str, CheckedPdu] = {}
        for item in chain[:MAX_STATE_IDS]:
            if isinstance(item, dict):
                c = await self._checked(item, room_id, version)
                if c is not None:
                    fetched[c.event_id] = c
        have = await self.storage.events.have_events(list(fetched))
        await self._accept(room_id, version, {k: v for k, v in fetched.items() if k not in have})

    async def state_after(self, origin: str, room_id: str, eid: str, version: str) -> StateMap:
        """The state once ``eid`` (an event we do not hold in a timeline) is applied, as ``origin``
        reports it: the state before it (``/state_ids``) plus the event itself if it is state."""
        try:
            resp = await self.client.get_json(origin, path(F1 + "/state_ids/{}", room_id), {"event_id": eid})
        except FederationError as e:
            raise RemoteStateError(f"state_ids from {origin}: {e}") from None
        pdu_ids, chain_ids = (resp.get("pdu_ids"), resp.get("auth_chain_ids")) if isinstance(resp, dict) else (None, None)
        if not isinstance(pdu_ids, list) or not isinstance(chain_ids, list) or len(pdu_ids) + len(chain_ids) > MAX_STATE_IDS \
                or not all(isinstance(i, str) for i in pdu_ids + chain_ids):
            raise RemoteStateError(f"{origin} sent a malformed state_ids answer")
        wanted = set(pdu_ids) | set(chain_ids) | {eid}
        held_events = await self.storage.events.get_events(list(wanted))
        missing = [i for i in wanted if i not in held_events]
        fetched: dict[str, CheckedPdu] = {}
        if len(missing) > FETCH_ONE_BY_ONE:
            try:
                full = await self.client.get_json(origin, path(F1 + "/state/{}", room_id), {"event_id": eid})
            except FederationError as e:
                raise RemoteStateError(f"state from {origin}: {e}") from None
            for item in list(full.get("pdus") or []) + list(full.get("auth_chain") or []) if isinstance(full, dict) else []:
                if isinstance(item, dict):
                    c = await self._checked(item, room_id, version)
                    if c is not None and c.event_id in wanted and c.event_id not in held_events:
                        fetched[c.event_id] = c
            missing = [i for i in missing if i not in fetched]
        fetched.update(await self._fetch_many(origin, room_id, missing, version))
        accepted = await self._accept(room_id, version, fetched) | {i for i, ev in held_events.items() if not ev.rejected}
        pdus = {i: c.pdu for i, c in fetched.items()} | {i: ev.pdu for i, ev in held_events.items()}
        state: StateMap = {}
        for sid in pdu_ids:
            p = pdus.get(sid)
            if sid in accepted and p is not None and isinstance(p.get("state_key"), str):
                state[(p["type"], p["state_key"])] = sid
        own = pdus.get(eid)
        if own is None or eid not in accepted:
            raise RemoteStateError(f"{origin} could not give us {eid}")
        if isinstance(own.get("state_key"), str):
            state[(own["type"], own["state_key"])] = eid
        return state

    async def state_before(self, origin: str, room_id: str, pdu: Mapping[str, Any], version: str) -> tuple[StateMap | None, int | None]:
        """The state an incoming event was built on: its prev events' states, resolved. (None, None)
        when it builds on exactly our forward extremities (then it is our current state); otherwise
        the state and, when it is one stored snapshot, that snapshot's ID."""
        prevs = list(dict.fromkeys(pdu.get("prev_events") or []))
        head = await self.creator._head(room_id)  # noqa: SLF001 - the creator owns the room head
        if set(prevs) == set(head.extremities):
            return None, None
        stored = await self.storage.events.get_events(prevs)
        sets: list[StateMap] = []
        snapshot: int | None = None
        for p in prevs:
            ev = stored.get(p)
            st = await self.creator.resolver.state_after(ev) if ev is not None else None
            if st is None:
                st = await self.state_after(origin, room_id, p, version)
            elif len(prevs) == 1:
                snapshot = ev.state_after if ev is not None else None
            sets.append(st)
        return await self.creator.resolver.resolve(version, sets), snapshot
