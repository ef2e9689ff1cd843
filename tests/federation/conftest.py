"""Two (or more) Qasid servers federating over real TLS on loopback, each with its own database.

Server names are IP literals with ports (127.0.0.1:P, 127.0.0.2:P), so discovery is the spec's
"IP literal" case and certificates carry IP SANs from a test CA, as a national CA would issue them.
"""

from __future__ import annotations

import socket
import ssl
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest

from tests.support.databases import fresh_database
from tests.support.servers import RunningServer, make_config, running_server
from tests.support.tls import LocalCA


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture
def test_ca(tmp_path: Path) -> LocalCA:
    return LocalCA(tmp_path / "ca")


@pytest.fixture
async def federation(tmp_path: Path, test_ca: LocalCA) -> AsyncIterator[Callable[..., Awaitable[RunningServer]]]:
    """Factory: ``await federation("127.0.0.2", **config_overrides)`` starts a TLS server there."""
    stack = AsyncExitStack()
    count = [0]

    async def start(ip: str, engine: str = "sqlite", **overrides: Any) -> RunningServer:
        count[0] += 1
        port = free_port(ip)
        name = f"{ip}:{port}"
        crt, key = test_ca.issue(f"hs{count[0]}", ips=[ip])
        (tmp_path / f"db{count[0]}").mkdir(parents=True, exist_ok=True)
        db_url = await stack.enter_async_context(fresh_database(engine, tmp_path / f"db{count[0]}"))
        fed = {"tls_ca_file": str(test_ca.ca_file), **overrides.pop("federation", {})}
        config = make_config(db_url, tmp_path / f"data{count[0]}", server_name=name, federation=fed, **overrides)
        client_tls = ssl.create_default_context(cafile=str(test_ca.ca_file))
        return await stack.enter_async_context(running_server(
            config, host=ip, port=port, tls=test_ca.server_context(crt, key), client_tls=client_tls))

    async with stack:
        yield start
