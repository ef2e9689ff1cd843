"""Users' push rules and their settings for the server-default rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from homeserver.storage.database import Connection, Database


@dataclass(frozen=True)
class StoredRule:
    kind: str
    rule_id: str
    position: int
    rule: dict[str, Any] | None
    enabled: bool
    actions: list[Any] | None


class PushRuleStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def rules_for(self, user_id: str) -> list[StoredRule]:
        rows = await self.db.fetch(
            "SELECT kind, rule_id, position, rule, enabled, actions FROM push_rules WHERE user_id = $1"
            " ORDER BY kind, position",
            user_id,
        )
        return [
            StoredRule(r[0], r[1], int(r[2]), orjson.loads(r[3]) if r[3] else None, bool(r[4]),
                       orjson.loads(r[5]) if r[5] else None)
            for r in rows
        ]

    async def insert_user_rule(
        self, user_id: str, kind: str, rule_id: str, rule: dict[str, Any], *, before: str | None, after: str | None,
    ) -> bool:
        """Add or replace a user rule; False if ``before``/``after`` names no rule of this kind."""
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                "SELECT rule_id FROM push_rules WHERE user_id = $1 AND kind = $2 AND rule IS NOT NULL ORDER BY position",
                user_id, kind,
            )
            order = [r[0] for r in rows if r[0] != rule_id]
            existing = {r[0] for r in rows}
            if before is not None or after is not None:
                anchor = before if before is not None else after
                if anchor not in order:
                    return False
                i = order.index(anchor)
                order.insert(i if before is not None else i + 1, rule_id)
            elif rule_id in existing:
                order = [r[0] for r in rows]  # replacing keeps the rule where it was
            else:
                order.insert(0, rule_id)  # a new rule takes the highest priority in its kind
            await conn.execute(
                "DELETE FROM push_rules WHERE user_id = $1 AND kind = $2 AND rule_id = $3", user_id, kind, rule_id
            )
            await conn.execute(
                "INSERT INTO push_rules (user_id, kind, rule_id, position, rule, enabled) VALUES ($1, $2, $3, 0, $4, 1)",
                user_id, kind, rule_id, orjson.dumps(rule).decode(),
            )
            for pos, rid in enumerate(order):
                await conn.execute(
                    "UPDATE push_rules SET position = $4 WHERE user_id = $1 AND kind = $2 AND rule_id = $3",
                    user_id, kind, rid, pos,
                )
        return True

    async def delete_user_rule(self, user_id: str, kind: str, rule_id: str) -> bool:
        return (await self.db.execute(
            "DELETE FROM push_rules WHERE user_id = $1 AND kind = $2 AND rule_id = $3 AND rule IS NOT NULL",
            user_id, kind, rule_id,
        )) > 0

    async def set_flags(self, user_id: str, kind: str, rule_id: str, *, enabled: bool | None = None,
                        actions: list[Any] | None = None, is_default: bool) -> None:
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                "SELECT 1 FROM push_rules WHERE user_id = $1 AND kind = $2 AND rule_id = $3", user_id, kind, rule_id
            )
            if row is None and is_default:
                await conn.execute(
                    "INSERT INTO push_rules (user_id, kind, rule_id, position, rule, enabled) VALUES ($1, $2, $3, 0, NULL, 1)",
                    user_id, kind, rule_id,
                )
            if enabled is not None:
                await conn.execute(
                    "UPDATE push_rules SET enabled = $4 WHERE user_id = $1 AND kind = $2 AND rule_id = $3",
                    user_id, kind, rule_id, int(enabled),
                )
            if actions is not None:
                if is_default:
                    await conn.execute(
                        "UPDATE push_rules SET actions = $4 WHERE user_id = $1 AND kind = $2 AND rule_id = $3",
                        user_id, kind, rule_id, orjson.dumps(actions).decode(),
                    )
                else:
                    rule = orjson.loads(await conn.fetchval(
                        "SELECT rule FROM push_rules WHERE user_id = $1 AND kind = $2 AND rule_id = $3", user_id, kind, rule_id
                    ))
                    rule["actions"] = actions
                    await conn.execute(
                        "UPDATE push_rules SET rule = $4 WHERE user_id = $1 AND kind = $2 AND rule_id = $3",
                        user_id, kind, rule_id, orjson.dumps(rule).decode(),
                    )


@dataclass(frozen=True)
class PushAction:
    user_id: str
    room_id: str
    stream_ordering: int
    event_id: str
    actions: list[Any]
    highlight: bool
    ts: int
    thread_id: str = "main"


class PushActionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, rows: list[PushAction], conn: Connection | None = None) -> None:
        if rows:
            await (conn or self.db).executemany(
                "INSERT INTO event_push_actions (user_id, room_id, stream_ordering, event_id, actions, highlight, ts, thread_id)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                [(r.user_id, r.room_id, r.stream_ordering, r.event_id, orjson.dumps(r.actions).decode(), int(r.highlight), r.ts,
                  r.thread_id)
                 for r in rows],
            )

    async def counts_by_thread(self, user_id: str, room_id: str, after: int) -> dict[str, tuple[int, int]]:
        """(notifications, highlights) after a stream position, per thread ('main' for the main timeline)."""
        rows = await self.db.fetch(
            "SELECT thread_id, COUNT(*), COALESCE(SUM(highlight), 0) FROM event_push_actions"
            " WHERE user_id = $1 AND room_id = $2 AND stream_ordering > $3 GROUP BY thread_id",
            user_id, room_id, after,
        )
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}

    async def counts_in_thread(self, user_id: str, room_id: str, thread_id: str, after: int) -> tuple[int, int]:
        row = await self.db.fetchrow(
            "SELECT COUNT(*), COALESCE(SUM(highlight), 0) FROM event_push_actions"
            " WHERE user_id = $1 AND room_id = $2 AND thread_id = $3 AND stream_ordering > $4",
            user_id, room_id, thread_id, after,
        )
        return int(row[0]), int(row[1])

    async def for_user(self, user_id: str, *, before: int | None, limit: int, only_highlight: bool) -> list[PushAction]:
        where = ["user_id = $1"]
        args: list[Any] = [user_id]
        if before is not None:
            args.append(before)
            where.append(f"stream_ordering < ${len(args)}")
        if only_highlight:
            where.append("highlight = 1")
        rows = await self.db.fetch(
            "SELECT user_id, room_id, stream_ordering, event_id, actions, highlight, ts FROM event_push_actions"
            f" WHERE {' AND '.join(where)} ORDER BY stream_ordering DESC LIMIT {int(limit)}",
            *args,
        )
        return [PushAction(r[0], r[1], int(r[2]), r[3], orjson.loads(r[4]), bool(r[5]), int(r[6])) for r in rows]
