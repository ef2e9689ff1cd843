"""Invites and knocks for rooms held by other servers (out-of-band memberships until the user joins or leaves)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from homeserver.storage.database import Database
from homeserver.storage.sequences import next_id


@dataclass(frozen=True)
class RemoteInvite:
    user_id: str
    room_id: str
    event_id: str
    event: dict[str, Any]
    invite_state: list[dict[str, Any]]
    stream_ordering: int
    membership: str = "invite"


_COLS = "user_id, room_id, event_id, event_json, invite_state, stream_ordering, membership"


def _row(r: Any) -> RemoteInvite:
    return RemoteInvite(r[0], r[1], r[2], orjson.loads(r[3]), orjson.loads(r[4]), int(r[5]), r[6])


class RemoteInviteStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def put(self, user_id: str, room_id: str, event_id: str, event: dict[str, Any], state: list[dict[str, Any]],
                  *, membership: str = "invite") -> int:
        async with self.db.transaction() as conn:
            position = await next_id(conn, "events_stream")
            await conn.execute("DELETE FROM remote_invites WHERE user_id = $1 AND room_id = $2", user_id, room_id)
            await conn.execute(
                f"INSERT INTO remote_invites ({_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                user_id, room_id, event_id, orjson.dumps(event).decode(), orjson.dumps(state).decode(), position, membership,
            )
            return position

    async def get(self, user_id: str, room_id: str) -> RemoteInvite | None:
        r = await self.db.fetchrow(f"SELECT {_COLS} FROM remote_invites WHERE user_id = $1 AND room_id = $2", user_id, room_id)
        return _row(r) if r else None

    async def for_user(self, user_id: str) -> list[RemoteInvite]:
        rows = await self.db.fetch(f"SELECT {_COLS} FROM remote_invites WHERE user_id = $1", user_id)
        return [_row(r) for r in rows]

    async def delete(self, user_id: str, room_id: str) -> None:
        await self.db.execute("DELETE FROM remote_invites WHERE user_id = $1 AND room_id = $2", user_id, room_id)
