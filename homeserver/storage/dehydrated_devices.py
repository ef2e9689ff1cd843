"""MSC3814 dehydrated devices: which device of a user is the dehydrated one, and its opaque data."""

from __future__ import annotations

from typing import Any

import orjson

from homeserver.storage.database import Connection, Database


class DehydratedDeviceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, user_id: str) -> tuple[str, dict[str, Any]] | None:
        row = await self.db.fetchrow("SELECT device_id, device_data FROM dehydrated_devices WHERE user_id = $1", user_id)
        return (row[0], orjson.loads(row[1])) if row else None

    async def set(self, conn: Connection, user_id: str, device_id: str, data: dict[str, Any]) -> None:
        await conn.execute("DELETE FROM dehydrated_devices WHERE user_id = $1", user_id)
        await conn.execute(
            "INSERT INTO dehydrated_devices (user_id, device_id, device_data) VALUES ($1, $2, $3)",
            user_id, device_id, orjson.dumps(data).decode(),
        )

    async def clear(self, conn: Connection, user_id: str) -> None:
        await conn.execute("DELETE FROM dehydrated_devices WHERE user_id = $1", user_id)
