"""m.room.server_acl: which servers may take part in a room (the spec's "Server Access Control Lists")."""

from __future__ import annotations

import re
from typing import Any, Mapping

from federation.discovery import is_ip_literal, split_server_name


def _glob(pattern: str) -> re.Pattern[str]:
    # Only * and ? are wildcards; everything else (including [ and ]) is literal.
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + r"\Z",
                      re.IGNORECASE | re.DOTALL)


def server_allowed(server_name: str, acl: Mapping[str, Any] | None) -> bool:
    """Whether ``server_name`` may send events and requests for a room with this ACL content
    (None: the room has no ACL). An ACL without ``allow`` entries allows no one."""
    if acl is None:  # no ACL event in the room
        return True
    try:
        host, _ = split_server_name(server_name)
    except ValueError:
        return False
    if acl.get("allow_ip_literals", True) is False and is_ip_literal(host.strip("[]")):
        return False
    deny = acl.get("deny") if isinstance(acl.get("deny"), list) else []
    allow = acl.get("allow") if isinstance(acl.get("allow"), list) else []
    if any(isinstance(p, str) and _glob(p).match(host) for p in deny):
        return False
    return any(isinstance(p, str) and _glob(p).match(host) for p in allow)


