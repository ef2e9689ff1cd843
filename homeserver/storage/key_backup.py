"""Server-side key backup: backup versions and the encrypted session keys stored in them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from homeserver.storage.database import Connection, Database


@dataclass(frozen=True)
class BackupVersion:
    user_id: str
    version: int
    algorithm: str
    auth_data: dict[str, Any]
    etag: int


@dataclass(frozen=True)
class BackedUpKey:
    room_id: str
    session_id: str
    first_message_index: int
    forwarded_count: int
    is_verified: bool
    session_data: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"first_message_index": self.first_message_index, "forwarded_count": self.forwarded_count,
                "is_verified": self.is_verified, "session_data": self.session_data}


_VCOLS = "user_id, version, algorithm, auth_data, etag"
_KCOLS = "room_id, session_id, first_message_index, forwarded_count, is_verified, session_data"


def _version(r: Any) -> BackupVersion:
    return BackupVersion(r[0], int(r[1]), r[2], orjson.loads(r[3]), int(r[4]))


def _key(r: Any) -> BackedUpKey:
    return BackedUpKey(r[0], r[1], int(r[2]), int(r[3]), bool(r[4]), orjson.loads(r[5]))


def _where(user_id: str, version: int, room_id: str | None, session_id: str | None) -> tuple[list[str], list[Any]]:
    """Conditions for all keys of a backup, of one room, or of one session."""
    where, args = ["user_id = $1", "version = $2"], [user_id, version]
    if room_id is not None:
        args.append(room_id)
        where.append(f"room_id = ${len(args)}")
    if session_id is not None:
        args.append(session_id)
        where.append(f"session_id = ${len(args)}")
    return where, args


class KeyBackupStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_version(self, user_id: str, algorithm: str, auth_data: dict[str, Any]) -> int:
        async with self.db.transaction() as conn:
            last = await conn.fetchval("SELECT MAX(version) FROM e2e_room_keys_versions WHERE user_id = $1", user_id)
            version = int(last or 0) + 1
            await conn.execute(
                "INSERT INTO e2e_room_keys_versions (user_id, version, algorithm, auth_data, etag, deleted)"
                " VALUES ($1, $2, $3, $4, 0, 0)",
                user_id, version, algorithm, orjson.dumps(auth_data).decode(),
            )
            return version

    async def get_version(self, user_id: str, version: int | None = None, conn: Connection | None = None) -> BackupVersion | None:
        """A live backup version, or the latest one when ``version`` is None."""
        db = conn or self.db
        if version is None:
            r = await db.fetchrow(
                f"SELECT {_VCOLS} FROM e2e_room_keys_versions WHERE user_id = $1 AND deleted = 0"
                " ORDER BY version DESC LIMIT 1", user_id,
            )
        else:
            r = await db.fetchrow(
                f"SELECT {_VCOLS} FROM e2e_room_keys_versions WHERE user_id = $1 AND version = $2 AND deleted = 0",
                user_id, version,
            )
        return _version(r) if r else None

    async def update_auth_data(self, user_id: str, version: int, auth_data: dict[str, Any]) -> None:
        await self.db.execute(
            "UPDATE e2e_room_keys_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2",
            user_id, version, orjson.dumps(auth_data).decode(),
        )

    async def delete_version(self, user_id: str, version: int) -> bool:
        async with self.db.transaction() as conn:
            n = await conn.execute(
                "UPDATE e2e_room_keys_versions SET deleted = 1 WHERE user_id = $1 AND version = $2 AND deleted = 0",
                user_id, version,
            )
            await conn.execute("DELETE FROM e2e_room_keys WHERE user_id = $1 AND version = $2", user_id, version)
            return n > 0

    async def count(self, user_id: str, version: int) -> int:
        return int(await self.db.fetchval(
            "SELECT COUNT(*) FROM e2e_room_keys WHERE user_id = $1 AND version = $2", user_id, version
        ))

    async def get_keys(self, user_id: str, version: int, room_id: str | None = None, session_id: str | None = None) -> list[BackedUpKey]:
        where, args = _where(user_id, version, room_id, session_id)
        rows = await self.db.fetch(f"SELECT {_KCOLS} FROM e2e_room_keys WHERE {' AND '.join(where)}", *args)
        return [_key(r) for r in rows]

    async def existing_keys(self, conn: Connection, user_id: str, version: int, room_id: str) -> dict[str, BackedUpKey]:
        rows = await conn.fetch(
            f"SELECT {_KCOLS} FROM e2e_room_keys WHERE user_id = $1 AND version = $2 AND room_id = $3",
            user_id, version, room_id,
        )
        return {r[1]: _key(r) for r in rows}

    async def put_key(self, conn: Connection, user_id: str, version: int, key: BackedUpKey) -> None:
        await conn.execute(
            "DELETE FROM e2e_room_keys WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4",
            user_id, version, key.room_id, key.session_id,
        )
        await conn.execute(
            f"INSERT INTO e2e_room_keys (user_id, version, {_KCOLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            user_id, version, key.room_id, key.session_id, key.first_message_index, key.forwarded_count,
            int(key.is_verified), orjson.dumps(key.session_data).decode(),
        )

    async def delete_keys(self, conn: Connection, user_id: str, version: int, room_id: str | None, session_id: str | None) -> int:
        where, args = _where(user_id, version, room_id, session_id)
        return await conn.execute(f"DELETE FROM e2e_room_keys WHERE {' AND '.join(where)}", *args)

    async def bump_etag(self, conn: Connection, user_id: str, version: int) -> int:
        return int(await conn.fetchval(
            "UPDATE e2e_room_keys_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2 RETURNING etag",
            user_id, version,
        ))
