"""User-interactive authentication sessions, kept in the database so they survive restarts and workers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from homeserver.storage.database import Database


@dataclass(frozen=True)
class UiaSession:
    session_id: str
    created_ts: int
    method: str
    uri: str
    clientdict: dict[str, Any]
    params: dict[str, Any]
    completed: dict[str, Any]  # stage type -> result (e.g. the user ID a password stage proved)


class UiaStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, session_id: str, now: int, method: str, uri: str, clientdict: dict[str, Any]) -> None:
        await self.db.execute(
            "INSERT INTO uia_sessions (session_id, created_ts, method, uri, clientdict) VALUES ($1, $2, $3, $4, $5)",
            session_id, now, method, uri, orjson.dumps(clientdict).decode(),
        )

    async def get(self, session_id: str) -> UiaSession | None:
        row = await self.db.fetchrow(
            "SELECT session_id, created_ts, method, uri, clientdict, params FROM uia_sessions WHERE session_id = $1",
            session_id,
        )
        if row is None:
            return None
        done = await self.db.fetch("SELECT stage_type, result FROM uia_completed WHERE session_id = $1", session_id)
        return UiaSession(
            row[0], int(row[1]), row[2], row[3], orjson.loads(row[4]), orjson.loads(row[5]),
            {r[0]: orjson.loads(r[1]) for r in done},
        )

    async def mark_completed(self, session_id: str, stage: str, result: Any) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM uia_completed WHERE session_id = $1 AND stage_type = $2", session_id, stage)
            await conn.execute(
                "INSERT INTO uia_completed (session_id, stage_type, result) VALUES ($1, $2, $3)",
                session_id, stage, orjson.dumps(result).decode(),
            )

    async def set_params(self, session_id: str, params: dict[str, Any]) -> None:
        await self.db.execute(
            "UPDATE uia_sessions SET params = $2 WHERE session_id = $1", session_id, orjson.dumps(params).decode()
        )

    async def delete(self, session_id: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM uia_completed WHERE session_id = $1", session_id)
            await conn.execute("DELETE FROM uia_sessions WHERE session_id = $1", session_id)

    async def delete_older_than(self, ts: int) -> list[dict[str, Any]]:
        """Expire abandoned sessions; returns their params so reserved registration tokens can be released."""
        rows = await self.db.fetch("SELECT session_id, params FROM uia_sessions WHERE created_ts < $1", ts)
        for r in rows:
            await self.delete(r[0])
        return [orjson.loads(r[1]) for r in rows]
