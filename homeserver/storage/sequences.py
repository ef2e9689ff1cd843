"""Monotonic ID allocation shared by both engines (stream positions, snapshot IDs).

One row per sequence, bumped with UPDATE … RETURNING inside the caller's transaction: the row lock
makes allocation safe across PostgreSQL processes, and a rolled-back transaction gives its numbers back,
so committed stream positions have no gaps a reader could skip over.
"""

from __future__ import annotations

from homeserver.storage.database import Connection, Database


async def next_id(conn: Connection, name: str, count: int = 1) -> int:
    """Reserve ``count`` consecutive IDs and return the last one."""
    value = await conn.fetchval(
        "UPDATE id_sequences SET last_value = last_value + $2 WHERE name = $1 RETURNING last_value", name, count
    )
    if value is None:
        raise KeyError(f"unknown sequence {name}")
    return int(value)


async def current_id(db: Database | Connection, name: str) -> int:
    return int(await db.fetchval("SELECT last_value FROM id_sequences WHERE name = $1", name) or 0)


async def current_ids(db: Database | Connection, names: tuple[str, ...]) -> dict[str, int]:
    """Several sequences' current values in one round trip (a sync token reads five on every /sync)."""
    marks = ", ".join(f"${i + 1}" for i in range(len(names)))
    rows = await db.fetch(f"SELECT name, last_value FROM id_sequences WHERE name IN ({marks})", *names)
    found = {r[0]: int(r[1]) for r in rows}
    return {name: found.get(name, 0) for name in names}
