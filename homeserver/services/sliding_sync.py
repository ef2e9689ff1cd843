"""Simplified sliding sync (MSC4186), the sync Element X is built on.

A client keeps a connection (``conn_id``, per device) and asks for windows (``ranges``) over lists of
its rooms sorted by recent activity, plus any rooms it subscribes to directly; the answer carries only
the rooms in those windows, each with the state keys and the number of timeline events the client
asked for, and on later requests only what changed. Extensions carry the rest of /sync: to-device
messages, end-to-end encryption data, account data, receipts and typing.

What the server must remember per connection is which rooms it has already sent and with which
settings, so it can answer "only what changed". That is kept in memory, per position handed out (a
client may repeat a request whose answer it lost): after a restart, or for a position that was
dropped, the client gets 400 ``M_UNKNOWN_POS`` and starts the connection again, as the MSC provides.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from homeserver.errors import MatrixError
from homeserver.services.notifier import Notifier
from homeserver.services.sync import MAX_TIMEOUT_MS
from homeserver.services.tokens_stream import SyncToken, pagination_token
from homeserver.services.user_data import UserDataService
from homeserver.storage.events import StoredEvent
from homeserver.storage.state import StateKey, StateMap

if TYPE_CHECKING:
    from homeserver.services.sync import SyncService

# Events that move a room up the list (Synapse's choice: what a person would call activity).
BUMP_TYPES = ("m.room.create", "m.room.message", "m.room.encrypted", "m.sticker", "m.call.invite",
              "m.poll.start", "m.beacon_info")
MAX_TIMELINE_LIMIT = 1000
MAX_LISTS = 100
MAX_RANGES = 100
MAX_REQUIRED_STATE = 1000
TO_DEVICE_LIMIT = 100
# Connections per device, and in all (least recently used dropped first: its client starts again).
CONNECTIONS_PER_DEVICE = 50
MAX_CONNECTIONS = 20_000
WILDCARD = "*"
LAZY = "$LAZY"
ME = "$ME"


# --- the request -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RoomConfig:
    """What the client wants of one room: the union over the lists and subscriptions naming it."""
    timeline_limit: int
    required_state: frozenset[tuple[str, str]]

    def merge(self, other: "RoomConfig | None") -> "RoomConfig":
        if other is None:
            return self
        return RoomConfig(max(self.timeline_limit, other.timeline_limit), self.required_state | other.required_state)


@dataclass(frozen=True)
class ListFilters:
    is_dm: bool | None = None
    is_encrypted: bool | None = None
    is_invite: bool | None = None
    room_types: tuple[str | None, ...] | None = None
    not_room_types: tuple[str | None, ...] = ()
    spaces: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None
    not_tags: tuple[str, ...] = ()
    room_name_like: str | None = None


@dataclass(frozen=True)
class ListRequest:
    ranges: tuple[tuple[int, int], ...]
    config: RoomConfig
    filters: ListFilters


@dataclass(frozen=True)
class Extensions:
    to_device: bool = False
    to_device_since: str | None = None
    to_device_limit: int = TO_DEVICE_LIMIT
    e2ee: bool = False
    account_data: bool = False
    receipts: bool = False
    typing: bool = False
    # Which rooms account_data, receipts and typing cover: the windows of these lists and these rooms
    # ("*": all); None is the default, "*".
    scopes: tuple[tuple[str, tuple[str, ...] | None, tuple[str, ...] | None], ...] = ()

    def scope(self, name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        for ext, lists, rooms in self.scopes:
            if ext == name:
                return lists if lists is not None else ("*",), rooms if rooms is not None else ("*",)
        return ("*",), ("*",)


@dataclass(frozen=True)
class SlidingRequest:
    conn_id: str
    lists: dict[str, ListRequest]
    subscriptions: dict[str, RoomConfig]
    extensions: Extensions
    txn_id: str | None = None


def _bad(field_name: str, why: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", f"{field_name}: {why}")


def _config(raw: Mapping[str, Any], where: str) -> RoomConfig:
    limit = raw.get("timeline_limit", 0)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise _bad(f"{where}.timeline_limit", "must be a non-negative integer")
    required = raw.get("required_state", [])
    if not isinstance(required, list) or len(required) > MAX_REQUIRED_STATE:
        raise _bad(f"{where}.required_state", f"must be a list of at most {MAX_REQUIRED_STATE} [type, state_key] pairs")
    pairs = set()
    for i, pair in enumerate(required):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise _bad(f"{where}.required_state[{i}]", "must be a [type, state_key] pair of strings")
        pairs.add((pair[0], pair[1]))
    return RoomConfig(min(limit, MAX_TIMELINE_LIMIT), frozenset(pairs))


def _opt_bool(raw: Mapping[str, Any], key: str, where: str) -> bool | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, bool):
        raise _bad(f"{where}.{key}", "must be true or false")
    return value


def _types(raw: Mapping[str, Any], key: str, where: str) -> tuple[str | None, ...] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(v is None or isinstance(v, str) for v in value):
        raise _bad(f"{where}.{key}", "must be a list of room types (strings, or null for rooms without one)")
    return tuple(value)


def parse_request(body: Any) -> SlidingRequest:
    """Checks the request's shape, naming the field at fault."""
    if not isinstance(body, dict):
        raise MatrixError(400, "M_BAD_JSON", "The body must be a JSON object")
    conn_id = body.get("conn_id", "")
    if not isinstance(conn_id, str) or len(conn_id) > 200:
        raise _bad("conn_id", "must be a string of at most 200 characters")
    txn_id = body.get("txn_id")
    if txn_id is not None and not isinstance(txn_id, str):
        raise _bad("txn_id", "must be a string")
    raw_lists = body.get("lists") or {}
    if not isinstance(raw_lists, dict) or len(raw_lists) > MAX_LISTS:
        raise _bad("lists", f"must be an object of at most {MAX_LISTS} lists")
    lists: dict[str, ListRequest] = {}
    for name, raw in raw_lists.items():
        where = f"lists.{name}"
        if not isinstance(raw, dict):
            raise _bad(where, "must be an object")
        ranges_raw = raw.get("ranges", [])
        if not isinstance(ranges_raw, list) or len(ranges_raw) > MAX_RANGES:
            raise _bad(f"{where}.ranges", f"must be a list of at most {MAX_RANGES} [start, end] pairs")
        ranges = []
        for i, rng in enumerate(ranges_raw):
            if not (isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in rng)
                    and rng[0] <= rng[1]):
                raise _bad(f"{where}.ranges[{i}]", "must be [start, end] with 0 <= start <= end")
            ranges.append((rng[0], rng[1]))
        filters_raw = raw.get("filters") or {}
        if not isinstance(filters_raw, dict):
            raise _bad(f"{where}.filters", "must be an object")
        fw = f"{where}.filters"
        spaces = filters_raw.get("spaces")
        if spaces is not None and (not isinstance(spaces, list) or not all(isinstance(s, str) for s in spaces)):
            raise _bad(f"{fw}.spaces", "must be a list of room IDs")
        name_like = filters_raw.get("room_name_like")
        if name_like is not None and not isinstance(name_like, str):
            raise _bad(f"{fw}.room_name_like", "must be a string")
        for key in ("tags", "not_tags"):
            value = filters_raw.get(key)
            if value is not None and (not isinstance(value, list) or not all(isinstance(t, str) for t in value)):
                raise _bad(f"{fw}.{key}", "must be a list of tag names")
        filters = ListFilters(
            is_dm=_opt_bool(filters_raw, "is_dm", fw), is_encrypted=_opt_bool(filters_raw, "is_encrypted", fw),
            is_invite=_opt_bool(filters_raw, "is_invite", fw), room_types=_types(filters_raw, "room_types", fw),
            not_room_types=_types(filters_raw, "not_room_types", fw) or (), spaces=tuple(spaces) if spaces is not None else None,
            tags=tuple(filters_raw["tags"]) if filters_raw.get("tags") is not None else None,
            not_tags=tuple(filters_raw.get("not_tags") or ()),
            room_name_like=name_like.casefold() if name_like else None,
        )
        lists[name] = ListRequest(tuple(ranges), _config(raw, where), filters)
    raw_subs = body.get("room_subscriptions") or {}
    if not isinstance(raw_subs, dict):
        raise _bad("room_subscriptions", "must be an object of room ID to settings")
    subs: dict[str, RoomConfig] = {}
    for room_id, raw in raw_subs.items():
        if not isinstance(raw, dict):
            raise _bad(f"room_subscriptions.{room_id}", "must be an object")
        subs[room_id] = _config(raw, f"room_subscriptions.{room_id}")
    return SlidingRequest(conn_id, lists, subs, _extensions(body.get("extensions") or {}), txn_id)


