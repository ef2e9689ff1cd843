"""Presence: who is online, kept in memory and shared with users who share a room.

Each change takes the next serial so /sync can send only what changed. Presence is ephemeral by the
spec's design; after a restart everyone reads as offline until their clients sync again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from homeserver.clock import Clock
from homeserver.errors import MatrixError
from homeserver.services.notifier import Notifier

STATES = ("online", "offline", "unavailable")
# A user whose client last synced longer ago than this is no longer "currently active".
ACTIVE_WINDOW_MS = 5 * 60 * 1000
MAX_STATUS_LEN = 1024


@dataclass
class _Presence:
    presence: str
    status_msg: str | None
    last_active_ts: int
    serial: int


class PresenceService:
    def __init__(self, clock: Clock, notifier: Notifier, enabled: bool) -> None:
        self.clock = clock
        self.notifier = notifier
        self.enabled = enabled
        self._state: dict[str, _Presence] = {}
        self.serial = 0
        # Called with the user ID whenever someone's presence changes (federation tells other servers).
        self.on_change: Callable[[str], None] | None = None

    def set(self, user_id: str, presence: Any, status_msg: Any = None, *, keep_status: bool = False) -> None:
        if presence not in STATES:
            raise MatrixError(400, "M_INVALID_PARAM", "presence must be online, offline or unavailable")
        if status_msg is not None and (not isinstance(status_msg, str) or len(status_msg) > MAX_STATUS_LEN):
            raise MatrixError(400, "M_INVALID_PARAM", "status_msg must be a string of at most 1024 characters")
        if not self.enabled:
            return
        now = self.clock.time_ms()
        old = self._state.get(user_id)
        if keep_status and old is not None:
            status_msg = old.status_msg
        if old is not None and old.presence == presence and old.status_msg == status_msg:
            old.last_active_ts = now  # activity alone does not make news
            return
        self.serial += 1
        self._state[user_id] = _Presence(presence, status_msg, now, self.serial)
        self.notifier.notify(users=[user_id])
        if self.on_change is not None:
            self.on_change(user_id)

    def get(self, user_id: str) -> dict[str, Any]:
        p = self._state.get(user_id)
        if p is None or not self.enabled:
            return {"presence": "offline"}
        ago = self.clock.time_ms() - p.last_active_ts
        out: dict[str, Any] = {"presence": p.presence, "last_active_ago": ago,
                               "currently_active": p.presence == "online" and ago < ACTIVE_WINDOW_MS}
        if p.status_msg is not None:
            out["status_msg"] = p.status_msg
        return out

    def changed_since(self, users: set[str], serial: int) -> list[dict[str, Any]]:
        if not self.enabled:
            return []
        return [
            {"type": "m.presence", "sender": u, "content": self.get(u)}
            for u, p in sorted(self._state.items()) if u in users and p.serial > serial
        ]
