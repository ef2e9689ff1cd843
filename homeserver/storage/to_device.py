"""To-device messages: a per-device inbox on the to_device stream, emptied as the device's sync acknowledges."""

from __future__ import annotations

from typing import Any

import orjson

from homeserver.storage.database import Database
from homeserver.storage.sequences import next_id


class ToDeviceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(
        self, sender: str, sender_device: str | None, txn_id: str | None, ts: int,
        messages: list[tuple[str, str, dict[str, Any]]],
    ) -> int | None:
        """Queue (user, device, message) rows in one transaction. Returns the stream position, or None
        when ``txn_id`` was already used by this sender's device (the retry is acknowledged, not re-sent)."""
        async with self.db.transaction() as conn:
            if txn_id is not None and sender_device is not None:
                seen = await conn.fetchval(
                    "SELECT 1 FROM to_device_txns WHERE user_id = $1 AND device_id = $2 AND txn_id = $3",
                    sender, sender_device, txn_id,
                )
                if seen:
                    return None
                await conn.execute(
                    "INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ts) VALUES ($1, $2, $3, $4)",
                    sender, sender_device, txn_id, ts,
                )
            stream_id = await next_id(conn, "to_device")
            if messages:
                await conn.executemany(
                    "INSERT INTO to_device_messages (stream_id, user_id, device_id, message_json) VALUES ($1, $2, $3, $4)"
                    " ON CONFLICT DO NOTHING",
                    [(stream_id, user, device, orjson.dumps(msg).decode()) for user, device, msg in messages],
                )
            return stream_id

    async def delete_upto(self, user_id: str, device_id: str, upto: int) -> None:
        await self.db.execute(
            "DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND stream_id <= $3",
            user_id, device_id, upto,
        )

    async def fetch(self, user_id: str, device_id: str, after: int, upto: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
        rows = await self.db.fetch(
            "SELECT stream_id, message_json FROM to_device_messages WHERE user_id = $1 AND device_id = $2"
            f" AND stream_id > $3 AND stream_id <= $4 ORDER BY stream_id LIMIT {int(limit)}",
            user_id, device_id, after, upto,
        )
        return [(int(r[0]), orjson.loads(r[1])) for r in rows]
