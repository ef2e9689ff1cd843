"""The homeserver's configuration: one YAML file, validated against typed dataclasses at start-up.

The dataclasses below are the single source of truth: the validator walks them (so an unknown key or a
wrong type stops start-up naming the key path), ``qasid init`` writes its commented template from them,
and docs/configuration.md is generated from them. Where Synapse has the same setting we use its name
and shape so operators carry their knowledge over.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NewType, Union

import yaml

from homeserver.events.room_versions import DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS
from homeserver.types import is_valid_server_name

# Durations are milliseconds; in YAML they may be written as an integer (ms) or "30s", "5m", "1h", "7d".
Duration = NewType("Duration", int)
# Sizes are bytes; in YAML an integer or "512K", "50M", "1G".
Size = NewType("Size", int)

ENV_PREFIX = "QASID_"


class ConfigError(Exception):
    """A problem with the configuration, naming the key path it concerns."""


def doc(text: str, *, secret: bool = False, example: Any = None) -> dict[str, Any]:
    return {"doc": text, "secret": secret, "example": example}


def _f(default: Any, text: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        factory = (lambda d=default: _copy(d))
        return field(default_factory=factory, metadata=doc(text, **kw))
    return field(default=default, metadata=doc(text, **kw))


def _copy(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.replace(value)
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


@dataclass
class RateLimit:
    per_second: float = _f(0.17, "Sustained rate: actions allowed per second.")
    burst_count: float = _f(3.0, "How many actions may be taken at once before the sustained rate applies.")


@dataclass
class LoginRateLimits:
    address: RateLimit = _f(RateLimit(0.003, 5), "Login attempts per client IP address.")
    account: RateLimit = _f(RateLimit(0.003, 5), "Login attempts per account.")
    failed_attempts: RateLimit = _f(RateLimit(0.17, 3), "Failed login attempts per account.")


@dataclass
class ListenerResource:
    names: list[str] = _f(["client", "federation"], "Which APIs this listener serves: client, federation, media, keys.")
    compress: bool = _f(False, "Accepted for Synapse compatibility; Qasid never compresses responses.")


@dataclass
class Listener:
    port: int = _f(8008, "TCP port to listen on.")
    bind_addresses: list[str] = _f(["127.0.0.1"], "Addresses to bind; use 0.0.0.0 or :: behind a firewall or reverse proxy.")
    type: Literal["http"] = _f("http", "Listener type; only http is supported.")
    tls: bool = _f(False, "Serve TLS on this listener with tls_certificate_path/tls_private_key_path.")
    x_forwarded: bool = _f(False, "Trust X-Forwarded-For from a reverse proxy for client IP addresses.")
    resources: list[ListenerResource] = _f([ListenerResource()], "APIs served on this listener.")


@dataclass
class PasswordPolicy:
    enabled: bool = _f(True, "Enforce the password policy on registration and password changes.")
    minimum_length: int = _f(10, "Minimum password length in characters.")
    require_digit: bool = _f(False, "Require at least one digit.")
    require_symbol: bool = _f(False, "Require at least one non-alphanumeric character.")
    require_lowercase: bool = _f(False, "Require at least one lower-case letter.")
    require_uppercase: bool = _f(False, "Require at least one upper-case letter.")


@dataclass
class PasswordConfig:
    enabled: bool = _f(True, "Allow password logins at all.")
    policy: PasswordPolicy = _f(PasswordPolicy(), "Rules new passwords must follow.")


@dataclass
class PasswordHashing:
    time_cost: int = _f(3, "argon2id iterations.")
    memory_cost_kib: int = _f(65536, "argon2id memory per hash in KiB.")
    parallelism: int = _f(2, "argon2id lanes.")
    max_concurrent: int = _f(0, "Hashes computed at once (each holds memory_cost_kib); more wait their turn. 0: the number of CPUs.")


@dataclass
class UserDirectory:
    enabled: bool = _f(True, "Serve /user_directory/search.")
    search_all_users: bool = _f(False, "Let users find every local user, not only those sharing a room or in public rooms.")


@dataclass
class FederationPeer:
    address: str | None = _f(None, "host:port to connect to for this server (skips .well-known and SRV discovery).")
    verify_keys: dict[str, str] = _f({}, "Pinned signing keys (key ID → unpadded base64 public key): trusted without fetching, and no other key of this server is accepted.")


@dataclass
class Federation:
    directory: dict[str, FederationPeer] = _f({}, "Static federation directory: server name → address and pinned keys, for a closed federation.")
    tls_ca_file: str | None = _f(None, "PEM CA bundle for checking other servers' certificates (e.g. the national CA). Default: the system store.")
    verify_tls: bool = _f(True, "Verify other servers' TLS certificates. Only ever switch off in a test lab.")
    notaries: list[str] = _f([], "Servers trusted to vouch for other servers' signing keys when those cannot be fetched directly.")
    request_timeout: Duration = _f(Duration(30_000), "Timeout for one outbound federation request.")


@dataclass
class ThumbnailSizeConfig:
    width: int = _f(32, "Width in pixels.")
    height: int = _f(32, "Height in pixels.")
    method: Literal["crop", "scale"] = _f("crop", "crop fills the box exactly; scale fits inside it.")


DEFAULT_THUMBNAIL_SIZES = [
    ThumbnailSizeConfig(32, 32, "crop"), ThumbnailSizeConfig(96, 96, "crop"), ThumbnailSizeConfig(320, 240, "scale"),
    ThumbnailSizeConfig(640, 480, "scale"), ThumbnailSizeConfig(800, 600, "scale"),
]


@dataclass
class Presence:
    enabled: bool = _f(True, "Track and share online/offline status. Off stops the server storing or sending any presence.")


@dataclass
class Push:
    gateway_allowlist: list[str] = _f([], "Push gateways this server may send notifications to, by host name (a port may follow, e.g. push.mofa.gov.example:8443), or '*.gov.example' for every host under a domain. Clients choose the gateway URL when they set a pusher, so this is what keeps notifications in-country: empty (the default) refuses every http pusher; list the ministry's own Sygnal.")
    include_content: bool = _f(True, "Send the event's content (the message text) to push gateways (Synapse's push.include_content). False keeps message text off the gateway and the phone vendors' services behind it; type, sender and room name still go. Pushers set with data.format event_id_only get only event and room IDs, counts and priority.")


@dataclass
class MatrixRtc:
    foci: list[dict[str, Any]] = _f([], "MatrixRTC foci (MSC4143) advertised to clients in /.well-known/matrix/client as org.matrix.msc4143.rtc_foci, e.g. [{type: livekit, livekit_service_url: 'https://rtc.mofa.gov.example/livekit/jwt'}] for Element Call's group calls.")


@dataclass
class Config:
    server_name: str = _f("", "The domain part of every user ID on this server (e.g. mofa.gov.example). Cannot be changed later.")
    public_baseurl: str | None = _f(None, "The URL clients use to reach this server; advertised in /.well-known/matrix/client.")
    listeners: list[Listener] = _f([Listener()], "HTTP listeners (Synapse's shape).")
    database: str = _f("sqlite:///homeserver.db", "sqlite:///PATH (relative to this file's folder) or postgresql://user:pass@host:port/dbname.", secret=True)
    database_pool_size: int = _f(10, "Maximum PostgreSQL connections in the pool.")
    signing_key_path: str = _f("signing.key", "This server's ed25519 signing key (relative to this file's folder).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _f("INFO", "Log level. Tokens, passwords, keys and message bodies are never logged at any level.")
    enable_registration: bool = _f(False, "Let anyone register without a registration token. Registration tokens are always accepted.")
    registration_requires_token: bool = _f(False, "When enable_registration is true, still require a registration token.")
    registration_shared_secret: str | None = _f(None, "Secret for /_synapse/admin/v1/register (shared-secret registration). Env: QASID_REGISTRATION_SHARED_SECRET.", secret=True)
    password_config: PasswordConfig = _f(PasswordConfig(), "Password logins and password policy.")
    password_hashing: PasswordHashing = _f(PasswordHashing(), "argon2id cost parameters (a security setting: lower only for tests).")
    refreshable_access_token_lifetime: Duration | None = _f(Duration(300_000), "Lifetime of access tokens issued with a refresh token.")
    refresh_token_lifetime: Duration | None = _f(None, "Lifetime of refresh tokens; null keeps them until used.")
    session_lifetime: Duration | None = _f(None, "Lifetime of non-refreshable access tokens; null keeps them until logout.")
    max_event_delay_duration: Duration | None = _f(Duration(86_400_000), "Longest delay a client may ask for a delayed event (MSC4140; Element Call's call membership needs it); null turns delayed events off.")
    max_delayed_events_per_user: int = _f(100, "Delayed events one user may have pending at once.")
    max_upload_size: Size = _f(Size(50 * 1024 * 1024), "Largest media upload accepted (also the largest remote file fetched).")
    media_store_path: str = _f("media_store", "Where media files are kept (relative to this file's folder), named by their SHA-256.")
    media_quota_per_user: Size | None = _f(Size(5 * 1024**3), "Total bytes one user may have uploaded; null for no limit.")
    media_blocked_content_types: list[str] = _f([], "Content types refused on upload (403), e.g. application/x-msdownload.")
    enable_authenticated_media: bool = _f(True, "Serve media only with an access token (/_matrix/client/v1/media). False also serves the legacy unauthenticated /_matrix/media/v3/download and thumbnail paths.")
    max_pending_media_uploads: int = _f(5, "Media IDs one user may hold reserved (POST /media/v1/create) without uploading.")
    unused_expiration_time: Duration = _f(Duration(86_400_000), "How long a reserved media ID waits for its upload.")
    max_image_pixels: int = _f(32_000_000, "Largest image (width x height) that is thumbnailed.")
    thumbnail_sizes: list[ThumbnailSizeConfig] = _f(DEFAULT_THUMBNAIL_SIZES, "Thumbnail sizes generated on request (the nearest one is served).")
    url_preview_enabled: bool = _f(False, "Fetch web pages to preview links (off by default: a data-residency choice).")
    url_preview_allowed_hosts: list[str] = _f([], "Hosts (exact, or *.suffix) whose pages may be previewed when previews are on.")
    max_request_body_size: Size = _f(Size(8 * 1024 * 1024), "Largest JSON request body accepted (413 M_TOO_LARGE beyond).")
    default_room_version: str = _f(DEFAULT_ROOM_VERSION, "Room version for new rooms.")
    app_service_config_files: list[str] = _f([], "Application service registration files (YAML, as for Synapse). A malformed one stops start-up, naming the file and the key.")
    federation_domain_whitelist: list[str] | None = _f(None, "When set, federate only with these server names (inbound and outbound).")
    federation: Federation = _f(Federation(), "Server-server settings: directory, TLS trust, notaries.")
    serve_server_wellknown: bool = _f(False, "Serve /.well-known/matrix/server pointing at this server's port 443.")
    extra_well_known_client_content: dict[str, Any] = _f({}, "Extra keys merged into /.well-known/matrix/client.")
    presence: Presence = _f(Presence(), "Presence (Synapse's shape).")
    user_directory: UserDirectory = _f(UserDirectory(), "The user directory (Synapse's shape).")
    require_auth_for_profile_requests: bool = _f(False, "Require an access token to read profiles.")
    admin_contact: str | None = _f(None, "Contact address shown to users in some errors (e.g. mailto:ict@mofa.gov.example).")
    rc_message: RateLimit = _f(RateLimit(0.2, 10), "Messages sent per user.")
    rc_registration: RateLimit = _f(RateLimit(0.17, 3), "Registration attempts per client IP address.")
    rc_login: LoginRateLimits = _f(LoginRateLimits(), "Login attempts.")
    tls_certificate_path: str | None = _f(None, "PEM certificate chain for listeners with tls: true.")
    tls_private_key_path: str | None = _f(None, "PEM private key for listeners with tls: true.")
    push: Push = _f(Push(), "Push notifications sent through push gateways (Synapse's shape).")
    turn_uris: list[str] = _f([], "TURN server URIs handed to clients by /voip/turnServer for 1:1 calls (turn: or turns:), e.g. turn:turn.mofa.gov.example:3478?transport=udp. Empty: no TURN server is offered.")
    turn_shared_secret: str | None = _f(None, "coturn's static-auth-secret (use-auth-secret, the TURN REST scheme): clients get short-lived credentials signed with it, never the secret itself. Env: QASID_TURN_SHARED_SECRET.", secret=True)
    turn_username: str | None = _f(None, "A fixed TURN username for every user, when the TURN server has no shared secret (weaker: the password is the same for all; prefer turn_shared_secret).")
    turn_password: str | None = _f(None, "The password for turn_username. Env: QASID_TURN_PASSWORD.", secret=True)
    turn_user_lifetime: Duration = _f(Duration(3_600_000), "How long TURN credentials from turn_shared_secret stay valid.")
    turn_allow_guests: bool = _f(True, "Accepted for Synapse compatibility: Qasid has no guest accounts, so only registered users get TURN credentials.")
    matrix_rtc: MatrixRtc = _f(MatrixRtc(), "MatrixRTC (group calls through an SFU such as LiveKit).")

    # Not settings: where the file was read from, so relative paths resolve against it.
    config_dir: Path = field(default=Path("."), metadata={"internal": True})

    def resolve_path(self, p: str) -> Path:
        path = Path(p)
        return path if path.is_absolute() else (self.config_dir / path)

    @property
    def database_url(self) -> str:
        """The database URL with a relative SQLite path anchored at the config file's folder."""
        if self.database.startswith("sqlite:///"):
            return "sqlite:///" + str(self.resolve_path(self.database[len("sqlite:///"):]))
        return self.database

    @property
    def base_url(self) -> str:
        if self.public_baseurl:
            return self.public_baseurl.rstrip("/") + "/"
        lst = self.listeners[0] if self.listeners else Listener()
        host = lst.bind_addresses[0] if lst.bind_addresses else "127.0.0.1"
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        scheme = "https" if lst.tls else "http"
        return f"{scheme}://{host}:{lst.port}/"


