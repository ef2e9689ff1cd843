"""/voip/turnServer: credentials in coturn's use-auth-secret scheme, checked by hand and by a real coturn;
and MatrixRTC foci in /.well-known/matrix/client."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest

from homeserver.clock import FakeClock, Clock
from tests.support.servers import RunningServer
from tests.support.spec_schemas import SPEC_DIR, validate

C = "/_matrix/client/v3"
R0 = "/_matrix/client/r0"
SECRET = "turn-secret-for-tests-4f1c"
URIS = ["turn:127.0.0.1:3478?transport=udp", "turns:turn.mofa.gov.example:443?transport=tcp"]
MakeServer = Callable[..., Awaitable[RunningServer]]


def expected_password(secret: str, username: str) -> str:
    """RFC-style TURN REST credentials, computed here independently of the server's code."""
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()


async def turn_credentials(server: RunningServer, token: str, prefix: str = C) -> dict[str, Any]:
    r = await server.http.get(f"{prefix}/voip/turnServer", token=token)
    assert r.status == 200, r.body
    return r.body


# --- the endpoint ----------------------------------------------------------------------------------


async def test_shared_secret_credentials(make_server: MakeServer) -> None:
    clock = FakeClock(1_800_000_000_000)
    server = await make_server(clock=clock, turn_uris=URIS, turn_shared_secret=SECRET, turn_user_lifetime="2h")
    alice, ta, _ = await server.login_user("alice")
    body = await turn_credentials(server, ta)
    if SPEC_DIR.is_dir():
        assert validate("GET", f"{C}/voip/turnServer", 200, body)
    assert set(body) == {"username", "password", "uris", "ttl"}
    assert body["uris"] == URIS and body["ttl"] == 7200
    assert body["username"] == f"{1_800_000_000 + 7200}:{alice}"
    assert body["password"] == expected_password(SECRET, body["username"])
    assert SECRET not in str(body)
    clock.advance(60_000)
    later = await turn_credentials(server, ta, prefix=R0)
    assert later["username"] == f"{1_800_000_000 + 60 + 7200}:{alice}"
    assert later["password"] == expected_password(SECRET, later["username"])


async def test_static_credentials(make_server: MakeServer) -> None:
    server = await make_server(turn_uris=URIS[:1], turn_username="ministry", turn_password="static-pass")
    _, ta, _ = await server.login_user("alice")
    assert await turn_credentials(server, ta) == {
        "username": "ministry", "password": "static-pass", "uris": URIS[:1], "ttl": 3600}


async def test_not_configured(make_server: MakeServer) -> None:
    server = await make_server(turn_shared_secret=SECRET)  # a secret but no URIs: nothing to offer
    _, ta, _ = await server.login_user("alice")
    assert await turn_credentials(server, ta) == {}


async def test_needs_an_access_token(server: RunningServer) -> None:
    r = await server.http.get(f"{C}/voip/turnServer")
    assert (r.status, r.errcode) == (401, "M_MISSING_TOKEN")
    r = await server.http.get(f"{C}/voip/turnServer", token="not-a-token")
    assert (r.status, r.errcode) == (401, "M_UNKNOWN_TOKEN")
    _, ta, _ = await server.login_user("alice")
    assert await turn_credentials(server, ta) == {}  # the default configuration has no TURN server


async def test_well_known_advertises_rtc_foci(make_server: MakeServer) -> None:
    foci = [{"type": "livekit", "livekit_service_url": "https://rtc.mofa.gov.example/livekit/jwt"}]
    server = await make_server(matrix_rtc={"foci": foci}, extra_well_known_client_content={"org.example.x": {"a": 1}})
    r = await server.http.get("/.well-known/matrix/client")
    assert r.status == 200
    assert r.body["org.matrix.msc4143.rtc_foci"] == foci
    assert r.body["org.example.x"] == {"a": 1} and "base_url" in r.body["m.homeserver"]


async def test_well_known_without_foci(server: RunningServer) -> None:
    r = await server.http.get("/.well-known/matrix/client")
    assert r.status == 200 and "org.matrix.msc4143.rtc_foci" not in r.body


# --- against a real coturn -------------------------------------------------------------------------


def require_coturn() -> tuple[str, str]:
    server, client = shutil.which("turnserver"), shutil.which("turnutils_uclient")
    if server and client:
        return server, client
    why = "coturn (turnserver, turnutils_uclient) is not installed (`make test` installs it with apt-get)"
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