def _extensions(raw: Any) -> Extensions:
    if not isinstance(raw, dict):
        raise _bad("extensions", "must be an object")

    def section(name: str) -> dict[str, Any]:
        value = raw.get(name) or {}
        if not isinstance(value, dict):
            raise _bad(f"extensions.{name}", "must be an object")
        return value

    def enabled(name: str) -> bool:
        return bool(_opt_bool(section(name), "enabled", f"extensions.{name}"))

    td = section("to_device")
    since = td.get("since")
    if since is not None and not isinstance(since, str):
        raise _bad("extensions.to_device.since", "must be a string")
    limit = td.get("limit", TO_DEVICE_LIMIT)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise _bad("extensions.to_device.limit", "must be a positive integer")
    scopes = []
    for name in ("account_data", "receipts", "typing"):
        picked: list[tuple[str, ...] | None] = []
        for key in ("lists", "rooms"):
            value = section(name).get(key)
            if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
                raise _bad(f"extensions.{name}.{key}", "must be a list of strings")
            picked.append(tuple(value) if value is not None else None)
        scopes.append((name, picked[0], picked[1]))
    return Extensions(
        to_device=enabled("to_device"), to_device_since=since, to_device_limit=min(limit, TO_DEVICE_LIMIT), e2ee=enabled("e2ee"),
        account_data=enabled("account_data"), receipts=enabled("receipts"), typing=enabled("typing"), scopes=tuple(scopes),
    )


