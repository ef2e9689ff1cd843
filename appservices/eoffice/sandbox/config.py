"""Sandbox configuration: command-line options and the employee directory seed file.

The sandbox is configured entirely from the command line (plus one YAML file for employees) so a
ministry can start it with a single command while evaluating the bridge.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

SAMPLE_EMPLOYEES = Path(__file__).with_name("sample_employees.yaml")
_PREFIX_RE = re.compile(r"^[A-Z][A-Z0-9-]{0,15}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ConfigError(ValueError):
    """Raised for a configuration problem; the message names the option or key at fault."""


@dataclass(frozen=True)
class Employee:
    """One entry of the employee directory (the seed file is the source of truth on every start)."""

    employee_id: str
    name: str
    designation: str
    section: str
    email: str
    active: bool = True


@dataclass(frozen=True)
class SandboxConfig:
    """Everything the service needs to run; built by :func:`parse_args` or directly by embedders."""

    data_dir: Path
    tokens: dict[str, str]  # token -> integration name (recorded in audit fields)
    employees: tuple[Employee, ...]
    host: str = "127.0.0.1"
    port: int = 8480
    file_prefix: str = "MOFA"
    max_upload_bytes: int = 50 * 1024 * 1024
    webhook_retry_base: float = 1.0
    webhook_retry_max: float = 300.0
    webhook_timeout: float = 10.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_insecure_webhooks: bool = True

    @property
    def db_path(self) -> Path:
        return self.data_dir / "eoffice.sqlite3"

    @property
    def documents_dir(self) -> Path:
        return self.data_dir / "documents"


def load_employees(path: Path) -> tuple[Employee, ...]:
    """Read the employee YAML (a list, or a mapping with an ``employees`` list) and validate each entry."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--employees {path}: {exc}") from exc
    if isinstance(raw, dict):
        raw = raw.get("employees")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"--employees {path}: expected a non-empty list of employees")
    seen: set[str] = set()
    out: list[Employee] = []
    for i, entry in enumerate(raw):
        where = f"--employees {path}: entry {i}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping")
        unknown = set(entry) - {"employee_id", "name", "designation", "section", "email", "active"}
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        for key in ("employee_id", "name", "designation", "section", "email"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise ConfigError(f"{where}: {key!r} must be a non-empty string")
        active = entry.get("active", True)
        if not isinstance(active, bool):
            raise ConfigError(f"{where}: 'active' must be true or false")
        if entry["employee_id"] in seen:
            raise ConfigError(f"{where}: duplicate employee_id {entry['employee_id']!r}")
        seen.add(entry["employee_id"])
        out.append(Employee(entry["employee_id"], entry["name"], entry["designation"],
                            entry["section"], entry["email"], active))
    return tuple(out)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m appservices.eoffice.sandbox",
        description="Reference e-Office service implementing the connector contract (docs/eoffice-api.md).",
    )
    p.add_argument("--data-dir", required=True, type=Path, help="directory for the database and stored documents")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8480)
    p.add_argument("--token", action="append", default=[],
                   help="bearer token accepted for the integration named 'default' (repeatable)")
    p.add_argument("--integration", action="append", default=[], metavar="NAME:TOKEN",
                   help="a named integration and its bearer token (repeatable); the name is recorded for audit")
    p.add_argument("--employees", type=Path, default=SAMPLE_EMPLOYEES, help="employee directory YAML")
    p.add_argument("--file-prefix", default="MOFA", help="prefix of generated file numbers, e.g. MOFA/2026/0001")
    p.add_argument("--max-upload-bytes", type=int, default=50 * 1024 * 1024)
    p.add_argument("--webhook-retry-base", type=float, default=1.0, help="first retry delay in seconds")
    p.add_argument("--webhook-retry-max", type=float, default=300.0, help="longest retry delay in seconds")
    p.add_argument("--webhook-timeout", type=float, default=10.0, help="per-delivery HTTP timeout in seconds")
    p.add_argument("--require-https-webhooks", action="store_true", help="refuse http:// webhook URLs")
    p.add_argument("--tls-cert", type=Path)
    p.add_argument("--tls-key", type=Path)
    return p


def parse_args(argv: Sequence[str] | None = None) -> SandboxConfig:
    """Build a :class:`SandboxConfig` from command-line arguments, raising ConfigError on bad values."""
    a = _parser().parse_args(argv)
    tokens: dict[str, str] = {}
    for tok in a.token:
        tokens[_check_token(tok, "--token")] = "default"
    for spec in a.integration:
        name, sep, tok = spec.partition(":")
        if not sep or not _NAME_RE.match(name):
            raise ConfigError("--integration must be NAME:TOKEN with NAME of letters, digits, '_', '.', '-'")
        tokens[_check_token(tok, "--integration")] = name
    if not tokens:
        raise ConfigError("at least one --token or --integration is required")
    if not _PREFIX_RE.match(a.file_prefix):
        raise ConfigError("--file-prefix must be 1-16 upper-case letters, digits or '-', starting with a letter")
    if a.max_upload_bytes <= 0:
        raise ConfigError("--max-upload-bytes must be positive")
    if not (0 < a.webhook_retry_base <= a.webhook_retry_max):
        raise ConfigError("--webhook-retry-base must be positive and not above --webhook-retry-max")
    if (a.tls_cert is None) != (a.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    return SandboxConfig(
        data_dir=a.data_dir, tokens=tokens, employees=load_employees(a.employees), host=a.host, port=a.port,
        file_prefix=a.file_prefix, max_upload_bytes=a.max_upload_bytes,
        webhook_retry_base=a.webhook_retry_base, webhook_retry_max=a.webhook_retry_max,
        webhook_timeout=a.webhook_timeout, tls_cert=a.tls_cert, tls_key=a.tls_key,
        allow_insecure_webhooks=not a.require_https_webhooks,
    )


def _check_token(tok: str, option: str) -> str:
    # Short tokens are guessable; the sandbox may face a ministry network, so insist on some length.
    if len(tok) < 16 or any(c.isspace() for c in tok):
        raise ConfigError(f"{option}: tokens must be at least 16 characters without spaces")
    return tok
