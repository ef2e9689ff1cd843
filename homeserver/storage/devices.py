"""Devices and the access and refresh tokens bound to them (stored as SHA-256 digests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from homeserver.storage.e2e_keys import DeviceChange, E2eKeyStore
from homeserver.storage.database import Connection, Database


@dataclass(frozen=True)
class DeviceRecord:
    user_id: str
    device_id: str
    display_name: str | None
    created_ts: int
    last_seen_ts: int | None
    last_seen_ip: str | None
    last_seen_user_agent: str | None


@dataclass(frozen=True)
class AccessTokenRecord:
    user_id: str
    device_id: str
    valid_until_ts: int | None
    refresh_token_hash: str | None
    puppeted_by: str | None
    admin: bool
    deactivated: bool
    locked: bool


@dataclass(frozen=True)
class RefreshTokenRecord:
    token_hash: str
    user_id: str
    device_id: str
    expiry_ts: int | None
    next_token_hash: str | None


def _device(r: Any) -> DeviceRecord:
    return DeviceRecord(r[0], r[1], r[2], int(r[3]), r[4], r[5], r[6])


_DEV_COLS = "user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip, last_seen_user_agent"


class DeviceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- devices -----------------------------------------------------------------------------

    async def upsert_device(
        self, conn: Connection, user_id: str, device_id: str, display_name: str | None, now: int
    ) -> bool:
        """Create the device if new (True), else leave it and its name alone (False), as Synapse does."""
        inserted = await conn.execute(
            "INSERT INTO devices (user_id, device_id, display_name, created_ts) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (user_id, device_id) DO NOTHING",
            user_id, device_id, display_name, now,
        )
        return inserted > 0

    async def get_device(self, user_id: str, device_id: str) -> DeviceRecord | None:
        row = await self.db.fetchrow(
            f"SELECT {_DEV_COLS} FROM devices WHERE user_id = $1 AND device_id = $2", user_id, device_id
        )
        return _device(row) if row else None

    async def list_devices(self, user_id: str) -> list[DeviceRecord]:
        rows = await self.db.fetch(f"SELECT {_DEV_COLS} FROM devices WHERE user_id = $1 ORDER BY device_id", user_id)
        return [_device(r) for r in rows]

    async def set_display_name(self, user_id: str, device_id: str, name: str | None) -> bool:
        changed = await self.db.execute(
            "UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2", user_id, device_id, name
        )
        return changed > 0

    async def touch(self, user_id: str, device_id: str, ts: int, ip: str | None, user_agent: str | None) -> None:
        await self.db.execute(
            "UPDATE devices SET last_seen_ts = $3, last_seen_ip = $4, last_seen_user_agent = $5"
            " WHERE user_id = $1 AND device_id = $2",
            user_id, device_id, ts, ip, user_agent,
        )

    async def delete_devices(self, conn: Connection, user_id: str, device_ids: list[str]) -> list[DeviceChange]:
        """Delete devices and every token bound to them, in the caller's transaction. Returns the
        deletions of devices that existed, each at its own device-list position, so other servers can
        be told of each one (an m.device_list_update per position)."""
        keys = E2eKeyStore(self.db)
        existing = set(await self.device_ids(conn, user_id)) & set(device_ids)
        gone: list[DeviceChange] = []
        for device_id in device_ids:
            await keys.delete_device_data(conn, user_id, device_id)
            await conn.execute("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2", user_id, device_id)
            await conn.execute("DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2", user_id, device_id)
            # A logged-out device's pushers stop too (as Synapse does for the access token that set them).
            await conn.execute("DELETE FROM pushers WHERE user_id = $1 AND device_id = $2", user_id, device_id)
            await conn.execute("DELETE FROM devices WHERE user_id = $1 AND device_id = $2", user_id, device_id)
        # Other users' clients must learn the device is gone (and stop encrypting for it).
        for device_id in sorted(existing):
            gone.append(DeviceChange(device_id, await keys.mark_device_list_changed(conn, [user_id]), deleted=True))
        return gone

    async def device_ids(self, conn: Connection, user_id: str) -> list[str]:
        return [r[0] for r in await conn.fetch("SELECT device_id FROM devices WHERE user_id = $1", user_id)]

    # --- access tokens -----------------------------------------------------------------------

    async def add_access_token(
        self, conn: Connection, token_hash: str, user_id: str, device_id: str, now: int,
        valid_until_ts: int | None, refresh_token_hash: str | None = None, puppeted_by: str | None = None,
    ) -> None:
        await conn.execute(
            "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, valid_until_ts,"
            " refresh_token_hash, puppeted_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            token_hash, user_id, device_id, now, valid_until_ts, refresh_token_hash, puppeted_by,
        )

    async def get_access_token(self, token_hash: str) -> AccessTokenRecord | None:
        # One query per authenticated request: the user's flags come along so no second lookup is needed.
        row = await self.db.fetchrow(
            "SELECT t.user_id, t.device_id, t.valid_until_ts, t.refresh_token_hash, t.puppeted_by,"
            " u.admin, u.deactivated, u.locked"
            " FROM access_tokens t JOIN users u ON u.user_id = t.user_id WHERE t.token_hash = $1",
            token_hash,
        )
        if row is None:
            return None
        return AccessTokenRecord(row[0], row[1], row[2], row[3], row[4], bool(row[5]), bool(row[6]), bool(row[7]))

    async def delete_access_token(self, conn: Connection, token_hash: str) -> None:
        await conn.execute("DELETE FROM access_tokens WHERE token_hash = $1", token_hash)

    async def delete_access_tokens_for_user(
        self, conn: Connection, user_id: str, except_device: str | None = None
    ) -> list[str]:
        """Remove the user's access tokens (all, or all but one device's); returns the device IDs affected."""
        if except_device is None:
            rows = await conn.fetch("SELECT DISTINCT device_id FROM access_tokens WHERE user_id = $1", user_id)
            await conn.execute("DELETE FROM access_tokens WHERE user_id = $1", user_id)
            await conn.execute("DELETE FROM refresh_tokens WHERE user_id = $1", user_id)
        else:
            rows = await conn.fetch(
                "SELECT DISTINCT device_id FROM access_tokens WHERE user_id = $1 AND device_id <> $2",
                user_id, except_device,
            )
            await conn.execute("DELETE FROM access_tokens WHERE user_id = $1 AND device_id <> $2", user_id, except_device)
            await conn.execute("DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id <> $2", user_id, except_device)
        return [r[0] for r in rows]

    # --- refresh tokens ----------------------------------------------------------------------

    async def add_refresh_token(
        self, conn: Connection, token_hash: str, user_id: str, device_id: str, now: int, expiry_ts: int | None
    ) -> None:
        await conn.execute(
            "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts, expiry_ts)"
            " VALUES ($1, $2, $3, $4, $5)",
            token_hash, user_id, device_id, now, expiry_ts,
        )

    async def get_refresh_token(self, conn: Connection, token_hash: str) -> RefreshTokenRecord | None:
        row = await conn.fetchrow(
            "SELECT token_hash, user_id, device_id, expiry_ts, next_token_hash FROM refresh_tokens WHERE token_hash = $1",
            token_hash,
        )
        return RefreshTokenRecord(row[0], row[1], row[2], row[3], row[4]) if row else None

    async def mark_refresh_token_used(self, conn: Connection, token_hash: str, next_token_hash: str) -> None:
        await conn.execute("UPDATE refresh_tokens SET next_token_hash = $2 WHERE token_hash = $1", token_hash, next_token_hash)

    async def retire_refresh_chain(self, conn: Connection, used_hash: str) -> None:
        """Once the successor of ``used_hash`` is used, the old token and its access tokens can go."""
        await conn.execute("DELETE FROM access_tokens WHERE refresh_token_hash = $1", used_hash)
        await conn.execute("DELETE FROM refresh_tokens WHERE token_hash = $1", used_hash)

    async def previous_refresh_token(self, conn: Connection, token_hash: str) -> str | None:
        return await conn.fetchval("SELECT token_hash FROM refresh_tokens WHERE next_token_hash = $1", token_hash)
