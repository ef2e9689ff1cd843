"""Start a real Qasid on a loopback port (aiohttp's TestServer binds a real socket)."""

from __future__ import annotations

import ssl
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
from aiohttp.test_utils import TestServer

from homeserver.app import HomeServer, start_homeserver
from homeserver.clock import Clock
from homeserver.config import Config, parse_config
from homeserver.signing_key import write_new_signing_key
from tests.support.client import MatrixHttp

SERVER_NAME = "hs1.test"
# Cheap argon2 parameters and no rate limits unless a test asks for them: tests measure behaviour.
TEST_DEFAULTS: dict[str, Any] = {
    "password_hashing": {"time_cost": 1, "memory_cost_kib": 64, "parallelism": 1},
    "password_config": {"policy": {"minimum_length": 8}},
    "rc_message": {"per_second": 10000, "burst_count": 10000},
    "rc_registration": {"per_second": 10000, "burst_count": 10000},
    "rc_login": {
        "address": {"per_second": 10000, "burst_count": 10000},
        "account": {"per_second": 10000, "burst_count": 10000},
        "failed_attempts": {"per_second": 10000, "burst_count": 10000},
    },
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def make_config(db_url: str, data_dir: Path, **overrides: Any) -> Config:
    data_dir.mkdir(parents=True, exist_ok=True)
    key = data_dir / "signing.key"
    if not key.exists():
        write_new_signing_key(key)
    raw = _merge(TEST_DEFAULTS, {"server_name": SERVER_NAME, "database": db_url, "registration_shared_secret": "s3cret-for-tests"})
    raw = _merge(raw, overrides)
    return parse_config(raw, config_dir=data_dir, environ={})


@dataclass
class RunningServer:
    hs: HomeServer
    http: MatrixHttp
    base_url: str
    config: Config

    async def create_user(self, localpart: str, password: str = "password123", *, admin: bool = False) -> str:
        """Create an account directly through the service (fast set-up; the HTTP paths have their own tests)."""
        pw_hash = await self.hs.accounts.hash_new_password(password)
        async with self.hs.storage.db.transaction() as conn:
            return await self.hs.accounts.create_user(conn, localpart, pw_hash, admin=admin)

    async def login_user(self, localpart: str, password: str = "password123", *, admin: bool = False, **extra: Any) -> tuple[str, str, str]:
        """Create a user and log in over HTTP; returns (user_id, access_token, device_id)."""
        user_id = await self.create_user(localpart, password, admin=admin)
        r = await self.http.login(localpart, password, **extra)
        assert r.status == 200, r.body
        return user_id, r.body["access_token"], r.body["device_id"]


@asynccontextmanager
async def running_server(
    config: Config, clock: Clock | None = None, *, host: str = "127.0.0.1", port: int = 0,
    tls: ssl.SSLContext | None = None, client_tls: ssl.SSLContext | None = None,
) -> AsyncIterator[RunningServer]:
    """``tls`` serves HTTPS (federation tests); ``client_tls`` is what the test's own client trusts."""
    hs, app = await start_homeserver(config, clock)
    server = TestServer(app, host=host, port=port)
    await server.start_server(ssl=tls)
    base = str(server.make_url("/")).rstrip("/")
    try:
        connector = aiohttp.TCPConnector(ssl=client_tls) if client_tls is not None else None
        async with aiohttp.ClientSession(connector=connector) as session:
            yield RunningServer(hs, MatrixHttp(base, session), base, config)
    finally:
        await server.close()
