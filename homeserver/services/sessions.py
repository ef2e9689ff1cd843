"""Sessions: devices with their access and refresh tokens, and authenticating requests by token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable

from homeserver.clock import Clock
from homeserver.config import Config
from homeserver.errors import MatrixError
from homeserver.services.tokens import new_access_token, new_device_id, new_refresh_token, token_hash
from homeserver.storage import Connection, Storage
from homeserver.storage.e2e_keys import DeviceChange

# How stale a device's last-seen record may get before a request writes it again: one write per
# device per minute instead of one per request.
LAST_SEEN_WRITE_INTERVAL_MS = 60_000


@dataclass(frozen=True)
class Requester:
    user_id: str
    device_id: str
    token_hash: str
    is_admin: bool
    puppeted_by: str | None = None
    app_service: str | None = None  # the appservice acting through its as_token


@dataclass(frozen=True)
class LoginResult:
    user_id: str
    device_id: str
    access_token: str
    refresh_token: str | None
    expires_in_ms: int | None

    def to_json(self, server_name: str) -> dict[str, object]:
        out: dict[str, object] = {
            "user_id": self.user_id, "access_token": self.access_token, "device_id": self.device_id,
            "home_server": server_name,
        }
        if self.refresh_token is not None:
            out["refresh_token"] = self.refresh_token
        if self.expires_in_ms is not None:
            out["expires_in_ms"] = self.expires_in_ms
        return out


def unknown_token(message: str = "Unrecognised access token", soft_logout: bool = False) -> MatrixError:
    return MatrixError(401, "M_UNKNOWN_TOKEN", message, soft_logout=soft_logout)


class SessionService:
    def __init__(self, storage: Storage, config: Config, clock: Clock) -> None:
        self.storage = storage
        self.config = config
        self.clock = clock
        self._last_seen: dict[tuple[str, str], int] = {}
        self._chain_settled: set[str] = set()
        # Set by the composition root: a logout removes devices, which other users' clients, other
        # servers and E2EE appservices must hear of (or they keep encrypting for a device that is gone).
        # Called with the user and the deletions (which device, at which device-list position).
        self.on_devices_gone: Callable[[str, list[DeviceChange]], Awaitable[None]] | None = None

    async def create_session(
        self, conn: Connection, user_id: str, *, device_id: str | None = None, display_name: str | None = None,
        refreshable: bool = False, puppeted_by: str | None = None,
    ) -> LoginResult:
        """Create (or reuse) a device and issue its tokens, inside the caller's transaction."""
        now = self.clock.time_ms()
        device_id = device_id or new_device_id()
        await self.storage.devices.upsert_device(conn, user_id, device_id, display_name, now)
        access = new_access_token()
        refresh = None
        lifetime = self.config.session_lifetime
        refresh_hash = None
        if refreshable:
            refresh = new_refresh_token()
            refresh_hash = token_hash(refresh)
            lifetime = self.config.refreshable_access_token_lifetime
            expiry = now + self.config.refresh_token_lifetime if self.config.refresh_token_lifetime else None
            await self.storage.devices.add_refresh_token(conn, refresh_hash, user_id, device_id, now, expiry)
        valid_until = now + lifetime if lifetime else None
        await self.storage.devices.add_access_token(
            conn, token_hash(access), user_id, device_id, now, valid_until, refresh_hash, puppeted_by
        )
        return LoginResult(user_id, device_id, access, refresh, lifetime if refreshable else None)

    async def authenticate(self, token: str, *, ip: str | None = None, user_agent: str | None = None) -> Requester:
        digest = token_hash(token)
        rec = await self.storage.devices.get_access_token(digest)
        if rec is None or rec.deactivated:
            raise unknown_token()
        now = self.clock.time_ms()
        if rec.valid_until_ts is not None and rec.valid_until_ts <= now:
            raise unknown_token("Access token has expired", soft_logout=True)
        if rec.locked:
            raise MatrixError(401, "M_USER_LOCKED", "This account has been locked", soft_logout=True)
        if rec.refresh_token_hash is not None and rec.refresh_token_hash not in self._chain_settled:
            # First use of an access token from a refresh: the refresh token before it is now dead.
            async with self.storage.db.transaction() as conn:
                previous = await self.storage.devices.previous_refresh_token(conn, rec.refresh_token_hash)
                if previous is not None:
                    await self.storage.devices.retire_refresh_chain(conn, previous)
            self._chain_settled.add(rec.refresh_token_hash)
            if len(self._chain_settled) > 100_000:
                self._chain_settled.clear()
        key = (rec.user_id, rec.device_id)
        if now - self._last_seen.get(key, 0) >= LAST_SEEN_WRITE_INTERVAL_MS:
            self._last_seen[key] = now
            await self.storage.devices.touch(rec.user_id, rec.device_id, now, ip, (user_agent or "")[:512] or None)
        return Requester(rec.user_id, rec.device_id, digest, rec.admin, rec.puppeted_by)

    async def refresh(self, refresh_token: str) -> LoginResult:
        """Exchange a refresh token for new tokens (spec: the old pair stays valid until the new one is used)."""
        if not isinstance(refresh_token, str) or not refresh_token:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing parameter: refresh_token")
        digest = token_hash(refresh_token)
        now = self.clock.time_ms()
        async with self.storage.db.transaction() as conn:
            rec = await self.storage.devices.get_refresh_token(conn, digest)
            if rec is None:
                raise unknown_token("Unknown refresh token")
            if rec.expiry_ts is not None and rec.expiry_ts <= now:
                raise unknown_token("Refresh token has expired", soft_logout=False)
            if rec.next_token_hash is not None:
                # Exchanged before. The spec keeps it valid until its successor is used, so a client
                # that lost the response can retry: replace the unused successor with a new one.
                successor = await self.storage.devices.get_refresh_token(conn, rec.next_token_hash)
                if successor is None or successor.next_token_hash is not None:
                    raise unknown_token("Refresh token has already been used")
                await self.storage.devices.retire_refresh_chain(conn, rec.next_token_hash)
            # Using this token proves the previous one in the chain is no longer needed.
            previous = await self.storage.devices.previous_refresh_token(conn, digest)
            if previous is not None:
                await self.storage.devices.retire_refresh_chain(conn, previous)
            result = await self.create_session(conn, rec.user_id, device_id=rec.device_id, refreshable=True)
            assert result.refresh_token is not None
            await self.storage.devices.mark_refresh_token_used(conn, digest, token_hash(result.refresh_token))
            return result

    async def logout(self, requester: Requester) -> None:
        """Log out this session: per the spec the device goes too, with all its tokens."""
        async with self.storage.db.transaction() as conn:
            gone = await self.storage.devices.delete_devices(conn, requester.user_id, [requester.device_id])
        self._last_seen.pop((requester.user_id, requester.device_id), None)
        if self.on_devices_gone is not None:
            await self.on_devices_gone(requester.user_id, gone)

    async def logout_all(self, user_id: str) -> None:
        async with self.storage.db.transaction() as conn:
            ids = await self.storage.devices.device_ids(conn, user_id)
            gone = await self.storage.devices.delete_devices(conn, user_id, ids)
            await self.storage.devices.delete_access_tokens_for_user(conn, user_id)
        if ids and self.on_devices_gone is not None:
            await self.on_devices_gone(user_id, gone)
