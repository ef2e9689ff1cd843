"""OpenID: a short-lived token a user gives to a third party (widgets, integrations, a MatrixRTC call
service) which that party exchanges with this server, over federation, for the user's ID — and nothing else."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from homeserver.clock import Clock
from homeserver.errors import MatrixError, forbidden
from homeserver.storage import Storage

TOKEN_LIFETIME_S = 3600


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class OpenIdService:
    def __init__(self, storage: Storage, clock: Clock, server_name: str) -> None:
        self.storage = storage
        self.clock = clock
        self.server_name = server_name

    async def request_token(self, requester: str, user_id: str) -> dict[str, Any]:
        if requester != user_id:
            raise forbidden("You may only request OpenID tokens for yourself")
        token = secrets.token_urlsafe(32)
        now = self.clock.time_ms()
        await self.storage.openid.add(_hash(token), user_id, now + TOKEN_LIFETIME_S * 1000, now)
        return {"access_token": token, "token_type": "Bearer", "matrix_server_name": self.server_name,
                "expires_in": TOKEN_LIFETIME_S}

    async def userinfo(self, token: str | None) -> dict[str, Any]:
        if not token:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Missing access_token")
        user_id = await self.storage.openid.user_for(_hash(token), self.clock.time_ms())
        if user_id is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Access token unknown or expired")
        return {"sub": user_id}
