"""Delayed events (MSC4140): what is waiting to be sent, and when."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from homeserver.storage.database import Database


@dataclass(frozen=True)
class DelayedEvent:
    delay_id: str
    user_id: str
    device_id: str | None
    room_id: str
    event_type: str
    state_key: str | None
    content: dict[str, Any]
    delay_ms: int
    send_ts: int


_COLS = "delay_id, user_id, device_id, room_id, event_type, state_key, content, delay_ms, send_ts"


def _row(r: Any) -> DelayedEvent:
    return DelayedEvent(r[0], r[1], r[2], r[3], r[4], r[5], orjson.loads(r[6]), int(r[7]), int(r[8]))


class DelayedEventStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, ev: DelayedEvent, created_ts: int, limit: int) -> bool:
        """Store ``ev`` unless its user already has ``limit`` pending; the count and the insert share one
        transaction so concurrent requests cannot both slip under the limit."""
        async with self.db.transaction() as conn:
            pending = await conn.fetchval("SELECT COUNT(*) FROM delayed_events WHERE user_id = $1", ev.user_id)
            if int(pending or 0) >= limit:
                return False
            await conn.execute(
                f"INSERT INTO delayed_events ({_COLS}, created_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                ev.delay_id, ev.user_id, ev.device_id, ev.room_id, ev.event_type, ev.state_key,
                orjson.dumps(ev.content).decode(), ev.delay_ms, ev.send_ts, created_ts,
            )
        return True

    async def get(self, delay_id: str) -> DelayedEvent | None:
        row = await self.db.fetchrow(f"SELECT {_COLS} FROM delayed_events WHERE delay_id = $1", delay_id)
        return _row(row) if row else None

    async def take(self, delay_id: str) -> DelayedEvent | None:
        """Remove and return it: whoever takes it is the one who sends (or drops) it."""
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(f"SELECT {_COLS} FROM delayed_events WHERE delay_id = $1", delay_id)
            if row is None:
                return None
            await conn.execute("DELETE FROM delayed_events WHERE delay_id = $1", delay_id)
        return _row(row)

    async def restart(self, delay_id: str, now: int) -> int | None:
        """Start its delay again from ``now``; returns the new send time, or None if there is no such event."""
        async with self.db.transaction() as conn:
            delay = await conn.fetchval("SELECT delay_ms FROM delayed_events WHERE delay_id = $1", delay_id)
            if delay is None:
                return None
            await conn.execute("UPDATE delayed_events SET send_ts = $2 WHERE delay_id = $1", delay_id, now + int(delay))
        return now + int(delay)

    async def for_user(self, user_id: str) -> list[DelayedEvent]:
        rows = await self.db.fetch(f"SELECT {_COLS} FROM delayed_events WHERE user_id = $1 ORDER BY send_ts", user_id)
        return [_row(r) for r in rows]

    async def due(self, now: int, limit: int = 100) -> list[str]:
        rows = await self.db.fetch(
            f"SELECT delay_id FROM delayed_events WHERE send_ts <= $1 ORDER BY send_ts LIMIT {int(limit)}", now)
        return [r[0] for r in rows]

    async def next_send_ts(self) -> int | None:
        value = await self.db.fetchval("SELECT MIN(send_ts) FROM delayed_events")
        return int(value) if value is not None else None

    async def cancel_state(self, room_id: str, event_type: str, state_key: str, except_user: str) -> int:
        """Drop other users' pending state events for this state key: someone else has set it since.
        One indexed statement: it runs after every state event."""
        return await self.db.execute(
            "DELETE FROM delayed_events WHERE room_id = $1 AND event_type = $2 AND state_key = $3 AND user_id <> $4",
            room_id, event_type, state_key, except_user,
        )
