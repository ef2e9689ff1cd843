"""One async database interface over two engines, chosen by URL.

SQL is written once with PostgreSQL's ``$1`` placeholders; the SQLite engine rewrites them to ``?1``.
Rows support both ``row["col"]`` and ``row[0]`` on either engine.
"""

from __future__ import annotations

import abc
import functools
import re
from contextlib import AbstractAsyncContextManager
from typing import Any, Sequence

Row = Any  # sqlite3.Row or asyncpg.Record: both index by name and by position


class Connection(abc.ABC):
    """What a transaction (or a single statement) can do; the same on both engines."""

    @abc.abstractmethod
    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement and return the number of rows it changed."""

    @abc.abstractmethod
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    @abc.abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    @abc.abstractmethod
    async def executescript(self, script: str) -> None:
        """Run several ;-separated statements (migrations) within this connection's transaction."""

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]


class Database(Connection):
    engine: str  # "sqlite" or "postgres"

    @abc.abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        """A connection whose statements commit together, or not at all if the block raises."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def table_exists(self, name: str) -> bool: ...


_PLACEHOLDER = re.compile(r"\$(\d+)")


def placeholders(count: int, start: int = 1) -> str:
    """``$start, …`` for an ``IN (…)`` list of ``count`` parameters."""
    return ", ".join(f"${i}" for i in range(start, start + count))


@functools.lru_cache(maxsize=2048)
def to_sqlite_placeholders(sql: str) -> str:
    """Statements repeat (a few hundred distinct texts), so each is rewritten once."""
    return _PLACEHOLDER.sub(r"?\1", sql)


class UnsupportedDatabase(Exception):
    pass


async def connect(url: str, *, pool_size: int = 10) -> Database:
    """Open the database named by ``url`` (``sqlite:///path`` or ``postgresql://…``)."""
    if url.startswith("sqlite:///"):
        from homeserver.storage.sqlite import SqliteDatabase

        return await SqliteDatabase.open(url[len("sqlite:///"):])
    if url.startswith(("postgresql://", "postgres://")):
        from homeserver.storage.postgres import PostgresDatabase

        return await PostgresDatabase.open(url, pool_size=pool_size)
    raise UnsupportedDatabase(f"unsupported database URL scheme: {url.split(':', 1)[0]}")
