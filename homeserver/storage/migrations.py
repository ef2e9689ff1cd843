"""Numbered schema migrations.

``migrations/NNN_name.sql`` is shared by both engines; where an engine needs different SQL, a file
``NNN_name.sqlite.sql`` or ``NNN_name.postgres.sql`` replaces the shared one for that engine. The
``schema_version`` table records how far a database has been upgraded; a database newer than this code
is refused rather than risked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from homeserver.storage.database import Database

_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+?)(?:\.(sqlite|postgres))?\.sql$")


class SchemaTooNew(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations_for(engine: str) -> list[Migration]:
    found: dict[int, tuple[str, str, bool]] = {}
    for entry in resources.files("homeserver.storage").joinpath("migrations").iterdir():
        m = _NAME.match(entry.name)
        if not m:
            continue
        version, name, only = int(m.group(1)), m.group(2), m.group(3)
        if only and only != engine:
            continue
        specific = only is not None
        if version in found and found[version][2] and not specific:
            continue
        found[version] = (name, entry.read_text(encoding="utf-8"), specific)
    out = [Migration(v, n, s) for v, (n, s, _) in sorted(found.items())]
    for i, mig in enumerate(out, start=1):
        if mig.version != i:
            raise RuntimeError(f"migration numbering has a gap before {mig.version:03d}_{mig.name}")
    return out


def code_schema_version(engine: str) -> int:
    return len(migrations_for(engine))


async def current_version(db: Database) -> int:
    if not await db.table_exists("schema_version"):
        return 0
    return int(await db.fetchval("SELECT version FROM schema_version") or 0)


async def migrate(db: Database) -> int:
    """Bring ``db`` up to this code's schema; returns the version reached."""
    steps = migrations_for(db.engine)
    async with db.transaction() as conn:
        if db.engine == "postgres":
            # Several processes may start at once against one database; let one migrate.
            await conn.execute("SELECT pg_advisory_xact_lock(7243817)")
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        have = await conn.fetchval("SELECT version FROM schema_version")
        if have is None:
            await conn.execute("INSERT INTO schema_version (version) VALUES (0)")
            have = 0
        if have > len(steps):
            raise SchemaTooNew(
                f"the database is at schema version {have}, newer than this Qasid ({len(steps)}); "
                "upgrade Qasid or restore a matching backup"
            )
        for mig in steps[have:]:
            await conn.executescript(mig.sql)
            await conn.execute("UPDATE schema_version SET version = $1", mig.version)
        return len(steps)
