"""Start Qasid and Synapse on loopback for `python -m bench servers`.

Each server gets a fresh data directory, SQLite, a free 127.0.0.1 port, a registration shared secret and
rate limits raised far beyond what the load needs. Synapse is installed into ``bench/.work/synapse-venv`` on
first use. Every process started here is recorded so it can be stopped on any exit path.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / ".work"
SYNAPSE_VENV = WORK / "synapse-venv"
QASID_BIN = REPO / ".venv" / "bin" / "qasid"

UNLIMITED = {"per_second": 100000, "burst_count": 100000}

# Synapse rate-limit settings: a flat limit, or a mapping of sub-limits.
SYNAPSE_RATE_LIMITS: dict[str, tuple[str, ...]] = {
    "rc_message": (),
    "rc_registration": (),
    "rc_registration_token_validity": (),
    "rc_login": ("address", "account", "failed_attempts"),
    "rc_joins": ("local", "remote"),
    "rc_joins_per_room": (),
    "rc_invites": ("per_room", "per_user", "per_issuer"),
    "rc_presence": ("per_user",),
    "rc_3pid_validation": (),
    "rc_admin_redaction": (),
    "rc_room_creation": (),
    "rc_delayed_event_mgmt": (),
    "rc_reports": (),
    "rc_key_requests": (),
    "rc_media_create": (),
    "rc_third_party_invite": (),
    "rc_user_directory": (),
    "rc_profile": (),
}

_RUNNING: list[subprocess.Popen] = []


class SetupError(Exception):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_all() -> None:
    for proc in list(_RUNNING):
        stop_process(proc)


atexit.register(_stop_all)


def _on_sigterm(signum: int, frame: Any) -> None:
    # Turn SIGTERM into SystemExit so `finally` blocks and atexit stop the servers.
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _on_sigterm)


def stop_process(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the process group we created for ``proc``; SIGKILL it after ``grace`` seconds."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)
    if proc in _RUNNING:
        _RUNNING.remove(proc)


def rss_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of ``pid`` in MB (MiB)."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = round(int(rest.split()[0]) / 1024, 1)
    return out


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join(text[-lines:])


@dataclass
class RunningServer:
    name: str
    version: str
    base_url: str
    secret: str
    proc: subprocess.Popen
    data_dir: Path
    logs: list[Path] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join(f"--- {p} (last {lines} lines) ---\n{tail(p, lines)}" for p in self.logs)

    def stop(self) -> None:
        stop_process(self.proc)


def _wait_ready(name: str, proc: subprocess.Popen, base_url: str, logs: list[Path], timeout: float) -> None:
    url = base_url + "/_matrix/client/versions"
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SetupError(f"{name} exited with status {proc.returncode} before answering {url}\n"
                             + "\n".join(f"--- {p} ---\n{tail(p)}" for p in logs))
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        time.sleep(0.2)
    stop_process(proc)
    raise SetupError(f"{name} did not answer {url} within {timeout:.0f} s ({last})\n"
                     + "\n".join(f"--- {p} ---\n{tail(p)}" for p in logs))


def _spawn(cmd: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    _RUNNING.append(proc)
    return proc


# --- Synapse ---------------------------------------------------------------------------------------

def synapse_python() -> Path:
    return SYNAPSE_VENV / "bin" / "python"


def ensure_synapse() -> str:
    """Install matrix-synapse into bench/.work/synapse-venv unless it is already there; return its version."""
    py = synapse_python()
    probe = [str(py), "-c", "import synapse.app.homeserver, importlib.metadata as m; print(m.version('matrix-synapse'))"]
    if py.exists():
        r = subprocess.run(probe, capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.strip()
    WORK.mkdir(parents=True, exist_ok=True)
    print(f"Installing matrix-synapse into {SYNAPSE_VENV} (first run only, about a minute) ...", flush=True)
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(SYNAPSE_VENV)], check=True)
    r = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "matrix-synapse"])
    if r.returncode != 0:
        raise SetupError("pip install matrix-synapse failed (see the output above)")
    r = subprocess.run(probe, capture_output=True, text=True)
    if r.returncode != 0:
        raise SetupError(f"matrix-synapse installed but does not import:\n{r.stderr}")
    return r.stdout.strip()


def _synapse_known_settings() -> str:
    """Source of Synapse's rate-limit config module, to tell which rc_* settings this version reads."""
    r = subprocess.run([str(synapse_python()), "-c",
                        "import inspect, synapse.config.ratelimiting as m; print(inspect.getsource(m))"],
                       capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else ""


def start_synapse(keep: bool = False, timeout: float = 180.0) -> RunningServer:
    version = ensure_synapse()
    data = Path(tempfile.mkdtemp(prefix="bench-synapse-"))
    hs_yaml = data / "hs.yaml"
    gen = subprocess.run([str(synapse_python()), "-m", "synapse.app.homeserver", "--server-name", "localhost",
                          "--config-path", "hs.yaml", "--generate-config", "--report-stats=no"],
                         cwd=data, capture_output=True, text=True)
    if gen.returncode != 0:
        raise SetupError(f"Synapse --generate-config failed:\n{gen.stdout}\n{gen.stderr}")
    cfg = yaml.safe_load(hs_yaml.read_text(encoding="utf-8"))
    port = free_port()
    secret = secrets.token_hex(16)
    cfg["database"] = {"name": "sqlite3", "args": {"database": str(data / "homeserver.db")}}
    cfg["listeners"] = [{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                         "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]}]
    cfg["registration_shared_secret"] = secret
    cfg["enable_registration"] = False
    cfg["presence"] = {"enabled": True}
    cfg["report_stats"] = False
    cfg["trusted_key_servers"] = []
    cfg["suppress_key_server_warning"] = True
    known = _synapse_known_settings()
    for key, subkeys in SYNAPSE_RATE_LIMITS.items():
        if known and f'"{key}"' not in known and f'"{key}.' not in known:
            continue  # this Synapse version does not have the setting
        cfg[key] = {sub: dict(UNLIMITED) for sub in subkeys} if subkeys else dict(UNLIMITED)
    hs_yaml.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    out_log = data / "stdout.log"
    logs = [out_log, data / "homeserver.log"]
    proc = _spawn([str(synapse_python()), "-m", "synapse.app.homeserver", "-c", "hs.yaml"], data, out_log)
    base = f"http://127.0.0.1:{port}"
    _wait_ready("Synapse", proc, base, logs, timeout)
    return RunningServer("synapse", version, base, secret, proc, data, logs)


# --- Qasid -----------------------------------------------------------------------------------------

def qasid_version() -> str:
    r = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c",
                        "import importlib.metadata as m; print(m.version('qasid'))"], capture_output=True, text=True)
    ver = r.stdout.strip() if r.returncode == 0 else "unknown"
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if rev.returncode != 0:
        return ver
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "homeserver"],
                           capture_output=True, text=True).stdout.strip()
    return f"{ver} ({rev.stdout.strip()}{', uncommitted changes under homeserver/' if dirty else ''})"


