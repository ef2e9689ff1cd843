"""The push tests' server allows the test gateways (loopback, and the made-up ministry gateway the
validation tests name); the allowlist itself is tested with servers of its own."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import pytest

from tests.support.servers import RunningServer

TEST_GATEWAYS = ["127.0.0.1", "push.mofa.gov.example"]


@pytest.fixture
async def server(make_server: Callable[..., Awaitable[RunningServer]]) -> RunningServer:
    return await make_server(push={"gateway_allowlist": TEST_GATEWAYS})
