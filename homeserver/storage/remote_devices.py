"""The cache of other servers' users' device lists and cross-signing keys, and the membership queries
that decide whose lists we may cache (those who share a room with one of our users)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import orjson

from homeserver.storage.database import Connection, Database, placeholders


def _dump(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _local(column: str, suffix: str, param: int) -> str:
    """SQL true when ``column`` (a user ID) ends in ``suffix`` (``:server_name``, passed as ``$param``).
    ``LIKE`` would be case-insensitive on SQLite and treat ``_`` as a wildcard, so compare the tail."""
    return f"substr({column}, length({column}) - {len(suffix)} + 1) = ${param}"


@dataclass
class RemoteDeviceList:
    """One cached user: devices maps device ID -> (signed device keys, display name)."""

    user_id: str
    stream_id: int
    stale: bool
    fetched_ts: int
    master_key: dict[str, Any] | None = None
    self_signing_key: dict[str, Any] | None = None
    devices: dict[str, tuple[dict[str, Any], str | None]] = field(default_factory=dict)


class RemoteDeviceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- who may be cached ------------------------------------------------------------------------

    async def tracked(self, user_ids: Iterable[str], server_name: str) -> set[str]:
        """Those of ``user_ids`` joined to a room that one of our users (``:server_name``) is joined to.
        Decided from current state each time, so there is no subscription list that could drift."""
        users = list(dict.fromkeys(user_ids))
        suffix = ":" + server_name
        out: set[str] = set()
        for i in range(0, len(users), 500):
            chunk = users[i:i + 500]
            rows = await self.db.fetch(
                "SELECT DISTINCT them.state_key FROM current_state them"
                " WHERE them.type = 'm.room.member' AND them.membership = 'join'"
                f" AND them.state_key IN ({placeholders(len(chunk), 2)})"
                " AND EXISTS (SELECT 1 FROM current_state us WHERE us.room_id = them.room_id"
                " AND us.type = 'm.room.member' AND us.membership = 'join'"
                f" AND {_local('us.state_key', suffix, 1)})",
                suffix, *chunk,
            )
            out |= {r[0] for r in rows}
        return out

    async def mark_stale_after_remote_join(self, user_id: str, room_id: str, server_name: str) -> None:
        """``user_id`` (remote) has just joined ``room_id``: unless they already shared another room with
        one of our users, their server sent us nothing while they shared none, so the cache is stale."""
        suffix = ":" + server_name
        await self.db.execute(
            "UPDATE remote_device_lists SET stale = 1 WHERE user_id = $2 AND stale = 0 AND NOT EXISTS ("
            " SELECT 1 FROM current_state them JOIN current_state us ON us.room_id = them.room_id"
            " AND us.type = 'm.room.member' AND us.membership = 'join'"
            f" AND {_local('us.state_key', suffix, 1)}"
            " WHERE them.type = 'm.room.member' AND them.membership = 'join' AND them.state_key = $2"
            " AND them.room_id <> $3)",
            suffix, user_id, room_id,
        )

    async def mark_stale_after_local_join(self, room_id: str, joiner: str, server_name: str) -> None:
        """Our ``joiner`` has just joined ``room_id``: the cached remote members who shared no room with
        any of our users before (no pair other than this room and this joiner) are stale."""
        suffix = ":" + server_name
        await self.db.execute(
            "UPDATE remote_device_lists SET stale = 1 WHERE stale = 0 AND user_id IN ("
            " SELECT m.state_key FROM current_state m WHERE m.room_id = $2 AND m.type = 'm.room.member'"
            " AND m.membership = 'join')"
            " AND NOT EXISTS ("
            " SELECT 1 FROM current_state them JOIN current_state us ON us.room_id = them.room_id"
            " AND us.type = 'm.room.member' AND us.membership = 'join'"
            f" AND {_local('us.state_key', suffix, 1)}"
            " WHERE them.type = 'm.room.member' AND them.membership = 'join'"
            " AND them.state_key = remote_device_lists.user_id"
            " AND NOT (us.room_id = $2 AND us.state_key = $3))",
            suffix, room_id, joiner,
        )

    # --- reading ----------------------------------------------------------------------------------

    async def get(self, user_ids: Iterable[str]) -> dict[str, RemoteDeviceList]:
        users = list(dict.fromkeys(user_ids))
        out: dict[str, RemoteDeviceList] = {}
        for i in range(0, len(users), 500):
            chunk = users[i:i + 500]
            marks = placeholders(len(chunk))
            for r in await self.db.fetch(
                "SELECT user_id, stream_id, stale, fetched_ts, master_key_json, self_signing_key_json"
                f" FROM remote_device_lists WHERE user_id IN ({marks})", *chunk,
            ):
                out[r[0]] = RemoteDeviceList(
                    r[0], int(r[1]), bool(r[2]), int(r[3]),
                    orjson.loads(r[4]) if r[4] is not None else None, orjson.loads(r[5]) if r[5] is not None else None,
                )
            found = [u for u in chunk if u in out]
            if found:
                for r in await self.db.fetch(
                    "SELECT user_id, device_id, keys_json, display_name FROM remote_devices"
                    f" WHERE user_id IN ({placeholders(len(found))})", *found,
                ):
                    out[r[0]].devices[r[1]] = (orjson.loads(r[2]), r[3])
        return out

    async def position(self, user_id: str) -> tuple[int, bool] | None:
        """(stream_id, stale) of a cached user, None if not cached."""
        row = await self.db.fetchrow("SELECT stream_id, stale FROM remote_device_lists WHERE user_id = $1", user_id)
        return (int(row[0]), bool(row[1])) if row is not None else None

    # --- writing ----------------------------------------------------------------------------------

    async def replace(
        self, user_id: str, stream_id: int, devices: dict[str, tuple[dict[str, Any], str | None]],
        master_key: dict[str, Any] | None, self_signing_key: dict[str, Any] | None, now: int,
    ) -> bool:
        """Store a full fetch. If an EDU newer than the fetched snapshot arrived while we fetched (the row
        already names a higher stream_id), the snapshot may lack that change: it is stored but stays
        stale, so the next query fetches again. Returns whether the cache is now fresh."""
        async with self.db.transaction() as conn:
            row = await conn.fetchrow("SELECT stream_id FROM remote_device_lists WHERE user_id = $1", user_id)
            fresh = row is None or int(row[0]) <= stream_id
            await conn.execute("DELETE FROM remote_devices WHERE user_id = $1", user_id)
            await conn.execute("DELETE FROM remote_device_lists WHERE user_id = $1", user_id)
            await conn.execute(
                "INSERT INTO remote_device_lists (user_id, stream_id, stale, fetched_ts, master_key_json,"
                " self_signing_key_json) VALUES ($1, $2, $3, $4, $5, $6)",
                user_id, stream_id, 0 if fresh else 1, now,
                _dump(master_key) if master_key is not None else None,
                _dump(self_signing_key) if self_signing_key is not None else None,
            )
            if devices:
                await conn.executemany(
                    "INSERT INTO remote_devices (user_id, device_id, keys_json, display_name) VALUES ($1, $2, $3, $4)",
                    [(user_id, did, _dump(keys), name) for did, (keys, name) in devices.items()],
                )
        return fresh

    async def advance(self, conn: Connection, user_id: str, expected: int, stream_id: int) -> bool:
        """Move the cache from ``expected`` to ``stream_id`` (an EDU that follows on from it). False if
        another writer moved it first: the caller then treats the EDU as a gap."""
        return await conn.execute(
            "UPDATE remote_device_lists SET stream_id = $3 WHERE user_id = $1 AND stream_id = $2",
            user_id, expected, stream_id,
        ) > 0

    async def put_device(self, conn: Connection, user_id: str, device_id: str, keys: dict[str, Any], display_name: str | None) -> None:
        await conn.execute("DELETE FROM remote_devices WHERE user_id = $1 AND device_id = $2", user_id, device_id)
        await conn.execute(
            "INSERT INTO remote_devices (user_id, device_id, keys_json, display_name) VALUES ($1, $2, $3, $4)",
            user_id, device_id, _dump(keys), display_name,
        )

    async def rename_device(self, conn: Connection, user_id: str, device_id: str, display_name: str | None) -> None:
        await conn.execute(
            "UPDATE remote_devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2",
            user_id, device_id, display_name,
        )

    async def delete_device(self, conn: Connection, user_id: str, device_id: str) -> None:
        await conn.execute("DELETE FROM remote_devices WHERE user_id = $1 AND device_id = $2", user_id, device_id)

    async def mark_stale(self, user_id: str, stream_id: int | None = None) -> None:
        """The cache missed something. ``stream_id`` (the EDU that showed the gap) is remembered as the
        highest position heard of, so a fetch that started before it cannot clear the flag."""
        if stream_id is None:
            await self.db.execute("UPDATE remote_device_lists SET stale = 1 WHERE user_id = $1", user_id)
        else:
            await self.db.execute(
                "UPDATE remote_device_lists SET stale = 1,"
                " stream_id = CASE WHEN stream_id < $2 THEN $2 ELSE stream_id END WHERE user_id = $1",
                user_id, stream_id,
            )

    async def set_cross_signing(
        self, user_id: str, master_key: dict[str, Any] | None, self_signing_key: dict[str, Any] | None,
    ) -> None:
        """Replace whichever of the two keys is given (None leaves that key as it is)."""
        async with self.db.transaction() as conn:
            if master_key is not None:
                await conn.execute("UPDATE remote_device_lists SET master_key_json = $2 WHERE user_id = $1",
                                   user_id, _dump(master_key))
            if self_signing_key is not None:
                await conn.execute("UPDATE remote_device_lists SET self_signing_key_json = $2 WHERE user_id = $1",
                                   user_id, _dump(self_signing_key))

    async def forget(self, user_ids: Iterable[str]) -> None:
        """Drop users who no longer share a room with ours: their server stopped telling us of changes."""
        users = list(dict.fromkeys(user_ids))
        for i in range(0, len(users), 500):
            chunk = users[i:i + 500]
            marks = placeholders(len(chunk))
            async with self.db.transaction() as conn:
                await conn.execute(f"DELETE FROM remote_devices WHERE user_id IN ({marks})", *chunk)
                await conn.execute(f"DELETE FROM remote_device_lists WHERE user_id IN ({marks})", *chunk)
