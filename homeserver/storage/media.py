"""Media metadata: local uploads, cached remote media and thumbnails (the bytes are files on disk)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from homeserver.storage.database import Connection, Database


@dataclass(frozen=True)
class MediaRecord:
    origin: str  # our server name for local media
    media_id: str
    user_id: str | None  # the uploader (local media only)
    content_type: str | None
    upload_name: str | None
    size: int | None  # None: reserved with /create, not uploaded yet
    sha256: str | None
    created_ts: int
    unused_expires_ts: int | None
    quarantined_by: str | None


@dataclass(frozen=True)
class ThumbnailRecord:
    width: int
    height: int
    method: str
    content_type: str
    size: int
    sha256: str


_LOCAL = "media_id, user_id, content_type, upload_name, size, sha256, created_ts, unused_expires_ts, quarantined_by"


def _local(origin: str, r: Any) -> MediaRecord:
    return MediaRecord(origin, r[0], r[1], r[2], r[3], None if r[4] is None else int(r[4]), r[5], int(r[6]),
                       None if r[7] is None else int(r[7]), r[8])


class MediaStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- local ---------------------------------------------------------------------------------

    async def reserve(self, media_id: str, user_id: str, now: int, expires: int | None) -> None:
        await self.db.execute(
            "INSERT INTO local_media (media_id, user_id, created_ts, unused_expires_ts) VALUES ($1, $2, $3, $4)",
            media_id, user_id, now, expires,
        )

    async def fill(self, media_id: str, content_type: str, upload_name: str | None, size: int, sha256: str) -> bool:
        """Record the content of a reserved ID; False if it was filled meanwhile (nothing changed)."""
        n = await self.db.execute(
            "UPDATE local_media SET content_type = $2, upload_name = $3, size = $4, sha256 = $5, unused_expires_ts = NULL"
            " WHERE media_id = $1 AND size IS NULL", media_id, content_type, upload_name, size, sha256,
        )
        return bool(n)

    async def add_local(self, media_id: str, user_id: str, content_type: str, upload_name: str | None, size: int,
                        sha256: str, now: int) -> None:
        await self.db.execute(
            f"INSERT INTO local_media ({_LOCAL}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL)",
            media_id, user_id, content_type, upload_name, size, sha256, now,
        )

    async def get_local(self, origin: str, media_id: str) -> MediaRecord | None:
        r = await self.db.fetchrow(f"SELECT {_LOCAL} FROM local_media WHERE media_id = $1", media_id)
        return _local(origin, r) if r else None

    async def pending_uploads(self, user_id: str, now: int) -> int:
        return int(await self.db.fetchval(
            "SELECT COUNT(*) FROM local_media WHERE user_id = $1 AND size IS NULL AND unused_expires_ts > $2", user_id, now,
        ) or 0)

    async def user_usage(self, user_id: str) -> int:
        return int(await self.db.fetchval(
            "SELECT COALESCE(SUM(size), 0) FROM local_media WHERE user_id = $1 AND size IS NOT NULL", user_id) or 0)

    async def user_media(self, origin: str, user_id: str, offset: int, limit: int) -> tuple[list[MediaRecord], int]:
        rows = await self.db.fetch(
            f"SELECT {_LOCAL} FROM local_media WHERE user_id = $1 ORDER BY created_ts DESC, media_id"
            f" LIMIT {int(limit)} OFFSET {int(offset)}", user_id,
        )
        total = await self.db.fetchval("SELECT COUNT(*) FROM local_media WHERE user_id = $1", user_id)
        return [_local(origin, r) for r in rows], int(total or 0)

    async def usage_by_user(self, offset: int, limit: int) -> tuple[list[tuple[str, int, int]], int]:
        """(user ID, media count, bytes) for every user with uploads, largest first."""
        rows = await self.db.fetch(
            "SELECT user_id, COUNT(*), COALESCE(SUM(size), 0) FROM local_media WHERE size IS NOT NULL"
            f" GROUP BY user_id ORDER BY 3 DESC, user_id LIMIT {int(limit)} OFFSET {int(offset)}",
        )
        total = await self.db.fetchval("SELECT COUNT(DISTINCT user_id) FROM local_media WHERE size IS NOT NULL")
        return [(r[0], int(r[1]), int(r[2])) for r in rows], int(total or 0)

    async def expire_reservations(self, now: int) -> int:
        return await self.db.execute(
            "DELETE FROM local_media WHERE size IS NULL AND unused_expires_ts IS NOT NULL AND unused_expires_ts <= $1", now)

    async def delete_local(self, media_id: str) -> str | None:
        """Forget a local media ID; returns its file's SHA-256 (the caller removes an unreferenced file)."""
        async with self.db.transaction() as conn:
            sha = await conn.fetchval("SELECT sha256 FROM local_media WHERE media_id = $1", media_id)
            await conn.execute("DELETE FROM local_media WHERE media_id = $1", media_id)
            await conn.execute("DELETE FROM media_thumbnails WHERE origin = '' AND media_id = $1", media_id)
        return sha

    async def touch(self, origin: str, media_id: str, now: int, local: bool) -> None:
        if local:
            await self.db.execute("UPDATE local_media SET last_access_ts = $2 WHERE media_id = $1", media_id, now)
        else:
            await self.db.execute("UPDATE remote_media SET last_access_ts = $3 WHERE origin = $1 AND media_id = $2",
                                  origin, media_id, now)

    # --- remote --------------------------------------------------------------------------------

    async def get_remote(self, origin: str, media_id: str) -> MediaRecord | None:
        r = await self.db.fetchrow(
            "SELECT media_id, content_type, upload_name, size, sha256, fetched_ts, quarantined_by FROM remote_media"
            " WHERE origin = $1 AND media_id = $2", origin, media_id,
        )
        if r is None:
            return None
        return MediaRecord(origin, r[0], None, r[1], r[2], int(r[3]), r[4], int(r[5]), None, r[6])

    async def add_remote(self, origin: str, media_id: str, content_type: str, upload_name: str | None, size: int,
                         sha256: str, now: int) -> None:
        await self.db.execute(
            "INSERT INTO remote_media (origin, media_id, content_type, upload_name, size, sha256, fetched_ts)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (origin, media_id) DO NOTHING",
            origin, media_id, content_type, upload_name, size, sha256, now,
        )

    async def delete_remote(self, origin: str, media_id: str) -> str | None:
        async with self.db.transaction() as conn:
            sha = await conn.fetchval("SELECT sha256 FROM remote_media WHERE origin = $1 AND media_id = $2", origin, media_id)
            await conn.execute("DELETE FROM remote_media WHERE origin = $1 AND media_id = $2", origin, media_id)
            await conn.execute("DELETE FROM media_thumbnails WHERE origin = $1 AND media_id = $2", origin, media_id)
        return sha

    # --- both ----------------------------------------------------------------------------------

    async def set_quarantine(self, origin: str, media_id: str, by: str | None, local: bool) -> bool:
        if local:
            n = await self.db.execute("UPDATE local_media SET quarantined_by = $2 WHERE media_id = $1", media_id, by)
        else:
            n = await self.db.execute("UPDATE remote_media SET quarantined_by = $3 WHERE origin = $1 AND media_id = $2",
                                      origin, media_id, by)
        return bool(n)

    async def sha256_in_use(self, sha256: str, conn: Connection | None = None) -> bool:
        db = conn or self.db
        for table in ("local_media", "remote_media", "media_thumbnails"):
            if await db.fetchval(f"SELECT 1 FROM {table} WHERE sha256 = $1 LIMIT 1", sha256):
                return True
        return False

    async def thumbnails(self, origin: str, media_id: str) -> list[ThumbnailRecord]:
        rows = await self.db.fetch(
            "SELECT width, height, method, content_type, size, sha256 FROM media_thumbnails WHERE origin = $1 AND media_id = $2",
            origin, media_id,
        )
        return [ThumbnailRecord(int(r[0]), int(r[1]), r[2], r[3], int(r[4]), r[5]) for r in rows]

    async def add_thumbnail(self, origin: str, media_id: str, t: ThumbnailRecord) -> None:
        await self.db.execute(
            "INSERT INTO media_thumbnails (origin, media_id, width, height, method, content_type, size, sha256)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            origin, media_id, t.width, t.height, t.method, t.content_type, t.size, t.sha256,
        )

    async def thumbnail_hashes(self, origin: str, media_id: str) -> list[str]:
        rows = await self.db.fetch("SELECT sha256 FROM media_thumbnails WHERE origin = $1 AND media_id = $2", origin, media_id)
        return [r[0] for r in rows]
