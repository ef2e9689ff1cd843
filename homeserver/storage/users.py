"""Users and their profile fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from homeserver.storage.database import Connection, Database, placeholders


@dataclass(frozen=True)
class UserRecord:
    user_id: str
    password_hash: str | None
    admin: bool
    deactivated: bool
    locked: bool
    shadow_banned: bool
    erased: bool
    user_type: str | None
    appservice_id: str | None
    creation_ts: int


_COLUMNS = "user_id, password_hash, admin, deactivated, locked, shadow_banned, erased, user_type, appservice_id, creation_ts"


def _user(row: Any) -> UserRecord:
    return UserRecord(
        user_id=row[0], password_hash=row[1], admin=bool(row[2]), deactivated=bool(row[3]),
        locked=bool(row[4]), shadow_banned=bool(row[5]), erased=bool(row[6]), user_type=row[7],
        appservice_id=row[8], creation_ts=int(row[9]),
    )


@dataclass(frozen=True)
class UserListQuery:
    offset: int = 0
    limit: int = 100
    name: str | None = None  # substring of the user ID or display name
    user_id: str | None = None  # substring of the user ID
    deactivated: bool = False  # include deactivated users
    only_deactivated: bool = False
    admins: bool | None = None
    order_by: str = "name"
    direction: str = "f"


_ORDER_COLUMNS = {
    "name": "u.user_id", "admin": "u.admin", "deactivated": "u.deactivated", "user_type": "u.user_type",
    "creation_ts": "u.creation_ts", "shadow_banned": "u.shadow_banned", "locked": "u.locked",
    "displayname": "d.value", "avatar_url": "a.value", "is_guest": "u.user_id",
}


class UserStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self, conn: Connection, user_id: str, password_hash: str | None, *, admin: bool, creation_ts: int,
        user_type: str | None = None, appservice_id: str | None = None,
    ) -> bool:
        """Insert a user; False if the ID is taken (the caller maps that to M_USER_IN_USE).

        ON CONFLICT makes a concurrent registration of the same name a clean False, not an error.
        """
        inserted = await conn.execute(
            "INSERT INTO users (user_id, password_hash, admin, creation_ts, user_type, appservice_id)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id) DO NOTHING",
            user_id, password_hash, int(admin), creation_ts, user_type, appservice_id,
        )
        return inserted > 0

    async def appservice_users(self, as_id: str) -> list[str]:
        rows = await self.db.fetch("SELECT user_id FROM users WHERE appservice_id = $1 ORDER BY user_id", as_id)
        return [r[0] for r in rows]

    async def get(self, user_id: str, conn: Connection | None = None) -> UserRecord | None:
        row = await (conn or self.db).fetchrow(f"SELECT {_COLUMNS} FROM users WHERE user_id = $1", user_id)
        return _user(row) if row else None

    async def exists(self, user_id: str) -> bool:
        return (await self.db.fetchrow("SELECT 1 FROM users WHERE user_id = $1", user_id)) is not None

    async def find_case_insensitive(self, user_id: str) -> list[str]:
        rows = await self.db.fetch("SELECT user_id FROM users WHERE lower(user_id) = lower($1)", user_id)
        return [r[0] for r in rows]

    async def set_password_hash(self, conn: Connection, user_id: str, password_hash: str | None) -> None:
        await conn.execute("UPDATE users SET password_hash = $2 WHERE user_id = $1", user_id, password_hash)

    async def set_flags(self, conn: Connection, user_id: str, **flags: Any) -> None:
        allowed = {"admin", "deactivated", "locked", "shadow_banned", "erased", "user_type"}
        for key, value in flags.items():
            if key not in allowed:
                raise ValueError(key)
            stored = value if key == "user_type" else int(bool(value))
            await conn.execute(f"UPDATE users SET {key} = $2 WHERE user_id = $1", user_id, stored)

    async def count(self) -> int:
        return int(await self.db.fetchval("SELECT COUNT(*) FROM users"))

    async def list(self, q: UserListQuery) -> tuple[list[UserRecord], int]:
        where, args = ["1=1"], []
        if q.only_deactivated:
            where.append("u.deactivated = 1")
        elif not q.deactivated:
            where.append("u.deactivated = 0")
        if q.admins is not None:
            where.append(f"u.admin = {int(q.admins)}")
        if q.user_id:
            args.append(f"%{q.user_id.lower()}%")
            where.append(f"lower(u.user_id) LIKE ${len(args)}")
        if q.name:
            args.append(f"%{q.name.lower()}%")
            where.append(f"(lower(u.user_id) LIKE ${len(args)} OR lower(d.value) LIKE ${len(args)})")
        order = _ORDER_COLUMNS.get(q.order_by, "u.user_id")
        direction = "DESC" if q.direction == "b" else "ASC"
        base = (
            " FROM users u"
            " LEFT JOIN profile_fields d ON d.user_id = u.user_id AND d.field = 'displayname'"
            " LEFT JOIN profile_fields a ON a.user_id = u.user_id AND a.field = 'avatar_url'"
            f" WHERE {' AND '.join(where)}"
        )
        total = int(await self.db.fetchval("SELECT COUNT(*)" + base, *args))
        cols = ", ".join(f"u.{c.strip()}" for c in _COLUMNS.split(","))
        rows = await self.db.fetch(
            f"SELECT {cols}{base} ORDER BY {order} {direction}, u.user_id {direction}"
            f" LIMIT {int(q.limit)} OFFSET {int(q.offset)}",
            *args,
        )
        return [_user(r) for r in rows], total

    async def search_directory(self, term: str, candidates: list[str] | None, limit: int) -> list[tuple[str, str | None, str | None]]:
        """Active users whose ID or display name contains ``term`` (among ``candidates`` if given)."""
        like = f"%{term.lower()}%"
        args: list[Any] = [like]
        where = "u.deactivated = 0 AND (lower(u.user_id) LIKE $1 OR lower(d.value) LIKE $1)"
        if candidates is not None:
            if not candidates:
                return []
            marks = placeholders(len(candidates), 2)
            where += f" AND u.user_id IN ({marks})"
            args += candidates
        rows = await self.db.fetch(
            "SELECT u.user_id, d.value, a.value FROM users u"
            " LEFT JOIN profile_fields d ON d.user_id = u.user_id AND d.field = 'displayname'"
            " LEFT JOIN profile_fields a ON a.user_id = u.user_id AND a.field = 'avatar_url'"
            f" WHERE {where} ORDER BY u.user_id LIMIT {int(limit)}",
            *args,
        )
        return [(r[0], orjson.loads(r[1]) if r[1] else None, orjson.loads(r[2]) if r[2] else None) for r in rows]

    # --- profile -----------------------------------------------------------------------------

    async def get_profile(self, user_id: str) -> dict[str, Any]:
        rows = await self.db.fetch("SELECT field, value FROM profile_fields WHERE user_id = $1", user_id)
        return {r[0]: orjson.loads(r[1]) for r in rows}

    async def get_profiles(self, user_ids: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {u: {} for u in user_ids}
        for start in range(0, len(user_ids), 500):
            chunk = user_ids[start:start + 500]
            marks = placeholders(len(chunk))
            for r in await self.db.fetch(
                f"SELECT user_id, field, value FROM profile_fields WHERE user_id IN ({marks})", *chunk
            ):
                out[r[0]][r[1]] = orjson.loads(r[2])
        return out

    async def set_profile_field(self, conn: Connection, user_id: str, field: str, value: Any) -> None:
        await conn.execute("DELETE FROM profile_fields WHERE user_id = $1 AND field = $2", user_id, field)
        if value is not None:
            await conn.execute(
                "INSERT INTO profile_fields (user_id, field, value) VALUES ($1, $2, $3)",
                user_id, field, orjson.dumps(value).decode(),
            )

    async def clear_profile(self, conn: Connection, user_id: str) -> None:
        await conn.execute("DELETE FROM profile_fields WHERE user_id = $1", user_id)
