"""The bridge's configuration (one YAML file): where Qasid and e-Office are, the appservice tokens,
who is who (employee ID ↔ Matrix user ID) and where the bridge keeps its state."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class BridgeConfigError(ValueError):
    """The message names the key at fault."""


@dataclass(frozen=True)
class BridgeConfig:
    homeserver_url: str
    server_name: str
    ca_file: str | None
    as_id: str
    as_token: str
    hs_token: str
    bot_localpart: str
    puppet_prefix: str
    listen_host: str
    listen_port: int
    public_url: str  # how e-Office reaches this bridge's webhook endpoint
    eoffice_url: str
    eoffice_token: str
    webhook_secret: str
    poll_interval_s: float
    data_dir: Path
    pickle_key: bytes  # encrypts the bridge's E2EE secrets at rest
    directory: dict[str, str]  # employee ID -> Matrix user ID
    link_power_level: int
    encrypt_new_rooms: bool
    # Classification rules: files of these classifications are only bridged to encrypted rooms, and
    # (local_only) only to rooms whose members all belong to this ministry's server.
    encrypted_classifications: frozenset[str]
    local_only_classifications: frozenset[str]
    file_prefix: str

    @property
    def bot(self) -> str:
        return f"@{self.bot_localpart}:{self.server_name}"

    def puppet_of(self, employee_id: str) -> str:
        return f"@{self.puppet_prefix}{employee_id.lower()}:{self.server_name}"

    def employee_of(self, user_id: str) -> str | None:
        for emp, uid in self.directory.items():
            if uid == user_id:
                return emp
        prefix = f"@{self.puppet_prefix}"
        if user_id.startswith(prefix) and user_id.endswith(":" + self.server_name):
            local = user_id[len(prefix):-len(self.server_name) - 1]
            return next((e for e in self.directory if e.lower() == local), None)
        return None

    def is_bridge_user(self, user_id: str) -> bool:
        return user_id == self.bot or (user_id.startswith(f"@{self.puppet_prefix}") and user_id.endswith(":" + self.server_name))

    def registration(self) -> dict[str, Any]:
        """The appservice registration file Qasid needs for this bridge."""
        server = self.server_name.replace(".", "\\.")
        return {
            "id": self.as_id, "url": f"http://{self.listen_host}:{self.listen_port}", "as_token": self.as_token,
            "hs_token": self.hs_token, "sender_localpart": self.bot_localpart, "rate_limited": False,
            "receive_ephemeral": True, "org.matrix.msc3202": True,
            "namespaces": {"users": [{"exclusive": True, "regex": f"@{self.puppet_prefix}.*:{server}"}],
                           "aliases": [], "rooms": []},
        }


def load_config(path: Path) -> BridgeConfig:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise BridgeConfigError(f"{path}: cannot read: {e}") from None
    if not isinstance(raw, dict):
        raise BridgeConfigError(f"{path}: not a YAML mapping")

    def get(section: str, key: str, kind: type, default: Any = ...) -> Any:
        block = raw.get(section) or {}
        if not isinstance(block, dict):
            raise BridgeConfigError(f"{path}: {section}: must be a mapping")
        value = block.get(key, default)
        if value is ...:
            raise BridgeConfigError(f"{path}: {section}.{key}: required")
        if value is not None and not isinstance(value, kind):
            raise BridgeConfigError(f"{path}: {section}.{key}: must be {kind.__name__}")
        return value

    directory = raw.get("directory") or {}
    if not isinstance(directory, dict) or not all(isinstance(k, str) and isinstance(v, str) and v.startswith("@") for k, v in directory.items()):
        raise BridgeConfigError(f"{path}: directory: must map employee IDs to Matrix user IDs")
    try:
        pickle_key = base64.b64decode(get("bridge", "pickle_key", str))
    except ValueError:
        raise BridgeConfigError(f"{path}: bridge.pickle_key: not base64") from None
    if len(pickle_key) != 32:
        raise BridgeConfigError(f"{path}: bridge.pickle_key: must be 32 bytes, base64-encoded")
    data_dir = Path(get("bridge", "data_dir", str))
    if not data_dir.is_absolute():
        data_dir = path.parent / data_dir
    host, port = get("appservice", "listen_host", str, "127.0.0.1"), get("appservice", "listen_port", int)
    return BridgeConfig(
        homeserver_url=get("homeserver", "url", str).rstrip("/"), server_name=get("homeserver", "server_name", str),
        ca_file=get("homeserver", "ca_file", str, None), as_id=get("appservice", "id", str, "eoffice"),
        as_token=get("appservice", "as_token", str), hs_token=get("appservice", "hs_token", str),
        bot_localpart=get("appservice", "bot_localpart", str, "eofficebot"),
        puppet_prefix=get("appservice", "puppet_prefix", str, "eoffice_"), listen_host=host, listen_port=port,
        public_url=get("appservice", "public_url", str, f"http://{host}:{port}").rstrip("/"),
        eoffice_url=get("eoffice", "url", str).rstrip("/"), eoffice_token=get("eoffice", "token", str),
        webhook_secret=get("eoffice", "webhook_secret", str), poll_interval_s=float(get("eoffice", "poll_interval_s", (int, float), 5)),
        data_dir=data_dir, pickle_key=pickle_key, directory=dict(directory),
        link_power_level=get("bridge", "link_power_level", int, 50), encrypt_new_rooms=get("bridge", "encrypt_new_rooms", bool, True),
        file_prefix=get("bridge", "file_state_type", str, "pk.gov.eoffice.file"),
        encrypted_classifications=_names(get("bridge", "encrypted_classifications", list, ["Confidential", "Secret", "Top Secret"]),
                                         path, "encrypted_classifications"),
        local_only_classifications=_names(get("bridge", "local_only_classifications", list, ["Secret", "Top Secret"]),
                                          path, "local_only_classifications"),
    )


def _names(value: list[Any], path: Path, key: str) -> frozenset[str]:
    if not all(isinstance(v, str) for v in value):
        raise BridgeConfigError(f"{path}: bridge.{key}: must be a list of classification names")
    return frozenset(value)
