"""PostgreSQL engine (asyncpg pool) for large ministries and multi-process deployments."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Sequence

import asyncpg

from homeserver.storage.database import Connection, Database, Row


class _PgConn(Connection):
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        status = await self._conn.execute(sql, *args)
        return _rowcount(status)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._conn.fetch(sql, *args)

    async def executescript(self, script: str) -> None:
        await self._conn.execute(script)


def _rowcount(status: str) -> int:
    # asyncpg returns the command tag, e.g. "UPDATE 3" or "INSERT 0 1".
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PostgresDatabase(Database):
    engine = "postgres"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str, *, pool_size: int = 10) -> "PostgresDatabase":
        pool = await asyncpg.create_pool(url, min_size=1, max_size=pool_size)
        assert pool is not None
        return cls(pool)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                yield _PgConn(conn)

    async def execute(self, sql: str, *args: Any) -> int:
        return _rowcount(await self._pool.execute(sql, *args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._pool.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._pool.fetch(sql, *args)

    async def table_exists(self, name: str) -> bool:
        return bool(await self._pool.fetchval("SELECT to_regclass($1) IS NOT NULL", name))

    async def executescript(self, script: str) -> None:
        async with self.transaction() as conn:
            await conn.executescript(script)

    async def close(self) -> None:
        await self._pool.close()
