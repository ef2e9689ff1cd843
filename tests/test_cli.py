"""The qasid command, run as a real process: init, check-config, run, user and token administration."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import urllib.request
import json

QASID = [sys.executable, "-m", "homeserver"]


def qasid(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*QASID, *args], capture_output=True, text=True, timeout=60, input=input,
        env={**os.environ, **(env or {})},
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    r = qasid("init", "--server-name", "mofa.gov.test", "--data-dir", str(d), "--http-port", str(_free_port()))
    assert r.returncode == 0, r.stderr
    cfg = d / "homeserver.yaml"
    # Cheap hashing keeps the test quick; the setting itself is what is exercised.
    text = cfg.read_text().replace("memory_cost_kib: 65536", "memory_cost_kib: 64").replace("time_cost: 3", "time_cost: 1").replace("parallelism: 2", "parallelism: 1")
    cfg.write_text(text)
    return d


def test_init_writes_config_and_key_and_refuses_overwrite(data_dir: Path) -> None:
    cfg = (data_dir / "homeserver.yaml").read_text()
    assert "server_name: mofa.gov.test" in cfg
    assert "registration_shared_secret: " in cfg and "registration_shared_secret: null" not in cfg
    key = (data_dir / "signing.key").read_text().split()
    assert key[0] == "ed25519" and key[1].startswith("a_") and len(key) == 3
    assert oct((data_dir / "signing.key").stat().st_mode & 0o777) == "0o600"
    before = cfg
    r = qasid("init", "--server-name", "other.test", "--data-dir", str(data_dir))
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "refusing to overwrite" in r.stderr
    assert (data_dir / "homeserver.yaml").read_text() == before


@pytest.mark.parametrize("args, needle", [
    (["bogus"], "invalid choice"),
    (["run"], "-c/--config"),
    (["init", "--server-name", "bad name!", "--data-dir", "/tmp/qasid-never"], "--server-name"),
    (["check-config", "-c", "/nonexistent.yaml"], "config file not found"),
    (["user", "add", "x", "-c", "/nonexistent.yaml"], "one of the arguments --password --password-file is required"),
])
def test_usage_errors_are_one_line_exit_2(args: list[str], needle: str) -> None:
    r = qasid(*args)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert needle in r.stderr


def test_check_config_names_bad_key(data_dir: Path) -> None:
    cfg = data_dir / "homeserver.yaml"
    assert qasid("check-config", "-c", str(cfg)).returncode == 0
    cfg.write_text(cfg.read_text() + "\nrc_login:\n  adress: {per_second: 1}\n")
    r = qasid("check-config", "-c", str(cfg))
    assert r.returncode == 2 and "rc_login.adress: unknown setting" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_check_config_missing_signing_key(data_dir: Path) -> None:
    (data_dir / "signing.key").unlink()
    r = qasid("check-config", "-c", str(data_dir / "homeserver.yaml"))
    assert r.returncode == 2 and "signing_key_path" in r.stderr


def test_user_and_token_commands(data_dir: Path, tmp_path: Path) -> None:
    cfg = str(data_dir / "homeserver.yaml")
    r = qasid("user", "add", "alice", "--password", "long-enough-pw", "--admin", "-c", cfg)
    assert r.returncode == 0 and r.stdout.strip() == "@alice:mofa.gov.test"
    pw = tmp_path / "pw"
    pw.write_text("another-long-pw\n")
    assert qasid("user", "add", "bob", "--password-file", str(pw), "-c", cfg).returncode == 0
    r = qasid("user", "add", "alice", "--password", "long-enough-pw", "-c", cfg)
    assert r.returncode == 2 and "already taken" in r.stderr
    r = qasid("user", "add", "carol", "--password", "short", "-c", cfg)
    assert r.returncode == 2 and "at least" in r.stderr
    r = qasid("user", "add", "Bad Name", "--password", "long-enough-pw", "-c", cfg)
    assert r.returncode == 2
    r = qasid("user", "list", "-c", cfg)
    assert r.stdout.splitlines() == ["@alice:mofa.gov.test  (admin)", "@bob:mofa.gov.test"]
    assert qasid("user", "deactivate", "bob", "-c", cfg).returncode == 0
    assert qasid("user", "list", "-c", cfg).stdout.splitlines() == ["@alice:mofa.gov.test  (admin)"]
    assert "@bob:mofa.gov.test  (deactivated)" in qasid("user", "list", "--deactivated", "-c", cfg).stdout
    r = qasid("user", "deactivate", "@nobody:mofa.gov.test", "-c", cfg)
    assert r.returncode == 2 and "no such user" in r.stderr

    r = qasid("registration-token", "create", "--uses", "3", "--expires-in", "7d", "-c", cfg)
    assert r.returncode == 0
    token = r.stdout.strip()
    assert len(token) == 16
    listing = qasid("registration-token", "list", "-c", cfg).stdout
    assert token in listing and "uses_allowed=3" in listing
    r = qasid("registration-token", "create", "--expires-in", "soon", "-c", cfg)
    assert r.returncode == 2 and "--expires-in" in r.stderr
    r = qasid("registration-token", "create", "--uses", "0", "-c", cfg)
    assert r.returncode == 2


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def test_run_serves_versions_and_uses_the_cli_created_user(data_dir: Path) -> None:
    """What `make run` does after init: serve on the configured port, on SQLite."""
    cfg = data_dir / "homeserver.yaml"
    assert qasid("user", "add", "alice", "--password", "long-enough-pw", "-c", str(cfg)).returncode == 0
    port = next(int(l.split(":")[1]) for l in cfg.read_text().splitlines() if l.strip().startswith("- port:"))
    proc = subprocess.Popen([*QASID, "run", "-c", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                body = _get(f"http://127.0.0.1:{port}/_matrix/client/versions")
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("server did not come up")
                time.sleep(0.1)
        assert "v1.16" in body["versions"]
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/_matrix/client/v3/login", method="POST",
            data=json.dumps({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
                             "password": "long-enough-pw"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            login = json.loads(resp.read())
        assert login["user_id"] == "@alice:mofa.gov.test"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    # The log names requests but never carries the password or the token.
    assert "long-enough-pw" not in out and login["access_token"] not in out
    assert "POST /_matrix/client/v3/login 200" in out
    assert (data_dir / "homeserver.db").exists()


def test_run_refuses_a_newer_database(data_dir: Path) -> None:
    import sqlite3

    cfg = data_dir / "homeserver.yaml"
    assert qasid("user", "list", "-c", str(cfg)).returncode == 0  # creates and migrates the database
    conn = sqlite3.connect(data_dir / "homeserver.db")
    conn.execute("UPDATE schema_version SET version = version + 5")
    conn.commit()
    conn.close()
    for args in (["run"], ["user", "list"]):
        r = qasid(*args, "-c", str(cfg))
        assert r.returncode == 2 and "newer than this Qasid" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_keys_rotate_keeps_the_old_key_published(data_dir: Path, tmp_path: Path) -> None:
    import asyncio

    from homeserver.config import load_config
    from homeserver.signing_key import read_old_verify_keys, read_signing_keys
    from tests.support.servers import running_server

    key_file = data_dir / "signing.key"
    before = read_signing_keys(key_file)[0]
    r = qasid("keys", "rotate", "-c", str(data_dir / "homeserver.yaml"))
    assert r.returncode == 0, r.stderr
    after = read_signing_keys(key_file)[0]
    assert after.version != before.version and f"ed25519:{after.version}" in r.stdout
    (old,) = read_old_verify_keys(key_file)
    assert old.key_id == f"ed25519:{before.version}"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"

    async def published() -> dict:
        config = load_config(data_dir / "homeserver.yaml")
        async with running_server(config) as srv:
            return (await srv.http.get("/_matrix/key/v2/server")).body

    body = asyncio.run(published())
    assert list(body["verify_keys"]) == [f"ed25519:{after.version}"]
    assert body["old_verify_keys"][old.key_id]["expired_ts"] == old.expired_ts
