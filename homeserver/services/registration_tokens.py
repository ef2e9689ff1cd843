"""Registration tokens: creation with Synapse's rules, validity, and the UIA stage that spends them."""

from __future__ import annotations

import re
import string
from typing import Any

from homeserver.clock import Clock
from homeserver.errors import MatrixError
from homeserver.services.tokens import random_string
from homeserver.storage import Storage
from homeserver.storage.registration_tokens import RegistrationToken
from homeserver.storage.uia import UiaSession

TOKEN_CHARS = string.ascii_letters + string.digits + "._~-"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9._~-]{1,64}$")


class RegistrationTokenService:
    def __init__(self, storage: Storage, clock: Clock) -> None:
        self.storage = storage
        self.clock = clock

    async def create(
        self, token: str | None = None, *, uses_allowed: int | None = None, expiry_time: int | None = None,
        length: int = 16,
    ) -> RegistrationToken:
        if uses_allowed is not None and (isinstance(uses_allowed, bool) or not isinstance(uses_allowed, int) or uses_allowed < 0):
            raise MatrixError(400, "M_INVALID_PARAM", "uses_allowed must be a non-negative integer or null")
        if expiry_time is not None and (isinstance(expiry_time, bool) or not isinstance(expiry_time, int) or expiry_time < self.clock.time_ms()):
            raise MatrixError(400, "M_INVALID_PARAM", "expiry_time must not be in the past")
        if token is None:
            if isinstance(length, bool) or not isinstance(length, int) or not 0 < length <= 64:
                raise MatrixError(400, "M_INVALID_PARAM", "length must be an integer between 1 and 64")
            for _ in range(5):
                token = random_string(length, TOKEN_CHARS)
                if await self.storage.registration_tokens.create(token, uses_allowed, expiry_time, self.clock.time_ms()):
                    break
            else:
                raise MatrixError(500, "M_UNKNOWN", "Could not generate a unique token")
        else:
            if not isinstance(token, str) or not _TOKEN_RE.match(token):
                raise MatrixError(400, "M_INVALID_PARAM", "token must be 1-64 characters from A-Z, a-z, 0-9, ., _, ~ and -")
            if not await self.storage.registration_tokens.create(token, uses_allowed, expiry_time, self.clock.time_ms()):
                raise MatrixError(400, "M_INVALID_PARAM", f"Token already exists: {token}")
        created = await self.storage.registration_tokens.get(token)
        assert created is not None
        return created

    async def is_valid(self, token: str) -> bool:
        rec = await self.storage.registration_tokens.get(token) if _TOKEN_RE.match(token) else None
        return rec is not None and rec.is_valid(self.clock.time_ms())

    def stage(self) -> Any:
        """UIA's m.login.registration_token stage: reserves one use until registration completes."""

        async def check(auth: dict[str, Any], session: UiaSession) -> bool:
            token = auth.get("token")
            if not isinstance(token, str):
                raise MatrixError(400, "M_MISSING_PARAM", "Missing parameter: token")
            if session.params.get("registration_token") == token:
                return True
            if session.params.get("registration_token"):
                raise MatrixError(401, "M_UNAUTHORIZED", "A different registration token was already used in this session")
            async with self.storage.db.transaction() as conn:
                ok = _TOKEN_RE.match(token) and await self.storage.registration_tokens.reserve(conn, token, self.clock.time_ms())
            if not ok:
                raise MatrixError(401, "M_UNAUTHORIZED", "Invalid registration token")
            await self.storage.uia.set_params(session.session_id, {**session.params, "registration_token": token})
            return True

        return check

    async def release_abandoned(self, params_list: list[dict[str, Any]]) -> None:
        """Give back uses reserved by UIA sessions that expired without registering."""
        async with self.storage.db.transaction() as conn:
            for params in params_list:
                if params.get("registration_token") and not params.get("registered"):
                    await self.storage.registration_tokens.release(conn, params["registration_token"])
