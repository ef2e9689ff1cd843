"""Server administration with Synapse's admin API semantics, so existing admin tools work unchanged."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from homeserver.clock import Clock
from homeserver.config import Config
from homeserver.errors import MatrixError
from homeserver.services.accounts import AccountService
from homeserver.services.devices import device_json
from homeserver.storage import Storage
from homeserver.storage.users import UserListQuery, UserRecord

NONCE_LIFETIME_MS = 60_000
MAX_NONCES = 10_000


class AdminService:
    def __init__(self, storage: Storage, config: Config, clock: Clock, accounts: AccountService) -> None:
        self.storage = storage
        self.config = config
        self.clock = clock
        self.accounts = accounts
        self._nonces: dict[str, int] = {}

    # --- shared-secret registration -----------------------------------------------------------

    def new_nonce(self) -> str:
        now = self.clock.time_ms()
        if len(self._nonces) > MAX_NONCES:
            self._nonces = {n: t for n, t in self._nonces.items() if now - t < NONCE_LIFETIME_MS}
        nonce = secrets.token_hex(32)
        self._nonces[nonce] = now
        return nonce

    async def shared_secret_register(self, body: dict[str, Any]) -> dict[str, Any]:
        secret = self.config.registration_shared_secret
        if not secret:
            raise MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled")
        nonce = body.get("nonce")
        issued = self._nonces.pop(nonce, None) if isinstance(nonce, str) else None
        if issued is None or self.clock.time_ms() - issued >= NONCE_LIFETIME_MS:
            raise MatrixError(400, "M_UNKNOWN", "unrecognised nonce")
        username, password = body.get("username"), body.get("password")
        for name, value in (("username", username), ("password", password)):
            if not isinstance(value, str) or not value or "\x00" in value or len(value) > 512:
                raise MatrixError(400, "M_INVALID_PARAM", f"Invalid {name}")
        admin = body.get("admin", False)
        if not isinstance(admin, bool):
            raise MatrixError(400, "M_INVALID_PARAM", "admin must be a boolean")
        user_type = body.get("user_type")
        if user_type is not None and user_type not in ("support", "bot"):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid user type")
        displayname = body.get("displayname")
        if displayname is not None and not isinstance(displayname, str):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid displayname")
        mac = body.get("mac")
        if not isinstance(mac, str):
            raise MatrixError(400, "M_MISSING_PARAM", "Missing parameter: mac")
        parts = [nonce, username, password, "admin" if admin else "notadmin"]
        if user_type is not None:
            parts.append(user_type)
        want = hmac.new(secret.encode(), "\x00".join(parts).encode(), hashlib.sha1).hexdigest()
        if not hmac.compare_digest(want, mac.lower()):
            raise MatrixError(403, "M_FORBIDDEN", "HMAC incorrect")
        localpart = username.lower()
        # Admin-created accounts are trusted to choose their own password, as in Synapse.
        pw_hash = await self.accounts.hash_new_password(password, check_policy=False)
        async with self.storage.db.transaction() as conn:
            user_id = await self.accounts.create_user(
                conn, localpart, pw_hash, admin=admin, displayname=displayname, user_type=user_type
            )
            login = await self.accounts.sessions.create_session(conn, user_id)
        return {"access_token": login.access_token, "user_id": user_id, "home_server": self.config.server_name,
                "device_id": login.device_id}

    # --- users -----------------------------------------------------------------------------

    def local_user(self, user_id: str) -> str:
        if not (user_id.startswith("@") and user_id.endswith(":" + self.config.server_name)):
            raise MatrixError(400, "M_INVALID_PARAM", "Can only look up local users")
        return user_id

    async def _summary(self, u: UserRecord, profile: dict[str, Any], last_seen: int | None) -> dict[str, Any]:
        return {
            "name": u.user_id, "is_guest": False, "admin": u.admin, "user_type": u.user_type,
            "deactivated": u.deactivated, "shadow_banned": u.shadow_banned,
            "displayname": profile.get("displayname"), "avatar_url": profile.get("avatar_url"),
            "creation_ts": u.creation_ts, "approved": True, "erased": u.erased, "last_seen_ts": last_seen,
            "locked": u.locked,
        }

    async def _last_seen(self, user_id: str) -> int | None:
        seen = [d.last_seen_ts for d in await self.storage.devices.list_devices(user_id) if d.last_seen_ts]
        return max(seen) if seen else None

    async def list_users(self, q: UserListQuery) -> dict[str, Any]:
        users, total = await self.storage.users.list(q)
        profiles = await self.storage.users.get_profiles([u.user_id for u in users])
        out: dict[str, Any] = {
            "users": [await self._summary(u, profiles[u.user_id], await self._last_seen(u.user_id)) for u in users],
            "total": total,
        }
        if q.offset + len(users) < total:
            out["next_token"] = str(q.offset + len(users))
        return out

    async def user_details(self, user_id: str) -> dict[str, Any]:
        u = await self.storage.users.get(self.local_user(user_id))
        if u is None:
            raise MatrixError(404, "M_NOT_FOUND", "User not found")
        details = await self._summary(u, await self.storage.users.get_profile(user_id), await self._last_seen(user_id))
        details.update({"threepids": [], "external_ids": [], "appservice_id": u.appservice_id,
                        "consent_server_notice_sent": None, "consent_version": None, "consent_ts": None})
        return details

    async def upsert_user(self, admin_id: str, user_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """PUT /_synapse/admin/v2/users/{userId}: 201 when created, 200 when modified."""
        self.local_user(user_id)
        for key in ("threepids", "external_ids"):
            if body.get(key):
                raise MatrixError(400, "M_INVALID_PARAM", f"{key} are not supported: Qasid keeps no third-party identifiers")
        for key in ("admin", "deactivated", "locked", "logout_devices"):
            if key in body and not isinstance(body[key], bool):
                raise MatrixError(400, "M_INVALID_PARAM", f"{key} must be a boolean")
        for key in ("password", "displayname", "avatar_url"):
            if key in body and body[key] is not None and not isinstance(body[key], str):
                raise MatrixError(400, "M_INVALID_PARAM", f"{key} must be a string")
        if body.get("user_type") not in (None, "support", "bot"):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid user type")
        existing = await self.storage.users.get(user_id)
        if existing is None:
            localpart = user_id[1:].split(":", 1)[0]
            password = body.get("password")
            pw_hash = await self.accounts.hash_new_password(password, check_policy=False) if password else None
            async with self.storage.db.transaction() as conn:
                await self.accounts.create_user(
                    conn, localpart, pw_hash, admin=body.get("admin", False), displayname=body.get("displayname"),
                    user_type=body.get("user_type"),
                )
                if body.get("avatar_url"):
                    await self.storage.users.set_profile_field(conn, user_id, "avatar_url", body["avatar_url"])
                if body.get("locked"):
                    await self.storage.users.set_flags(conn, user_id, locked=True)
            if body.get("deactivated"):
                await self.accounts.deactivate(user_id)
            return 201, await self.user_details(user_id)

        if body.get("deactivated") is False and existing.deactivated:
            if self.config.password_config.enabled and not body.get("password"):
                raise MatrixError(400, "M_MISSING_PARAM", "Must provide a password to re-activate an account.")
            await self.accounts.reactivate(user_id, body.get("password"))
        elif "password" in body and body["password"]:
            await self.accounts.change_password(
                user_id, body["password"], logout_devices=body.get("logout_devices", True), keep_device=None,
                check_policy=False,
            )
        async with self.storage.db.transaction() as conn:
            if "admin" in body:
                if user_id == admin_id and not body["admin"]:
                    raise MatrixError(400, "M_UNKNOWN", "You may not demote yourself.")
                await self.storage.users.set_flags(conn, user_id, admin=body["admin"])
            if "locked" in body:
                await self.storage.users.set_flags(conn, user_id, locked=body["locked"])
            if "user_type" in body:
                await self.storage.users.set_flags(conn, user_id, user_type=body["user_type"])
            for key in ("displayname", "avatar_url"):
                if key in body:
                    await self.storage.users.set_profile_field(conn, user_id, key, body[key] or None)
        if body.get("deactivated") is True and not existing.deactivated:
            await self.accounts.deactivate(user_id)
        return 200, await self.user_details(user_id)

    async def require_user(self, user_id: str) -> UserRecord:
        u = await self.storage.users.get(self.local_user(user_id))
        if u is None:
            raise MatrixError(404, "M_NOT_FOUND", "User not found")
        return u

    async def devices(self, user_id: str) -> dict[str, Any]:
        await self.require_user(user_id)
        devices = [{**device_json(d), "user_id": user_id} for d in await self.storage.devices.list_devices(user_id)]
        return {"devices": devices, "total": len(devices)}

    async def whois(self, user_id: str) -> dict[str, Any]:
        await self.require_user(user_id)
        out: dict[str, Any] = {}
        for d in await self.storage.devices.list_devices(user_id):
            conns = []
            if d.last_seen_ts is not None:
                conns.append({"ip": d.last_seen_ip, "last_seen": d.last_seen_ts, "user_agent": d.last_seen_user_agent})
            out[d.device_id] = {"sessions": [{"connections": conns}]}
        return {"user_id": user_id, "devices": out}
