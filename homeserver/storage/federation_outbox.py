"""The persisted outbound federation queue: one row per (destination, PDU or durable EDU)."""

from __future__ import annotations

from typing import Any

import orjson

from homeserver.storage.database import Database, placeholders
from homeserver.storage.sequences import next_id


class FederationOutboxStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, destinations: list[str], kind: str, body: dict[str, Any]) -> dict[str, int]:
        """destination -> the row's sequence number."""
        raw = orjson.dumps(body).decode()
        out: dict[str, int] = {}
        async with self.db.transaction() as conn:
            for dest in destinations:
                seq = await next_id(conn, "federation_outbox")
                await conn.execute(
                    "INSERT INTO federation_outbox (seq, destination, kind, body) VALUES ($1, $2, $3, $4)",
                    seq, dest, kind, raw,
                )
                out[dest] = seq
        return out

    async def remove(self, seqs: list[int]) -> None:
        for i in range(0, len(seqs), 500):
            chunk = seqs[i:i + 500]
            await self.db.execute(f"DELETE FROM federation_outbox WHERE seq IN ({placeholders(len(chunk))})", *chunk)

    async def pending(self) -> list[tuple[int, str, str, dict[str, Any]]]:
        rows = await self.db.fetch("SELECT seq, destination, kind, body FROM federation_outbox ORDER BY seq")
        return [(int(r[0]), r[1], r[2], orjson.loads(r[3])) for r in rows]