# --- what a connection remembers ----------------------------------------------------------------------

@dataclass(frozen=True)
class _Position:
    token: SyncToken
    sent: dict[str, RoomConfig]        # rooms the client holds, with the settings they were sent with
    counts: dict[str, int]             # each list's length, so a change of length alone is news
    memberships: dict[str, str]        # the user's membership in each room when it was last sent


@dataclass
class _Connection:
    positions: "OrderedDict[str, _Position]" = field(default_factory=OrderedDict)


@dataclass
class _Room:
    """A candidate room: the user's membership and where the room sorts."""
    room_id: str
    membership: str                    # join, invite, knock, leave, ban
    order: int                         # the newest event the user may see, of any type: the list order
    bump: int                          # the newest "activity" event: the bump stamp clients sort by
    upto: int                          # the last position the user may see (their leave, for left rooms)
    stripped: list[dict[str, Any]] | None = None   # invite/knock state, for rooms another server holds


class SlidingSyncService:
    def __init__(self, sync: "SyncService") -> None:
        self.sync = sync
        self.storage = sync.storage
        self.notifier = sync.notifier
        self._boot = secrets.token_hex(4)
        self._serial = 0
        self._connections: "OrderedDict[tuple[str, str, str], _Connection]" = OrderedDict()

    # --- connection state ---

    def _previous(self, key: tuple[str, str, str], pos: str | None) -> _Position | None:
        if pos is None:
            return None
        conn = self._connections.get(key)
        found = conn.positions.get(pos) if conn is not None else None
        if conn is None or found is None:
            raise MatrixError(400, "M_UNKNOWN_POS", "Unknown position: start the connection again")
        # Coming back with ``pos`` acknowledges it: older positions are dead. ``pos`` itself and any newer
        # one stay, so a request whose answer was lost can be repeated.
        while next(iter(conn.positions)) != pos:
            conn.positions.popitem(last=False)
        return found

    def _remember(self, key: tuple[str, str, str], position: _Position) -> str:
        self._serial += 1
        pos = f"{self._boot}.{self._serial}"
        conn = self._connections.get(key)
        if conn is None:
            conn = self._connections[key] = _Connection()
            same_device = [k for k in self._connections if k[:2] == key[:2]]
            for old in same_device[:-CONNECTIONS_PER_DEVICE]:
                del self._connections[old]
        self._connections.move_to_end(key)
        conn.positions[pos] = position
        # Kept: the acknowledged position (the oldest) and the newest; those between were never acknowledged.
        for stale in list(conn.positions)[1:-1]:
            del conn.positions[stale]
        while len(self._connections) > MAX_CONNECTIONS:
            self._connections.popitem(last=False)
        return pos

    # --- the request ---

    async def handle(self, user_id: str, device_id: str, body: Any, pos: str | None, timeout_ms: int) -> dict[str, Any]:
        req = parse_request(body)
        key = (user_id, device_id, req.conn_id)
        if pos is None:
            self._connections.pop(key, None)  # a new start: the client holds nothing of the old one
        prev = self._previous(key, pos)
        timeout_s = min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
        rooms = await self.storage.events.rooms_for_user(user_id, ("join", "invite", "knock"))
        with self.notifier.listen(user_id, rooms) as woken:
            result, position = await self._build(user_id, device_id, req, prev)
            if prev is not None and timeout_s > 0 and _is_empty(result, prev, position):
                if await Notifier.sleep_on(woken, timeout_s):
                    result, position = await self._build(user_id, device_id, req, prev)
        result["pos"] = self._remember(key, position)
        if req.txn_id is not None:
            result["txn_id"] = req.txn_id
        return result

    async def _build(self, user_id: str, device_id: str, req: SlidingRequest, prev: _Position | None) -> tuple[dict[str, Any], _Position]:
        upto = await self.sync.current_token()
        since = prev.token if prev is not None else None
        if since is not None and since.events > upto.events:
            since = None  # a position from another history (cannot happen in one process; be safe)
        candidates = await self._candidates(user_id, since, upto)
        direct = await self._direct_rooms(user_id)
        tags: dict[str, set[str]] = {}
        if any(lst.filters.tags is not None or lst.filters.not_tags for lst in req.lists.values()):
            tags = await self._room_tags(user_id, upto)
        lists_out: dict[str, Any] = {}
        wanted: dict[str, RoomConfig] = {}
        windows: dict[str, set[str]] = {}
        counts: dict[str, int] = {}
        for name, lst in req.lists.items():
            matching = [r for r in candidates.values() if await self._passes(lst.filters, r, direct, tags)]
            matching.sort(key=lambda r: (r.order, r.room_id), reverse=True)
            counts[name] = len(matching)
            ops = []
            for start, end in lst.ranges:
                window = matching[start:end + 1]
                # MSC3575's SYNC op: Synapse still sends it, and SDKs built for the first sliding sync read it.
                ops.append({"op": "SYNC", "range": [start, end], "room_ids": [r.room_id for r in window]})
                for r in window:
                    wanted[r.room_id] = lst.config.merge(wanted.get(r.room_id))
                    windows.setdefault(name, set()).add(r.room_id)
            lists_out[name] = {"count": len(matching), "ops": ops}
        for room_id, config in req.subscriptions.items():
            room = candidates.get(room_id) or await self._subscribable(user_id, room_id, upto)
            if room is not None:
                candidates[room_id] = room
                wanted[room_id] = config.merge(wanted.get(room_id))
        changed = set()
        if since is not None:
            visible = [r for r in wanted if candidates[r].membership in ("join", "leave", "ban")]
            changed = await self.storage.events.rooms_changed_since(visible, since.events, upto.events)
        rooms_out: dict[str, Any] = {}
        sent: dict[str, RoomConfig] = {}
        memberships: dict[str, str] = {}
        for room_id, config in wanted.items():
            room = candidates[room_id]
            before = prev.sent.get(room_id) if prev is not None else None
            if before is not None and prev is not None and prev.memberships.get(room_id) in ("invite", "knock") \
                    and room.membership not in ("invite", "knock"):
                before = None  # an invite the client held is now a room it is in: send it whole
            sent[room_id] = config.merge(before) if before is not None else config
            memberships[room_id] = room.membership
            data = await self._room(user_id, device_id, room, config, before, since if before is not None else None,
                                    room_id in changed, room_id in direct)
            if data is not None:
                rooms_out[room_id] = data
        extensions = await self._extensions(user_id, device_id, req.extensions, since, upto, wanted, rooms_out, windows)
        result: dict[str, Any] = {"lists": lists_out, "rooms": rooms_out, "extensions": extensions}
        return result, _Position(upto, sent, counts, memberships)

    # --- which rooms ---

    async def _candidates(self, user_id: str, since: SyncToken | None, upto: SyncToken) -> dict[str, _Room]:
        # Everything below is a few round trips whatever the number of rooms: a user in hundreds of rooms
        # asks on every long-poll wake-up.
        rows = await self.storage.events.memberships_with_events(user_id)
        memberships = {r: m for r, (m, _) in rows.items() if m in ("join", "invite", "knock", "leave", "ban")}
        ignored = await self.sync.visibility.ignored_users(user_id)
        left_now: dict[str, StoredEvent] = {}
        if since is not None:
            for ev in await self.storage.events.membership_changes_for_user(user_id, since.events, upto.events):
                left_now[ev.room_id] = ev
        forgotten = await self.storage.aliases.forgotten(user_id)
        listed = {r: m for r, m in memberships.items()
                  # old departures are not listed; one in this window is, so the client sees it
                  if m not in ("leave", "ban") or (r in left_now and r not in forgotten)}
        member_events = await self.storage.events.get_events([rows[r][1] for r in listed])
        joined = [r for r, m in listed.items() if m == "join"]
        last = await self.storage.events.last_positions(joined, upto.events)
        bumps = await self.storage.events.last_positions(joined, upto.events, BUMP_TYPES)
        out: dict[str, _Room] = {}
        for room_id, membership in listed.items():
            member_ev = member_events.get(rows[room_id][1])
            if member_ev is None:
                continue
            if membership in ("invite", "knock"):
                if membership == "invite" and member_ev.sender in ignored:
                    continue
                position = member_ev.stream_ordering
                out[room_id] = _Room(room_id, membership, position, position, position)
            elif membership == "join":
                out[room_id] = _room_at(room_id, membership, member_ev, upto.events, last.get(room_id), bumps.get(room_id))
            else:
                out[room_id] = await self._visible_room(room_id, membership, member_ev, upto)
        for inv in await self.storage.remote_invites.for_user(user_id):
            if inv.room_id in out or inv.room_id in memberships or inv.event.get("sender") in ignored:
                continue
            stripped = {k: inv.event[k] for k in ("type", "state_key", "sender", "content") if k in inv.event}
            out[inv.room_id] = _Room(inv.room_id, inv.membership if inv.membership == "knock" else "invite",
                                     inv.stream_ordering, inv.stream_ordering, inv.stream_ordering, [*inv.invite_state, stripped])
        return out

    async def _visible_room(self, room_id: str, membership: str, member_ev: StoredEvent, upto: SyncToken) -> _Room:
        limit = upto.events if membership == "join" else member_ev.stream_ordering
        last = await self.storage.events.last_position(room_id, limit)
        bump = await self.storage.events.last_position(room_id, limit, BUMP_TYPES)
        return _room_at(room_id, membership, member_ev, limit, last, bump)

    async def _subscribable(self, user_id: str, room_id: str, upto: SyncToken) -> _Room | None:
        """A subscription to a room outside every list: only one the user is or was in (and has not forgotten)."""
        member_ev = await self.sync.membership_event(room_id, user_id)
        if member_ev is None or room_id in await self.storage.aliases.forgotten(user_id):
            return None
        membership = member_ev.pdu.get("content", {}).get("membership")
        if membership in ("invite", "knock"):
            position = member_ev.stream_ordering
            return _Room(room_id, membership, position, position, position)
        if membership not in ("join", "leave", "ban"):
            return None
        return await self._visible_room(room_id, membership, member_ev, upto)

    async def _direct_rooms(self, user_id: str) -> set[str]:
        direct = await self.storage.user_data.get_account_data(user_id, "", "m.direct") or {}
        return {r for rooms in direct.values() if isinstance(rooms, list) for r in rooms if isinstance(r, str)}

    async def _room_tags(self, user_id: str, upto: SyncToken) -> dict[str, set[str]]:
        data = await self.storage.user_data.account_data_since(user_id, 0, upto.account_data)
        out = {}
        for room_id, items in data.items():
            tags = (items.get("m.tag") or {}).get("tags")
            if room_id and isinstance(tags, dict):
                out[room_id] = set(tags)
        return out

    async def _passes(self, f: ListFilters, room: _Room, direct: set[str], tags: Mapping[str, set[str]]) -> bool:
        if f.is_dm is not None and (room.room_id in direct) != f.is_dm:
            return False
        room_tags = tags.get(room.room_id, set())
        if f.not_tags and room_tags & set(f.not_tags):  # not_tags wins over tags
            return False
        if f.tags is not None and not room_tags & set(f.tags):
            return False
        if f.is_invite is not None and (room.membership == "invite") != f.is_invite:
            return False
        if f.is_encrypted is not None or f.room_types is not None or f.not_room_types or f.spaces is not None \
                or f.room_name_like is not None:
            state = await self._state_events(room, [("m.room.encryption", ""), ("m.room.create", ""), ("m.room.name", "")])
            if f.room_name_like is not None:
                name = state.get(("m.room.name", ""), {}).get("content", {}).get("name")
                if not isinstance(name, str) or f.room_name_like not in name.casefold():
                    return False
            if f.is_encrypted is not None and (("m.room.encryption", "") in state) != f.is_encrypted:
                return False
            create = state.get(("m.room.create", ""), {}).get("content", {})
            room_type = create.get("type") if isinstance(create.get("type"), str) else None
            if f.room_types is not None and room_type not in f.room_types:
                return False
            if room_type in f.not_room_types:
                return False
            if f.spaces is not None and not await self._in_spaces(room.room_id, f.spaces):
                return False
        return True

    async def _in_spaces(self, room_id: str, spaces: tuple[str, ...]) -> bool:
        for space in spaces:
            child = await self.storage.events.get_current_state_event_id(space, "m.space.child", room_id)
            if child is not None:
                ev = await self.storage.events.get_event(child)
                if ev is not None and isinstance(ev.pdu.get("content", {}).get("via"), list):
                    return True
        return False

    async def _state_events(self, room: _Room, keys: list[StateKey]) -> dict[StateKey, dict[str, Any]]:
        """Stripped-or-full state events by key, from what the user may see of the room."""
        if room.stripped is not None:
            return {(e["type"], e.get("state_key", "")): e for e in room.stripped if (e["type"], e.get("state_key", "")) in keys}
        if room.membership in ("invite", "knock"):
            stripped = await self.sync.stripped_state(room.room_id, "")
            return {(e["type"], e["state_key"]): e for e in stripped if (e["type"], e["state_key"]) in keys}
        state = await self._state_at(room)
        events = await self.storage.events.get_events([state[k] for k in keys if k in state])
        return {(e.type, e.state_key or ""): e.pdu for e in events.values()}

    async def _state_at(self, room: _Room) -> StateMap:
        if room.membership == "join":
            return await self.storage.events.get_current_state_ids(room.room_id)
        return await self.sync.state_at_position(room.room_id, room.upto)

    # --- one room ---

    async def _room(
        self, user_id: str, device_id: str, room: _Room, config: RoomConfig, before: RoomConfig | None,
        since: SyncToken | None, changed: bool, is_dm: bool,
    ) -> dict[str, Any] | None:
        """The room's entry, or None when the client already holds everything it asked for."""
        initial = before is None
        if room.membership in ("invite", "knock"):
            if not initial:
                return None
            stripped = room.stripped if room.stripped is not None else await self.sync.stripped_state(room.room_id, user_id)
            # Knocks too come as invite_state, as Synapse sends them.
            out: dict[str, Any] = {"initial": True, "bump_stamp": room.bump, "invite_state": stripped}
            out.update(_names_from_stripped(stripped))
            if is_dm:
                out["is_dm"] = True
            return out
        expanded = before is not None and config.timeline_limit > before.timeline_limit
        new_keys = config.required_state - before.required_state if before is not None else frozenset()
        if not initial and not changed and not expanded and not new_keys:
            return None
        after = None if initial or expanded else since.events if since is not None else None
        raw = await self.storage.events.room_events(room.room_id, after=after, upto=room.upto,
                                                    limit=config.timeline_limit + 1, backwards=True)
        limited = len(raw) > config.timeline_limit
        raw = raw[:config.timeline_limit]
        visible = await self.sync.visibility.filter(user_id, raw, currently_joined=room.membership == "join")
        visible.reverse()
        state = await self._state_at(room)
        out = {}
        if initial:
            out["initial"] = True
        if expanded:
            out["unstable_expanded_timeline"] = True
        if config.timeline_limit:
            out["timeline"] = await self.sync.formatter.format(visible, user_id=user_id, device_id=device_id, include_room_id=False)
            out["limited"] = limited
            first = visible[0].stream_ordering if visible else (raw[-1].stream_ordering if raw else room.upto + 1)
            out["prev_batch"] = pagination_token(first - 1)
            out["num_live"] = 0 if since is None else sum(1 for e in visible if e.stream_ordering > since.events)
        # Required state: everything asked for on a first sending (or for newly asked keys); afterwards the
        # entries that changed in the window and are not in the timeline already.
        if initial:
            keys = _select(state, config.required_state, user_id, visible)
        else:
            old_state = await self.sync.state_at_position(room.room_id, since.events) if since is not None else {}
            moved = {k: v for k, v in state.items() if old_state.get(k) != v}
            keys = _select(moved, config.required_state, user_id, visible)
            if new_keys:
                keys |= _select(state, frozenset(new_keys), user_id, visible)
            timeline_ids = {e.event_id for e in visible}
            keys = {k for k in keys if state[k] not in timeline_ids}
        state_events = await self.storage.events.get_events([state[k] for k in keys])
        out["required_state"] = await self.sync.formatter.format(
            sorted(state_events.values(), key=lambda e: e.stream_ordering), include_room_id=False, bundle=False)
        out.update(await self._names(room, state, user_id))
        joined = await self.storage.events.members(room.room_id, ("join",))
        invited = await self.storage.events.members(room.room_id, ("invite",))
        out["joined_count"] = len(joined)
        out["invited_count"] = len(invited)
        unread = await self.sync.push.unread_counts(user_id, room.room_id)
        out["notification_count"] = unread["notification_count"]
        out["highlight_count"] = unread["highlight_count"]
        out["bump_stamp"] = room.bump
        if is_dm:
            out["is_dm"] = True
        if room.membership in ("leave", "ban"):
            out["membership"] = room.membership
        return out

    async def _names(self, room: _Room, state: StateMap, user_id: str) -> dict[str, Any]:
        wanted = [("m.room.name", ""), ("m.room.avatar", ""), ("m.room.canonical_alias", "")]
        events = await self.storage.events.get_events([state[k] for k in wanted if k in state])
        by_type = {e.type: e.pdu.get("content", {}) for e in events.values()}
        out: dict[str, Any] = {}
        name = by_type.get("m.room.name", {}).get("name")
        if isinstance(name, str) and name:
            out["name"] = name
        avatar = by_type.get("m.room.avatar", {}).get("url")
        if isinstance(avatar, str) and avatar:
            out["avatar"] = avatar
        if "name" not in out:
            # Clients name a nameless room after its other members (its "heroes").
            members = [(k[1], eid) for k, eid in state.items() if k[0] == "m.room.member" and k[1] != user_id]
            member_events = await self.storage.events.get_events([eid for _, eid in members])
            heroes = []
            for uid, eid in sorted(members):
                ev = member_events.get(eid)
                content = ev.pdu.get("content", {}) if ev is not None else {}
                if content.get("membership") not in ("join", "invite"):
                    continue
                hero: dict[str, Any] = {"user_id": uid}
                if isinstance(content.get("displayname"), str):
                    hero["displayname"] = content["displayname"]
                if isinstance(content.get("avatar_url"), str):
                    hero["avatar_url"] = content["avatar_url"]
                heroes.append(hero)
                if len(heroes) == 5:
                    break
            out["heroes"] = heroes
        return out

    # --- extensions ---

    async def _extensions(
        self, user_id: str, device_id: str, ext: Extensions, since: SyncToken | None, upto: SyncToken,
        wanted: Mapping[str, RoomConfig], rooms_out: Mapping[str, Any], windows: Mapping[str, set[str]],
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}

        def covered(name: str) -> set[str]:
            """The rooms an extension covers: "*" in rooms means every room of the response's windows
            and subscriptions (as Synapse reads it); otherwise the named rooms and the named lists' windows."""
            lists, rooms = ext.scope(name)
            if "*" in rooms:
                return set(wanted)
            out_rooms = {r for r in rooms if r in wanted}
            for lst in lists:
                out_rooms |= set().union(*windows.values()) if lst == "*" else windows.get(lst, set())
            return out_rooms

        if ext.to_device:
            out["to_device"] = await self._to_device(user_id, device_id, ext, upto)
        if ext.e2ee:
            keys = self.sync.keys
            changed, left = await keys.device_list_changes(user_id, since, upto) if since is not None else ([], [])
            e2ee: dict[str, Any] = {
                "device_one_time_keys_count": await keys.one_time_key_counts(user_id, device_id),
                "device_unused_fallback_key_types": await keys.unused_fallback_key_types(user_id, device_id),
            }
            if changed or left:
                e2ee["device_lists"] = {"changed": changed, "left": left}
            out["e2ee"] = e2ee
        initial_rooms = {r for r, data in rooms_out.items() if data.get("initial")}
        if ext.account_data:
            data = await self.storage.user_data.account_data_since(user_id, since.account_data if since else 0, upto.account_data)
            if since is None and "m.push_rules" not in data.get("", {}):
                data.setdefault("", {})["m.push_rules"] = {"global": await self.sync.push_rules.ruleset(user_id)}
            rooms: dict[str, list[dict[str, Any]]] = {}
            fresh = initial_rooms - set(data) if since is not None else set()
            if fresh:
                everything = await self.storage.user_data.account_data_since(user_id, 0, upto.account_data)
                for r in fresh:
                    if r in everything:
                        data[r] = everything[r]
            scope = covered("account_data")
            for room_id, items in data.items():
                if room_id and room_id in scope:
                    rooms[room_id] = [{"type": t, "content": c} for t, c in items.items()]
            out["account_data"] = {"global": [{"type": t, "content": c} for t, c in data.get("", {}).items()], "rooms": rooms}
        if ext.receipts:
            joined = [r for r in covered("receipts") if r in rooms_out or since is not None]
            receipts: dict[str, Any] = {}
            recent = await self.storage.user_data.receipts_for_rooms(
                [r for r in joined if r not in initial_rooms], since.receipts if since else 0, upto.receipts)
            # A room sent whole gets the receipts for the events it was sent with, and the user's own.
            shown = {e.get("event_id") for r in initial_rooms for e in rooms_out[r].get("timeline", [])}
            everything = [rec for rec in await self.storage.user_data.receipts_for_rooms(
                [r for r in joined if r in initial_rooms], 0, upto.receipts) if rec.event_id in shown or rec.user_id == user_id]
            by_room: dict[str, list[Any]] = {}
            for rec in [*recent, *everything]:
                by_room.setdefault(rec.room_id, []).append(rec)
            for room_id, recs in by_room.items():
                content = UserDataService.receipt_edu(recs, user_id)
                if content:
                    receipts[room_id] = {"type": "m.receipt", "content": content}
            out["receipts"] = {"rooms": receipts}
        if ext.typing:
            typing = self.sync.typing
            rooms_list = list(covered("typing"))
            after = since.typing if since is not None and since.typing <= upto.typing else 0
            moved = typing.changed_since(rooms_list, after) if since is not None else set()
            typing_out = {}
            for room_id in rooms_list:
                users = typing.typing_users(room_id)
                if room_id in moved or (room_id in initial_rooms and users):
                    typing_out[room_id] = {"type": "m.typing", "content": {"user_ids": users}}
            out["typing"] = {"rooms": typing_out}
        return out

    async def _to_device(self, user_id: str, device_id: str, ext: Extensions, upto: SyncToken) -> dict[str, Any]:
        """The device's inbox. ``since`` is this extension's own token: messages up to it were received,
        so they are deleted now."""
        after = 0
        if ext.to_device_since:
            try:
                after = int(ext.to_device_since)
            except ValueError:
                raise _bad("extensions.to_device.since", "is not a token this server gave") from None
            if after < 0 or after > upto.to_device:
                after = 0
        if after:
            await self.storage.to_device.delete_upto(user_id, device_id, after)
        rows = await self.storage.to_device.fetch(user_id, device_id, after, upto.to_device, ext.to_device_limit)
        next_batch = rows[-1][0] if len(rows) == ext.to_device_limit else upto.to_device
        return {"next_batch": str(max(next_batch, after)), "events": [msg for _, msg in rows]}


