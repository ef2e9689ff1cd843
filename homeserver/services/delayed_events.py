"""Delayed events (MSC4140): an event the server sends for a client later, unless told otherwise.

Element Call relies on it: a participant's call membership is posted with a delayed "left the call"
event that the client keeps restarting while it is connected; if the client vanishes (crash, lost
network), the server sends it, and the others see the participant leave instead of a ghost.

The delay_id is a capability: whoever holds it may cancel, restart or send the event without an access
token (the MSC lets a call's media server end a membership it no longer sees), so it is long and random.
Pending events live in the database and one task sends each when due, after a restart too. The event
is created exactly as if its user had sent it at that moment: the room's rules decide then, and a
refused event is dropped (there is no one left to tell).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING, Any

from homeserver.clock import Clock
from homeserver.config import Config
from homeserver.errors import MatrixError
from homeserver.storage.delayed_events import DelayedEvent

if TYPE_CHECKING:
    from homeserver.services.event_creation import NewEvent
    from homeserver.services.rooms import RoomService
    from homeserver.storage import Storage

logger = logging.getLogger(__name__)

DELAY_PARAM = "org.matrix.msc4140.delay"


class DelayedEventService:
    def __init__(self, storage: "Storage", clock: Clock, config: Config, rooms: "RoomService") -> None:
        self.storage = storage
        self.clock = clock
        self.max_delay = config.max_event_delay_duration
        self.per_user = config.max_delayed_events_per_user
        self.rooms = rooms
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.max_delay is not None

    # --- scheduling ---

    async def add(
        self, user_id: str, device_id: str | None, room_id: str, event_type: str, content: dict[str, Any],
        state_key: str | None, delay_ms: int,
    ) -> str:
        if self.max_delay is None:
            raise MatrixError(403, "M_FORBIDDEN", "Sending delayed events has been disallowed")
        if delay_ms < 0:
            raise MatrixError(400, "M_INVALID_PARAM", f"{DELAY_PARAM}: must not be negative")
        if delay_ms > self.max_delay:
            raise MatrixError(403, "M_FORBIDDEN",
                              f"The requested delay ({delay_ms}ms) exceeds the allowed maximum ({self.max_delay}ms)")
        if await self.storage.events.get_room_version(room_id) is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        if event_type == "m.room.member" and state_key is not None:
            raise MatrixError(400, "M_BAD_JSON", "Use the membership endpoints to change membership")
        now = self.clock.time_ms()
        delay_id = "qd_" + secrets.token_urlsafe(24)
        ev = DelayedEvent(delay_id, user_id, device_id or None, room_id, event_type, state_key, content, delay_ms, now + delay_ms)
        if not await self.storage.delayed_events.add(ev, now, self.per_user):
            raise MatrixError(400, "M_LIMIT_EXCEEDED",
                              f"You have {self.per_user} delayed events pending already; cancel or send some first")
        self._wake.set()
        return delay_id

    async def cancel(self, delay_id: str) -> None:
        if await self.storage.delayed_events.take(delay_id) is None:
            raise MatrixError(404, "M_NOT_FOUND", "No such delayed event")
        self._wake.set()

    async def restart(self, delay_id: str) -> None:
        if await self.storage.delayed_events.restart(delay_id, self.clock.time_ms()) is None:
            raise MatrixError(404, "M_NOT_FOUND", "No such delayed event")
        self._wake.set()

    async def send_now(self, delay_id: str) -> None:
        ev = await self.storage.delayed_events.take(delay_id)
        if ev is None:
            raise MatrixError(404, "M_NOT_FOUND", "No such delayed event")
        self._wake.set()
        await self._send(ev, report=True)

    async def list_for(self, user_id: str) -> list[dict[str, Any]]:
        out = []
        for ev in await self.storage.delayed_events.for_user(user_id):
            item: dict[str, Any] = {"delay_id": ev.delay_id, "room_id": ev.room_id, "type": ev.event_type,
                                    "delay": ev.delay_ms, "running_since": ev.send_ts - ev.delay_ms, "content": ev.content}
            if ev.state_key is not None:
                item["state_key"] = ev.state_key
            out.append(item)
        return out

    # --- sending ---

    async def _send(self, ev: DelayedEvent, *, report: bool) -> None:
        try:
            await self.rooms.send_event(ev.user_id, ev.device_id or "", ev.room_id, ev.event_type, ev.content, None,
                                        state_key=ev.state_key)
        except MatrixError as e:
            if report:  # asked to send now: the client is there to hear why not
                raise
            logger.info("delayed event %s for %s in %s was refused when due: %s", ev.delay_id, ev.user_id, ev.room_id, e.errcode)

    async def on_event(self, new: "NewEvent") -> None:
        """Someone else set a state key that users were waiting to set later: their delayed events for it
        are void (they would overwrite newer state)."""
        pdu = new.pdu
        if not isinstance(pdu.get("state_key"), str):
            return
        if await self.storage.delayed_events.cancel_state(new.room_id, pdu["type"], pdu["state_key"], pdu["sender"]):
            self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        """Send what is due, then sleep until the next one is due or the schedule changes."""
        while True:
            self._wake.clear()
            try:
                for delay_id in await self.storage.delayed_events.due(self.clock.time_ms()):
                    ev = await self.storage.delayed_events.take(delay_id)
                    if ev is not None:  # else cancelled, restarted away or sent meanwhile
                        await self._send(ev, report=False)
                next_ts = await self.storage.delayed_events.next_send_ts()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database may be briefly unavailable: try again shortly
                logger.exception("sending delayed events failed")
                next_ts = self.clock.time_ms() + 5_000
            wait_s = None if next_ts is None else max(0.0, (next_ts - self.clock.time_ms()) / 1000)
            if wait_s == 0.0:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=wait_s)
            except asyncio.TimeoutError:
                pass
