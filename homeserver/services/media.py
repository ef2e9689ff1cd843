"""The media repository: uploads (direct, or an ID reserved first and filled later), downloads of our
own and other servers' media (fetched once over federation, then kept), thumbnails, quotas, and the
administrator's quarantine, deletion and usage reports.

What a user sends never becomes part of a file path (files are named by their SHA-256); media IDs and
server names are checked against strict patterns before any lookup.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from homeserver.clock import Clock
from homeserver.config import Config
from homeserver.errors import MatrixError
from homeserver.services.media_files import MediaFiles, TooLarge
from homeserver.services.thumbnails import THUMBNAIL_FORMATS, CannotThumbnail, ThumbnailSize, choose_size, render
from homeserver.storage import Storage
from homeserver.storage.media import MediaRecord, ThumbnailRecord

MEDIA_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
SERVER_NAME = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,255})(:[0-9]{1,5})?$")
CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}(\s*;.{0,200})?$")
DEFAULT_WAIT_MS = 20_000
MAX_WAIT_MS = 120_000

# Remote media: (origin, media ID, store(content type, name, chunks), thumbnail query or None) -> None.
RemoteFetcher = Callable[[str, str, Callable[[str, str | None, AsyncIterator[bytes]], Awaitable[None]],
                          dict[str, str] | None], Awaitable[None]]


def check_media_id(media_id: str) -> None:
    if not MEDIA_ID.match(media_id):
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid media ID")


def check_server_name(server: str) -> None:
    if not SERVER_NAME.match(server):
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid server name")


def check_filename(name: str | None) -> None:
    """A file name is shown to people and put in headers, never used as a path; still, names that
    look like paths or carry control characters are refused rather than passed on to browsers."""
    if name is None:
        return
    if not name or len(name) > 255 or name in (".", "..") or any(c in name for c in "/\\") \
            or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid file name")


@dataclass(frozen=True)
class Served:
    """What a download or thumbnail request gets: a file on disk and how to label it."""
    file: Path
    content_type: str
    upload_name: str | None
    size: int


class MediaService:
    def __init__(self, config: Config, storage: Storage, clock: Clock) -> None:
        self.config = config
        self.server_name = config.server_name
        self.storage = storage
        self.clock = clock
        self.files = MediaFiles(config.resolve_path(config.media_store_path))
        self.sizes = [ThumbnailSize(s.width, s.height, s.method) for s in config.thumbnail_sizes]
        self.remote_fetch: RemoteFetcher | None = None  # set when federation is on
        self.remote_allowed: Callable[[str], bool] = lambda server: True
        self._uploaded: dict[str, asyncio.Event] = {}
        self._fetching: dict[tuple[str, str], asyncio.Future[None]] = {}

    def _mxc(self, media_id: str) -> str:
        return f"mxc://{self.server_name}/{media_id}"

    @staticmethod
    def _new_id() -> str:
        return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(24))

    def _check_type(self, content_type: str | None) -> str:
        ct = (content_type or "application/octet-stream").strip()
        if not CONTENT_TYPE.match(ct):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid Content-Type")
        if ct.split(";", 1)[0].strip().lower() in {t.lower() for t in self.config.media_blocked_content_types}:
            raise MatrixError(403, "M_FORBIDDEN", "This server does not accept files of this type")
        return ct

    async def _room_for(self, user_id: str, declared: int | None) -> int:
        """How many bytes this user may still upload in one file (max size, then quota)."""
        limit = self.config.max_upload_size
        if declared is not None and declared > limit:
            raise MatrixError(413, "M_TOO_LARGE", f"Cannot upload files larger than {limit} bytes")
        quota = self.config.media_quota_per_user
        if quota is not None:
            left = quota - await self.storage.media.user_usage(user_id)
            if declared is not None and declared > left or left <= 0:
                raise MatrixError(403, "M_FORBIDDEN", "You have reached your media quota")
            limit = min(limit, left)
        return limit

    async def _write(self, user_id: str, chunks: AsyncIterator[bytes], declared: int | None) -> tuple[str, int]:
        limit = await self._room_for(user_id, declared)
        try:
            return await self.files.write(chunks, limit)
        except TooLarge:
            if limit < self.config.max_upload_size:
                raise MatrixError(403, "M_FORBIDDEN", "You have reached your media quota") from None
            raise MatrixError(413, "M_TOO_LARGE", f"Cannot upload files larger than {limit} bytes") from None

    # --- uploads -------------------------------------------------------------------------------

    async def upload(self, user_id: str, content_type: str | None, filename: str | None,
                     chunks: AsyncIterator[bytes], declared: int | None) -> str:
        check_filename(filename)
        ct = self._check_type(content_type)
        sha, size = await self._write(user_id, chunks, declared)
        media_id = self._new_id()
        await self.storage.media.add_local(media_id, user_id, ct, filename, size, sha, self.clock.time_ms())
        return self._mxc(media_id)

    async def create(self, user_id: str) -> dict[str, Any]:
        now = self.clock.time_ms()
        if await self.storage.media.pending_uploads(user_id, now) >= self.config.max_pending_media_uploads:
            raise MatrixError(429, "M_LIMIT_EXCEEDED", "Too many pending media uploads", retry_after_ms=60_000)
        media_id = self._new_id()
        expires = now + self.config.unused_expiration_time
        await self.storage.media.reserve(media_id, user_id, now, expires)
        return {"content_uri": self._mxc(media_id), "unused_expires_at": expires}

    async def upload_reserved(self, user_id: str, server: str, media_id: str, content_type: str | None,
                              filename: str | None, chunks: AsyncIterator[bytes], declared: int | None) -> None:
        check_server_name(server)
        check_media_id(media_id)
        check_filename(filename)
        ct = self._check_type(content_type)
        rec = await self.storage.media.get_local(self.server_name, media_id) if server == self.server_name else None
        if rec is None or (rec.size is None and rec.unused_expires_ts is not None and rec.unused_expires_ts <= self.clock.time_ms()):
            raise MatrixError(404, "M_NOT_FOUND", "Unknown media ID")
        if rec.user_id != user_id:
            raise MatrixError(403, "M_FORBIDDEN", "This media ID was created by someone else")
        if rec.size is not None:
            raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
        sha, size = await self._write(user_id, chunks, declared)
        if not await self.storage.media.fill(media_id, ct, filename, size, sha):
            await self._forget_file(sha)
            raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
        event = self._uploaded.pop(media_id, None)
        if event is not None:
            event.set()

    # --- downloads -----------------------------------------------------------------------------

    async def get(self, server: str, media_id: str, *, timeout_ms: int | None = None, allow_remote: bool = True) -> Served:
        check_server_name(server)
        check_media_id(media_id)
        if server == self.server_name:
            rec = await self._local_ready(media_id, timeout_ms)
        else:
            if not allow_remote:
                raise MatrixError(404, "M_NOT_FOUND", "Not found")
            rec = await self._remote(server, media_id)
        if rec.quarantined_by:
            raise MatrixError(404, "M_NOT_FOUND", "Not found")
        assert rec.sha256 is not None and rec.size is not None
        return Served(self.files.path(rec.sha256), rec.content_type or "application/octet-stream", rec.upload_name, rec.size)

    async def _local_ready(self, media_id: str, timeout_ms: int | None) -> MediaRecord:
        rec = await self.storage.media.get_local(self.server_name, media_id)
        if rec is None:
            raise MatrixError(404, "M_NOT_FOUND", "Not found")
        if rec.size is None:
            wait = min(DEFAULT_WAIT_MS if timeout_ms is None else max(timeout_ms, 0), MAX_WAIT_MS)
            event = self._uploaded.setdefault(media_id, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), wait / 1000)
            except asyncio.TimeoutError:
                raise MatrixError(504, "M_NOT_YET_UPLOADED", "The media has not been uploaded yet") from None
            rec = await self.storage.media.get_local(self.server_name, media_id)
            if rec is None or rec.size is None:
                raise MatrixError(404, "M_NOT_FOUND", "Not found")
        return rec

    async def _remote(self, origin: str, media_id: str) -> MediaRecord:
        rec = await self.storage.media.get_remote(origin, media_id)
        if rec is not None:
            return rec
        if self.remote_fetch is None or not self.remote_allowed(origin):
            raise MatrixError(404, "M_NOT_FOUND", "Not found")
        key = (origin, media_id)
        pending = self._fetching.get(key)
        if pending is None:  # one fetch per file, however many clients ask at once
            pending = asyncio.ensure_future(self._fetch(origin, media_id))
            self._fetching[key] = pending
            pending.add_done_callback(lambda _: self._fetching.pop(key, None))
        await asyncio.shield(pending)
        rec = await self.storage.media.get_remote(origin, media_id)
        if rec is None:
            raise MatrixError(404, "M_NOT_FOUND", "Not found")
        return rec

    async def _fetch(self, origin: str, media_id: str) -> None:
        assert self.remote_fetch is not None

        async def store(content_type: str, name: str | None, chunks: AsyncIterator[bytes]) -> None:
            try:
                sha, size = await self.files.write(chunks, self.config.max_upload_size)
            except TooLarge:
                raise MatrixError(502, "M_TOO_LARGE", "The remote file is larger than this server accepts") from None
            if name is not None:
                try:
                    check_filename(name)
                except MatrixError:
                    name = None
            await self.storage.media.add_remote(origin, media_id, content_type, name, size, sha, self.clock.time_ms())

        try:
            await self.remote_fetch(origin, media_id, store, None)
        except MatrixError:
            raise
        except Exception as e:
            status = getattr(e, "status", 502)
            raise MatrixError(404 if status == 404 else 502, "M_NOT_FOUND" if status == 404 else "M_UNKNOWN",
                              f"Could not fetch the media from {origin}") from None

    # --- thumbnails ----------------------------------------------------------------------------

    async def thumbnail(self, server: str, media_id: str, width: int, height: int, method: str,
                        timeout_ms: int | None = None) -> Served:
        if method not in ("crop", "scale"):
            raise MatrixError(400, "M_INVALID_PARAM", "method must be crop or scale")
        if width < 1 or height < 1:
            raise MatrixError(400, "M_INVALID_PARAM", "width and height must be positive")
        source = await self.get(server, media_id, timeout_ms=timeout_ms)
        size = choose_size(self.sizes, width, height, method)
        base_type = source.content_type.split(";", 1)[0].strip().lower()
        if size is None or base_type not in THUMBNAIL_FORMATS:
            raise MatrixError(400, "M_UNKNOWN", "Cannot generate a thumbnail for this media")
        origin = "" if server == self.server_name else server
        for t in await self.storage.media.thumbnails(origin, media_id):
            if (t.width, t.height, t.method) == (size.width, size.height, size.method):
                path = self.files.path(t.sha256)
                if path.exists():
                    return Served(path, t.content_type, None, t.size)
        try:
            data, ct, _, _ = await asyncio.to_thread(render, source.file, base_type, size, self.config.max_image_pixels)
        except CannotThumbnail as e:
            raise MatrixError(400, "M_UNKNOWN", f"Cannot generate a thumbnail: {e}") from None
        sha, length = self.files.write_bytes(data)
        await self.storage.media.add_thumbnail(origin, media_id, ThumbnailRecord(size.width, size.height, size.method, ct, length, sha))
        return Served(self.files.path(sha), ct, None, length)

    # --- administration --------------------------------------------------------------------------

    async def _forget_file(self, sha: str | None) -> None:
        if sha and not await self.storage.media.sha256_in_use(sha):
            self.files.remove(sha)

    async def quarantine(self, server: str, media_id: str, by: str | None) -> bool:
        check_server_name(server)
        check_media_id(media_id)
        return await self.storage.media.set_quarantine(server, media_id, by, server == self.server_name)

    async def delete(self, server: str, media_id: str) -> bool:
        check_server_name(server)
        check_media_id(media_id)
        thumbs = await self.storage.media.thumbnail_hashes("" if server == self.server_name else server, media_id)
        if server == self.server_name:
            if await self.storage.media.get_local(server, media_id) is None:
                return False
            sha = await self.storage.media.delete_local(media_id)
        else:
            if await self.storage.media.get_remote(server, media_id) is None:
                return False
            sha = await self.storage.media.delete_remote(server, media_id)
        for h in [sha, *thumbs]:
            await self._forget_file(h)
        return True

    async def info(self, server: str, media_id: str) -> MediaRecord | None:
        check_server_name(server)
        check_media_id(media_id)
        if server == self.server_name:
            return await self.storage.media.get_local(server, media_id)
        return await self.storage.media.get_remote(server, media_id)

    async def expire_reservations(self) -> None:
        await self.storage.media.expire_reservations(self.clock.time_ms())