def _room_at(room_id: str, membership: str, member_ev: StoredEvent, limit: int, last: int | None, bump: int | None) -> _Room:
    fallback = member_ev.stream_ordering
    # A stamp from history fetched from other servers is negative: the membership stands in, as Synapse does.
    bump = bump if bump is not None and bump > 0 else max(fallback, 0)
    return _Room(room_id, membership, last if last is not None else fallback, bump, limit)


def _select(state: Mapping[StateKey, str], wanted: frozenset[tuple[str, str]], user_id: str,
            timeline: list[StoredEvent]) -> set[StateKey]:
    """The state keys ``required_state`` names: exact pairs, ``*`` for any type or key, ``$ME`` for the
    user, ``$LAZY`` for the members who sent something in the timeline."""
    if not wanted:
        return set()
    # Lazy members: the senders in the timeline and the targets of its membership events.
    lazy = {e.sender for e in timeline} | {e.state_key for e in timeline if e.type == "m.room.member" and e.state_key} | {user_id}
    out = set()
    for key in state:
        etype, skey = key
        for wtype, wkey in wanted:
            if wtype != WILDCARD and wtype != etype:
                continue
            if wkey == WILDCARD or wkey == skey or (wkey == ME and skey == user_id) or (wkey == LAZY and etype == "m.room.member" and skey in lazy):
                out.add(key)
                break
    return out


def _names_from_stripped(stripped: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for e in stripped:
        content = e.get("content") or {}
        if e.get("type") == "m.room.name" and isinstance(content.get("name"), str) and content["name"]:
            out["name"] = content["name"]
        elif e.get("type") == "m.room.avatar" and isinstance(content.get("url"), str) and content["url"]:
            out["avatar"] = content["url"]
    return out


def _is_empty(result: dict[str, Any], prev: _Position, position: _Position) -> bool:
    """Nothing worth answering before the timeout: no room news, no list changed length, no extension data."""
    if result["rooms"] or position.counts != prev.counts:
        return False
    ext = result["extensions"]
    if ext.get("to_device", {}).get("events") or ext.get("e2ee", {}).get("device_lists"):
        return False
    account = ext.get("account_data", {})
    if account.get("global") or account.get("rooms"):
        return False
    return not ext.get("receipts", {}).get("rooms") and not ext.get("typing", {}).get("rooms")

