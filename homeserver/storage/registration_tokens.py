"""Registration tokens: the invitation codes that are the normal way onto a closed government server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from homeserver.storage.database import Connection, Database


@dataclass(frozen=True)
class RegistrationToken:
    token: str
    uses_allowed: int | None
    pending: int
    completed: int
    expiry_time: int | None

    def is_valid(self, now_ms: int) -> bool:
        if self.expiry_time is not None and self.expiry_time <= now_ms:
            return False
        if self.uses_allowed is not None and self.pending + self.completed >= self.uses_allowed:
            return False
        return True


def _tok(r: Any) -> RegistrationToken:
    return RegistrationToken(r[0], r[1], int(r[2]), int(r[3]), r[4])


_COLS = "token, uses_allowed, pending, completed, expiry_time"


class RegistrationTokenStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, token: str, uses_allowed: int | None, expiry_time: int | None, now: int) -> bool:
        inserted = await self.db.execute(
            "INSERT INTO registration_tokens (token, uses_allowed, expiry_time, created_ts) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (token) DO NOTHING",
            token, uses_allowed, expiry_time, now,
        )
        return inserted > 0

    async def get(self, token: str, conn: Connection | None = None) -> RegistrationToken | None:
        row = await (conn or self.db).fetchrow(f"SELECT {_COLS} FROM registration_tokens WHERE token = $1", token)
        return _tok(row) if row else None

    async def list(self) -> list[RegistrationToken]:
        return [_tok(r) for r in await self.db.fetch(f"SELECT {_COLS} FROM registration_tokens ORDER BY created_ts, token")]

    async def update(self, token: str, changes: dict[str, int | None]) -> RegistrationToken | None:
        async with self.db.transaction() as conn:
            for key in ("uses_allowed", "expiry_time"):
                if key in changes:
                    await conn.execute(f"UPDATE registration_tokens SET {key} = $2 WHERE token = $1", token, changes[key])
            return await self.get(token, conn)

    async def delete(self, token: str) -> bool:
        return (await self.db.execute("DELETE FROM registration_tokens WHERE token = $1", token)) > 0

    async def reserve(self, conn: Connection, token: str, now: int) -> bool:
        """Count a pending use if the token is still valid; atomic so two registrations can't share the last use."""
        changed = await conn.execute(
            "UPDATE registration_tokens SET pending = pending + 1 WHERE token = $1"
            " AND (expiry_time IS NULL OR expiry_time > $2)"
            " AND (uses_allowed IS NULL OR pending + completed < uses_allowed)",
            token, now,
        )
        return changed > 0

    async def complete(self, conn: Connection, token: str) -> None:
        await conn.execute(
            "UPDATE registration_tokens SET pending = pending - 1, completed = completed + 1"
            " WHERE token = $1 AND pending > 0",
            token,
        )

    async def release(self, conn: Connection, token: str) -> None:
        await conn.execute("UPDATE registration_tokens SET pending = pending - 1 WHERE token = $1 AND pending > 0", token)
