"""Fresh databases for tests on both engines.

PostgreSQL tests are required when CI=true (a missing server fails the run) and skipped with a visible
reason otherwise, so a developer without PostgreSQL still gets a green SQLite run.
"""

from __future__ import annotations

import os
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import asyncpg
import pytest

PG_ADMIN_URL = os.environ.get("QASID_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ENGINES = ["sqlite", "postgres"]


def _pg_base() -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0]


async def _pg_available() -> str | None:
    try:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    except Exception as e:  # any failure to connect means "no server here"
        return f"{type(e).__name__}: {e}"
    await conn.close()
    return None


@asynccontextmanager
async def fresh_database(engine: str, tmp_path: Path) -> AsyncIterator[str]:
    """Yield the URL of an empty database of ``engine``; dropped afterwards."""
    if engine == "sqlite":
        yield f"sqlite:///{tmp_path / 'homeserver.db'}"
        return
    problem = await _pg_available()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required when CI=true but unreachable at {PG_ADMIN_URL}: {problem}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL} ({problem}); set CI=true to require it")
    name = f"qasid_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"{_pg_base()}/{name}"
    finally:
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
