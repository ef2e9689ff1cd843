"""Which events relate to which (edits, threads, references, reactions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from homeserver.storage.database import Connection, Database, placeholders


@dataclass(frozen=True)
class Relation:
    event_id: str
    relates_to_id: str
    rel_type: str
    type: str
    sender: str
    stream_ordering: int
    origin_server_ts: int


def relation_of(pdu: Mapping[str, Any]) -> tuple[str, str] | None:
    """(rel_type, target event ID) if the event declares a relation."""
    rel = (pdu.get("content") or {}).get("m.relates_to")
    if isinstance(rel, dict) and isinstance(rel.get("rel_type"), str) and isinstance(rel.get("event_id"), str):
        return rel["rel_type"], rel["event_id"]
    return None


_COLS = "event_id, relates_to_id, rel_type, type, sender, stream_ordering, origin_server_ts"


def _rel(r: Any) -> Relation:
    return Relation(r[0], r[1], r[2], r[3], r[4], int(r[5]), int(r[6]))


class RelationStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, conn: Connection, event_id: str, room_id: str, pdu: Mapping[str, Any], stream_ordering: int) -> None:
        rel = relation_of(pdu)
        if rel is None or "state_key" in pdu:
            return
        await conn.execute(
            "INSERT INTO event_relations (event_id, relates_to_id, rel_type, room_id, type, sender, stream_ordering,"
            " origin_server_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            event_id, rel[1], rel[0], room_id, pdu["type"], pdu["sender"], stream_ordering,
            int(pdu.get("origin_server_ts", 0)),
        )

    async def thread_of(self, event_id: str) -> str | None:
        """The root of the thread ``event_id`` is in, if it was sent into one."""
        return await self.db.fetchval(
            "SELECT relates_to_id FROM event_relations WHERE event_id = $1 AND rel_type = 'm.thread'", event_id
        )

    async def remove(self, conn: Connection, event_id: str) -> None:
        """A redacted event loses its content, and with it its relation."""
        await conn.execute("DELETE FROM event_relations WHERE event_id = $1", event_id)

    async def children(
        self, target: str, *, rel_type: str | None = None, event_type: str | None = None,
        after: int | None = None, before: int | None = None, limit: int = 50, newest_first: bool = True,
    ) -> list[Relation]:
        where, args = ["relates_to_id = $1"], [target]
        for cond, value in (("rel_type", rel_type), ("type", event_type)):
            if value is not None:
                args.append(value)
                where.append(f"{cond} = ${len(args)}")
        if after is not None:
            args.append(after)
            where.append(f"stream_ordering > ${len(args)}")
        if before is not None:
            args.append(before)
            where.append(f"stream_ordering < ${len(args)}")
        order = "DESC" if newest_first else "ASC"
        rows = await self.db.fetch(
            f"SELECT {_COLS} FROM event_relations WHERE {' AND '.join(where)} ORDER BY stream_ordering {order} LIMIT {int(limit)}",
            *args,
        )
        return [_rel(r) for r in rows]

    async def for_targets(self, targets: Iterable[str]) -> list[Relation]:
        ids = list(targets)
        out: list[Relation] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = placeholders(len(chunk))
            rows = await self.db.fetch(
                f"SELECT {_COLS} FROM event_relations WHERE relates_to_id IN ({marks}) AND rel_type IN"
                " ('m.replace', 'm.thread', 'm.reference')", *chunk,
            )
            out += [_rel(r) for r in rows]
        return out

    async def threads(self, room_id: str, *, before: int | None, limit: int, participant: str | None) -> list[tuple[str, int]]:
        """Thread roots by latest activity: (root event ID, stream of its latest thread event)."""
        args: list[Any] = [room_id]
        having = ""
        if before is not None:
            args.append(before)
            having = f" HAVING MAX(stream_ordering) < ${len(args)}"
        rows = await self.db.fetch(
            "SELECT relates_to_id, MAX(stream_ordering) FROM event_relations WHERE room_id = $1 AND rel_type = 'm.thread'"
            f" GROUP BY relates_to_id{having} ORDER BY MAX(stream_ordering) DESC",
            *args,
        )
        out = []
        for r in rows:
            if participant is not None:
                mine = await self.db.fetchrow(
                    "SELECT 1 FROM event_relations WHERE relates_to_id = $1 AND rel_type = 'm.thread' AND sender = $2",
                    r[0], participant,
                )
                root_sender = await self.db.fetchval("SELECT sender FROM events WHERE event_id = $1", r[0])
                if mine is None and root_sender != participant:
                    continue
            out.append((r[0], int(r[1])))
            if len(out) >= limit:
                break
        return out
