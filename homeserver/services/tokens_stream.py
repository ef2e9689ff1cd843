"""Stream tokens handed to clients: sync's next_batch and pagination tokens.

A sync token lists a position per stream; a pagination token names a point in the events stream.
Clients treat both as opaque, and /messages accepts either (the spec lets prev_batch from /sync be
used as ``from``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from homeserver.errors import MatrixError


@dataclass(frozen=True)
class SyncToken:
    events: int = 0
    typing: int = 0
    receipts: int = 0
    account_data: int = 0
    to_device: int = 0
    device_lists: int = 0
    presence: int = 0

    def encode(self) -> str:
        return "s" + "_".join(str(getattr(self, f.name)) for f in fields(self))

    @classmethod
    def parse(cls, token: str) -> "SyncToken":
        if not token.startswith("s"):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid sync token")
        try:
            parts = [int(p) for p in token[1:].split("_")]
        except ValueError:
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid sync token") from None
        names = [f.name for f in fields(cls)]
        if not parts or len(parts) > len(names) or any(p < 0 for p in parts):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid sync token")
        return cls(**dict(zip(names, parts)))


def pagination_token(position: int) -> str:
    return f"t{position}"


def parse_pagination_token(token: str | None, name: str) -> int | None:
    if token is None:
        return None
    if token.startswith("t"):
        try:
            value = int(token[1:])
        except ValueError:
            raise MatrixError(400, "M_INVALID_PARAM", f"Invalid {name} token") from None
        return value  # negative positions are history backfilled from other servers
    if token.startswith("s"):
        return SyncToken.parse(token).events
    raise MatrixError(400, "M_INVALID_PARAM", f"Invalid {name} token")
