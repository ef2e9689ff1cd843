"""Application service registration files (the spec's YAML, as Synapse reads them from
``app_service_config_files``): parsed and checked strictly at start-up, because a bridge with a wrong
namespace or token silently sees the wrong rooms. Every problem names the file and the key."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class RegistrationError(Exception):
    """A registration file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Namespace:
    exclusive: bool
    regex: re.Pattern[str]

    def matches(self, value: str) -> bool:
        return self.regex.fullmatch(value) is not None


@dataclass(frozen=True)
class AppService:
    id: str
    url: str | None
    as_token: str
    hs_token: str
    sender: str  # full user ID of sender_localpart
    users: tuple[Namespace, ...]
    aliases: tuple[Namespace, ...]
    rooms: tuple[Namespace, ...]
    rate_limited: bool
    protocols: tuple[str, ...]
    receive_ephemeral: bool  # MSC2409: typing, receipts, presence (and to-device) in transactions
    e2ee: bool  # MSC3202: device lists, one-time-key counts, device masquerading
    source: str

    def owns_user(self, user_id: str) -> bool:
        return user_id == self.sender or any(n.matches(user_id) for n in self.users)

    def exclusive_user(self, user_id: str) -> bool:
        return user_id == self.sender or any(n.exclusive and n.matches(user_id) for n in self.users)

    def owns_alias(self, alias: str) -> bool:
        return any(n.matches(alias) for n in self.aliases)

    def exclusive_alias(self, alias: str) -> bool:
        return any(n.exclusive and n.matches(alias) for n in self.aliases)

    def owns_room(self, room_id: str) -> bool:
        return any(n.matches(room_id) for n in self.rooms)


def _namespaces(raw: Any, where: str) -> tuple[Namespace, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RegistrationError(f"{where}: must be a list")
    out = []
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise RegistrationError(f"{at}: must be a mapping with 'exclusive' and 'regex'")
        exclusive, regex = item.get("exclusive"), item.get("regex")
        if not isinstance(exclusive, bool):
            raise RegistrationError(f"{at}.exclusive: must be true or false")
        if not isinstance(regex, str) or not regex:
            raise RegistrationError(f"{at}.regex: must be a non-empty string")
        try:
            out.append(Namespace(exclusive, re.compile(regex)))
        except re.error as e:
            raise RegistrationError(f"{at}.regex: not a valid regular expression ({e})") from None
    return tuple(out)


def parse_registration(raw: Any, source: str, server_name: str) -> AppService:
    if not isinstance(raw, dict):
        raise RegistrationError(f"{source}: not a YAML mapping")

    def string(key: str, *, optional: bool = False) -> str | None:
        value = raw.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            raise RegistrationError(f"{source}: {key}: required, a non-empty string")
        return value

    as_id = string("id")
    as_token = string("as_token")
    hs_token = string("hs_token")
    localpart = string("sender_localpart")
    url = raw.get("url")
    if url is not None and (not isinstance(url, str) or not re.match(r"^https?://", url)):
        raise RegistrationError(f"{source}: url: must be an http(s) URL, or null for an appservice that receives nothing")
    if not re.fullmatch(r"[a-z0-9._=/+-]+", localpart or ""):
        raise RegistrationError(f"{source}: sender_localpart: not a valid user ID localpart")
    if as_token == hs_token:
        raise RegistrationError(f"{source}: hs_token: must differ from as_token")
    ns = raw.get("namespaces") or {}
    if not isinstance(ns, dict):
        raise RegistrationError(f"{source}: namespaces: must be a mapping of users/aliases/rooms")
    for key in ns:
        if key not in ("users", "aliases", "rooms"):
            raise RegistrationError(f"{source}: namespaces.{key}: unknown namespace (users, aliases, rooms)")
    rate_limited = raw.get("rate_limited", True)
    if not isinstance(rate_limited, bool):
        raise RegistrationError(f"{source}: rate_limited: must be true or false")
    protocols = raw.get("protocols") or []
    if not isinstance(protocols, list) or not all(isinstance(p, str) for p in protocols):
        raise RegistrationError(f"{source}: protocols: must be a list of strings")
    ephemeral = raw.get("receive_ephemeral", raw.get("de.sorunome.msc2409.push_ephemeral", False))
    e2ee = raw.get("org.matrix.msc3202", False)
    for key, value in (("receive_ephemeral", ephemeral), ("org.matrix.msc3202", e2ee)):
        if not isinstance(value, bool):
            raise RegistrationError(f"{source}: {key}: must be true or false")
    return AppService(
        id=str(as_id), url=url.rstrip("/") if isinstance(url, str) else None, as_token=str(as_token), hs_token=str(hs_token),
        sender=f"@{localpart}:{server_name}", users=_namespaces(ns.get("users"), f"{source}: namespaces.users"),
        aliases=_namespaces(ns.get("aliases"), f"{source}: namespaces.aliases"),
        rooms=_namespaces(ns.get("rooms"), f"{source}: namespaces.rooms"), rate_limited=rate_limited,
        protocols=tuple(protocols), receive_ephemeral=ephemeral, e2ee=e2ee, source=source,
    )


def load_registrations(paths: list[Path], server_name: str) -> list[AppService]:
    out: list[AppService] = []
    for path in paths:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise RegistrationError(f"{path}: cannot read ({e.strerror})") from None
        except yaml.YAMLError as e:
            raise RegistrationError(f"{path}: not valid YAML ({e})") from None
        out.append(parse_registration(raw, str(path), server_name))
    for key, label in (("id", "id"), ("as_token", "as_token"), ("hs_token", "hs_token"), ("sender", "sender_localpart")):
        seen: dict[str, str] = {}
        for a in out:
            value = getattr(a, key)
            if value in seen:
                raise RegistrationError(f"{a.source}: {label}: the same as in {seen[value]}")
            seen[value] = a.source
    return out
