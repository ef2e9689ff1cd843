"""Shared fixtures: every server test runs against a real Qasid over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest

from homeserver.clock import Clock
from tests.support.databases import ENGINES, fresh_database
from tests.support.servers import RunningServer, make_config, running_server


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def db_url(engine: str, tmp_path: Path) -> AsyncIterator[str]:
    async with fresh_database(engine, tmp_path) as url:
        yield url


@pytest.fixture
async def make_server(db_url: str, tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[RunningServer]]]:
    """Factory: ``await make_server(**config_overrides, clock=...)`` starts a server (at most one per test)."""
    stack: list[Any] = []

    async def factory(clock: Clock | None = None, **overrides: Any) -> RunningServer:
        cm = running_server(make_config(db_url, tmp_path / "data", **overrides), clock)
        stack.append(cm)
        return await cm.__aenter__()

    yield factory
    while stack:
        await stack.pop().__aexit__(None, None, None)


@pytest.fixture
async def server(make_server: Callable[..., Awaitable[RunningServer]]) -> RunningServer:
    return await make_server()


SLOW_FIRST = ("tests/rooms/test_sync_scale.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The few long tests first: with several workers they then run beside the rest instead of
    starting last and keeping the run waiting on a single worker."""
    items.sort(key=lambda item: 0 if item.nodeid.startswith(SLOW_FIRST) else 1)