# --- parsing -------------------------------------------------------------------------------------

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000, "y": 31_536_000_000}
_UNITS_BYTES = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_duration(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m, 1h, 7d")
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h|d|w|y)\s*", str(value))
    if not m:
        raise ValueError("expected a duration such as 30s, 5m, 1h, 7d")
    return int(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_size(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512K, 50M, 1G")
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)B?\s*", str(value).upper())
    if not m:
        raise ValueError("expected a size such as 512K, 50M, 1G")
    return int(m.group(1)) * _UNITS_BYTES[m.group(2)]


def _type_name(tp: Any) -> str:
    if tp is Duration:
        return "duration"
    if tp is Size:
        return "size"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    def fail(why: str | None = None) -> ConfigError:
        return ConfigError(f"{path}: {why or f'expected {_type_name(tp)}, got {type(value).__name__}'}")

    if tp is Any:
        return value
    if tp is Duration or tp is Size:
        try:
            return (parse_duration if tp is Duration else parse_size)(value)
        except ValueError as e:
            raise fail(str(e)) from None
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise fail()
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, path)
            except ConfigError as e:
                errors.append(e)
        raise errors[0] if len(errors) == 1 else fail()
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise fail()
        return value
    if origin is list:
        if not isinstance(value, list):
            raise fail()
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise fail()
        args = typing.get_args(tp)
        if not args or args[1] is Any:
            return dict(value)
        return {_convert(k, args[0], path): _convert(v, args[1], f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail()
        return _build(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail()
        return value
    raise fail(f"unsupported type {tp!r}")  # pragma: no cover - a schema bug, not user input


def _settings(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


def _build(cls: type, data: dict[str, Any], path: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in _settings(cls)}
    for key in data:
        if key not in known:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(f"{where}: unknown setting")
    kwargs = {}
    for name, f in known.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{path}.{name}" if path else name)
    return cls(**kwargs)


def _apply_env(data: dict[str, Any], environ: typing.Mapping[str, str]) -> None:
    """Secrets can come from the environment so they need not sit in the file (e.g. QASID_DATABASE)."""
    for f in _settings(Config):
        if f.metadata.get("secret"):
            env = ENV_PREFIX + f.name.upper()
            if env in environ:
                data[f.name] = environ[env]


def parse_config(data: Any, config_dir: Path = Path("."), environ: typing.Mapping[str, str] | None = None) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a YAML mapping")
    data = dict(data)
    _apply_env(data, os.environ if environ is None else environ)
    cfg: Config = _build(Config, data, "")
    cfg.config_dir = config_dir
    _check_semantics(cfg)
    return cfg


def _check_semantics(cfg: Config) -> None:
    if not cfg.server_name:
        raise ConfigError("server_name: required")
    if not is_valid_server_name(cfg.server_name):
        raise ConfigError(f"server_name: {cfg.server_name!r} is not a valid server name")
    if not (cfg.database.startswith("sqlite:///") or cfg.database.startswith(("postgresql://", "postgres://"))):
        raise ConfigError("database: must be sqlite:///PATH or postgresql://...")
    if cfg.default_room_version not in KNOWN_ROOM_VERSIONS:
        raise ConfigError(f"default_room_version: unsupported room version {cfg.default_room_version!r}")
    for i, lst in enumerate(cfg.listeners):
        if not 0 < lst.port < 65536:
            raise ConfigError(f"listeners[{i}].port: must be between 1 and 65535")
        if lst.tls and not (cfg.tls_certificate_path and cfg.tls_private_key_path):
            raise ConfigError(f"listeners[{i}].tls: needs tls_certificate_path and tls_private_key_path")
        for j, res in enumerate(lst.resources):
            for name in res.names:
                if name not in ("client", "federation", "media", "keys", "openid"):
                    raise ConfigError(f"listeners[{i}].resources[{j}].names: unknown resource {name!r}")
    for name, rl in (("rc_message", cfg.rc_message), ("rc_registration", cfg.rc_registration)):
        if rl.per_second < 0 or rl.burst_count < 0:
            raise ConfigError(f"{name}: rates must not be negative")
    if cfg.password_hashing.memory_cost_kib < 8 * cfg.password_hashing.parallelism:
        raise ConfigError("password_hashing.memory_cost_kib: must be at least 8 × parallelism")
    if cfg.max_event_delay_duration is not None and cfg.max_event_delay_duration <= 0:
        raise ConfigError("max_event_delay_duration: must be positive (or null to turn delayed events off)")
    if cfg.max_delayed_events_per_user < 1:
        raise ConfigError("max_delayed_events_per_user: must be at least 1")
    if cfg.password_hashing.max_concurrent < 0:
        raise ConfigError("password_hashing.max_concurrent: must not be negative")
    for i, uri in enumerate(cfg.turn_uris):
        if not re.match(r"^turns?:", uri):
            raise ConfigError(f"turn_uris[{i}]: must start with turn: or turns:")
    if (cfg.turn_username is None) != (cfg.turn_password is None):
        raise ConfigError("turn_username: turn_username and turn_password go together")
    if cfg.turn_user_lifetime <= 0:
        raise ConfigError("turn_user_lifetime: must be positive")
    for i, focus in enumerate(cfg.matrix_rtc.foci):
        if not isinstance(focus.get("type"), str) or not focus["type"]:
            raise ConfigError(f"matrix_rtc.foci[{i}].type: required (e.g. livekit)")


def load_config(path: str | Path, environ: typing.Mapping[str, str] | None = None) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {p}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {str(e).splitlines()[0]}") from None
    return parse_config(data, config_dir=p.resolve().parent, environ=environ)


# --- the commented template and the reference page -----------------------------------------------


def _yaml_scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _emit(obj: Any, indent: int, out: list[str]) -> None:
    pad = "  " * indent
    hints = typing.get_type_hints(type(obj))
    for f in _settings(type(obj)):
        value = getattr(obj, f.name)
        out.append(f"{pad}# {f.metadata['doc']}")
        if hints[f.name] in (Duration, Size) or typing.get_args(hints[f.name]) and (Duration in typing.get_args(hints[f.name]) or Size in typing.get_args(hints[f.name])):
            out.append(f"{pad}# ({'duration: 30s, 5m, 1h, 7d or milliseconds' if Duration in (hints[f.name], *typing.get_args(hints[f.name])) else 'size: 512K, 50M, 1G or bytes'})")
        if dataclasses.is_dataclass(value):
            out.append(f"{pad}{f.name}:")
            _emit(value, indent + 1, out)
        elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            out.append(f"{pad}{f.name}:")
            for item in value:
                dumped = yaml.safe_dump([_plain(item)], sort_keys=False, default_flow_style=False).rstrip().splitlines()
                out.extend(f"{pad}  {line}" for line in dumped)
        else:
            out.append(f"{pad}{f.name}: {_yaml_scalar(value)}")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in _settings(type(value))}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def render_template(cfg: Config) -> str:
    """The file ``qasid init`` writes: every setting present, each with its comment."""
    out = [
        "# Qasid homeserver configuration.",
        "# Every setting is listed with its default; see docs/configuration.md for the full reference.",
        "",
    ]
    _emit(cfg, 0, out)
    return "\n".join(out) + "\n"


def config_reference_markdown() -> str:
    """docs/configuration.md, generated from the schema so the reference can never drift from the code."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from homeserver/config.py by `qasid config-reference`; do not edit by hand. -->",
        "",
        "One YAML file (`homeserver.yaml`). Unknown keys and wrong types stop start-up with a message naming the key.",
        f"Settings marked *secret* can also be given as environment variables `{ENV_PREFIX}<NAME>` (upper case), which win over the file.",
        "Durations accept `30s`, `5m`, `1h`, `7d` or milliseconds; sizes accept `512K`, `50M`, `1G` or bytes.",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]

    def walk(cls: type, prefix: str, default_obj: Any) -> None:
        hints = typing.get_type_hints(cls)
        for f in _settings(cls):
            key = prefix + f.name
            value = getattr(default_obj, f.name)
            tp = hints[f.name]
            meaning = f.metadata["doc"] + (" *secret*" if f.metadata.get("secret") else "")
            if dataclasses.is_dataclass(value):
                lines.append(f"| `{key}` | mapping | | {meaning} |")
                walk(type(value), key + ".", value)
                continue
            shown = _yaml_scalar(_plain(value)).replace("|", "\\|")
            lines.append(f"| `{key}` | {_type_name(tp)} | `{shown}` | {meaning} |")
            if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
                walk(type(value[0]), key + "[].", value[0])

    walk(Config, "", Config(server_name="example.org"))
    return "\n".join(lines) + "\n"
