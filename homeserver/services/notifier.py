"""Wakes long-polling /sync requests the moment something relevant to them is persisted.

No polling loops: a waiter registers the user and rooms it cares about and sleeps on an asyncio.Event;
writers call ``notify`` with the rooms and users they touched. A waiter registers *before* it looks
for news, so nothing persisted between its look and its sleep can be missed.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterable, Iterator


class Notifier:
    def __init__(self) -> None:
        self._by_room: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._by_user: dict[str, set[asyncio.Event]] = defaultdict(set)

    def notify(self, *, rooms: Iterable[str] = (), users: Iterable[str] = ()) -> None:
        for keys, table in ((rooms, self._by_room), (users, self._by_user)):
            for k in keys:
                for ev in table.get(k, ()):
                    ev.set()

    @contextmanager
    def listen(self, user_id: str, rooms: Iterable[str]) -> Iterator[asyncio.Event]:
        """Register interest; the yielded event is set by any later notify touching it."""
        ev = asyncio.Event()
        rooms = list(rooms)
        self._by_user[user_id].add(ev)
        for r in rooms:
            self._by_room[r].add(ev)
        try:
            yield ev
        finally:
            self._discard(self._by_user, user_id, ev)
            for r in rooms:
                self._discard(self._by_room, r, ev)

    @staticmethod
    async def sleep_on(ev: asyncio.Event, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(ev.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    @staticmethod
    def _discard(table: dict[str, set[asyncio.Event]], key: str, ev: asyncio.Event) -> None:
        waiters = table.get(key)
        if waiters is not None:
            waiters.discard(ev)
            if not waiters:
                del table[key]
