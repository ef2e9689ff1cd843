"""Typing notifications: ephemeral, in memory, each change numbered so /sync can tell what is new."""

from __future__ import annotations

import asyncio
from typing import Callable

from homeserver.clock import Clock
from homeserver.errors import MatrixError
from homeserver.services.notifier import Notifier

MAX_TYPING_TIMEOUT_MS = 120_000


class TypingService:
    def __init__(self, clock: Clock, notifier: Notifier) -> None:
        self.clock = clock
        self.notifier = notifier
        self._typing: dict[str, dict[str, int]] = {}  # room -> user -> expiry (ms)
        self._room_serial: dict[str, int] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self.serial = 0
        # Called with (room, user, typing) for local changes (federation tells the other servers).
        self.on_change: Callable[[str, str, bool], None] | None = None

    def _bump(self, room_id: str) -> None:
        self.serial += 1
        self._room_serial[room_id] = self.serial
        self.notifier.notify(rooms=[room_id])

    def set_typing(self, room_id: str, user_id: str, typing: bool, timeout_ms: int | None) -> None:
        users = self._typing.setdefault(room_id, {})
        timer = self._timers.pop((room_id, user_id), None)
        if timer is not None:
            timer.cancel()
        if typing:
            if timeout_ms is None or isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms < 0:
                raise MatrixError(400, "M_BAD_JSON", "timeout must be a non-negative integer when typing")
            timeout_ms = min(timeout_ms, MAX_TYPING_TIMEOUT_MS)
            was = user_id in users
            users[user_id] = self.clock.time_ms() + timeout_ms
            loop = asyncio.get_running_loop()
            self._timers[(room_id, user_id)] = loop.call_later(timeout_ms / 1000, self._expire, room_id, user_id)
            if not was:
                self._bump(room_id)
        elif users.pop(user_id, None) is not None:
            self._bump(room_id)
        if self.on_change is not None:
            self.on_change(room_id, user_id, typing)

    def _expire(self, room_id: str, user_id: str) -> None:
        self._timers.pop((room_id, user_id), None)
        if self._typing.get(room_id, {}).pop(user_id, None) is not None:
            self._bump(room_id)

    def typing_users(self, room_id: str) -> list[str]:
        return sorted(self._typing.get(room_id, {}))

    def changed_since(self, room_ids: list[str], serial: int) -> set[str]:
        return {r for r in room_ids if self._room_serial.get(r, 0) > serial}
