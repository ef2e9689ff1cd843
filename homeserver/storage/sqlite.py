"""SQLite engine: the embedded default.

Statements run synchronously on the event loop thread. SQLite answers our indexed queries in
microseconds, far less than a hop to a worker thread costs, so a thread pool (aiosqlite) would only add
latency. One writer connection serialised by an asyncio lock keeps transactions from interleaving while
a coroutine awaits inside one; a second connection serves reads outside transactions so readers never
queue behind a writer (WAL lets them see every committed write).
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

from homeserver.storage.database import Connection, Database, Row, to_sqlite_placeholders


def _open(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint=10000")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class _SqliteConn(Connection):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        return self._conn.execute(to_sqlite_placeholders(sql), args).rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._conn.executemany(to_sqlite_placeholders(sql), rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return self._conn.execute(to_sqlite_placeholders(sql), args).fetchall()

    async def executescript(self, script: str) -> None:
        # sqlite3's own executescript() would COMMIT first and break the caller's transaction.
        for statement in _split_statements(script):
            self._conn.execute(statement)


class SqliteDatabase(Database):
    engine = "sqlite"

    def __init__(self, writer: sqlite3.Connection, reader: sqlite3.Connection) -> None:
        self._writer = _SqliteConn(writer)
        self._reader = _SqliteConn(reader)
        self._raw = (writer, reader)
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> "SqliteDatabase":
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        writer = _open(path)
        reader = _open(path) if path != ":memory:" else writer
        return cls(writer, reader)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._lock:
            raw = self._raw[0]
            raw.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                raw.execute("ROLLBACK")
                raise
            else:
                raw.execute("COMMIT")

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._lock:
            return await self._writer.execute(sql, *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self.transaction() as conn:
            await conn.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._reader.fetch(sql, *args)

    async def table_exists(self, name: str) -> bool:
        return (await self.fetchrow("SELECT 1 FROM sqlite_master WHERE type='table' AND name=$1", name)) is not None

    async def executescript(self, script: str) -> None:
        async with self.transaction() as conn:
            await conn.executescript(script)

    async def close(self) -> None:
        writer, reader = self._raw
        if reader is not writer:
            reader.close()
        writer.close()


def _split_statements(script: str) -> list[str]:
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
