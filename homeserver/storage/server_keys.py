"""Remote servers' signing keys, cached with their validity and the signed response they came in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from homeserver.storage.database import Database


@dataclass(frozen=True)
class StoredServerKey:
    server_name: str
    key_id: str
    verify_key: str
    valid_until_ts: int | None
    expired_ts: int | None
    fetched_ts: int
    source: str
    response: dict[str, Any]


_COLS = "server_name, key_id, verify_key, valid_until_ts, expired_ts, fetched_ts, source, response_json"


def _row(r: Any) -> StoredServerKey:
    return StoredServerKey(r[0], r[1], r[2], r[3], r[4], int(r[5]), r[6], orjson.loads(r[7]))


class ServerKeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, server_name: str, key_id: str) -> StoredServerKey | None:
        r = await self.db.fetchrow(f"SELECT {_COLS} FROM server_keys WHERE server_name = $1 AND key_id = $2", server_name, key_id)
        return _row(r) if r else None

    async def for_server(self, server_name: str) -> list[StoredServerKey]:
        rows = await self.db.fetch(f"SELECT {_COLS} FROM server_keys WHERE server_name = $1 ORDER BY key_id", server_name)
        return [_row(r) for r in rows]

    async def put(self, keys: list[StoredServerKey]) -> None:
        """Store keys; a newer fetch replaces what an older one said about the same key."""
        async with self.db.transaction() as conn:
            for k in keys:
                await conn.execute("DELETE FROM server_keys WHERE server_name = $1 AND key_id = $2", k.server_name, k.key_id)
                await conn.execute(
                    f"INSERT INTO server_keys ({_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    k.server_name, k.key_id, k.verify_key, k.valid_until_ts, k.expired_ts, k.fetched_ts, k.source,
                    orjson.dumps(k.response).decode(),
                )
