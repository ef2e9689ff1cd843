"""Device keys, one-time and fallback keys, cross-signing keys and signatures, the device-list stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import orjson

from homeserver.storage.database import Connection, Database, placeholders
from homeserver.storage.sequences import next_id


def _dump(obj: Any) -> str:
    return orjson.dumps(obj).decode()


@dataclass(frozen=True)
class DeviceChange:
    """One device of a user changed at ``stream_id`` of the device-list stream: its keys (or their
    signatures) changed, or it was deleted. Other servers are told exactly this (m.device_list_update)."""

    device_id: str
    stream_id: int
    deleted: bool = False


class E2eKeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- device keys ---------------------------------------------------------------------------

    async def get_device_keys_json(self, user_id: str, device_id: str) -> dict[str, Any] | None:
        raw = await self.db.fetchval(
            "SELECT key_json FROM e2e_device_keys WHERE user_id = $1 AND device_id = $2", user_id, device_id
        )
        return orjson.loads(raw) if raw is not None else None

    async def set_device_keys(self, conn: Connection, user_id: str, device_id: str, keys: dict[str, Any]) -> None:
        await conn.execute("DELETE FROM e2e_device_keys WHERE user_id = $1 AND device_id = $2", user_id, device_id)
        await conn.execute(
            "INSERT INTO e2e_device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)",
            user_id, device_id, _dump(keys),
        )

    async def devices_with_keys(self, user_ids: Iterable[str]) -> dict[str, dict[str, tuple[dict[str, Any], str | None]]]:
        """user -> device -> (device keys, device display name) for every existing device that uploaded keys."""
        users = list(dict.fromkeys(user_ids))
        out: dict[str, dict[str, tuple[dict[str, Any], str | None]]] = {u: {} for u in users}
        for i in range(0, len(users), 500):
            chunk = users[i:i + 500]
            rows = await self.db.fetch(
                "SELECT k.user_id, k.device_id, k.key_json, d.display_name FROM e2e_device_keys k"
                " JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id"
                f" WHERE k.user_id IN ({placeholders(len(chunk))})",
                *chunk,
            )
            for r in rows:
                out[r[0]][r[1]] = (orjson.loads(r[2]), r[3])
        return out

    # --- one-time and fallback keys -----------------------------------------------------------

    async def get_one_time_keys(self, user_id: str, device_id: str, key_ids: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Stored JSON of those (algorithm, key_id) pairs that already exist."""
        out: dict[tuple[str, str], str] = {}
        for algorithm, key_id in key_ids:
            raw = await self.db.fetchval(
                "SELECT key_json FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3"
                " AND key_id = $4", user_id, device_id, algorithm, key_id,
            )
            if raw is not None:
                out[(algorithm, key_id)] = raw
        return out

    async def add_one_time_keys(self, conn: Connection, user_id: str, device_id: str, keys: list[tuple[str, str, Any]]) -> None:
        if keys:
            await conn.executemany(
                "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json) VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT DO NOTHING",
                [(user_id, device_id, alg, kid, _dump(key)) for alg, kid, key in keys],
            )

    async def one_time_key_counts(self, user_id: str, device_id: str) -> dict[str, int]:
        rows = await self.db.fetch(
            "SELECT algorithm, COUNT(*) FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm",
            user_id, device_id,
        )
        return {r[0]: int(r[1]) for r in rows}

    async def claim_one_time_key(self, user_id: str, device_id: str, algorithm: str) -> tuple[str, Any] | None:
        """Take (and remove) one key; two concurrent claims never get the same key."""
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                "SELECT key_id, key_json FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3"
                " ORDER BY key_id LIMIT 1",
                user_id, device_id, algorithm,
            )
            if row is None:
                return None
            deleted = await conn.execute(
                "DELETE FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4",
                user_id, device_id, algorithm, row[0],
            )
            if not deleted:
                return None
            return row[0], orjson.loads(row[1])

    async def set_fallback_key(self, conn: Connection, user_id: str, device_id: str, algorithm: str, key_id: str, key: Any) -> None:
        existing = await conn.fetchrow(
            "SELECT key_id, key_json FROM e2e_fallback_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3",
            user_id, device_id, algorithm,
        )
        if existing is not None and existing[0] == key_id and orjson.loads(existing[1]) == key:
            return  # the same key again: keep its used flag
        await conn.execute(
            "DELETE FROM e2e_fallback_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3",
            user_id, device_id, algorithm,
        )
        await conn.execute(
            "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) VALUES ($1, $2, $3, $4, $5, 0)",
            user_id, device_id, algorithm, key_id, _dump(key),
        )

    async def claim_fallback_key(self, user_id: str, device_id: str, algorithm: str) -> tuple[str, Any] | None:
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                "SELECT key_id, key_json FROM e2e_fallback_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3",
                user_id, device_id, algorithm,
            )
            if row is None:
                return None
            await conn.execute(
                "UPDATE e2e_fallback_keys SET used = 1 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3",
                user_id, device_id, algorithm,
            )
            return row[0], orjson.loads(row[1])

    async def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        rows = await self.db.fetch(
            "SELECT algorithm FROM e2e_fallback_keys WHERE user_id = $1 AND device_id = $2 AND used = 0 ORDER BY algorithm",
            user_id, device_id,
        )
        return [r[0] for r in rows]

    # --- cross-signing --------------------------------------------------------------------------

    async def cross_signing_keys(self, user_id: str) -> dict[str, dict[str, Any]]:
        rows = await self.db.fetch("SELECT key_type, key_json FROM e2e_cross_signing_keys WHERE user_id = $1", user_id)
        return {r[0]: orjson.loads(r[1]) for r in rows}

    async def set_cross_signing_key(self, conn: Connection, user_id: str, key_type: str, key: dict[str, Any]) -> None:
        await conn.execute("DELETE FROM e2e_cross_signing_keys WHERE user_id = $1 AND key_type = $2", user_id, key_type)
        await conn.execute(
            "INSERT INTO e2e_cross_signing_keys (user_id, key_type, key_json) VALUES ($1, $2, $3)",
            user_id, key_type, _dump(key),
        )

    async def add_signatures(self, conn: Connection, rows: list[tuple[str, str, str, str, str]]) -> None:
        """(target user, target key ID, signer user, signer key ID, signature); a newer one replaces an older."""
        for target_user, target_key, signer_user, signer_key, sig in rows:
            await conn.execute(
                "DELETE FROM e2e_signatures WHERE target_user_id = $1 AND target_key_id = $2 AND signer_user_id = $3"
                " AND signer_key_id = $4", target_user, target_key, signer_user, signer_key,
            )
            await conn.execute(
                "INSERT INTO e2e_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)"
                " VALUES ($1, $2, $3, $4, $5)", target_user, target_key, signer_user, signer_key, sig,
            )

    async def signatures_for(self, target_user: str) -> dict[str, list[tuple[str, str, str]]]:
        """target key ID -> [(signer user, signer key ID, signature)]."""
        rows = await self.db.fetch(
            "SELECT target_key_id, signer_user_id, signer_key_id, signature FROM e2e_signatures WHERE target_user_id = $1",
            target_user,
        )
        out: dict[str, list[tuple[str, str, str]]] = {}
        for r in rows:
            out.setdefault(r[0], []).append((r[1], r[2], r[3]))
        return out

    async def delete_signatures_by(self, conn: Connection, signer_user: str, signer_key_id: str) -> None:
        """A replaced cross-signing key's signatures mean nothing any more."""
        await conn.execute(
            "DELETE FROM e2e_signatures WHERE signer_user_id = $1 AND signer_key_id = $2", signer_user, signer_key_id
        )

    # --- device-list stream ---------------------------------------------------------------------

    async def mark_device_list_changed(self, conn: Connection, user_ids: Iterable[str], *, federated: bool = True) -> int:
        """A new position of the device-list stream for ``user_ids``. ``federated`` False: for our users,
        a change other servers do not get as an m.device_list_update (see migration 017)."""
        users = sorted(set(user_ids))
        stream_id = await next_id(conn, "device_lists")
        await conn.executemany(
            "INSERT INTO device_list_changes (stream_id, user_id, federated) VALUES ($1, $2, $3)",
            [(stream_id, u, int(federated)) for u in users],
        )
        return stream_id

    async def last_federated_change(self, user_id: str, before: int | None = None) -> int | None:
        """The user's latest change announced to other servers (before ``before`` if given): the
        stream_id of GET /user/devices, and the prev_id of the next m.device_list_update."""
        if before is None:
            value = await self.db.fetchval(
                "SELECT MAX(stream_id) FROM device_list_changes WHERE user_id = $1 AND federated = 1", user_id)
        else:
            value = await self.db.fetchval(
                "SELECT MAX(stream_id) FROM device_list_changes WHERE user_id = $1 AND federated = 1"
                " AND stream_id < $2", user_id, before)
        return int(value) if value is not None else None

    async def users_changed_between(self, since: int, upto: int) -> set[str]:
        rows = await self.db.fetch(
            "SELECT DISTINCT user_id FROM device_list_changes WHERE stream_id > $1 AND stream_id <= $2", since, upto
        )
        return {r[0] for r in rows}

    async def delete_device_data(self, conn: Connection, user_id: str, device_id: str) -> None:
        """Everything E2EE a deleted device leaves behind."""
        for table in ("e2e_device_keys", "e2e_one_time_keys", "e2e_fallback_keys", "to_device_messages"):
            await conn.execute(f"DELETE FROM {table} WHERE user_id = $1 AND device_id = $2", user_id, device_id)
        await conn.execute(
            "DELETE FROM e2e_signatures WHERE target_user_id = $1 AND target_key_id = $2", user_id, device_id
        )
