"""Pushers: where each user's push notifications go, and how far each has delivered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from homeserver.storage.database import Database
from homeserver.storage.sequences import current_id

_COLUMNS = (
    "user_id, device_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data,"
    " pushkey_ts, last_stream_ordering, last_success_ts, failing_since_ts"
)


@dataclass(frozen=True)
class Pusher:
    user_id: str
    device_id: str | None
    app_id: str
    pushkey: str
    kind: str
    app_display_name: str
    device_display_name: str
    profile_tag: str | None
    lang: str
    data: dict[str, Any]
    pushkey_ts: int  # ms
    last_stream_ordering: int
    last_success_ts: int | None = None
    failing_since_ts: int | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.app_id, self.pushkey, self.user_id)


@dataclass(frozen=True)
class PendingAction:
    stream_ordering: int
    event_id: str
    room_id: str
    actions: list[Any]


def _pusher(r: Any) -> Pusher:
    return Pusher(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], orjson.loads(r[9]), int(r[10]), int(r[11]),
        None if r[12] is None else int(r[12]), None if r[13] is None else int(r[13]),
    )


class PusherStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def for_user(self, user_id: str) -> list[Pusher]:
        rows = await self.db.fetch(f"SELECT {_COLUMNS} FROM pushers WHERE user_id = $1 ORDER BY app_id, pushkey", user_id)
        return [_pusher(r) for r in rows]

    async def get(self, app_id: str, pushkey: str, user_id: str) -> Pusher | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id = $3", app_id, pushkey, user_id
        )
        return None if row is None else _pusher(row)

    async def all(self) -> list[Pusher]:
        return [_pusher(r) for r in await self.db.fetch(f"SELECT {_COLUMNS} FROM pushers")]

    async def set(
        self, *, user_id: str, device_id: str | None, app_id: str, pushkey: str, kind: str, app_display_name: str,
        device_display_name: str, profile_tag: str | None, lang: str, data: dict[str, Any], now: int, append: bool,
    ) -> list[tuple[str, str, str]]:
        """Create or replace the user's pusher for (app_id, pushkey); it starts from the newest event, so
        nothing older is pushed. Unless ``append``, other users' pushers with the same app_id and
        pushkey are removed (returned, so their delivery can stop)."""
        async with self.db.transaction() as conn:
            removed: list[tuple[str, str, str]] = []
            if not append:
                rows = await conn.fetch(
                    "SELECT user_id FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3", app_id, pushkey, user_id
                )
                removed = [(app_id, pushkey, r[0]) for r in rows]
                await conn.execute(
                    "DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3", app_id, pushkey, user_id
                )
            position = await current_id(conn, "events_stream")
            await conn.execute(
                "DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id = $3", app_id, pushkey, user_id
            )
            await conn.execute(
                f"INSERT INTO pushers ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL, NULL)",
                user_id, device_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang,
                orjson.dumps(data).decode(), now, position,
            )
        return removed

    async def delete(self, app_id: str, pushkey: str, user_id: str) -> bool:
        return (await self.db.execute(
            "DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id = $3", app_id, pushkey, user_id
        )) > 0

    async def users_notified(self, event_ids: list[str]) -> list[str]:
        """Users with at least one pusher whose push rules produced a notification for one of the events
        (through the (user_id, event_id) key of event_push_actions, driven from the small pushers table)."""
        out: set[str] = set()
        for event_id in event_ids:
            rows = await self.db.fetch(
                "SELECT DISTINCT p.user_id FROM pushers p"
                " JOIN event_push_actions a ON a.user_id = p.user_id AND a.event_id = $1",
                event_id,
            )
            out.update(r[0] for r in rows)
        return sorted(out)

    async def pending_actions(self, user_id: str, after: int, limit: int) -> list[PendingAction]:
        """The user's notifications after a stream position, oldest first."""
        rows = await self.db.fetch(
            "SELECT stream_ordering, event_id, room_id, actions FROM event_push_actions"
            f" WHERE user_id = $1 AND stream_ordering > $2 ORDER BY stream_ordering LIMIT {int(limit)}",
            user_id, after,
        )
        return [PendingAction(int(r[0]), r[1], r[2], orjson.loads(r[3])) for r in rows]

    async def rooms_with_notifications(self, user_id: str) -> list[str]:
        rows = await self.db.fetch("SELECT DISTINCT room_id FROM event_push_actions WHERE user_id = $1", user_id)
        return [r[0] for r in rows]

    async def advance(self, key: tuple[str, str, str], stream_ordering: int, now: int, *, delivered: bool) -> None:
        """Done with everything up to ``stream_ordering`` (delivered, or given up on)."""
        app_id, pushkey, user_id = key
        await self.db.execute(
            "UPDATE pushers SET last_stream_ordering = $4,"
            " last_success_ts = CASE WHEN $5 = 1 THEN $6 ELSE last_success_ts END,"
            " failing_since_ts = CASE WHEN $5 = 1 THEN NULL ELSE failing_since_ts END"
            " WHERE app_id = $1 AND pushkey = $2 AND user_id = $3 AND last_stream_ordering < $4",
            app_id, pushkey, user_id, stream_ordering, int(delivered), now,
        )

    async def mark_failing(self, key: tuple[str, str, str], now: int) -> None:
        app_id, pushkey, user_id = key
        await self.db.execute(
            "UPDATE pushers SET failing_since_ts = $4"
            " WHERE app_id = $1 AND pushkey = $2 AND user_id = $3 AND failing_since_ts IS NULL",
            app_id, pushkey, user_id, now,
        )
