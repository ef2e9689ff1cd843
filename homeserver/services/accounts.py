"""Accounts: registration, password login, password changes and deactivation."""

from __future__ import annotations

from typing import Any, Callable

from homeserver.clock import Clock
from homeserver.config import Config
from homeserver.errors import MatrixError, forbidden
from homeserver.services.passwords import PasswordHasher, check_password_policy
from homeserver.services.sessions import LoginResult, SessionService
from homeserver.storage import Connection, Storage
from homeserver.types import MAX_USER_ID_LENGTH, is_valid_localpart, split_user_id


class AccountService:
    def __init__(
        self, storage: Storage, config: Config, clock: Clock, hasher: PasswordHasher, sessions: SessionService
    ) -> None:
        self.storage = storage
        self.config = config
        self.clock = clock
        self.hasher = hasher
        self.sessions = sessions
        # Set when application services are registered: does one claim this user ID exclusively?
        self.exclusive_user: Callable[[str], object] | None = None

    @property
    def server_name(self) -> str:
        return self.config.server_name

    def validate_localpart(self, localpart: object) -> str:
        """Check a requested localpart the way Synapse does, so the same names are accepted on both."""
        if not isinstance(localpart, str) or not localpart:
            raise MatrixError(400, "M_INVALID_USERNAME", "User ID cannot be empty")
        if not is_valid_localpart(localpart):
            raise MatrixError(400, "M_INVALID_USERNAME", "User ID can only contain characters a-z, 0-9, or '=_-./+'")
        if localpart.startswith("_"):
            raise MatrixError(400, "M_INVALID_USERNAME", "User ID may not begin with _")
        if localpart.isdigit():
            raise MatrixError(400, "M_INVALID_USERNAME", "Numeric user IDs are reserved for guest users")
        if len(f"@{localpart}:{self.server_name}") > MAX_USER_ID_LENGTH:
            raise MatrixError(400, "M_INVALID_USERNAME", f"User ID may not be longer than {MAX_USER_ID_LENGTH} characters")
        return localpart

    async def check_available(self, localpart: object) -> str:
        name = self.validate_localpart(localpart)
        user_id = f"@{name}:{self.server_name}"
        if self.exclusive_user is not None and self.exclusive_user(user_id):
            raise MatrixError(400, "M_EXCLUSIVE", "This user ID is reserved for an application service")
        if await self.storage.users.find_case_insensitive(user_id):
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken")
        return user_id

    async def hash_new_password(self, password: object, *, check_policy: bool = True) -> str:
        """Check the policy and hash; done before any transaction so the slow hash never holds a write lock."""
        if check_policy:
            password = check_password_policy(password, self.config.password_config.policy)
        elif not isinstance(password, str) or not password:
            raise MatrixError(400, "M_BAD_JSON", "password must be a non-empty string")
        return await self.hasher.hash(password)

    async def create_user(
        self, conn: Connection, localpart: str, password_hash: str | None, *, admin: bool = False,
        displayname: str | None = None, user_type: str | None = None, appservice_id: str | None = None,
    ) -> str:
        """Create the account inside the caller's transaction; M_USER_IN_USE if the name is taken."""
        self.validate_localpart(localpart)
        user_id = f"@{localpart}:{self.server_name}"
        if await self.storage.users.find_case_insensitive(user_id):
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken")
        created = await self.storage.users.create(
            conn, user_id, password_hash, admin=admin, creation_ts=self.clock.time_ms(), user_type=user_type,
            appservice_id=appservice_id,
        )
        if not created:
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken")
        await self.storage.users.set_profile_field(conn, user_id, "displayname", displayname or localpart)
        return user_id

    async def resolve_login_user(self, body: dict[str, Any]) -> str:
        """Find the local user a login/UIA identifier names (m.id.user, or the legacy top-level ``user``)."""
        identifier = body.get("identifier")
        if identifier is None and "user" in body:
            identifier = {"type": "m.id.user", "user": body["user"]}
        if not isinstance(identifier, dict):
            raise MatrixError(400, "M_MISSING_PARAM", "Missing parameter: identifier")
        id_type = identifier.get("type")
        if id_type != "m.id.user":
            raise MatrixError(400, "M_UNKNOWN", f"Unsupported identifier type: {id_type!r}")
        user = identifier.get("user")
        if not isinstance(user, str) or not user:
            raise MatrixError(400, "M_INVALID_PARAM", "identifier.user must be a non-empty string")
        if user.startswith("@"):
            parts = split_user_id(user)
            if parts is None or parts[1] != self.server_name:
                raise forbidden("Invalid username or password")
            user_id = user
        else:
            user_id = f"@{user}:{self.server_name}"
        if await self.storage.users.exists(user_id):
            return user_id
        # Users type their names in any case; accept it when exactly one account matches.
        matches = await self.storage.users.find_case_insensitive(user_id)
        if len(matches) == 1:
            return matches[0]
        raise forbidden("Invalid username or password")

    async def check_password(self, user_id: str, password: object) -> None:
        """Raise M_FORBIDDEN unless ``password`` is this user's; deactivated users get M_USER_DEACTIVATED."""
        if not self.config.password_config.enabled:
            raise forbidden("Password login has been disabled on this server")
        if not isinstance(password, str):
            raise MatrixError(400, "M_BAD_JSON", "password must be a string")
        user = await self.storage.users.get(user_id)
        ok = await self.hasher.verify(user.password_hash if user else None, password)
        if user is not None and user.deactivated:
            # Only say so when the password was right, so deactivation doesn't leak to a guesser.
            if ok or user.password_hash is None:
                raise MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated")
        if user is None or not ok:
            raise forbidden("Invalid username or password")
        if user.locked:
            raise MatrixError(401, "M_USER_LOCKED", "This account has been locked", soft_logout=True)

    async def login_with_password(self, body: dict[str, Any]) -> LoginResult:
        user_id = await self.resolve_login_user(body)
        await self.check_password(user_id, body.get("password"))
        return await self.start_session(user_id, body)

    async def start_session(self, user_id: str, body: dict[str, Any]) -> LoginResult:
        device_id, display_name, refreshable = session_options(body)
        async with self.storage.db.transaction() as conn:
            return await self.sessions.create_session(
                conn, user_id, device_id=device_id, display_name=display_name, refreshable=refreshable
            )

    async def change_password(
        self, user_id: str, new_password: object, *, logout_devices: bool, keep_device: str | None,
        check_policy: bool = True,
    ) -> None:
        new_hash = await self.hash_new_password(new_password, check_policy=check_policy)
        async with self.storage.db.transaction() as conn:
            await self.storage.users.set_password_hash(conn, user_id, new_hash)
            if logout_devices:
                ids = [d for d in await self.storage.devices.device_ids(conn, user_id) if d != keep_device]
                await self.storage.devices.delete_devices(conn, user_id, ids)
                await self.storage.devices.delete_access_tokens_for_user(conn, user_id, except_device=keep_device)

    async def deactivate(self, user_id: str, *, erase: bool = False) -> None:
        """Deactivate: no password, no devices, no tokens, no profile; the ID stays reserved forever."""
        async with self.storage.db.transaction() as conn:
            user = await self.storage.users.get(user_id, conn)
            if user is None:
                raise MatrixError(404, "M_NOT_FOUND", "User not found")
            await self.storage.users.set_password_hash(conn, user_id, None)
            await self.storage.users.set_flags(conn, user_id, deactivated=True, erased=erase or user.erased)
            ids = await self.storage.devices.device_ids(conn, user_id)
            await self.storage.devices.delete_devices(conn, user_id, ids)
            await self.storage.devices.delete_access_tokens_for_user(conn, user_id)
            await self.storage.users.clear_profile(conn, user_id)

    async def reactivate(self, user_id: str, password: str | None) -> None:
        password_hash = await self.hasher.hash(password) if password else None
        async with self.storage.db.transaction() as conn:
            await self.storage.users.set_flags(conn, user_id, deactivated=False, erased=False)
            if password_hash:
                await self.storage.users.set_password_hash(conn, user_id, password_hash)


