"""Media bytes on disk, named by their SHA-256 (``ab/cd/abcd…``): identical uploads share one file,
a file's name proves its content, and nothing a user sends (media ID, file name) ever becomes part
of a path. Uploads stream into a temporary file and are moved into place only once complete, so a
failed or oversized upload leaves nothing behind and memory use does not grow with file size."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import AsyncIterator


class TooLarge(Exception):
    """The content is larger than allowed."""


class MediaFiles:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp.iterdir():  # left by a crash mid-upload
            stale.unlink(missing_ok=True)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError("not a SHA-256 hex digest")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    async def write(self, chunks: AsyncIterator[bytes], max_size: int) -> tuple[str, int]:
        """Store a stream; returns (SHA-256 hex, size). Raises TooLarge beyond ``max_size`` bytes."""
        digest = hashlib.sha256()
        size = 0
        temp = self.tmp / secrets.token_hex(16)
        try:
            with open(temp, "wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_size:
                        raise TooLarge()
                    digest.update(chunk)
                    f.write(chunk)
            sha = digest.hexdigest()
            final = self.path(sha)
            if final.exists():
                temp.unlink()
            else:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(temp, final)
            return sha, size
        finally:
            temp.unlink(missing_ok=True)

    def write_bytes(self, data: bytes) -> tuple[str, int]:
        """Store a small generated file (a thumbnail)."""
        sha = hashlib.sha256(data).hexdigest()
        final = self.path(sha)
        if not final.exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            temp = self.tmp / secrets.token_hex(16)
            temp.write_bytes(data)
            os.replace(temp, final)
        return sha, len(data)

    def remove(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)
