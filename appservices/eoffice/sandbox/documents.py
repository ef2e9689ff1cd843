"""Document bytes on disk: streamed in with a running SHA-256 and a size cap, streamed back out.

Files are named by their opaque correspondence id, never by the client's filename, so no upload
can choose a path. Uploads land in ``documents/tmp`` first and are renamed into place only inside
the transaction that records them; a crash leaves at most an orphan temp file, never a record
pointing at missing bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .clock import new_id
from .errors import too_large

CHUNK = 256 * 1024


class ChunkReader(Protocol):
    async def read_chunk(self, size: int = ...) -> bytes: ...


@dataclass(frozen=True)
class Upload:
    path: Path
    size: int
    sha256: str


class DocumentStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"

    def prepare(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp.iterdir():  # leftovers of uploads interrupted by a crash
            stale.unlink(missing_ok=True)

    def path_for(self, correspondence_id: str) -> Path:
        return self.root / correspondence_id[-2:] / correspondence_id

    async def receive(self, part: ChunkReader, limit: int) -> Upload:
        """Copy a multipart part to a temp file chunk by chunk; 413 as soon as it passes ``limit``."""
        path = self.tmp / new_id("upload")
        digest, size = hashlib.sha256(), 0
        fh = await asyncio.to_thread(open, path, "wb")
        try:
            while chunk := await part.read_chunk(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                digest.update(chunk)
                await asyncio.to_thread(fh.write, chunk)
            await asyncio.to_thread(_flush, fh)
        except BaseException:
            fh.close()
            path.unlink(missing_ok=True)
            raise
        fh.close()
        return Upload(path, size, digest.hexdigest())

    def commit(self, upload: Upload, correspondence_id: str) -> Path:
        """Move an upload into place (same filesystem, so atomic); called inside the recording transaction."""
        final = self.path_for(correspondence_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(upload.path, final)
        return final

    def uncommit(self, path: Path) -> None:
        path.unlink(missing_ok=True)


def _flush(fh: object) -> None:
    fh.flush()  # type: ignore[attr-defined]
    os.fsync(fh.fileno())  # type: ignore[attr-defined]
