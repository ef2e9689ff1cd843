"""Reading and writing a room as a member: send (idempotent), state, redaction, members, history."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from homeserver.errors import MatrixError, forbidden
from homeserver.events import get_room_version
from homeserver.events.auth import user_power_level
from homeserver.services.client_events import ClientEventFormatter
from homeserver.services.event_creation import EventCreator
from homeserver.services.filters import EventFilter
from homeserver.services.membership import MembershipService
from homeserver.services.visibility import VisibilityService
from homeserver.storage import Storage
from homeserver.storage.events import StoredEvent
from homeserver.storage.state import StateMap

MAX_MESSAGES_LIMIT = 1000


class RoomService:
    def __init__(
        self, storage: Storage, creator: EventCreator, membership: MembershipService,
        formatter: ClientEventFormatter, visibility: VisibilityService,
    ) -> None:
        self.storage = storage
        self.events = creator
        self.membership = membership
        self.formatter = formatter
        self.visibility = visibility
        # Fetches older history from other servers (set when federation is on): (room ID, how many) → any added?
        self.backfill: Callable[[str, int], Awaitable[bool]] | None = None

    # --- access ----------------------------------------------------------------------------

    async def _member_view(self, user_id: str, room_id: str) -> tuple[bool, StateMap]:
        """(currently joined?, the state the user may see): current state, or state when they left."""
        if await self.storage.events.get_room(room_id) is None:
            raise forbidden("You are not a member of this room")
        eid = await self.storage.events.get_current_state_event_id(room_id, "m.room.member", user_id)
        ev = await self.storage.events.get_event(eid) if eid else None
        membership = ev.pdu["content"].get("membership") if ev else None
        if membership == "join":
            return True, await self.storage.events.get_current_state_ids(room_id)
        if membership in ("leave", "ban") and ev is not None and ev.state_after is not None:
            # Kicked or banned users keep the view they had when they left.
            return False, await self.storage.state.get_state(ev.state_after)
        if await self._world_readable(room_id):
            return False, await self.storage.events.get_current_state_ids(room_id)
        raise forbidden("You are not a member of this room")

    async def _world_readable(self, room_id: str) -> bool:
        eid = await self.storage.events.get_current_state_event_id(room_id, "m.room.history_visibility", "")
        ev = await self.storage.events.get_event(eid) if eid else None
        return bool(ev and ev.pdu["content"].get("history_visibility") == "world_readable")

    # --- writing ---------------------------------------------------------------------------

    async def send_event(
        self, user_id: str, device_id: str, room_id: str, event_type: str, content: dict[str, Any],
        txn_id: str | None, state_key: str | None = None,
    ) -> str:
        if txn_id is not None:
            seen = await self.storage.events.get_txn_event(user_id, device_id, txn_id)
            if seen is not None:
                return seen
        rel = content.get("m.relates_to")
        if isinstance(rel, dict) and rel.get("rel_type") == "m.thread" and isinstance(rel.get("event_id"), str):
            root = await self.storage.events.get_event(rel["event_id"])
            if root is not None and isinstance((root.pdu.get("content") or {}).get("m.relates_to"), dict) \
                    and (root.pdu["content"]["m.relates_to"].get("rel_type")):
                raise MatrixError(400, "M_UNKNOWN", "Cannot start a thread from an event that has a relation")
        if event_type == "m.room.member" and state_key is not None:
            raise MatrixError(400, "M_BAD_JSON", "Use the membership endpoints to change membership")
        extra = None
        if event_type == "m.room.redaction":
            room = await self.storage.events.get_room(room_id)
            target = content.get("redacts")
            if not isinstance(target, str):
                raise MatrixError(400, "M_BAD_JSON", "redacts must name an event")
            if room is not None:
                rv = get_room_version(room.room_version)
                await self._check_may_redact(user_id, room_id, target, rv)
                if not rv.redacts_in_content:
                    extra = {"redacts": target}
        new = await self.events.send(
            room_id, user_id, event_type, content, state_key, device_id=device_id, txn_id=txn_id, extra=extra,
        )
        return new.event_id

    async def redact(self, user_id: str, device_id: str, room_id: str, event_id: str, txn_id: str, reason: Any) -> str:
        content: dict[str, Any] = {"redacts": event_id}
        if reason is not None:
            if not isinstance(reason, str):
                raise MatrixError(400, "M_BAD_JSON", "reason must be a string")
            content["reason"] = reason
        seen = await self.storage.events.get_txn_event(user_id, device_id, txn_id)
        if seen is not None:
            return seen
        room = await self.storage.events.get_room(room_id)
        if room is None:
            raise forbidden("You are not a member of this room")
        rv = get_room_version(room.room_version)
        await self._check_may_redact(user_id, room_id, event_id, rv)
        extra = None if rv.redacts_in_content else {"redacts": event_id}
        if not rv.redacts_in_content:
            content.pop("redacts")
        new = await self.events.send(room_id, user_id, "m.room.redaction", content, None,
                                     device_id=device_id, txn_id=txn_id, extra=extra)
        return new.event_id

    async def _check_may_redact(self, user_id: str, room_id: str, event_id: str, rv: Any) -> None:
        """Since room version 3 the auth rules leave this to servers: only the sender, or someone
        with the room's redact level, may redact an event."""
        target = await self.storage.events.get_event(event_id)
        if target is None or target.room_id != room_id:
            raise MatrixError(404, "M_NOT_FOUND", "Event not found")
        if target.sender == user_id:
            return
        auth = await self.storage.events.current_state_pdus(room_id, [("m.room.create", ""), ("m.room.power_levels", "")])
        pl = auth.get(("m.room.power_levels", ""), {}).get("content", {})
        needed = pl.get("redact", 50) if isinstance(pl.get("redact", 50), int) else 50
        if user_power_level(user_id, auth, rv) < needed:
            raise forbidden("You may only redact your own events")

    # --- reading ---------------------------------------------------------------------------

    async def state(self, user_id: str, room_id: str) -> list[dict[str, Any]]:
        _, state = await self._member_view(user_id, room_id)
        events = await self.storage.events.get_events(state.values())
        return await self.formatter.format(sorted(events.values(), key=lambda e: e.stream_ordering))

    async def state_event(self, user_id: str, room_id: str, event_type: str, state_key: str, fmt: str | None) -> dict[str, Any]:
        _, state = await self._member_view(user_id, room_id)
        eid = state.get((event_type, state_key))
        ev = await self.storage.events.get_event(eid) if eid else None
        if ev is None:
            raise MatrixError(404, "M_NOT_FOUND", "Event not found")
        [client] = await self.formatter.format([ev])
        return client if fmt == "event" else client["content"]

    async def members(
        self, user_id: str, room_id: str, *, membership: str | None = None, not_membership: str | None = None,
    ) -> list[dict[str, Any]]:
        _, state = await self._member_view(user_id, room_id)
        ids = [eid for (etype, _), eid in state.items() if etype == "m.room.member"]
        events = await self.storage.events.get_events(ids)
        chosen = []
        for ev in events.values():
            m = ev.pdu["content"].get("membership")
            if membership is not None and m != membership:
                continue
            if not_membership is not None and m == not_membership:
                continue
            chosen.append(ev)
        chosen.sort(key=lambda e: e.state_key or "")
        return await self.formatter.format(chosen)

    async def joined_members(self, user_id: str, room_id: str) -> dict[str, Any]:
        joined, state = await self._member_view(user_id, room_id)
        if not joined:
            raise forbidden("You are not joined to this room")
        ids = [eid for (etype, _), eid in state.items() if etype == "m.room.member"]
        out: dict[str, Any] = {}
        for ev in (await self.storage.events.get_events(ids)).values():
            c = ev.pdu["content"]
            if c.get("membership") == "join":
                entry = {}
                for key, field in (("display_name", "displayname"), ("avatar_url", "avatar_url")):
                    if isinstance(c.get(field), str):
                        entry[key] = c[field]
                out[ev.state_key or ""] = entry
        return out

    async def joined_rooms(self, user_id: str) -> list[str]:
        return sorted(await self.storage.events.rooms_for_user(user_id, ("join",)))

    async def get_event(self, user_id: str, device_id: str, room_id: str, event_id: str) -> dict[str, Any]:
        joined, _ = await self._member_view(user_id, room_id)
        ev = await self.storage.events.get_event(event_id)
        if ev is None or ev.room_id != room_id:
            raise MatrixError(404, "M_NOT_FOUND", "Event not found")
        visible = await self.visibility.filter(user_id, [ev], currently_joined=joined)
        if not visible:
            raise MatrixError(404, "M_NOT_FOUND", "Event not found")
        [client] = await self.formatter.format(visible, user_id=user_id, device_id=device_id)
        return client

    async def messages(
        self, user_id: str, device_id: str, room_id: str, *, from_pos: int | None, to_pos: int | None,
        backwards: bool, limit: int, event_filter: EventFilter | None = None,
    ) -> tuple[list[dict[str, Any]], int | None, list[StoredEvent]]:
        """One page of history; returns (client events, next position or None at the end, raw events)."""
        joined, _ = await self._member_view(user_id, room_id)
        limit = max(0, min(limit, MAX_MESSAGES_LIMIT))
        if backwards:
            upto = from_pos
            after = to_pos
            raw = await self.storage.events.room_events(room_id, after=after, upto=upto, limit=limit + 1, backwards=True)
            rounds = 0
            while len(raw) <= limit and after is None and self.backfill is not None and rounds < 5 \
                    and await self.backfill(room_id, limit + 1 - len(raw)):
                # The start of what this server holds, in a room it joined later: older events came
                # from a peer and sit before everything else.
                rounds += 1
                raw = await self.storage.events.room_events(room_id, after=after, upto=upto, limit=limit + 1, backwards=True)
        else:
            after = from_pos
            raw = await self.storage.events.room_events(room_id, after=after, upto=to_pos, limit=limit + 1, backwards=False)
        more = len(raw) > limit
        raw = raw[:limit]
        # The page boundary is set before filtering so pagination never skips unfiltered events.
        page = [e for e in raw if event_filter is None or event_filter.allows(e.type, e.sender)]
        visible = await self.visibility.filter(user_id, page, currently_joined=joined)
        if not joined:
            # A former member sees nothing after they left.
            cutoff = await self._left_at(user_id, room_id)
            visible = [e for e in visible if cutoff is None or e.stream_ordering <= cutoff]
        chunk = await self.formatter.format(visible, user_id=user_id, device_id=device_id)
        if not raw or not more:
            next_pos = None
        else:
            last = raw[-1].stream_ordering
            next_pos = last - 1 if backwards else last
        return chunk, next_pos, visible

    async def _left_at(self, user_id: str, room_id: str) -> int | None:
        eid = await self.storage.events.get_current_state_event_id(room_id, "m.room.member", user_id)
        ev = await self.storage.events.get_event(eid) if eid else None
        return ev.stream_ordering if ev else None

    async def context(
        self, user_id: str, device_id: str, room_id: str, event_id: str, limit: int, event_filter: EventFilter | None,
        lazy_members: bool,
    ) -> dict[str, Any]:
        """/context: the event, what came just before and after it, and the state at the end."""
        joined, _ = await self._member_view(user_id, room_id)
        ev = await self.storage.events.get_event(event_id)
        if ev is None or ev.room_id != room_id or not await self.visibility.filter(user_id, [ev], currently_joined=joined):
            raise MatrixError(404, "M_NOT_FOUND", "Event not found")
        half_before, half_after = limit // 2, limit - limit // 2
        before = await self.storage.events.room_events(room_id, upto=ev.stream_ordering - 1, limit=half_before, backwards=True)
        after = await self.storage.events.room_events(room_id, after=ev.stream_ordering, limit=half_after, backwards=False)

        def keep(e: StoredEvent) -> bool:
            return event_filter is None or event_filter.allows(e.type, e.sender)

        before = await self.visibility.filter(user_id, [e for e in before if keep(e)], currently_joined=joined)
        after = await self.visibility.filter(user_id, [e for e in after if keep(e)], currently_joined=joined)
        last = after[-1] if after else ev
        state_ids = await self.storage.state.get_state(last.state_after) if last.state_after is not None else {}
        if lazy_members:
            senders = {e.sender for e in before + after + [ev]}
            state_ids = {k: v for k, v in state_ids.items() if k[0] != "m.room.member" or k[1] in senders}
        state_events = await self.storage.events.get_events(state_ids.values())
        fmt = self.formatter.format
        start_pos = (before[-1].stream_ordering - 1) if before else ev.stream_ordering - 1
        end_pos = after[-1].stream_ordering if after else ev.stream_ordering
        return {
            "event": (await fmt([ev], user_id=user_id, device_id=device_id))[0],
            "events_before": await fmt(before, user_id=user_id, device_id=device_id),
            "events_after": await fmt(after, user_id=user_id, device_id=device_id),
            "state": await fmt(sorted(state_events.values(), key=lambda e: e.stream_ordering)),
            "start": f"t{max(start_pos, 0)}", "end": f"t{end_pos}",
        }

    async def event_at_timestamp(self, user_id: str, room_id: str, ts: int, forwards: bool) -> dict[str, Any]:
        joined, _ = await self._member_view(user_id, room_id)
        ev = await self.storage.events.event_near_ts(room_id, ts, forwards)
        if ev is None or not await self.visibility.filter(user_id, [ev], currently_joined=joined):
            raise MatrixError(404, "M_NOT_FOUND", "No event found at or near that time")
        return {"event_id": ev.event_id, "origin_server_ts": ev.pdu.get("origin_server_ts", 0)}

    async def report(self, user_id: str, room_id: str, event_id: str | None, body: dict[str, Any], now: int) -> None:
        reason = body.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > 4096):
            raise MatrixError(400, "M_BAD_JSON", "reason must be a string of at most 4096 characters")
        score = body.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, int) or not -100 <= score <= 0):
            raise MatrixError(400, "M_BAD_JSON", "score must be an integer between -100 and 0")
        if event_id is not None:
            await self.get_event(user_id, "", room_id, event_id)  # 404 unless the reporter can see it
        elif await self.storage.events.get_room(room_id) is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        await self.storage.events.add_report(room_id, event_id, user_id, reason, score, now)
