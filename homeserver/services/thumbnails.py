"""Thumbnail generation with Pillow: the spec's ``scale`` (fit inside the box, keep the aspect ratio,
never enlarge) and ``crop`` (fill the box exactly, cutting the overflow evenly), from a fixed list of
sizes so a client cannot make the server render (and store) arbitrary ones."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

# Source types thumbnailed, and the format the thumbnail is written in.
THUMBNAIL_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP", "image/gif": "PNG"}
OUTPUT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


class CannotThumbnail(Exception):
    pass


@dataclass(frozen=True)
class ThumbnailSize:
    width: int
    height: int
    method: str  # "crop" or "scale"


def choose_size(sizes: list[ThumbnailSize], width: int, height: int, method: str) -> ThumbnailSize | None:
    """The smallest configured size of the method at least as big as asked, else the biggest one."""
    same = [s for s in sizes if s.method == method] or list(sizes)
    if not same:
        return None
    big_enough = [s for s in same if s.width >= width and s.height >= height]
    if big_enough:
        return min(big_enough, key=lambda s: (s.width * s.height, s.width))
    return max(same, key=lambda s: (s.width * s.height, s.width))


def render(source: Path, content_type: str, size: ThumbnailSize, max_pixels: int) -> tuple[bytes, str, int, int]:
    """(thumbnail bytes, its content type, width, height). Runs in a worker thread."""
    from PIL import Image, ImageOps

    fmt = THUMBNAIL_FORMATS.get(content_type)
    if fmt is None:
        raise CannotThumbnail(f"cannot thumbnail {content_type}")
    try:
        with Image.open(source) as img:
            if img.width * img.height > max_pixels:
                raise CannotThumbnail("image too large to thumbnail")
            img.draft("RGB", (size.width * 2, size.height * 2))  # JPEG: decode at reduced scale
            img = ImageOps.exif_transpose(img)
            if fmt == "JPEG" and img.mode not in ("RGB", "L"):
                img = img.convert("RGB")
            elif fmt != "JPEG" and img.mode not in ("RGB", "RGBA", "L", "LA"):
                img = img.convert("RGBA")
            if size.method == "crop":
                out = ImageOps.fit(img, (size.width, size.height), Image.LANCZOS)
            else:
                out = img.copy()
                out.thumbnail((size.width, size.height), Image.LANCZOS)
            buf = io.BytesIO()
            out.save(buf, fmt, **({"quality": 80} if fmt in ("JPEG", "WEBP") else {"optimize": True}))
            return buf.getvalue(), OUTPUT_TYPES[fmt], out.width, out.height
    except CannotThumbnail:
        raise
    except Exception as e:  # a corrupt or unsupported image
        raise CannotThumbnail(f"cannot read the image: {type(e).__name__}") from None
