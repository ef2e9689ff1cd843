"""Rooms across servers: joins both ways (make_join/send_join v2), and PDUs received in /send.

Every PDU from another server passes the receipt checks (federation.pdu_checks) and the auth rules
against the room's current state before it is stored; one that fails is refused and nothing is stored.
An event whose prev events we lack is preceded by get_missing_events; what that cannot close
stays a gap whose state is learnt from the origin (federation.remote_state). An event on a fork gets
the state its prev events resolve to, and the room's current state is resolved across the forks.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping

from homeserver.errors import MatrixError, forbidden
from homeserver.events import auth_types_for_event, event_id, get_room_version, redact, sign_event
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.events.signing import server_of, verify_json_signature
from homeserver.storage import Storage

from federation.client import FederationClient, FederationError, path
from federation.acl import server_allowed
from federation.keyring import KeyNotFound, Keyring
from federation.remote_state import RemoteState, RemoteStateError
from federation.pdu_checks import (
    CheckedPdu, PduRejected, check_against_auth_events, check_against_state, check_signatures_and_hashes,
)

if TYPE_CHECKING:
    from homeserver.services.event_creation import EventCreator

logger = logging.getLogger(__name__)

F1, F2 = "/_matrix/federation/v1", "/_matrix/federation/v2"
MAX_PDUS_PER_TXN = 50


class FederationRooms:
    def __init__(self, server_name: str, storage: Storage, creator: "EventCreator", keyring: Keyring,
                 client: FederationClient, signing_key: Any) -> None:
        self.server_name = server_name
        self.storage = storage
        self.creator = creator
        self.keyring = keyring
        self.client = client
        self.signing_key = signing_key
        self.remote = RemoteState(storage, creator, keyring, client)

    # --- helpers ------------------------------------------------------------------------------

    async def _room_version(self, room_id: str) -> str:
        version = await self.storage.events.get_room_version(room_id)
        if version is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        return version

    async def _current_state_pdus(self, room_id: str) -> dict[str, dict[str, Any]]:
        ids = await self.storage.events.get_current_state_ids(room_id)
        events = await self.storage.events.get_events(ids.values())
        return {eid: ev.pdu for eid, ev in events.items()}

    async def _auth_chain(self, start: list[str]) -> dict[str, dict[str, Any]]:
        """Every event reachable through auth_events from ``start`` (not including ``start`` itself)."""
        out: dict[str, dict[str, Any]] = {}
        todo = list(start)
        seen = set(start)
        while todo:
            events = await self.storage.events.get_events(todo)
            todo = []
            for ev in events.values():
                for aid in ev.pdu.get("auth_events") or []:
                    if aid not in seen:
                        seen.add(aid)
                        todo.append(aid)
            for eid, ev in events.items():
                if eid not in start:
                    out[eid] = ev.pdu
        found = await self.storage.events.get_events(list(seen - set(start)))
        out.update({eid: ev.pdu for eid, ev in found.items()})
        return out

    async def servers_in_room(self, room_id: str) -> set[str]:
        members = await self.storage.events.members(room_id, ("join",))
        return {server_of(u) for u in members}

    async def _check_against_state(self, state: Mapping[tuple[str, str], str], eid: str, pdu: Mapping[str, Any],
                                   version: str, which: str) -> None:
        await check_against_state(self.storage, state, eid, pdu, version, which)

    # --- server side: what other servers in a room may read ------------------------------------

    async def acl_allows(self, room_id: str, server: str) -> bool:
        eid = await self.storage.events.get_current_state_event_id(room_id, "m.room.server_acl", "")
        ev = (await self.storage.events.get_events([eid])).get(eid) if eid else None
        return server_allowed(server, ev.pdu.get("content", {}) if ev else None)

    async def _require_acl(self, room_id: str, origin: str) -> None:
        if not await self.acl_allows(room_id, origin):
            raise forbidden("Your server is denied by this room's server ACL")

    async def _require_in_room(self, origin: str, room_id: str) -> str:
        version = await self._room_version(room_id)
        await self._require_acl(room_id, origin)
        if origin not in await self.servers_in_room(room_id):
            raise forbidden("Your server has no one in this room")
        return version

    def _served(self, ev: Any, version: str) -> dict[str, Any]:
        """A PDU as other servers get it: redacted if it was redacted here."""
        return redact(dict(ev.pdu), version) if ev.redacted_by else ev.pdu

    async def _state_ids_before(self, room_id: str, eid: str) -> dict[tuple[str, str], str]:
        ev = (await self.storage.events.get_events([eid])).get(eid)
        if ev is None or ev.room_id != room_id or ev.outlier or ev.state_after is None:
            raise MatrixError(404, "M_NOT_FOUND", "No such event in this room's timeline")
        return await self.storage.state.state_before(ev)

    async def get_event(self, origin: str, eid: str) -> dict[str, Any]:
        ev = (await self.storage.events.get_events([eid])).get(eid)
        if ev is None or ev.rejected:
            raise MatrixError(404, "M_NOT_FOUND", "Event not found")
        version = await self._require_in_room(origin, ev.room_id)
        return {"origin": self.server_name, "origin_server_ts": self.creator.clock.time_ms(),
                "pdus": [self._served(ev, version)]}

    async def state_ids(self, origin: str, room_id: str, eid: str | None, *, full: bool) -> dict[str, Any]:
        version = await self._require_in_room(origin, room_id)
        if not eid:
            raise MatrixError(400, "M_MISSING_PARAM", "event_id is required")
        state = await self._state_ids_before(room_id, eid)
        chain = await self._auth_chain(list(state.values()))
        if not full:
            return {"pdu_ids": sorted(state.values()), "auth_chain_ids": sorted(chain)}
        events = await self.storage.events.get_events(list(state.values()) + list(chain))
        return {"pdus": [self._served(events[e], version) for e in state.values() if e in events],
                "auth_chain": [self._served(events[e], version) for e in chain if e in events]}

    async def event_auth(self, origin: str, room_id: str, eid: str) -> dict[str, Any]:
        version = await self._require_in_room(origin, room_id)
        ev = (await self.storage.events.get_events([eid])).get(eid)
        if ev is None or ev.room_id != room_id:
            raise MatrixError(404, "M_NOT_FOUND", "Event not found")
        chain = set(await self._auth_chain([eid]))
        if get_room_version(version).room_id_from_create_event and ev.type != "m.room.create":
            # From version 12 the create event is implied, not listed, but a reader still needs it.
            create = await self.storage.events.get_current_state_event_id(room_id, "m.room.create", "")
            if create:
                chain.add(create)
        events = await self.storage.events.get_events(list(chain))
        return {"auth_chain": [self._served(e, version) for e in events.values()]}

    async def backfill(self, origin: str, room_id: str, start: list[str], limit: int) -> dict[str, Any]:
        """The events given and those before them (breadth-first over prev_events), at most ``limit``."""
        version = await self._require_in_room(origin, room_id)
        out = await self._walk_back(room_id, start, set(), min(max(limit, 0), 100), include_start=True)
        return {"origin": self.server_name, "origin_server_ts": self.creator.clock.time_ms(),
                "pdus": [self._served(e, version) for e in out]}

    async def get_missing_events(self, origin: str, room_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        version = await self._require_in_room(origin, room_id)
        latest, earliest = body.get("latest_events"), body.get("earliest_events")
        limit, min_depth = body.get("limit", 10), body.get("min_depth", 0)
        if not isinstance(latest, list) or not isinstance(earliest, list) or not isinstance(limit, int) \
                or not isinstance(min_depth, int):
            raise MatrixError(400, "M_BAD_JSON", "latest_events and earliest_events must be lists")
        found = await self._walk_back(room_id, latest, set(earliest), min(max(limit, 0), 100), include_start=False,
                                      min_depth=min_depth)
        found.sort(key=lambda e: (int(e.pdu.get("depth", 0)), e.stream_ordering))
        return {"events": [self._served(e, version) for e in found]}

    async def _walk_back(self, room_id: str, start: list[str], stop: set[str], limit: int, *,
                         include_start: bool, min_depth: int = 0) -> list[Any]:
        out: list[Any] = []
        seen = set(start) | stop
        frontier = list(start)
        first = True
        while frontier and len(out) < limit:
            events = await self.storage.events.get_events(frontier)
            frontier = []
            for eid, ev in events.items():
                if ev.room_id != room_id or ev.outlier:
                    continue
                if (include_start or not first) and len(out) < limit and int(ev.pdu.get("depth", 0)) >= min_depth:
                    out.append(ev)
                for p in ev.pdu.get("prev_events") or []:
                    if p not in seen:
                        seen.add(p)
                        frontier.append(p)
            first = False
        return out

    # --- server side: someone on another server joins one of our rooms -------------------------

    async def _make_membership(self, origin: str, room_id: str, user_id: str, membership: str,
                               versions: list[str] | None) -> dict[str, Any]:
        """make_join / make_leave / make_knock: a template on our room head for the other server to sign."""
        version = await self._room_version(room_id)
        if versions is not None and version not in versions:
            raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION", "Your server does not support this room's version",
                              room_version=version)
        if server_of(user_id) != origin:
            raise forbidden(f"You can only make {membership}s for your own users")
        await self._require_acl(room_id, origin)
        head = await self.creator._head(room_id)  # noqa: SLF001 - the creator owns the room head
        proto: dict[str, Any] = {
            "room_id": room_id, "type": "m.room.member", "state_key": user_id, "sender": user_id,
            "content": {"membership": membership}, "prev_events": head.extremities[:10], "depth": head.depth + 1,
        }
        wanted = auth_types_for_event(proto, get_room_version(version))
        proto["auth_events"] = sorted(head.state[k] for k in wanted if k in head.state)
        try:
            await self._check_against_state(head.state, "$proto", proto, version, "current state")
        except PduRejected as e:
            raise forbidden(f"You cannot {membership} this room: {e.reason}") from None
        return {"room_version": version, "event": proto}

    async def _send_membership(self, origin: str, room_id: str, eid_in_path: str, pdu: dict[str, Any],
                               membership: str) -> str:
        """send_join / send_leave / send_knock: check the signed event and apply it to the room."""
        version = await self._room_version(room_id)
        if pdu.get("room_id") != room_id or pdu.get("type") != "m.room.member" \
                or (pdu.get("content") or {}).get("membership") != membership or pdu.get("state_key") != pdu.get("sender") \
                or server_of(str(pdu.get("sender", ""))) != origin:
            raise MatrixError(400, "M_BAD_JSON", f"Not a {membership} of one of your users in this room")
        await self._require_acl(room_id, origin)
        try:
            checked = await check_signatures_and_hashes(pdu, version, self.keyring)
            if checked.event_id != eid_in_path or checked.redacted_for_hash:
                raise MatrixError(400, "M_BAD_JSON", "The event does not match its ID")
            auth = await self.storage.events.get_events(pdu.get("auth_events") or [])
            check_against_auth_events(checked, {k: v.pdu for k, v in auth.items()}, version,
                                      await self._create_event(room_id, version))
            before, snapshot = await self.remote.state_before(origin, room_id, pdu, version)
            if before is not None:
                await self._check_against_state(before, checked.event_id, pdu, version, "state before it")
            current = await self.storage.events.get_current_state_ids(room_id)
            await self._check_against_state(current, checked.event_id, pdu, version, "current state")
        except RemoteStateError as e:
            raise forbidden(f"Cannot place your event in the room: {e}") from None
        except PduRejected as e:
            raise forbidden(e.reason) from None
        await self.creator.persist_remote(room_id, checked.event_id, dict(pdu), before, snapshot)
        return version

    async def make_join(self, origin: str, room_id: str, user_id: str, versions: list[str]) -> dict[str, Any]:
        return await self._make_membership(origin, room_id, user_id, "join", versions)

    async def send_join(self, origin: str, room_id: str, eid_in_path: str, pdu: dict[str, Any], *,
                        omit_members: bool = False) -> dict[str, Any]:
        """The state before the join and its auth chain. With ``omit_members`` (a server that can take
        a partial state) member events are left out of the state except the room's heroes' (when it has
        no name or canonical alias, the joining server needs them to name the room), and events already
        in the state are left out of the auth chain."""
        state = await self._current_state_pdus(room_id)
        await self._send_membership(origin, room_id, eid_in_path, pdu, "join")
        if omit_members:
            keys = {(p["type"], p.get("state_key")) for p in state.values()}
            named = ("m.room.name", "") in keys or ("m.room.canonical_alias", "") in keys
            joined = sorted((p for p in state.values() if p["type"] == "m.room.member"
                             and (p.get("content") or {}).get("membership") == "join" and p.get("state_key") != pdu.get("sender")),
                            key=lambda p: (int(p.get("depth", 0)), p["state_key"]))
            heroes = set() if named else {p["state_key"] for p in joined[:5]}
            state = {eid: p for eid, p in state.items() if p["type"] != "m.room.member" or p.get("state_key") in heroes}
        chain = await self._auth_chain(list(state) + list(pdu.get("auth_events") or []))
        if omit_members:
            chain = {eid: p for eid, p in chain.items() if eid not in state}
        return {
            "origin": self.server_name, "event": pdu, "members_omitted": omit_members,
            "state": list(state.values()), "auth_chain": list(chain.values()),
            "servers_in_room": sorted(await self.servers_in_room(room_id)),
        }

    async def make_leave(self, origin: str, room_id: str, user_id: str) -> dict[str, Any]:
        return await self._make_membership(origin, room_id, user_id, "leave", None)

    async def send_leave(self, origin: str, room_id: str, eid_in_path: str, pdu: dict[str, Any]) -> dict[str, Any]:
        await self._send_membership(origin, room_id, eid_in_path, pdu, "leave")
        return {}

    async def make_knock(self, origin: str, room_id: str, user_id: str, versions: list[str]) -> dict[str, Any]:
        return await self._make_membership(origin, room_id, user_id, "knock", versions)

    async def send_knock(self, origin: str, room_id: str, eid_in_path: str, pdu: dict[str, Any]) -> dict[str, Any]:
        await self._send_membership(origin, room_id, eid_in_path, pdu, "knock")
        return {"knock_room_state": await self.stripped_state(room_id)}

    async def stripped_state(self, room_id: str, extra: tuple[tuple[str, str], ...] = ()) -> list[dict[str, Any]]:
        state = await self.storage.events.get_current_state_ids(room_id)
        keys = [("m.room.create", ""), ("m.room.join_rules", ""), ("m.room.name", ""), ("m.room.avatar", ""),
                ("m.room.canonical_alias", ""), ("m.room.encryption", ""), ("m.room.topic", ""), *extra]
        events = await self.storage.events.get_events([state[k] for k in keys if k in state])
        return [{k: e.pdu[k] for k in ("type", "state_key", "sender", "content")} for e in events.values()]

    async def _create_event(self, room_id: str, version: str) -> dict[str, Any] | None:
        state = await self.storage.events.get_current_state_ids(room_id)
        cid = state.get(("m.room.create", ""))
        ev = (await self.storage.events.get_events([cid])).get(cid) if cid else None
        return {**ev.pdu, "event_id": cid} if ev else None

    # --- server side: /send ------------------------------------------------------------------

    async def receive_transaction(self, origin: str, body: Mapping[str, Any]) -> dict[str, Any]:
        pdus = body.get("pdus", [])
        if not isinstance(pdus, list) or len(pdus) > MAX_PDUS_PER_TXN or not isinstance(body.get("edus", []), list):
            raise MatrixError(400, "M_BAD_JSON", "pdus must be a list of at most 50 events")
        if body.get("origin") not in (None, origin):
            raise MatrixError(400, "M_BAD_JSON", "origin does not match the signed request")
        results: dict[str, Any] = {}
        for pdu in pdus:
            if not isinstance(pdu, dict):
                continue
            try:
                eid = await self.receive_pdu(origin, pdu)
                results[eid] = {}
            except PduRejected as e:
                logger.info("refused PDU from %s: %s", origin, e)
                if e.event_id:
                    results[e.event_id] = {"error": e.reason}
        return {"pdus": results}

    async def receive_pdu(self, origin: str, pdu: dict[str, Any], *, fetch_missing: bool = True) -> str:
        room_id = pdu.get("room_id")
        version = await self.storage.events.get_room_version(room_id) if isinstance(room_id, str) else None
        if version is None:
            raise PduRejected(None, "unknown room")
        if not await self.acl_allows(room_id, origin):
            raise PduRejected(None, "origin denied by the room's server ACL")
        checked = await check_signatures_and_hashes(pdu, version, self.keyring)
        if server_of(str(pdu.get("sender", ""))) == self.server_name:
            raise PduRejected(checked.event_id, "events of our own users come from us")
        if origin not in await self.servers_in_room(room_id) and not (
                pdu.get("type") == "m.room.member" and server_of(str(pdu.get("state_key", ""))) == origin):
            raise PduRejected(checked.event_id, "your server has no one in this room")
        eid = checked.event_id
        if await self.storage.events.have_events([eid]):
            return eid
        prevs = list(pdu.get("prev_events") or [])
        if fetch_missing and len(await self.storage.events.have_events(prevs)) < len(set(prevs)):
            # A gap: ask for what lies between our extremities and this event. What get_missing_events
            # cannot close is left as a gap, and the state there is learnt from the origin instead.
            await self._fetch_missing(origin, room_id, eid, int(pdu.get("depth", 0)))
        try:
            await self.remote.ensure_auth_events(origin, room_id, eid, checked.pdu, version)
        except RemoteStateError as e:
            raise PduRejected(eid, f"cannot get its auth events: {e}") from None
        auth_ids = list(pdu.get("auth_events") or [])
        known = await self.storage.events.get_events(auth_ids)
        missing = [e for e in auth_ids if e not in known or known[e].rejected]
        if missing:
            raise PduRejected(eid, f"auth events not held here: {', '.join(missing[:3])}")
        create = await self._create_event(room_id, version)
        check_against_auth_events(checked, {k: v.pdu for k, v in known.items()}, version, create)
        try:
            before, snapshot = await self.remote.state_before(origin, room_id, checked.pdu, version)
        except RemoteStateError as e:
            raise PduRejected(eid, f"cannot learn the state before it: {e}") from None
        if before is not None:
            # The state its own prev events give it must allow it, or it is rejected outright.
            await self._check_against_state(before, eid, checked.pdu, version, "state before it")
        try:
            current = await self.storage.events.get_current_state_ids(room_id)
            await self._check_against_state(current, eid, checked.pdu, version, "current state")
        except PduRejected as e:
            # Allowed by its own auth events but not by the room as it is now (e.g. sent just before
            # its sender was banned): soft-failed — kept for the DAG, never shown, never state.
            logger.info("soft-failed %s from %s: %s", eid, origin, e.reason)
            await self.creator.persist_soft_failed(room_id, eid, dict(checked.pdu))
            return eid
        await self.creator.persist_remote(room_id, eid, dict(checked.pdu), before, snapshot)
        return eid

    # --- invites across servers --------------------------------------------------------------

    async def send_invite(self, eid: str, signed: dict[str, Any], version: str) -> dict[str, Any]:
        """Our user invites another server's user: that server countersigns the invite before we
        store it (so a refusal there fails the invite here, as in Synapse)."""
        invitee_server = server_of(str(signed["state_key"]))
        room_id = signed["room_id"]
        stripped = await self.stripped_state(room_id, (("m.room.member", signed["sender"]),))
        try:
            resp = await self.client.put_json(invitee_server, path(F2 + "/invite/{}/{}", room_id, eid),
                                              {"room_version": version, "event": signed, "invite_room_state": stripped})
        except FederationError as e:
            raise MatrixError(403 if e.status == 403 else 502, "M_FORBIDDEN" if e.status == 403 else "M_UNKNOWN",
                              f"{invitee_server} did not accept the invite") from None
        returned = resp.get("event") if isinstance(resp, dict) else None
        if not isinstance(returned, dict):
            raise MatrixError(502, "M_UNKNOWN", f"{invitee_server} sent a malformed invite answer")
        checked = await check_signatures_and_hashes(returned, version, self.keyring)
        sig = (returned.get("signatures") or {}).get(invitee_server)
        if checked.event_id != eid or checked.redacted_for_hash or not sig:
            raise MatrixError(502, "M_UNKNOWN", f"{invitee_server} returned a different invite")
        redacted = redact(dict(returned), version)
        for kid in sig:  # the invitee's server must really have signed it (over the redacted event)
            try:
                key = await self.keyring.get_key(invitee_server, kid)
            except KeyNotFound:
                continue
            if verify_json_signature(redacted, invitee_server, kid, key.verify_key):
                return {**signed, "signatures": returned["signatures"]}
        raise MatrixError(502, "M_UNKNOWN", f"{invitee_server} did not sign the invite")

    async def receive_invite(self, origin: str, room_id: str, eid: str, body: Mapping[str, Any]) -> dict[str, Any]:
        version, event = body.get("room_version"), body.get("event")
        state = body.get("invite_room_state") or []
        if not isinstance(version, str) or version not in KNOWN_ROOM_VERSIONS:
            raise MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION", "Unsupported room version", room_version=version)
        if not isinstance(event, dict) or not isinstance(state, list):
            raise MatrixError(400, "M_BAD_JSON", "event and invite_room_state are required")
        target = event.get("state_key")
        if event.get("type") != "m.room.member" or (event.get("content") or {}).get("membership") != "invite" \
                or event.get("room_id") != room_id or not isinstance(target, str) or server_of(target) != self.server_name \
                or server_of(str(event.get("sender", ""))) != origin:
            raise MatrixError(400, "M_BAD_JSON", "Not an invite from your server to one of our users")
        user = await self.storage.users.get(target)
        if user is None or user.deactivated:
            raise MatrixError(404, "M_NOT_FOUND", "No such user")
        try:
            checked = await check_signatures_and_hashes(event, version, self.keyring)
        except PduRejected as e:
            raise forbidden(e.reason) from None
        if checked.event_id != eid or checked.redacted_for_hash:
            raise MatrixError(400, "M_BAD_JSON", "The event does not match its ID")
        ours = sign_event(dict(event), self.server_name, self.signing_key, version)
        ours = {**event, "signatures": {**event.get("signatures", {}), self.server_name: ours["signatures"][self.server_name]}}
        if await self.storage.events.get_room(room_id) is None:
            clean = [{k: s[k] for k in ("type", "state_key", "sender", "content") if k in s} for s in state if isinstance(s, dict)]
            await self.storage.remote_invites.put(target, room_id, eid, ours, clean)
            self.creator.notifier.notify(users=[target])
        return {"event": ours}

    async def reject_remote_invite(self, user_id: str, room_id: str) -> None:
        """Leave a room we do not hold through the server that invited us (make_leave/send_leave);
        the invite is dropped here whatever the remote says, as Synapse does."""
        invite = await self.storage.remote_invites.get(user_id, room_id)
        if invite is None:
            raise forbidden("You are not in this room")
        server = server_of(str(invite.event.get("sender", "")))
        try:
            _, eid, signed = await self._sign_template(server, "leave", room_id, user_id, {})
            await self.client.put_json(server, path(F2 + "/send_leave/{}/{}", room_id, eid), signed)
        except (FederationError, KeyError, TypeError, ValueError) as e:
            logger.info("remote rejection of %s via %s failed (%s); rejected locally", room_id, server, e)
        await self.storage.remote_invites.delete(user_id, room_id)
        self.creator.notifier.notify(users=[user_id])

    async def _fetch_missing(self, origin: str, room_id: str, eid: str, depth: int) -> None:
        """Ask the origin for the events between what we hold and ``eid`` (get_missing_events), and
        take each in order through the same checks; what cannot be checked stays missing."""
        head = await self.creator._head(room_id)  # noqa: SLF001 - the creator owns the room head
        try:
            resp = await self.client.post_json(origin, path(F1 + "/get_missing_events/{}", room_id), {
                "earliest_events": head.extremities, "latest_events": [eid], "limit": 20,
                "min_depth": max(0, depth - 50)})
        except FederationError as e:
            logger.info("get_missing_events from %s failed: %s", origin, e)
            return
        events = resp.get("events") if isinstance(resp, dict) else None
        for ev in sorted((e for e in events or [] if isinstance(e, dict)), key=lambda e: int(e.get("depth", 0))):
            try:
                await self.receive_pdu(origin, ev, fetch_missing=False)
            except PduRejected as e:
                logger.info("missing event from %s refused: %s", origin, e)

    # --- client side: one of our users joins a room another server holds -----------------------

    async def remote_join(self, user_id: str, room_id: str, servers: list[str], content: dict[str, Any]) -> str:
        errors = []
        for server in [s for s in servers if s != self.server_name]:
            try:
                return await self._join_via(server, user_id, room_id, content)
            except (FederationError, PduRejected, KeyError, TypeError, ValueError) as e:
                errors.append(f"{server}: {e}")
                logger.info("remote join of %s via %s failed: %s", room_id, server, e)
        if not errors:
            raise MatrixError(404, "M_NOT_FOUND", "No known servers to join this room through")
        raise MatrixError(502, "M_UNKNOWN", "Could not join through any server: " + "; ".join(errors)[:500])

    async def _sign_template(self, server: str, membership: str, room_id: str, user_id: str,
                             content: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
        """make_join/make_leave/make_knock at ``server``, filled in and signed: (version, event ID, event)."""
        query = {"ver": list(KNOWN_ROOM_VERSIONS)} if membership != "leave" else None
        made = await self.client.get_json(server, path(F1 + f"/make_{membership}/{{}}/{{}}", room_id, user_id), query)
        version = made["room_version"]
        proto = made["event"]
        event = {k: proto[k] for k in ("room_id", "type", "state_key", "sender", "prev_events", "auth_events", "depth")}
        if event["sender"] != user_id or event["state_key"] != user_id or event["room_id"] != room_id:
            raise ValueError(f"make_{membership} returned a template for someone else")
        event["content"] = {**content, "membership": membership}
        event["origin_server_ts"] = self.creator.clock.time_ms()
        signed = sign_event(event, self.server_name, self.signing_key, version)
        return version, event_id(signed, version), signed

    async def remote_knock(self, user_id: str, room_id: str, servers: list[str], content: dict[str, Any]) -> str:
        errors = []
        for server in [s for s in servers if s != self.server_name]:
            try:
                _, eid, signed = await self._sign_template(server, "knock", room_id, user_id, content)
                resp = await self.client.put_json(server, path(F1 + "/send_knock/{}/{}", room_id, eid), signed)
                state = [x for x in resp.get("knock_room_state", []) if isinstance(x, dict)]
                clean = [{k: x[k] for k in ("type", "state_key", "sender", "content") if k in x} for x in state]
                await self.storage.remote_invites.put(user_id, room_id, eid, signed, clean, membership="knock")
                self.creator.notifier.notify(users=[user_id])
                return room_id
            except (FederationError, KeyError, TypeError, ValueError, AttributeError) as e:
                errors.append(f"{server}: {e}")
        raise MatrixError(404 if not errors else 502, "M_NOT_FOUND" if not errors else "M_UNKNOWN",
                          "Could not knock through any server" + (": " + "; ".join(errors)[:500] if errors else ""))

    async def _join_via(self, server: str, user_id: str, room_id: str, content: dict[str, Any]) -> str:
        version, eid, signed = await self._sign_template(server, "join", room_id, user_id, content)
        resp = await self.client.put_json(server, path(F2 + "/send_join/{}/{}", room_id, eid), signed)
        state: dict[str, dict[str, Any]] = {}
        chain: dict[str, dict[str, Any]] = {}
        for bucket, items in ((state, resp.get("state", [])), (chain, resp.get("auth_chain", []))):
            for pdu in items:
                checked = await check_signatures_and_hashes(pdu, version, self.keyring)
                bucket[checked.event_id] = checked.pdu
        everything = {**chain, **state}
        create = next((p for p in everything.values() if p.get("type") == "m.room.create"), None)
        create_id = next((k for k, p in everything.items() if p.get("type") == "m.room.create"), None)
        for eid_, pdu in everything.items():  # every state event must be allowed by its own auth events
            if pdu.get("type") == "m.room.create":
                continue
            check_against_auth_events(CheckedPdu(eid_, pdu, False), everything, version,
                                      {**create, "event_id": create_id} if create else None)
        await self.creator.create_remote_room(room_id, version, state, chain, eid, signed)
        await self.storage.remote_invites.delete(user_id, room_id)
        return room_id

