"""POST /register: closed by default (registration tokens), optionally open (m.login.dummy)."""

from __future__ import annotations

from typing import Any

from homeserver.clock import Clock
from homeserver.config import Config
from homeserver.errors import MatrixError
from homeserver.services.accounts import AccountService, session_options
from homeserver.services.passwords import check_password_policy
from homeserver.services.ratelimit import RateLimiter
from homeserver.services.registration_tokens import RegistrationTokenService
from homeserver.services.tokens import random_string
from homeserver.services.uia import UiaRequired, UiaService
from homeserver.storage import Storage

TOKEN_STAGE = "m.login.registration_token"
DUMMY_STAGE = "m.login.dummy"


class RegistrationService:
    def __init__(
        self, storage: Storage, config: Config, clock: Clock, accounts: AccountService, uia: UiaService,
        tokens: RegistrationTokenService, ratelimiter: RateLimiter,
    ) -> None:
        self.storage = storage
        self.config = config
        self.clock = clock
        self.accounts = accounts
        self.uia = uia
        self.tokens = tokens
        self.ratelimiter = ratelimiter

    def flows(self) -> list[list[str]]:
        flows = [[TOKEN_STAGE]]
        if self.config.enable_registration and not self.config.registration_requires_token:
            flows.append([DUMMY_STAGE])
        return flows

    async def register(self, *, kind: str, body: dict[str, Any], method: str, uri: str, ip: str) -> dict[str, Any]:
        if kind == "guest":
            raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is disabled")
        if kind != "user":
            raise MatrixError(400, "M_INVALID_PARAM", "kind must be 'user' or 'guest'")
        self.ratelimiter.check("register", ip, self.config.rc_registration)

        # Validate what can be validated before the client spends a token on a doomed request.
        username = body.get("username")
        if username is not None:
            if not isinstance(username, str):
                raise MatrixError(400, "M_INVALID_USERNAME", "username must be a string")
            username = username.lower()
            await self.accounts.check_available(username)
        password = body.get("password")
        if password is not None:
            check_password_policy(password, self.config.password_config.policy)
        inhibit_login = body.get("inhibit_login", False)
        if not isinstance(inhibit_login, bool):
            raise MatrixError(400, "M_INVALID_PARAM", "inhibit_login must be a boolean")
        session_options(body)

        try:
            result = await self.uia.authenticate(
                method=method, uri=uri, body=body, flows=self.flows(),
                checkers={TOKEN_STAGE: self.tokens.stage(), DUMMY_STAGE: _dummy},
            )
        except UiaRequired as pending:
            # Clients may leave the password out of later steps: keep its hash (never the password).
            if password is not None:
                await self._remember_password(pending.body["session"], password)
            raise
        merged = result.clientdict
        password_hash = result.session.params.get("password_hash")
        if password is None and password_hash is None:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing parameter: password")
        if username is None and isinstance(merged.get("username"), str):
            username = merged["username"].lower()
        if username is None:
            username = await self._generate_localpart()

        token = result.session.params.get("registration_token")
        if password is not None:
            password_hash = await self.accounts.hash_new_password(password)
        async with self.storage.db.transaction() as conn:
            user_id = await self.accounts.create_user(conn, username, password_hash)
            if token:
                await self.storage.registration_tokens.complete(conn, token)
            login = None
            if not inhibit_login:
                device_id, display_name, refreshable = session_options(merged)
                login = await self.accounts.sessions.create_session(
                    conn, user_id, device_id=device_id, display_name=display_name, refreshable=refreshable
                )
        await self.uia.finish(result.session)
        if login is None:
            return {"user_id": user_id, "home_server": self.config.server_name}
        return login.to_json(self.config.server_name)

    async def register_for_appservice(self, service: Any, body: dict[str, Any]) -> dict[str, Any]:
        """m.login.application_service: a user in the appservice's namespace, without a password."""
        username = body.get("username")
        if not isinstance(username, str) or not username:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing parameter: username")
        localpart = self.accounts.validate_localpart(username.lower())
        user_id = f"@{localpart}:{self.config.server_name}"
        if not service.owns_user(user_id):
            raise MatrixError(400, "M_EXCLUSIVE", "This user ID is not in the application service's namespace")
        inhibit_login = body.get("inhibit_login", False)
        if not isinstance(inhibit_login, bool):
            raise MatrixError(400, "M_INVALID_PARAM", "inhibit_login must be a boolean")
        async with self.storage.db.transaction() as conn:
            await self.accounts.create_user(conn, localpart, None, appservice_id=service.id)
            login = None
            if not inhibit_login:
                device_id, display_name, refreshable = session_options(body)
                login = await self.accounts.sessions.create_session(
                    conn, user_id, device_id=device_id, display_name=display_name, refreshable=refreshable)
        if login is None:
            return {"user_id": user_id, "home_server": self.config.server_name}
        return login.to_json(self.config.server_name)

    async def _remember_password(self, session_id: str, password: str) -> None:
        session = await self.storage.uia.get(session_id)
        if session is not None:
            params = {**session.params, "password_hash": await self.accounts.hasher.hash(password)}
            await self.storage.uia.set_params(session_id, params)

    async def _generate_localpart(self) -> str:
        for _ in range(10):
            candidate = "u" + random_string(11, "abcdefghijklmnopqrstuvwxyz0123456789")
            if not await self.storage.users.exists(f"@{candidate}:{self.config.server_name}"):
                return candidate
        raise MatrixError(500, "M_UNKNOWN", "Could not generate a user ID")


async def _dummy(auth: dict[str, Any], session: Any) -> bool:
    return True
