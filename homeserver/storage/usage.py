"""Usage metering: the daily-visits table, and the read-only aggregate queries the billing report is
computed from (events, users, rooms, media as they are already stored; nothing is counted on the way in).

Days are bucketed in SQL as ``ts / 86400000`` (UTC days since 1970, integer division on both engines)
so no engine-specific date functions are needed; the service turns them into dates. "Local" means the
user ID ends in ``:server_name``, compared exactly (``LIKE`` is case-insensitive on SQLite only).
"""

from __future__ import annotations

from homeserver.storage.database import Database

DAY_MS = 86_400_000


def _local(column: str, suffix: str, param: int) -> str:
    """SQL true when ``column`` (a user ID) ends in ``suffix`` (``:server_name``, given as ``$param``).
    ``substr`` with a non-positive start differs between the engines, but then the value is shorter
    than the suffix and cannot equal it on either."""
    return f"substr({column}, length({column}) - {len(suffix)} + 1) = ${param}"


class UsageStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- written on the request path (once per user per day) -----------------------------------

    async def record_visit(self, user_id: str, day: str) -> None:
        await self.db.execute(
            "INSERT INTO user_daily_visits (user_id, day) VALUES ($1, $2) ON CONFLICT DO NOTHING", user_id, day)

    # --- read by the report -----------------------------------------------------------------------

    async def visits(self, first_day: str, last_day: str) -> list[tuple[str, str]]:
        """(day, user ID) for every visit in [first_day, last_day] (ISO dates compare as text)."""
        rows = await self.db.fetch(
            "SELECT day, user_id FROM user_daily_visits WHERE day >= $1 AND day <= $2", first_day, last_day)
        return [(r[0], r[1]) for r in rows]

    async def users_created(self, start_ms: int, end_ms: int) -> list[tuple[str, int, str | None]]:
        """(user ID, day number, appservice ID) of accounts created in [start_ms, end_ms), deactivated or not."""
        rows = await self.db.fetch(
            f"SELECT user_id, creation_ts / {DAY_MS}, appservice_id FROM users WHERE creation_ts >= $1 AND creation_ts < $2",
            start_ms, end_ms)
        return [(r[0], int(r[1]), r[2]) for r in rows]

    async def accounts_before(self, end_ms: int) -> list[tuple[str, str | None]]:
        """(user ID, appservice ID) of accounts created before ``end_ms`` and not deactivated now."""
        rows = await self.db.fetch(
            "SELECT user_id, appservice_id FROM users WHERE creation_ts < $1 AND deactivated = 0", end_ms)
        return [(r[0], r[1]) for r in rows]

    async def appservice_registered(self) -> set[str]:
        """Users an application service registered (``users.appservice_id`` set)."""
        rows = await self.db.fetch("SELECT user_id FROM users WHERE appservice_id IS NOT NULL")
        return {r[0] for r in rows}

    async def local_events(self, start_ms: int, end_ms: int, suffix: str) -> list[tuple[int, str, int]]:
        """(day number, kind, count) of events sent by local users in [start_ms, end_ms); kind is
        state (any event with a state key), messages, calls or other."""
        rows = await self.db.fetch(
            f"SELECT origin_server_ts / {DAY_MS}, CASE WHEN state_key IS NOT NULL THEN 'state'"
            " WHEN type = 'm.room.message' OR type = 'm.room.encrypted' THEN 'messages'"
            " WHEN type = 'm.call.invite' THEN 'calls' ELSE 'other' END, COUNT(*)"
            f" FROM events WHERE origin_server_ts >= $1 AND origin_server_ts < $2 AND {_local('sender', suffix, 3)}"
            " GROUP BY 1, 2", start_ms, end_ms, suffix)
        return [(int(r[0]), r[1], int(r[2])) for r in rows]

    async def remote_events(self, start_ms: int, end_ms: int, suffix: str) -> list[tuple[int, str, int]]:
        """(day number, sender, count) of events held from remote senders, by their origin_server_ts.
        Grouped by sender rather than server: extracting the server part needs engine-specific SQL,
        and the number of distinct remote senders a day is small."""
        rows = await self.db.fetch(
            f"SELECT origin_server_ts / {DAY_MS}, sender, COUNT(*) FROM events"
            f" WHERE origin_server_ts >= $1 AND origin_server_ts < $2 AND NOT ({_local('sender', suffix, 3)})"
            " GROUP BY 1, 2", start_ms, end_ms, suffix)
        return [(int(r[0]), r[1], int(r[2])) for r in rows]

    async def rooms_created(self, start_ms: int, end_ms: int, suffix: str) -> list[tuple[int, int]]:
        """(day number, count) of rooms a local user created. Rooms joined over federation are stored
        without a creator, so they are not counted."""
        rows = await self.db.fetch(
            f"SELECT created_ts / {DAY_MS}, COUNT(*) FROM rooms WHERE created_ts >= $1 AND created_ts < $2"
            f" AND creator IS NOT NULL AND {_local('creator', suffix, 3)} GROUP BY 1", start_ms, end_ms, suffix)
        return [(int(r[0]), int(r[1])) for r in rows]

    async def media_uploaded(self, start_ms: int, end_ms: int) -> list[tuple[int, int, int]]:
        """(day number, files, bytes) of local uploads in [start_ms, end_ms) (reserved IDs never filled
        are not uploads)."""
        rows = await self.db.fetch(
            f"SELECT created_ts / {DAY_MS}, COUNT(*), COALESCE(SUM(size), 0) FROM local_media"
            " WHERE created_ts >= $1 AND created_ts < $2 AND size IS NOT NULL GROUP BY 1", start_ms, end_ms)
        return [(int(r[0]), int(r[1]), int(r[2])) for r in rows]

    async def media_stored(self, end_ms: int) -> tuple[int, int]:
        """(local bytes, remote cached bytes) held now for media stored before ``end_ms``."""
        local = await self.db.fetchval(
            "SELECT COALESCE(SUM(size), 0) FROM local_media WHERE created_ts < $1 AND size IS NOT NULL", end_ms)
        remote = await self.db.fetchval(
            "SELECT COALESCE(SUM(size), 0) FROM remote_media WHERE fetched_ts < $1", end_ms)
        return int(local or 0), int(remote or 0)
