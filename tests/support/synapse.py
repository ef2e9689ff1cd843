"""Synapse (from PyPI, in its own venv) started for federation interop tests: TLS from the test CA on a
loopback IP-literal server name, trusting that CA, allowed to reach 127.0.0.0/8 (see ../shared/PEERS.md)."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.support.processes import shared_secret_register
from tests.support.tls import LocalCA

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".work" / "synapse-venv"
PYTHON = VENV / "bin" / "python"

# Synapse's default federation IP blacklist minus loopback, so it may talk to servers on 127.0.0.0/8.
IP_BLACKLIST = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "192.0.0.0/24",
                "169.254.0.0/16", "192.88.99.0/24", "198.18.0.0/15", "192.0.2.0/24", "198.51.100.0/24",
                "203.0.113.0/24", "224.0.0.0/4", "fe80::/10", "fc00::/7", "2001:db8::/32", "ff00::/8", "fec0::/10"]
UNLIMITED = {"per_second": 100000, "burst_count": 100000}


def require_synapse() -> Path:
    if PYTHON.exists():
        return PYTHON
    why = f"Synapse is not installed at {VENV} (`make test` installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


@dataclass
class SynapseServer:
    server_name: str
    client_url: str
    secret: str
    proc: subprocess.Popen[bytes]
    data: Path

    async def register(self, session: aiohttp.ClientSession, user: str, password: str = "password123") -> tuple[str, str]:
        """(user_id, access_token) through the shared-secret admin API."""
        return await shared_secret_register(session, self.client_url, self.secret, user, password)

    def log_tail(self, lines: int = 60) -> str:
        out = []
        for name in ("stdout.log", "homeserver.log"):
            p = self.data / name
            if p.exists():
                out += p.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out)


async def start_synapse(ca: LocalCA, data: Path, ip: str, fed_port: int, client_port: int,
                        extra: dict[str, Any] | None = None) -> SynapseServer:
    python = require_synapse()
    data.mkdir(parents=True, exist_ok=True)
    name = f"{ip}:{fed_port}"
    gen = subprocess.run([str(python), "-m", "synapse.app.homeserver", "--server-name", name, "--config-path", "hs.yaml",
                          "--generate-config", "--report-stats=no"], cwd=data, capture_output=True, text=True)
    assert gen.returncode == 0, gen.stderr
    crt, key = ca.issue(f"synapse-{fed_port}", ips=[ip])
    cfg = yaml.safe_load((data / "hs.yaml").read_text())
    secret = secrets.token_hex(16)
    cfg.update({
        "database": {"name": "sqlite3", "args": {"database": str(data / "homeserver.db")}},
        "listeners": [
            {"port": fed_port, "bind_addresses": [ip], "type": "http", "tls": True, "x_forwarded": False,
             "resources": [{"names": ["federation"], "compress": False}]},
            {"port": client_port, "bind_addresses": [ip], "type": "http", "tls": False, "x_forwarded": False,
             "resources": [{"names": ["client"], "compress": False}]},
        ],
        "tls_certificate_path": str(crt), "tls_private_key_path": str(key),
        "federation_verify_certificates": True, "federation_custom_ca_list": [str(ca.ca_file)],
        "federation_ip_range_blacklist": IP_BLACKLIST, "ip_range_blacklist": IP_BLACKLIST,
        "trusted_key_servers": [], "suppress_key_server_warning": True,
        "registration_shared_secret": secret, "enable_registration": False, "report_stats": False,
        "federation": {"destination_min_retry_interval": "1s", "destination_max_retry_interval": "5s"},
        "rc_message": UNLIMITED, "rc_registration": UNLIMITED, "rc_federation": {"window_size": 1000, "sleep_limit": 1000, "sleep_delay": 1, "reject_limit": 1000, "concurrent": 100},
        "rc_joins": {"local": UNLIMITED, "remote": UNLIMITED}, "rc_invites": {"per_room": UNLIMITED, "per_user": UNLIMITED, "per_issuer": UNLIMITED},
        "rc_login": {"address": UNLIMITED, "account": UNLIMITED, "failed_attempts": UNLIMITED},
    })
    cfg.update(extra or {})
    (data / "hs.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    log = open(data / "stdout.log", "wb")
    proc = subprocess.Popen([str(python), "-m", "synapse.app.homeserver", "-c", "hs.yaml"], cwd=data,
                            stdout=log, stderr=subprocess.STDOUT)
    server = SynapseServer(name, f"http://{ip}:{client_port}", secret, proc, data)
    async with aiohttp.ClientSession() as s:
        for _ in range(600):
            if proc.poll() is not None:
                raise AssertionError(f"Synapse exited ({proc.returncode}):\n{server.log_tail()}")
            try:
                async with s.get(f"{server.client_url}/_matrix/client/versions") as r:
                    if r.status == 200:
                        return server
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    stop_synapse(server)
    raise AssertionError(f"Synapse did not start:\n{server.log_tail()}")


def stop_synapse(server: SynapseServer) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(20)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()

