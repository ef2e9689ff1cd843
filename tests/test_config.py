"""Configuration: validation naming the key, environment overrides, durations and sizes, the template."""

from __future__ import annotations

from pathlib import Path

import pytest

from homeserver.config import (
    ConfigError, load_config, parse_config, parse_duration, parse_size, render_template,
)


def test_minimal_config_defaults() -> None:
    cfg = parse_config({"server_name": "mofa.gov.example"}, environ={})
    assert cfg.enable_registration is False
    assert cfg.default_room_version == "12"
    assert cfg.listeners[0].port == 8008
    assert cfg.max_upload_size == 50 * 1024 * 1024


@pytest.mark.parametrize("data, message", [
    ({}, "server_name: required"),
    ({"server_name": "bad name!"}, "server_name"),
    ({"server_name": "a.example", "no_such_key": 1}, "no_such_key: unknown setting"),
    ({"server_name": "a.example", "rc_login": {"address": {"per_secnd": 1}}}, "rc_login.address.per_secnd: unknown setting"),
    ({"server_name": "a.example", "enable_registration": "yes"}, "enable_registration: expected bool"),
    ({"server_name": "a.example", "listeners": [{"port": "80"}]}, "listeners[0].port: expected int"),
    ({"server_name": "a.example", "listeners": [{"port": 0}]}, "listeners[0].port"),
    ({"server_name": "a.example", "listeners": [{"resources": [{"names": ["bogus"]}]}]}, "listeners[0].resources[0].names"),
    ({"server_name": "a.example", "database": "mysql://x"}, "database:"),
    ({"server_name": "a.example", "default_room_version": "5"}, "default_room_version"),
    ({"server_name": "a.example", "max_upload_size": "lots"}, "max_upload_size"),
    ({"server_name": "a.example", "session_lifetime": "forever"}, "session_lifetime"),
    ({"server_name": "a.example", "log_level": "LOUD"}, "log_level"),
    ({"server_name": "a.example", "federation_domain_whitelist": "b.example"}, "federation_domain_whitelist"),
    ({"server_name": "a.example", "listeners": [{"tls": True}]}, "listeners[0].tls"),
    ({"server_name": "a.example", "password_hashing": {"max_concurrent": -1}}, "password_hashing.max_concurrent"),
])
def test_invalid_configs_name_the_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(data, environ={})
    assert message in str(e.value)


def test_env_overrides_secrets_only() -> None:
    cfg = parse_config(
        {"server_name": "a.example", "registration_shared_secret": "from-file"},
        environ={"QASID_REGISTRATION_SHARED_SECRET": "from-env", "QASID_DATABASE": "postgresql://u:p@db/q",
                 "QASID_SERVER_NAME": "ignored.example"},
    )
    assert cfg.registration_shared_secret == "from-env"
    assert cfg.database == "postgresql://u:p@db/q"
    assert cfg.server_name == "a.example"


def test_durations_and_sizes() -> None:
    assert parse_duration("30s") == 30_000 and parse_duration("5m") == 300_000 and parse_duration(42) == 42
    assert parse_duration("7d") == 7 * 86_400_000
    assert parse_size("512K") == 524288 and parse_size("50M") == 50 * 1024**2 and parse_size("1G") == 1024**3
    with pytest.raises(ValueError):
        parse_duration("1 fortnight")
    with pytest.raises(ValueError):
        parse_size(True)


def test_relative_sqlite_path_resolves_against_config_dir(tmp_path: Path) -> None:
    cfg = parse_config({"server_name": "a.example", "database": "sqlite:///db/hs.db"}, config_dir=tmp_path, environ={})
    assert cfg.database_url == f"sqlite:///{tmp_path}/db/hs.db"
    cfg = parse_config({"server_name": "a.example", "database": "sqlite:////abs/hs.db"}, config_dir=tmp_path, environ={})
    assert cfg.database_url == "sqlite:////abs/hs.db"


def test_template_round_trips_and_comments_every_key(tmp_path: Path) -> None:
    cfg = parse_config({"server_name": "mofa.gov.example", "registration_shared_secret": "x"}, environ={})
    text = render_template(cfg)
    path = tmp_path / "homeserver.yaml"
    path.write_text(text)
    again = load_config(path, environ={})
    assert again.server_name == "mofa.gov.example" and again.registration_shared_secret == "x"
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        is_key = stripped and not stripped.startswith(("#", "-")) and stripped.endswith(":") or (": " in stripped and not stripped.startswith(("#", "-")))
        if is_key and not line.startswith(" " * 4):  # keys of list items are described by their list's comment
            assert lines[i - 1].strip().startswith("#"), f"no comment above {line!r}"


def test_load_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("server_name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
