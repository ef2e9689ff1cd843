"""/sync: initial and incremental, with long-polling that wakes as soon as something relevant lands.

Timeline events are read by stream position; state sections follow the spec: for a room seen for the
first time (initial sync, a new join, full_state) the full state at the start of the timeline; for an
incremental sync with a gap (``limited``) the state that changed between ``since`` and the start of
the timeline; otherwise nothing, since the state changes are in the timeline itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from homeserver.clock import Clock
from homeserver.services.client_events import ClientEventFormatter
from homeserver.services.filters import SyncFilter
from homeserver.services.notifier import Notifier
from homeserver.services.tokens_stream import SyncToken, pagination_token
from homeserver.services.presence import PresenceService
from homeserver.services.push import PushEvaluator
from homeserver.services.push_rules import PushRuleService
from homeserver.services.typing import TypingService
from homeserver.services.user_data import UserDataService
from homeserver.services.visibility import VisibilityService
from homeserver.storage import Storage
from homeserver.storage.events import StoredEvent
from homeserver.storage.sequences import current_ids
from homeserver.storage.state import StateMap

if TYPE_CHECKING:
    from homeserver.services.e2e_keys import E2eKeyService

MAX_TIMEOUT_MS = 5 * 60 * 1000
TO_DEVICE_BATCH = 100
STRIPPED_STATE_TYPES = (
    ("m.room.create", ""), ("m.room.join_rules", ""), ("m.room.name", ""), ("m.room.avatar", ""),
    ("m.room.canonical_alias", ""), ("m.room.encryption", ""), ("m.room.topic", ""),
)


@dataclass
class ExtraRoomData:
    """Per-room data that changed in the window besides events."""

    account_data: dict[str, dict[str, dict[str, Any]]]
    receipts: dict[str, list[Any]]
    typing_rooms: set[str]


@dataclass
class SyncRequest:
    user_id: str
    device_id: str
    since: SyncToken | None
    timeout_ms: int
    full_state: bool
    filter: SyncFilter


class SyncService:
    def __init__(
        self, storage: Storage, clock: Clock, notifier: Notifier, formatter: ClientEventFormatter,
        visibility: VisibilityService, typing: TypingService, push_rules: "PushRuleService", push: "PushEvaluator",
        presence: "PresenceService", keys: "E2eKeyService",
    ) -> None:
        self.keys = keys
        self.presence = presence
        self.push_rules = push_rules
        self.push = push
        self.storage = storage
        self.clock = clock
        self.notifier = notifier
        self.formatter = formatter
        self.visibility = visibility
        self.typing = typing

    async def current_token(self) -> SyncToken:
        ids = await current_ids(self.storage.db, ("events_stream", "receipts", "account_data", "to_device", "device_lists"))
        return SyncToken(
            events=ids["events_stream"],
            typing=self.typing.serial,
            presence=self.presence.serial,
            receipts=ids["receipts"],
            account_data=ids["account_data"],
            to_device=ids["to_device"],
            device_lists=ids["device_lists"],
        )

    async def sync(self, req: SyncRequest) -> dict[str, Any]:
        rooms = await self.storage.events.rooms_for_user(req.user_id, ("join", "invite", "knock"))
        timeout_s = min(max(req.timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
        with self.notifier.listen(req.user_id, rooms) as woken:
            result = await self._build(req)
            if req.since is None or req.full_state or timeout_s <= 0 or not _is_empty(result):
                return result
            if await Notifier.sleep_on(woken, timeout_s):
                return await self._build(req)
            return result

    async def _build(self, req: SyncRequest) -> dict[str, Any]:
        upto = await self.current_token()
        since = req.since
        join: dict[str, Any] = {}
        invite: dict[str, Any] = {}
        leave: dict[str, Any] = {}
        knock: dict[str, Any] = {}
        memberships = await self.storage.events.rooms_for_user(req.user_id, ("join", "invite", "knock", "leave", "ban"))
        forgotten = await self.storage.aliases.forgotten(req.user_id)
        ignored = await self.visibility.ignored_users(req.user_id)
        changed_membership: dict[str, StoredEvent] = {}
        if since is not None:
            for ev in await self.storage.events.membership_changes_for_user(req.user_id, since.events, upto.events):
                changed_membership[ev.room_id] = ev  # the last change in the window wins
        active = [r for r, m in memberships.items() if m in ("join",)]
        account_data = await self.storage.user_data.account_data_since(
            req.user_id, since.account_data if since else 0, upto.account_data
        )
        receipts = await self.storage.user_data.receipts_for_rooms(active, since.receipts if since else 0, upto.receipts)
        receipts_by_room: dict[str, list[Any]] = {}
        for r in receipts:
            receipts_by_room.setdefault(r.room_id, []).append(r)
        # A token from before a restart may name a typing serial this process never reached.
        typing_since = since.typing if since and since.typing <= upto.typing else 0
        typing_rooms = self.typing.changed_since(active, typing_since) if since else {r for r in active if self.typing.typing_users(r)}
        if since is None and "m.push_rules" not in account_data.get("", {}):
            # Clients expect their push rules in every initial sync, changed or not.
            account_data.setdefault("", {})["m.push_rules"] = {"global": await self.push_rules.ruleset(req.user_id)}
        extras = ExtraRoomData(account_data, receipts_by_room, typing_rooms)
        if since:
            changed_rooms = await self.storage.events.rooms_changed_since(active, since.events, upto.events)
            changed_rooms |= (set(account_data) - {""}) | set(receipts_by_room) | typing_rooms
        else:
            changed_rooms = set(active)
        for room_id, membership in memberships.items():
            if not req.filter.allows_room(room_id):
                continue
            if membership == "join":
                newly = since is None or req.full_state or await self._became_joined(changed_membership.get(room_id), since)
                if since is not None and not req.full_state and room_id not in changed_rooms and room_id not in changed_membership:
                    continue
                join[room_id] = await self._joined_room(req, room_id, since, upto, full=newly, extras=extras)
            elif membership == "invite":
                invite_ev = changed_membership.get(room_id) or await self.membership_event(room_id, req.user_id)
                if invite_ev is not None and invite_ev.sender in ignored:
                    continue  # invites from ignored users are dropped
                if since is None or room_id in changed_membership:
                    invite[room_id] = await self._invited_room(req.user_id, room_id)
            elif membership == "knock":
                if since is None or room_id in changed_membership:
                    knock[room_id] = {"knock_state": {"events": await self.stripped_state(room_id, req.user_id)}}
            elif membership in ("leave", "ban"):
                if room_id in forgotten:
                    continue
                if since is not None and room_id in changed_membership:
                    leave[room_id] = await self._left_room(req, room_id, since, changed_membership[room_id])
                elif since is None and req.filter.include_leave:
                    ev = changed_membership.get(room_id) or await self.membership_event(room_id, req.user_id)
                    if ev is not None:
                        leave[room_id] = await self._left_room(req, room_id, None, ev)
        for inv in await self.storage.remote_invites.for_user(req.user_id):
            # Invites to rooms another server holds: shown until the user joins (then the room is ours
            # too and its own membership wins) or rejects them.
            if inv.room_id in memberships or not req.filter.allows_room(inv.room_id) or inv.event.get("sender") in ignored:
                continue
            if since is None or since.events < inv.stream_ordering <= upto.events:
                stripped = {k: inv.event[k] for k in ("type", "state_key", "sender", "content") if k in inv.event}
                if inv.membership == "knock":
                    knock[inv.room_id] = {"knock_state": {"events": [*inv.invite_state, stripped]}}
                else:
                    invite[inv.room_id] = {"invite_state": {"events": [*inv.invite_state, stripped]}}
        to_device, upto = await self._to_device(req, since, upto)
        changed, left = await self.keys.device_list_changes(req.user_id, since, upto) if since else ([], [])
        return {
            "next_batch": upto.encode(),
            "rooms": {"join": join, "invite": invite, "leave": leave, "knock": knock},
            "account_data": {"events": [{"type": t, "content": c} for t, c in account_data.get("", {}).items()]},
            "presence": {"events": await self._presence(req.user_id, since, upto)},
            "to_device": {"events": to_device},
            "device_lists": {"changed": changed, "left": left},
            "device_one_time_keys_count": await self.keys.one_time_key_counts(req.user_id, req.device_id),
            "device_unused_fallback_key_types": await self.keys.unused_fallback_key_types(req.user_id, req.device_id),
        }

    async def _to_device(self, req: SyncRequest, since: SyncToken | None, upto: SyncToken) -> tuple[list[dict[str, Any]], SyncToken]:
        """The device's queued to-device messages. Those up to ``since`` were delivered (the client came
        back with the token that covered them), so they are deleted now; a long queue comes in batches,
        and the token then stops at the last one sent."""
        after = since.to_device if since else 0
        if after > upto.to_device:
            after = 0  # a token from another server's history: start again
        if after:
            await self.storage.to_device.delete_upto(req.user_id, req.device_id, after)
        rows = await self.storage.to_device.fetch(req.user_id, req.device_id, after, upto.to_device, TO_DEVICE_BATCH)
        if len(rows) == TO_DEVICE_BATCH:
            upto = dataclasses.replace(upto, to_device=rows[-1][0])
        return [msg for _, msg in rows], upto

    async def _became_joined(self, ev: StoredEvent | None, since: SyncToken | None) -> bool:
        """Whether the user joined within the window (not merely changed profile while joined)."""
        if ev is None or since is None:
            return ev is not None
        before = await self._membership_at(ev.room_id, ev.state_key or "", since.events)
        return before != "join"

    async def _membership_at(self, room_id: str, user_id: str, position: int) -> str | None:
        state = await self.state_at_position(room_id, position)
        eid = state.get(("m.room.member", user_id))
        ev = await self.storage.events.get_event(eid) if eid else None
        return ev.pdu["content"].get("membership") if ev else None

    async def membership_event(self, room_id: str, user_id: str) -> StoredEvent | None:
        eid = await self.storage.events.get_current_state_event_id(room_id, "m.room.member", user_id)
        return await self.storage.events.get_event(eid) if eid else None

    async def _timeline(
        self, req: SyncRequest, room_id: str, after: int | None, upto: int, *, joined: bool,
    ) -> tuple[list[StoredEvent], bool]:
        """The newest visible events in (after, upto], oldest first, and whether older ones were skipped."""
        limit = req.filter.timeline_limit
        raw = await self.storage.events.room_events(room_id, after=after, upto=upto, limit=limit + 1, backwards=True)
        limited = len(raw) > limit
        raw = raw[:limit]
        raw = [e for e in raw if req.filter.timeline.allows(e.type, e.sender)]
        visible = await self.visibility.filter(req.user_id, raw, currently_joined=joined)
        visible.reverse()
        return visible, limited

    async def _state_before(self, ev: StoredEvent) -> StateMap:
        return await self.storage.state.state_before(ev)

    async def state_at_position(self, room_id: str, position: int) -> StateMap:
        evs = await self.storage.events.room_events(room_id, upto=position, limit=1, backwards=True)
        if not evs or evs[0].state_after is None:
            return {}
        return await self.storage.state.get_state(evs[0].state_after)

    async def _state_section(
        self, req: SyncRequest, room_id: str, timeline: list[StoredEvent], start_state: StateMap,
        since_state: StateMap | None,
    ) -> list[dict[str, Any]]:
        if since_state is not None:
            wanted = {k: v for k, v in start_state.items() if since_state.get(k) != v}
        else:
            wanted = dict(start_state)
        if req.filter.lazy_load_members:
            senders = {e.sender for e in timeline} | {req.user_id}
            wanted = {k: v for k, v in wanted.items() if k[0] != "m.room.member" or k[1] in senders}
        wanted = {k: v for k, v in wanted.items() if req.filter.state.allows(k[0], "")}
        timeline_ids = {e.event_id for e in timeline}
        ids = [v for v in wanted.values() if v not in timeline_ids]
        events = await self.storage.events.get_events(ids)
        ordered = sorted(events.values(), key=lambda e: e.stream_ordering)
        return await self.formatter.format(ordered, include_room_id=False)

    async def _joined_room(
        self, req: SyncRequest, room_id: str, since: SyncToken | None, upto: SyncToken, *, full: bool,
        extras: "ExtraRoomData",
    ) -> dict[str, Any]:
        after = None if full or since is None else since.events
        timeline, limited = await self._timeline(req, room_id, after, upto.events, joined=True)
        if timeline:
            start_state = await self._state_before(timeline[0])
            prev_batch = pagination_token(timeline[0].stream_ordering - 1)
        else:
            start_state = await self.storage.events.get_current_state_ids(room_id)
            prev_batch = pagination_token(upto.events)
        if full:
            state = await self._state_section(req, room_id, timeline, start_state, None)
        elif limited:
            since_state = await self.state_at_position(room_id, since.events) if since else {}
            state = await self._state_section(req, room_id, timeline, start_state, since_state)
        else:
            state = []
        unread = await self.push.unread_counts(req.user_id, room_id, threaded=req.filter.timeline.unread_thread_notifications)
        threads = unread.pop("threads", None)
        room: dict[str, Any] = {
            "timeline": {
                "events": await self.formatter.format(timeline, user_id=req.user_id, device_id=req.device_id, include_room_id=False),
                "limited": limited, "prev_batch": prev_batch,
            },
            "state": {"events": state},
            "ephemeral": {"events": self._ephemeral(room_id, req.user_id, extras)},
            "account_data": {"events": [{"type": t, "content": c} for t, c in extras.account_data.get(room_id, {}).items()]},
            "unread_notifications": unread,
            "summary": await self._summary(room_id, req.user_id),
        }
        if threads:
            room["unread_thread_notifications"] = threads
        return room

    async def _presence(self, user_id: str, since: SyncToken | None, upto: SyncToken) -> list[dict[str, Any]]:
        if not self.presence.enabled:
            return []
        # A token from before a restart may name a serial this process never reached.
        after = since.presence if since and since.presence <= upto.presence else 0
        audience = await self.storage.events.users_sharing_rooms(user_id) | {user_id}
        return self.presence.changed_since(audience, after)

    def _ephemeral(self, room_id: str, user_id: str, extras: "ExtraRoomData") -> list[dict[str, Any]]:
        out = []
        if room_id in extras.typing_rooms:
            out.append({"type": "m.typing", "content": {"user_ids": self.typing.typing_users(room_id)}})
        receipts = extras.receipts.get(room_id)
        if receipts:
            content = UserDataService.receipt_edu(receipts, user_id)
            if content:
                out.append({"type": "m.receipt", "content": content})
        return out

    async def _left_room(
        self, req: SyncRequest, room_id: str, since: SyncToken | None, leave_event: StoredEvent,
    ) -> dict[str, Any]:
        after = since.events if since is not None else None
        timeline, limited = await self._timeline(req, room_id, after, leave_event.stream_ordering, joined=False)
        start_state = await self._state_before(timeline[0]) if timeline else await self._state_before(leave_event)
        state = await self._state_section(req, room_id, timeline, start_state, None)
        return {
            "timeline": {
                "events": await self.formatter.format(timeline, user_id=req.user_id, device_id=req.device_id, include_room_id=False),
                "limited": limited,
                "prev_batch": pagination_token((timeline[0].stream_ordering if timeline else leave_event.stream_ordering) - 1),
            },
            "state": {"events": state},
            "account_data": {"events": []},
        }

    async def stripped_state(self, room_id: str, user_id: str) -> list[dict[str, Any]]:
        state = await self.storage.events.get_current_state_ids(room_id)
        keys = list(STRIPPED_STATE_TYPES) + [("m.room.member", user_id)]
        events = await self.storage.events.get_events([state[k] for k in keys if k in state])
        return [
            {"type": e.type, "state_key": e.state_key, "sender": e.sender, "content": e.pdu.get("content", {})}
            for e in sorted(events.values(), key=lambda e: e.stream_ordering)
        ]

    async def _invited_room(self, user_id: str, room_id: str) -> dict[str, Any]:
        return {"invite_state": {"events": await self.stripped_state(room_id, user_id)}}

    async def _summary(self, room_id: str, user_id: str) -> dict[str, Any]:
        joined = await self.storage.events.members(room_id, ("join",))
        invited = await self.storage.events.members(room_id, ("invite",))
        heroes = [u for u in joined + invited if u != user_id][:5]
        return {"m.heroes": heroes, "m.joined_member_count": len(joined), "m.invited_member_count": len(invited)}


def _is_empty(result: dict[str, Any]) -> bool:
    rooms = result["rooms"]
    return not any(rooms[k] for k in ("join", "invite", "leave", "knock")) and not result["presence"]["events"] \
        and not result["account_data"]["events"] and not result["to_device"]["events"] \
        and not result["device_lists"]["changed"] and not result["device_lists"]["left"]
