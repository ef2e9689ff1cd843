"""Filters uploaded by clients, numbered per user."""

from __future__ import annotations

from typing import Any

import orjson

from homeserver.storage.database import Database


class FilterStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, user_id: str, body: dict[str, Any]) -> int:
        async with self.db.transaction() as conn:
            current = await conn.fetchval("SELECT MAX(filter_id) FROM user_filters WHERE user_id = $1", user_id)
            filter_id = int(current if current is not None else -1) + 1
            await conn.execute(
                "INSERT INTO user_filters (user_id, filter_id, filter_json) VALUES ($1, $2, $3)",
                user_id, filter_id, orjson.dumps(body).decode(),
            )
        return filter_id

    async def get(self, user_id: str, filter_id: int) -> dict[str, Any] | None:
        raw = await self.db.fetchval(
            "SELECT filter_json FROM user_filters WHERE user_id = $1 AND filter_id = $2", user_id, filter_id
        )
        return orjson.loads(raw) if raw is not None else None