def session_options(body: dict[str, Any]) -> tuple[str | None, str | None, bool]:
    """The device and refresh options shared by /login and /register."""
    device_id = body.get("device_id")
    if device_id is not None and (not isinstance(device_id, str) or not device_id or len(device_id) > 255):
        raise MatrixError(400, "M_INVALID_PARAM", "device_id must be a non-empty string of at most 255 characters")
    name = body.get("initial_device_display_name")
    if name is not None and (not isinstance(name, str) or len(name) > 512):
        raise MatrixError(400, "M_INVALID_PARAM", "initial_device_display_name must be a string of at most 512 characters")
    refresh = body.get("refresh_token", False)
    if not isinstance(refresh, bool):
        raise MatrixError(400, "M_INVALID_PARAM", "refresh_token must be a boolean")
    return device_id, name, refresh


def password_stage(accounts: AccountService, expected_user_id: str) -> "StageChecker":
    """UIA's m.login.password stage for an authenticated request: the user must prove it is themselves."""

    async def check(auth: dict[str, Any], session: Any) -> str:
        user_id = await accounts.resolve_login_user(auth)
        if user_id != expected_user_id:
            raise forbidden("Invalid username or password")
        await accounts.check_password(user_id, auth.get("password"))
        return user_id

    return check


from homeserver.services.uia import StageChecker  # noqa: E402  (type only; uia does not import accounts)
