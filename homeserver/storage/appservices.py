"""The persisted per-appservice delivery queue and the transaction IDs it has used."""

from __future__ import annotations

from typing import Any

import orjson

from homeserver.storage.database import Database
from homeserver.storage.sequences import next_id


class AppServiceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def enqueue(self, items: list[tuple[str, str, dict[str, Any]]]) -> None:
        """(appservice ID, kind, body) rows, in order."""
        if not items:
            return
        async with self.db.transaction() as conn:
            last = await next_id(conn, "appservice_queue", len(items))
            first = last - len(items) + 1
            await conn.executemany(
                "INSERT INTO appservice_queue (seq, as_id, kind, body) VALUES ($1, $2, $3, $4)",
                [(first + i, as_id, kind, orjson.dumps(body).decode()) for i, (as_id, kind, body) in enumerate(items)],
            )

    async def pending(self, as_id: str, upto: int | None, limit: int) -> list[tuple[int, str, dict[str, Any]]]:
        if upto is None:
            rows = await self.db.fetch(
                f"SELECT seq, kind, body FROM appservice_queue WHERE as_id = $1 ORDER BY seq LIMIT {int(limit)}", as_id)
        else:
            rows = await self.db.fetch(
                "SELECT seq, kind, body FROM appservice_queue WHERE as_id = $1 AND seq <= $2 ORDER BY seq", as_id, upto)
        return [(int(r[0]), r[1], orjson.loads(r[2])) for r in rows]

    async def txn_state(self, as_id: str) -> tuple[int, int | None, int | None]:
        """(last delivered txn ID, txn ID being delivered, last queue row it carries)."""
        r = await self.db.fetchrow("SELECT last_txn_id, pending_txn_id, pending_upto FROM appservice_txns WHERE as_id = $1", as_id)
        if r is None:
            return 0, None, None
        return int(r[0]), None if r[1] is None else int(r[1]), None if r[2] is None else int(r[2])

    async def start_txn(self, as_id: str, txn_id: int, upto: int) -> None:
        async with self.db.transaction() as conn:
            n = await conn.execute(
                "UPDATE appservice_txns SET pending_txn_id = $2, pending_upto = $3 WHERE as_id = $1", as_id, txn_id, upto)
            if not n:
                await conn.execute(
                    "INSERT INTO appservice_txns (as_id, last_txn_id, pending_txn_id, pending_upto) VALUES ($1, 0, $2, $3)",
                    as_id, txn_id, upto)

    async def finish_txn(self, as_id: str, txn_id: int, upto: int) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM appservice_queue WHERE as_id = $1 AND seq <= $2", as_id, upto)
            await conn.execute(
                "UPDATE appservice_txns SET last_txn_id = $2, pending_txn_id = NULL, pending_upto = NULL WHERE as_id = $1",
                as_id, txn_id)
