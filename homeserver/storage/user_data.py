"""Account data and receipts, each a stream: every write takes the next position of its sequence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from homeserver.storage.database import Database, placeholders
from homeserver.storage.sequences import next_id


@dataclass(frozen=True)
class Receipt:
    room_id: str
    receipt_type: str
    user_id: str
    thread_id: str
    event_id: str
    ts: int


class UserDataStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- account data ------------------------------------------------------------------------

    async def put_account_data(self, user_id: str, room_id: str, data_type: str, content: dict[str, Any]) -> int:
        async with self.db.transaction() as conn:
            stream_id = await next_id(conn, "account_data")
            await conn.execute(
                "DELETE FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3", user_id, room_id, data_type
            )
            await conn.execute(
                "INSERT INTO account_data (user_id, room_id, type, content, stream_id) VALUES ($1, $2, $3, $4, $5)",
                user_id, room_id, data_type, orjson.dumps(content).decode(), stream_id,
            )
        return stream_id

    async def get_account_data(self, user_id: str, room_id: str, data_type: str) -> dict[str, Any] | None:
        raw = await self.db.fetchval(
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3", user_id, room_id, data_type
        )
        return orjson.loads(raw) if raw is not None else None

    async def account_data_since(self, user_id: str, since: int, upto: int) -> dict[str, dict[str, dict[str, Any]]]:
        """room_id ('' for global) -> type -> content, for entries written in (since, upto]."""
        rows = await self.db.fetch(
            "SELECT room_id, type, content FROM account_data WHERE user_id = $1 AND stream_id > $2 AND stream_id <= $3",
            user_id, since, upto,
        )
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for r in rows:
            out.setdefault(r[0], {})[r[1]] = orjson.loads(r[2])
        return out

    # --- receipts ----------------------------------------------------------------------------

    async def put_receipt(self, r: Receipt) -> int:
        async with self.db.transaction() as conn:
            stream_id = await next_id(conn, "receipts")
            await conn.execute(
                "DELETE FROM receipts WHERE room_id = $1 AND receipt_type = $2 AND user_id = $3 AND thread_id = $4",
                r.room_id, r.receipt_type, r.user_id, r.thread_id,
            )
            await conn.execute(
                "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, ts, stream_id)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                r.room_id, r.receipt_type, r.user_id, r.thread_id, r.event_id, r.ts, stream_id,
            )
        return stream_id

    async def receipts_for_rooms(self, room_ids: list[str], since: int, upto: int) -> list[Receipt]:
        if not room_ids:
            return []
        out: list[Receipt] = []
        for start in range(0, len(room_ids), 500):
            chunk = room_ids[start:start + 500]
            marks = placeholders(len(chunk), 3)
            rows = await self.db.fetch(
                "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts FROM receipts"
                f" WHERE stream_id > $1 AND stream_id <= $2 AND room_id IN ({marks})",
                since, upto, *chunk,
            )
            out += [Receipt(r[0], r[1], r[2], r[3], r[4], int(r[5])) for r in rows]
        return out

    async def read_receipts(self, room_id: str, user_id: str) -> list[Receipt]:
        """A user's public and private read receipts in a room, in every thread."""
        rows = await self.db.fetch(
            "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts FROM receipts"
            " WHERE room_id = $1 AND user_id = $2 AND receipt_type IN ('m.read', 'm.read.private')",
            room_id, user_id,
        )
        return [Receipt(r[0], r[1], r[2], r[3], r[4], int(r[5])) for r in rows]

    async def get_receipt(self, room_id: str, receipt_type: str, user_id: str, thread_id: str = "") -> Receipt | None:
        r = await self.db.fetchrow(
            "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts FROM receipts"
            " WHERE room_id = $1 AND receipt_type = $2 AND user_id = $3 AND thread_id = $4",
            room_id, receipt_type, user_id, thread_id,
        )
        return Receipt(r[0], r[1], r[2], r[3], r[4], int(r[5])) if r else None