def free_port() -> int:
    """A loopback port free for both UDP and TCP (coturn listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free loopback port")


@dataclass
class Coturn:
    port: int
    client: str
    log: Path

    async def allocate(self, username: str, password: str) -> tuple[int, str]:
        """Run turnutils_uclient: allocate relays for two clients and send a message between them."""
        proc = await asyncio.create_subprocess_exec(
            self.client, "-y", "-c", "-n", "1", "-X", "-u", username, "-w", password, "-p", str(self.port), "127.0.0.1",
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError("turnutils_uclient hung")
        return proc.returncode or 0, out.decode(errors="replace")


@pytest.fixture
async def coturn(tmp_path: Path) -> AsyncIterator[Coturn]:
    server_bin, client_bin = require_coturn()
    port = free_port()
    log = tmp_path / "turnserver.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([
            server_bin, "--use-auth-secret", f"--static-auth-secret={SECRET}", "--realm=qasid.test",
            "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
            "--no-tls", "--no-dtls", "--no-cli", "--no-rfc5780", "--allow-loopback-peers", "--no-software-attribute",
            "--log-file=stdout", "--simple-log", f"--pidfile={tmp_path / 'turnserver.pid'}", f"--db={tmp_path / 'turndb'}",
        ], stdout=out, stderr=subprocess.STDOUT)
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + 30
        while True:  # ready once its TCP listener accepts
            if proc.poll() is not None:
                raise AssertionError(f"turnserver exited: {log.read_text(errors='replace')[-2000:]}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                if loop.time() > end:
                    raise AssertionError("turnserver never started listening") from None
                await asyncio.sleep(0.05)
        yield Coturn(port, client_bin, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def relayed_messages(output: str) -> int:
    counts = [int(m) for m in re.findall(r"tot_recv_msgs=(\d+)", output)]
    return max(counts, default=0)


@pytest.mark.parametrize("engine", ["sqlite"])  # the database plays no part here
async def test_coturn_accepts_qasid_credentials(make_server: MakeServer, coturn: Coturn) -> None:
    server = await make_server(turn_uris=[f"turn:127.0.0.1:{coturn.port}?transport=udp"], turn_shared_secret=SECRET)
    _, ta, _ = await server.login_user("alice")
    creds = await turn_credentials(server, ta)
    code, out = await coturn.allocate(creds["username"], creds["password"])
    assert code == 0, out
    assert relayed_messages(out) > 0, out  # both relays allocated and data went through them
    # The same username with a password not signed by the shared secret is refused.
    tampered = expected_password(SECRET + "x", creds["username"])
    code, out = await coturn.allocate(creds["username"], tampered)
    assert code != 0 and "Cannot complete Allocation" in out, out
    # So is a signed password for another username (credentials are bound to the user and expiry).
    other = creds["username"].replace("@alice:", "@mallory:")
    code, out = await coturn.allocate(other, creds["password"])
    assert code != 0 and "Cannot complete Allocation" in out, out


@pytest.mark.parametrize("engine", ["sqlite"])
async def test_coturn_refuses_expired_credentials(make_server: MakeServer, coturn: Coturn) -> None:
    # Qasid's clock two hours behind: the one-hour credentials it issues are already past their expiry.
    past = FakeClock(Clock().time_ms() - 2 * 3600 * 1000)
    server = await make_server(clock=past, turn_uris=[f"turn:127.0.0.1:{coturn.port}"], turn_shared_secret=SECRET)
    _, ta, _ = await server.login_user("alice")
    creds = await turn_credentials(server, ta)
    assert creds["password"] == expected_password(SECRET, creds["username"])
    code, out = await coturn.allocate(creds["username"], creds["password"])
    assert code != 0 and "Cannot complete Allocation" in out, out


# --- configuration ---------------------------------------------------------------------------------


def test_turn_configuration_is_checked() -> None:
    from homeserver.config import ConfigError, parse_config

    base = {"server_name": "mofa.gov.example"}
    for extra, key in [
        ({"turn_uris": ["https://turn.example"]}, "turn_uris[0]"),
        ({"turn_username": "u"}, "turn_username"),
        ({"turn_user_lifetime": "0s"}, "turn_user_lifetime"),
        ({"turn_user_lifetime": "soon"}, "turn_user_lifetime"),
        ({"matrix_rtc": {"foci": [{"livekit_service_url": "https://x"}]}}, "matrix_rtc.foci[0].type"),
        ({"matrix_rtc": {"foci": "livekit"}}, "matrix_rtc.foci"),
        ({"push": {"include_content": "no"}}, "push.include_content"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(key)):
            parse_config({**base, **extra}, environ={})
    cfg = parse_config({**base, "turn_shared_secret": "from-file"}, environ={"QASID_TURN_SHARED_SECRET": "from-env"})
    assert cfg.turn_shared_secret == "from-env" and cfg.turn_user_lifetime == 3_600_000
