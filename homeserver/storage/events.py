"""Events, the room graph (edges, auth, forward extremities), current state and transaction IDs."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import orjson

from homeserver.storage.database import Connection, Database, placeholders
from homeserver.storage.sequences import next_id
from homeserver.storage.state import StateKey, StateMap

EVENT_CACHE_SIZE = 20_000


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    stream_ordering: int
    room_id: str
    pdu: dict[str, Any]  # as signed; callers must not mutate it (it is shared by the cache)
    rejected: str | None
    soft_failed: bool
    outlier: bool
    redacted_by: str | None
    state_after: int | None
    device_id: str | None
    txn_id: str | None
    replaces_state: str | None

    @property
    def type(self) -> str:
        return self.pdu["type"]

    @property
    def state_key(self) -> str | None:
        return self.pdu.get("state_key")

    @property
    def sender(self) -> str:
        return self.pdu["sender"]


@dataclass(frozen=True)
class RoomRecord:
    room_id: str
    room_version: str
    creator: str | None
    created_ts: int
    is_public: bool


_EV_COLS = (
    "event_id, stream_ordering, room_id, json, rejected, soft_failed, outlier, redacted_by, state_after,"
    " device_id, txn_id, replaces_state"
)


def _stored(r: Any) -> StoredEvent:
    return StoredEvent(
        event_id=r[0], stream_ordering=int(r[1]), room_id=r[2], pdu=orjson.loads(r[3]), rejected=r[4],
        soft_failed=bool(r[5]), outlier=bool(r[6]), redacted_by=r[7], state_after=r[8], device_id=r[9], txn_id=r[10],
        replaces_state=r[11],
    )


class EventStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: OrderedDict[str, StoredEvent] = OrderedDict()
        self._room_versions: dict[str, str] = {}

    # --- rooms -------------------------------------------------------------------------------

    async def create_room(self, conn: Connection, room_id: str, room_version: str, creator: str | None, ts: int) -> None:
        await conn.execute(
            "INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ($1, $2, $3, $4)",
            room_id, room_version, creator, ts,
        )

    async def get_current_snapshot(self, room_id: str, conn: Connection | None = None) -> int | None:
        return await (conn or self.db).fetchval("SELECT current_snapshot FROM rooms WHERE room_id = $1", room_id)

    async def set_current_snapshot(self, conn: Connection, room_id: str, snapshot_id: int) -> None:
        await conn.execute("UPDATE rooms SET current_snapshot = $2 WHERE room_id = $1", room_id, snapshot_id)

    async def public_room_ids(self) -> list[str]:
        return [r[0] for r in await self.db.fetch("SELECT room_id FROM rooms WHERE is_public = 1")]

    async def set_public(self, room_id: str, public: bool) -> None:
        await self.db.execute("UPDATE rooms SET is_public = $2 WHERE room_id = $1", room_id, int(public))

    async def get_room_version(self, room_id: str) -> str | None:
        """A room's version never changes, so it is remembered after the first read."""
        cached = self._room_versions.get(room_id)
        if cached is None:
            cached = await self.db.fetchval("SELECT room_version FROM rooms WHERE room_id = $1", room_id)
            if cached is not None:
                self._room_versions[room_id] = cached
        return cached

    async def get_room(self, room_id: str) -> RoomRecord | None:
        r = await self.db.fetchrow(
            "SELECT room_id, room_version, creator, created_ts, is_public FROM rooms WHERE room_id = $1", room_id
        )
        return RoomRecord(r[0], r[1], r[2], int(r[3]), bool(r[4])) if r else None

    # --- events ------------------------------------------------------------------------------

    async def persist_event(
        self, conn: Connection, event_id: str, pdu: Mapping[str, Any], *, stream_ordering: int,
        state_after: int | None, rejected: str | None = None, soft_failed: bool = False, outlier: bool = False,
        device_id: str | None = None, txn_id: str | None = None, room_id: str | None = None,
        replaces_state: str | None = None,
    ) -> None:
        await conn.execute(
            "INSERT INTO events (stream_ordering, event_id, room_id, depth, type, state_key, sender,"
            " origin_server_ts, json, rejected, soft_failed, outlier, state_after, device_id, txn_id, replaces_state)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            stream_ordering, event_id, room_id or pdu["room_id"], int(pdu.get("depth", 0)), pdu["type"],
            pdu.get("state_key"), pdu["sender"], int(pdu.get("origin_server_ts", 0)), orjson.dumps(pdu).decode(),
            rejected, int(soft_failed), int(outlier), state_after, device_id, txn_id, replaces_state,
        )
        edges = [(event_id, p) for p in pdu.get("prev_events", [])]
        if edges:
            await conn.executemany(
                "INSERT INTO event_edges (event_id, prev_event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", edges
            )
        auth = [(event_id, a) for a in pdu.get("auth_events", [])]
        if auth:
            await conn.executemany(
                "INSERT INTO event_auth (event_id, auth_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", auth
            )

    async def get_events(self, event_ids: Iterable[str], conn: Connection | None = None) -> dict[str, StoredEvent]:
        out: dict[str, StoredEvent] = {}
        missing = []
        for eid in event_ids:
            hit = self._cache.get(eid)
            if hit is not None:
                out[eid] = hit
            else:
                missing.append(eid)
        db = conn or self.db
        for start in range(0, len(missing), 500):
            chunk = missing[start:start + 500]
            marks = placeholders(len(chunk))
            for r in await db.fetch(f"SELECT {_EV_COLS} FROM events WHERE event_id IN ({marks})", *chunk):
                ev = _stored(r)
                out[ev.event_id] = ev
                if conn is None:
                    self._cache_put(ev)
        return out

    async def get_event(self, event_id: str) -> StoredEvent | None:
        return (await self.get_events([event_id])).get(event_id)

    def _cache_put(self, ev: StoredEvent) -> None:
        self._cache[ev.event_id] = ev
        while len(self._cache) > EVENT_CACHE_SIZE:
            self._cache.popitem(last=False)

    def invalidate(self, event_id: str) -> None:
        self._cache.pop(event_id, None)

    async def mark_redacted(self, conn: Connection, event_id: str, redacted_by: str) -> None:
        await conn.execute(
            "UPDATE events SET redacted_by = $2 WHERE event_id = $1 AND redacted_by IS NULL", event_id, redacted_by
        )
        self.invalidate(event_id)

    async def have_events(self, event_ids: Iterable[str]) -> set[str]:
        ids = list(event_ids)
        if not ids:
            return set()
        return set((await self.get_events(ids)).keys())

    # --- timelines ---------------------------------------------------------------------------

    async def room_events(
        self, room_id: str, *, after: int | None = None, upto: int | None = None, limit: int = 10,
        backwards: bool = True,
    ) -> list[StoredEvent]:
        """Timeline events with stream positions in (after, upto], newest first when ``backwards``.

        Outliers and rejected events are never part of a timeline.
        """
        where = ["room_id = $1", "outlier = 0", "rejected IS NULL"]
        args: list[Any] = [room_id]
        if after is not None:
            args.append(after)
            where.append(f"stream_ordering > ${len(args)}")
        if upto is not None:
            args.append(upto)
            where.append(f"stream_ordering <= ${len(args)}")
        order = "DESC" if backwards else "ASC"
        rows = await self.db.fetch(
            f"SELECT {_EV_COLS} FROM events WHERE {' AND '.join(where)} ORDER BY stream_ordering {order} LIMIT {int(limit)}",
            *args,
        )
        out = []
        for r in rows:
            ev = self._cache.get(r[0]) or _stored(r)
            self._cache_put(ev)
            out.append(ev)
        return out

    async def every_event(self, room_id: str, after: int | None, limit: int) -> list[StoredEvent]:
        """Every event held for a room (timeline, outliers, soft-failed; not rejected), in stream order,
        a page at a time (the audit export)."""
        rows = await self.db.fetch(
            f"SELECT {_EV_COLS} FROM events WHERE room_id = $1 AND rejected IS NULL AND stream_ordering > $2"
            f" ORDER BY stream_ordering LIMIT {int(limit)}", room_id, after if after is not None else -(2**62),
        )
        return [_stored(r) for r in rows]

    async def oldest_timeline_event(self, room_id: str) -> StoredEvent | None:
        r = await self.db.fetchrow(
            f"SELECT {_EV_COLS} FROM events WHERE room_id = $1 AND outlier = 0 AND rejected IS NULL"
            " ORDER BY stream_ordering ASC LIMIT 1", room_id,
        )
        return _stored(r) if r else None

    async def backward_extremities(self, room_id: str, limit: int = 20) -> list[str]:
        """Events that timeline events of the room name as prev_events but that are not in our
        timeline (never received, or held only as outliers): where older history can be backfilled."""
        rows = await self.db.fetch(
            "SELECT DISTINCT ed.prev_event_id FROM events ev JOIN event_edges ed ON ed.event_id = ev.event_id"
            " LEFT JOIN events p ON p.event_id = ed.prev_event_id"
            " WHERE ev.room_id = $1 AND ev.outlier = 0 AND ev.rejected IS NULL"
            " AND (p.event_id IS NULL OR (p.outlier = 1 AND p.soft_failed = 0))"
            f" LIMIT {int(limit)}", room_id,
        )
        return [r[0] for r in rows]

    async def redactions_in_room(self, room_id: str) -> dict[str, str]:
        """Redacted event ID → the redaction naming it, for every redaction held in the room (backfill
        needs it: a redaction can arrive long before the older event it removes)."""
        out: dict[str, str] = {}
        for eid, raw in await self.db.fetch(
            "SELECT event_id, json FROM events WHERE room_id = $1 AND type = 'm.room.redaction' AND rejected IS NULL"
            " AND soft_failed = 0", room_id,
        ):
            pdu = orjson.loads(raw)
            target = (pdu.get("content") or {}).get("redacts") or pdu.get("redacts")
            if isinstance(target, str):
                out[target] = eid
        return out

    async def promote_outlier(self, conn: Connection, event_id: str, stream_ordering: int, state_after: int) -> None:
        """An event held as an outlier (e.g. state from a join) found its place in the timeline by backfill."""
        await conn.execute(
            "UPDATE events SET outlier = 0, stream_ordering = $2, state_after = $3 WHERE event_id = $1",
            event_id, stream_ordering, state_after,
        )
        self.invalidate(event_id)

    async def last_position(self, room_id: str, upto: int, types: tuple[str, ...] | None = None) -> int | None:
        """Stream position of the room's newest timeline event (of one of ``types``, if given) at or before
        ``upto``: sliding sync's list order and bump stamp. Walks the room's stream index backwards: the
        newest few events usually answer it."""
        type_clause = f" AND type IN ({placeholders(len(types), 3)})" if types else ""
        return await self.db.fetchval(
            "SELECT stream_ordering FROM events WHERE room_id = $1 AND stream_ordering <= $2 AND outlier = 0"
            f" AND rejected IS NULL{type_clause} ORDER BY stream_ordering DESC LIMIT 1",
            room_id, upto, *(types or ()),
        )

    async def last_positions(self, room_ids: list[str], upto: int, types: tuple[str, ...] | None = None) -> dict[str, int]:
        """``last_position`` for many rooms in one round trip (sliding sync sorts every room of a user on
        each request): one index walk per room, backwards from ``upto``."""
        out: dict[str, int] = {}
        type_clause = ""
        for start in range(0, len(room_ids), 500):
            chunk = room_ids[start:start + 500]
            if self.db.engine == "postgres":
                if types:
                    type_clause = f" AND e.type IN ({placeholders(len(types), 3)})"
                rows = await self.db.fetch(
                    "SELECT r.room_id, (SELECT e.stream_ordering FROM events e WHERE e.room_id = r.room_id"
                    " AND e.stream_ordering <= $2 AND e.outlier = 0 AND e.rejected IS NULL" + type_clause +
                    " ORDER BY e.stream_ordering DESC LIMIT 1) FROM unnest($1::text[]) AS r(room_id)",
                    chunk, upto, *(types or ()),
                )
            else:
                if types:
                    type_clause = f" AND e.type IN ({placeholders(len(types), 3)})"
                rows = await self.db.fetch(
                    "SELECT r.value, (SELECT e.stream_ordering FROM events e WHERE e.room_id = r.value"
                    " AND e.stream_ordering <= $2 AND e.outlier = 0 AND e.rejected IS NULL" + type_clause +
                    " ORDER BY e.stream_ordering DESC LIMIT 1) FROM json_each($1) AS r",
                    orjson.dumps(chunk).decode(), upto, *(types or ()),
                )
            out.update({r[0]: int(r[1]) for r in rows if r[1] is not None})
        return out

    async def memberships_with_events(self, user_id: str) -> dict[str, tuple[str, str]]:
        """room_id -> (membership, the membership event's ID), in every room the user has a membership."""
        rows = await self.db.fetch(
            "SELECT room_id, membership, event_id FROM current_state WHERE type = 'm.room.member' AND state_key = $1", user_id)
        return {r[0]: (r[1], r[2]) for r in rows}

    async def rooms_changed_since(self, room_ids: list[str], since: int, upto: int) -> set[str]:
        if not room_ids:
            return set()
        changed: set[str] = set()
        for start in range(0, len(room_ids), 500):
            chunk = room_ids[start:start + 500]
            marks = placeholders(len(chunk), 3)
            rows = await self.db.fetch(
                "SELECT DISTINCT room_id FROM events WHERE stream_ordering > $1 AND stream_ordering <= $2"
                f" AND room_id IN ({marks})",
                since, upto, *chunk,
            )
            changed |= {r[0] for r in rows}
        return changed

    async def membership_changes_for_user(self, user_id: str, since: int, upto: int) -> list[StoredEvent]:
        """The user's own membership events in (since, upto]: joins, invites, leaves, bans, knocks."""
        rows = await self.db.fetch(
            f"SELECT {_EV_COLS} FROM events WHERE type = 'm.room.member' AND state_key = $1"
            " AND stream_ordering > $2 AND stream_ordering <= $3 AND outlier = 0 AND rejected IS NULL"
            " ORDER BY stream_ordering",
            user_id, since, upto,
        )
        return [_stored(r) for r in rows]

    async def event_near_ts(self, room_id: str, ts: int, forwards: bool) -> StoredEvent | None:
        op, order = (">=", "ASC") if forwards else ("<=", "DESC")
        row = await self.db.fetchrow(
            f"SELECT {_EV_COLS} FROM events WHERE room_id = $1 AND origin_server_ts {op} $2 AND outlier = 0"
            f" AND rejected IS NULL ORDER BY origin_server_ts {order}, stream_ordering {order} LIMIT 1",
            room_id, ts,
        )
        return _stored(row) if row else None

    async def add_report(self, room_id: str, event_id: str | None, user_id: str, reason: str | None,
                         score: int | None, ts: int) -> int:
        async with self.db.transaction() as conn:
            report_id = await next_id(conn, "reports")
            await conn.execute(
                "INSERT INTO reports (id, received_ts, room_id, event_id, user_id, reason, score)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                report_id, ts, room_id, event_id, user_id, reason, score,
            )
        return report_id

    async def list_reports(self, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        total = int(await self.db.fetchval("SELECT COUNT(*) FROM reports"))
        rows = await self.db.fetch(
            "SELECT id, received_ts, room_id, event_id, user_id, reason, score FROM reports"
            f" ORDER BY id DESC LIMIT {int(limit)} OFFSET {int(offset)}"
        )
        return [{"id": r[0], "received_ts": r[1], "room_id": r[2], "event_id": r[3], "user_id": r[4],
                 "reason": r[5], "score": r[6]} for r in rows], total

    async def last_sent_by(self, room_id: str, sender: str) -> int | None:
        return await self.db.fetchval(
            "SELECT MAX(stream_ordering) FROM events WHERE room_id = $1 AND sender = $2", room_id, sender
        )

    async def last_stream_before(self, room_id: str, stream: int) -> int | None:
        return await self.db.fetchval(
            "SELECT MAX(stream_ordering) FROM events WHERE room_id = $1 AND stream_ordering < $2", room_id, stream
        )

    # --- graph -------------------------------------------------------------------------------

    async def get_forward_extremities(self, room_id: str, conn: Connection | None = None) -> list[str]:
        rows = await (conn or self.db).fetch("SELECT event_id FROM forward_extremities WHERE room_id = $1", room_id)
        return sorted(r[0] for r in rows)

    async def set_forward_extremities(self, conn: Connection, room_id: str, event_ids: Iterable[str]) -> None:
        await conn.execute("DELETE FROM forward_extremities WHERE room_id = $1", room_id)
        await conn.executemany(
            "INSERT INTO forward_extremities (room_id, event_id) VALUES ($1, $2)", [(room_id, e) for e in event_ids]
        )

    async def max_depth(self, event_ids: list[str], conn: Connection | None = None) -> int:
        if not event_ids:
            return 0
        marks = placeholders(len(event_ids))
        return int(await (conn or self.db).fetchval(f"SELECT MAX(depth) FROM events WHERE event_id IN ({marks})", *event_ids) or 0)

    # --- current state -----------------------------------------------------------------------

    async def get_current_state_ids(self, room_id: str, conn: Connection | None = None) -> StateMap:
        rows = await (conn or self.db).fetch(
            "SELECT type, state_key, event_id FROM current_state WHERE room_id = $1", room_id
        )
        return {(r[0], r[1]): r[2] for r in rows}

    async def current_state_pdus(self, room_id: str, keys: Iterable[StateKey]) -> dict[StateKey, dict[str, Any]]:
        """The current state events for ``keys`` (those that exist), keyed like auth events are."""
        wanted = {}
        for k in keys:
            eid = await self.get_current_state_event_id(room_id, k[0], k[1])
            if eid is not None:
                wanted[k] = eid
        events = await self.get_events(wanted.values())
        return {k: events[v].pdu for k, v in wanted.items() if v in events}

    async def get_current_state_event_id(self, room_id: str, event_type: str, state_key: str) -> str | None:
        return await self.db.fetchval(
            "SELECT event_id FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3",
            room_id, event_type, state_key,
        )

    async def update_current_state(
        self, conn: Connection, room_id: str, changes: Mapping[StateKey, str | None], memberships: Mapping[str, str],
    ) -> None:
        """Apply ``changes`` (None removes a key). ``memberships`` gives the membership of member events."""
        for (etype, skey), event_id in changes.items():
            await conn.execute(
                "DELETE FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3", room_id, etype, skey
            )
            if event_id is not None:
                await conn.execute(
                    "INSERT INTO current_state (room_id, type, state_key, event_id, membership) VALUES ($1, $2, $3, $4, $5)",
                    room_id, etype, skey, event_id, memberships.get(event_id) if etype == "m.room.member" else None,
                )

    async def rooms_for_user(self, user_id: str, memberships: tuple[str, ...] = ("join",)) -> dict[str, str]:
        """room_id -> membership for the user's current memberships among ``memberships``."""
        marks = placeholders(len(memberships), 2)
        rows = await self.db.fetch(
            "SELECT room_id, membership FROM current_state WHERE type = 'm.room.member' AND state_key = $1"
            f" AND membership IN ({marks})",
            user_id, *memberships,
        )
        return {r[0]: r[1] for r in rows}

    async def users_sharing_rooms(self, user_id: str) -> set[str]:
        rows = await self.db.fetch(
            "SELECT DISTINCT other.state_key FROM current_state mine JOIN current_state other"
            " ON other.room_id = mine.room_id AND other.type = 'm.room.member' AND other.membership = 'join'"
            " WHERE mine.type = 'm.room.member' AND mine.state_key = $1 AND mine.membership = 'join'",
            user_id,
        )
        return {r[0] for r in rows}

    async def users_in_public_rooms(self) -> set[str]:
        rows = await self.db.fetch(
            "SELECT DISTINCT cs.state_key FROM current_state cs JOIN rooms r ON r.room_id = cs.room_id"
            " WHERE r.is_public = 1 AND cs.type = 'm.room.member' AND cs.membership = 'join'"
        )
        return {r[0] for r in rows}

    async def members(self, room_id: str, memberships: tuple[str, ...] = ("join",)) -> list[str]:
        marks = placeholders(len(memberships), 2)
        rows = await self.db.fetch(
            "SELECT state_key FROM current_state WHERE room_id = $1 AND type = 'm.room.member'"
            f" AND membership IN ({marks}) ORDER BY state_key",
            room_id, *memberships,
        )
        return [r[0] for r in rows]

    async def membership_events_between(self, room_ids: list[str], since: int, upto: int) -> list[tuple[str, str, str]]:
        """(room, user, membership) for each membership change in those rooms within (since, upto], in order."""
        out: list[tuple[str, str, str]] = []
        for i in range(0, len(room_ids), 500):
            chunk = room_ids[i:i + 500]
            rows = await self.db.fetch(
                "SELECT room_id, state_key, json, stream_ordering FROM events WHERE type = 'm.room.member'"
                f" AND stream_ordering > $1 AND stream_ordering <= $2 AND room_id IN ({placeholders(len(chunk), 3)})"
                " AND outlier = 0 AND rejected IS NULL",
                since, upto, *chunk,
            )
            for r in sorted(rows, key=lambda r: r[3]):
                membership = orjson.loads(r[2]).get("content", {}).get("membership")
                if isinstance(membership, str):
                    out.append((r[0], r[1], membership))
        return out

    async def joined_member_events(self, room_id: str) -> dict[str, str]:
        """Joined members and the event ID of each one's current membership event."""
        rows = await self.db.fetch(
            "SELECT state_key, event_id FROM current_state WHERE room_id = $1 AND type = 'm.room.member'"
            " AND membership = 'join'",
            room_id,
        )
        return {r[0]: r[1] for r in rows}

    # --- transaction IDs ---------------------------------------------------------------------

    async def get_txn_event(self, user_id: str, device_id: str, txn_id: str) -> str | None:
        return await self.db.fetchval(
            "SELECT event_id FROM event_txn_ids WHERE user_id = $1 AND device_id = $2 AND txn_id = $3",
            user_id, device_id, txn_id,
        )

    async def add_txn_event(self, conn: Connection, user_id: str, device_id: str, txn_id: str, event_id: str, ts: int) -> None:
        await conn.execute(
            "INSERT INTO event_txn_ids (user_id, device_id, txn_id, event_id, created_ts) VALUES ($1, $2, $3, $4, $5)",
            user_id, device_id, txn_id, event_id, ts,
        )


class AliasStore:
    """Room aliases (#name:server) and forgotten rooms."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, alias: str, room_id: str, creator: str, ts: int) -> bool:
        inserted = await self.db.execute(
            "INSERT INTO room_aliases (alias, room_id, creator, created_ts) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (alias) DO NOTHING",
            alias, room_id, creator, ts,
        )
        return inserted > 0

    async def get(self, alias: str) -> tuple[str, str | None] | None:
        row = await self.db.fetchrow("SELECT room_id, creator FROM room_aliases WHERE alias = $1", alias)
        return (row[0], row[1]) if row else None

    async def delete(self, alias: str) -> bool:
        return (await self.db.execute("DELETE FROM room_aliases WHERE alias = $1", alias)) > 0

    async def for_room(self, room_id: str) -> list[str]:
        return [r[0] for r in await self.db.fetch("SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias", room_id)]

    async def forget(self, user_id: str, room_id: str) -> None:
        await self.db.execute(
            "INSERT INTO forgotten_rooms (user_id, room_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", user_id, room_id
        )

    async def unforget(self, user_id: str, room_id: str) -> None:
        await self.db.execute("DELETE FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2", user_id, room_id)

    async def forgotten(self, user_id: str) -> set[str]:
        return {r[0] for r in await self.db.fetch("SELECT room_id FROM forgotten_rooms WHERE user_id = $1", user_id)}
