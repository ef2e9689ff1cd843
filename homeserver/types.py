"""Identifier aliases and the grammar checks every layer shares."""

from __future__ import annotations

import re
from typing import NewType

UserID = NewType("UserID", str)
RoomID = NewType("RoomID", str)
EventID = NewType("EventID", str)
DeviceID = NewType("DeviceID", str)
ServerName = NewType("ServerName", str)

# The spec's user ID grammar for new registrations: lower-case only, so that IDs never differ by case.
_LOCALPART_RE = re.compile(r"^[a-z0-9._=\-/+]+$")
_SERVER_NAME_RE = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]{2,45}\]|[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[A-Za-z0-9\-.]{1,255})(?::[0-9]{1,5})?$"
)
MAX_USER_ID_LENGTH = 255


def is_valid_localpart(localpart: str) -> bool:
    return bool(_LOCALPART_RE.match(localpart))


def is_valid_server_name(name: str) -> bool:
    if not _SERVER_NAME_RE.match(name):
        return False
    if ":" in name and not name.endswith("]"):
        port = name.rsplit(":", 1)[1]
        return 0 < int(port) < 65536
    return True


def user_id(localpart: str, server_name: str) -> UserID:
    return UserID(f"@{localpart}:{server_name}")


def split_user_id(uid: str) -> tuple[str, str] | None:
    """Return (localpart, server_name), or None when ``uid`` is not shaped like a user ID at all."""
    if not isinstance(uid, str) or not uid.startswith("@") or ":" not in uid:
        return None
    localpart, _, server = uid[1:].partition(":")
    if not localpart or not server:
        return None
    return localpart, server
