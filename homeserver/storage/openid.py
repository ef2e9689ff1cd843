"""OpenID tokens (hashed at rest) for /openid/request_token and federation's /openid/userinfo."""

from __future__ import annotations

from homeserver.storage.database import Database


class OpenIdStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, token_hash: str, user_id: str, expires_ts: int, now: int) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM openid_tokens WHERE expires_ts <= $1", now)
            await conn.execute(
                "INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)",
                token_hash, user_id, expires_ts,
            )

    async def user_for(self, token_hash: str, now: int) -> str | None:
        return await self.db.fetchval(
            "SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_ts > $2", token_hash, now
        )
