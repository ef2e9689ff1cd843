"""Qasid servers as separate processes (`python -m homeserver run`), for federation tests that must
survive one server being taken down and brought back: each has its own config file, SQLite database,
signing key and TLS certificate from the test CA, and finds the others through the static directory."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from homeserver.signing_key import write_new_signing_key
from tests.support.tls import LocalCA

ROOT = Path(__file__).resolve().parents[2]
UNLIMITED = {"per_second": 100000, "burst_count": 100000}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


async def shared_secret_register(session: aiohttp.ClientSession, base_url: str, secret: str, user: str,
                                 password: str = "password123", admin: bool = False) -> tuple[str, str]:
    """(user_id, access_token) through the shared-secret admin API that Synapse and Qasid both serve."""
    url = f"{base_url}/_synapse/admin/v1/register"
    async with session.get(url) as r:
        nonce = (await r.json())["nonce"]
    mac = hmac.new(secret.encode(), b"\0".join([nonce.encode(), user.encode(), password.encode(),
                                                 b"admin" if admin else b"notadmin"]), hashlib.sha1).hexdigest()
    async with session.post(url, json={"nonce": nonce, "username": user, "password": password, "mac": mac, "admin": admin}) as r:
        body = await r.json()
        assert r.status == 200, body
        return body["user_id"], body["access_token"]


@dataclass
class QasidProcess:
    server_name: str
    ip: str
    port: int
    data: Path
    secret: str = field(default_factory=lambda: secrets.token_hex(16))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"https://{self.ip}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data / "homeserver.yaml"

    def write_config(self, ca: LocalCA, peers: list["QasidProcess"], extra: dict[str, Any] | None = None) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        if not (self.data / "signing.key").exists():
            write_new_signing_key(self.data / "signing.key")
        host = self.server_name.rsplit(":", 1)[0] if self.server_name.count(":") == 1 else self.server_name
        named = not host.replace(".", "").isdigit()  # a DNS name, not an IP-literal server name
        crt, key = ca.issue(self.server_name.replace(":", "_"), ips=[self.ip], dns=[host] if named else [])
        cfg: dict[str, Any] = {
            "server_name": self.server_name,
            "listeners": [{"port": self.port, "bind_addresses": [self.ip], "tls": True,
                           "resources": [{"names": ["client", "federation", "keys"]}]}],
            "tls_certificate_path": str(crt), "tls_private_key_path": str(key),
            "database": "sqlite:///homeserver.db", "signing_key_path": "signing.key",
            "registration_shared_secret": self.secret, "log_level": "INFO",
            "password_hashing": {"time_cost": 1, "memory_cost_kib": 64, "parallelism": 1},
            "password_config": {"policy": {"minimum_length": 8}},
            "rc_message": UNLIMITED, "rc_registration": UNLIMITED,
            "rc_login": {"address": UNLIMITED, "account": UNLIMITED, "failed_attempts": UNLIMITED},
            "federation_domain_whitelist": sorted({self.server_name, *(p.server_name for p in peers)}),
            "federation": {"tls_ca_file": str(ca.ca_file), "request_timeout": "10s",
                           "directory": {p.server_name: {"address": f"{p.ip}:{p.port}"} for p in peers if p is not self}},
        }
        cfg.update(extra or {})
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    async def start(self, client_tls: Any) -> None:
        log = open(self.data / "server.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "homeserver", "run", "-c", str(self.config_path)],
                                     cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_tls)) as s:
            for _ in range(300):
                if self.proc.poll() is not None:
                    raise AssertionError(f"{self.server_name} exited ({self.proc.returncode}):\n{self.log_tail()}")
                try:
                    async with s.get(f"{self.base_url}/_matrix/client/versions") as r:
                        if r.status == 200:
                            return
                except (aiohttp.ClientError, OSError):
                    pass
                await asyncio.sleep(0.1)
        self.stop()
        raise AssertionError(f"{self.server_name} did not start:\n{self.log_tail()}")

    def stop(self, *, kill: bool = False) -> None:
        """``kill`` is a crash (SIGKILL: nothing flushed, nothing said goodbye); otherwise a clean stop."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 80) -> str:
        p = self.data / "server.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-lines:]) if p.exists() else ""

    async def register(self, session: aiohttp.ClientSession, user: str, password: str = "password123") -> tuple[str, str]:
        return await shared_secret_register(session, self.base_url, self.secret, user, password)
