"""One SQLite connection, used from one worker thread, with transactions and idempotent writes.

Why a single thread: SQLite allows one writer at a time anyway, and funnelling every statement through
one thread makes each write (record + event + webhook deliveries + idempotency key) a single atomic,
serialised transaction. Cursors in the event feed are therefore handed out in commit order, so a
poller can never see cursor 7 before cursor 6 is visible.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from .clock import now_ms
from .errors import idempotency_mismatch
from .schema import SCHEMA, SCHEMA_VERSION

T = TypeVar("T")
WriteResult = tuple[int, dict[str, Any]]


@dataclass(frozen=True)
class IdempotencyKey:
    """A client's ``Idempotency-Key`` scoped to its integration, with the request's fingerprint."""

    integration: str
    key: str
    fingerprint: str


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict[str, Any]
    replayed: bool = False


class Database:
    """Owns the connection and the thread; ``run``/``write`` run functions of ``(conn, *args)`` in a transaction.

    ``write`` additionally tells listeners that something changed; ``run`` is for reads and for the
    webhook worker's own bookkeeping, which must not wake everybody up again.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eoffice-db")
        self._conn: sqlite3.Connection | None = None
        self._listeners: list[Callable[[], None]] = []

    async def open(self) -> None:
        await self._submit(self._open)

    def _open(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a record the service acknowledged must survive a crash; these are government files.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(SCHEMA)
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            conn.execute("INSERT INTO meta(key, value) VALUES('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row["value"]) != SCHEMA_VERSION:
            raise RuntimeError(f"database schema {row['value']} is not the supported {SCHEMA_VERSION}")
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._submit(self._conn.close)
            self._conn = None
        self._pool.shutdown(wait=True)

    def on_write(self, listener: Callable[[], None]) -> None:
        """Called on the event loop after every committed write (wakes webhook workers and long polls)."""
        self._listeners.append(listener)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._submit(self._transaction, fn, args)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        result = await self._submit(self._transaction, fn, args)
        self._notify()
        return result

    async def write_idempotent(self, idem: IdempotencyKey | None, fn: Callable[..., WriteResult],
                               *args: Any) -> Outcome:
        """Run a creating write at most once per key: a repeat returns the stored response unchanged."""
        outcome = await self._submit(self._transaction, _idempotent, (idem, fn, args))
        if not outcome.replayed:
            self._notify()
        return outcome

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    async def _submit(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _transaction(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        conn = self._conn
        assert conn is not None, "database not open"
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn, *args)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result


def _idempotent(conn: sqlite3.Connection, idem: IdempotencyKey | None,
                fn: Callable[..., WriteResult], args: tuple[Any, ...]) -> Outcome:
    if idem is not None:
        row = conn.execute(
            "SELECT fingerprint, status, response FROM idempotency_keys WHERE integration=? AND key=?",
            (idem.integration, idem.key)).fetchone()
        if row is not None:
            if row["fingerprint"] != idem.fingerprint:
                raise idempotency_mismatch()
            return Outcome(row["status"], json.loads(row["response"]), replayed=True)
    status, body = fn(conn, *args)
    if idem is not None:
        conn.execute(
            "INSERT INTO idempotency_keys(integration, key, fingerprint, status, response, created_at)"
            " VALUES(?, ?, ?, ?, ?, ?)",
            (idem.integration, idem.key, idem.fingerprint, status, json.dumps(body), now_ms()))
    return Outcome(status, body)
