"""Full-text search. The one store whose SQL differs per engine: FTS5 on SQLite, tsvector on PostgreSQL."""

from __future__ import annotations

import re
from typing import Any, Mapping

from homeserver.storage.database import Connection, Database, placeholders

# What is indexed, per event type: the key clients name in /search and where its text lives.
SEARCHABLE = {"m.room.message": "content.body", "m.room.name": "content.name", "m.room.topic": "content.topic"}
_WORD = re.compile(r"\w+", re.UNICODE)


def search_words(term: str) -> list[str]:
    return _WORD.findall(term.lower())[:20]


class SearchStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def index(self, conn: Connection, event_id: str, room_id: str, pdu: Mapping[str, Any], stream_ordering: int) -> None:
        key = SEARCHABLE.get(pdu.get("type", ""))
        if key is None:
            return
        value = (pdu.get("content") or {}).get(key.split(".", 1)[1])
        if not isinstance(value, str) or not value.strip():
            return
        ts = int(pdu.get("origin_server_ts", 0))
        if self.db.engine == "sqlite":
            await conn.execute(
                "INSERT INTO event_search (value, event_id, room_id, key, stream_ordering, origin_server_ts)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                value, event_id, room_id, key, stream_ordering, ts,
            )
        else:
            await conn.execute(
                "INSERT INTO event_search (event_id, room_id, key, value, vector, stream_ordering, origin_server_ts)"
                " VALUES ($1, $2, $3, $4, to_tsvector('simple', $4), $5, $6)",
                event_id, room_id, key, value, stream_ordering, ts,
            )

    async def remove(self, conn: Connection, event_id: str) -> None:
        await conn.execute("DELETE FROM event_search WHERE event_id = $1", event_id)

    async def search(
        self, room_ids: list[str], term: str, keys: list[str], *, order_recent: bool, offset: int, limit: int,
    ) -> tuple[list[tuple[str, float]], int]:
        """(event ID, rank) for matches in ``room_ids``, and the total count."""
        words = search_words(term)
        if not words or not room_ids or not keys:
            return [], 0
        rmarks = placeholders(len(room_ids), 2)
        kstart = len(room_ids) + 2
        kmarks = placeholders(len(keys), kstart)
        if self.db.engine == "sqlite":
            # Every word must match; a word also matches as a prefix (so "budg" finds "budget").
            query = " AND ".join(f'"{w}"*' for w in words)
            where = f"event_search MATCH $1 AND room_id IN ({rmarks}) AND key IN ({kmarks})"
            rank = "-bm25(event_search)"
        else:
            query = " & ".join(f"{w}:*" for w in words)
            where = f"vector @@ to_tsquery('simple', $1) AND room_id IN ({rmarks}) AND key IN ({kmarks})"
            rank = "ts_rank(vector, to_tsquery('simple', $1))"
        args = [query, *room_ids, *keys]
        total = int(await self.db.fetchval(f"SELECT COUNT(*) FROM event_search WHERE {where}", *args))
        order = "CAST(stream_ordering AS BIGINT) DESC" if order_recent else f"{rank} DESC, CAST(stream_ordering AS BIGINT) DESC"
        rows = await self.db.fetch(
            f"SELECT event_id, {rank} FROM event_search WHERE {where} ORDER BY {order} LIMIT {int(limit)} OFFSET {int(offset)}",
            *args,
        )
        return [(r[0], float(r[1])) for r in rows], total