def start_qasid(timeout: float = 60.0) -> RunningServer:
    if not QASID_BIN.exists():
        raise SetupError(f"{QASID_BIN} is missing: run `make run` or `make test` once to create the venv")
    data = Path(tempfile.mkdtemp(prefix="bench-qasid-"))
    port = free_port()
    init = subprocess.run([str(QASID_BIN), "init", "--server-name", "localhost", "--data-dir", str(data),
                           "--http-port", str(port), "--bind", "127.0.0.1"], capture_output=True, text=True)
    if init.returncode != 0:
        raise SetupError(f"qasid init failed:\n{init.stdout}\n{init.stderr}")
    cfg_path = data / "homeserver.yaml"
    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    secret = secrets.token_hex(16)
    cfg["registration_shared_secret"] = secret
    cfg["enable_registration"] = False
    cfg["presence"] = {"enabled": True}
    cfg["rc_message"] = dict(UNLIMITED)
    cfg["rc_registration"] = dict(UNLIMITED)
    cfg["rc_login"] = {sub: dict(UNLIMITED) for sub in ("address", "account", "failed_attempts")}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    out_log = data / "stdout.log"
    proc = _spawn([str(QASID_BIN), "run", "-c", str(cfg_path)], data, out_log)
    base = f"http://127.0.0.1:{port}"
    _wait_ready("Qasid", proc, base, [out_log], timeout)
    return RunningServer("qasid", qasid_version(), base, secret, proc, data, [out_log])


def remove_data(server: RunningServer) -> None:
    shutil.rmtree(server.data_dir, ignore_errors=True)
