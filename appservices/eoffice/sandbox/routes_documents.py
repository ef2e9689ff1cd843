"""Handlers for correspondence: multipart upload streamed to disk, metadata, and streamed download.

Document bytes never sit whole in memory: the upload is copied part-chunk by part-chunk to a temp
file while hashing, and the download is served from disk by ``FileResponse``.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from typing import Any
from urllib.parse import quote

from aiohttp import BodyPartReader, web

from . import store
from . import validation as v
from .clock import new_id
from .documents import Upload
from .errors import ApiError, too_large, validation
from .plumbing import Services, canonical, idempotency_key, integration, json_response, outcome_response, services

routes = web.RouteTableDef()
log = logging.getLogger(__name__)
_METADATA_LIMIT = 64 * 1024
_CONTENT_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")
_METADATA_FIELDS = {"subject", "from", "to", "date", "external_ref", "filename", "content_type"}


def _metadata(raw: bytes) -> dict[str, Any]:
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise validation("the 'metadata' part is not valid JSON", "metadata") from None
    meta = v.require_object(meta)
    v.reject_unknown(meta, _METADATA_FIELDS)
    for key in ("subject", "from", "to"):
        v.string(meta, key)
    v.date(meta, "date")
    filename = v.string(meta, "filename", max_len=255)
    assert filename is not None
    if any(c in filename for c in "/\\") or not filename.isprintable() or filename in (".", ".."):
        raise validation("'filename' must be a plain file name without path separators", "filename")
    if not _CONTENT_TYPE_RE.match(v.string(meta, "content_type", max_len=255) or ""):
        raise validation("'content_type' must be a media type such as application/pdf", "content_type")
    v.external_ref(meta)
    return meta


async def _read_parts(request: web.Request, svc: Services) -> tuple[dict[str, Any], Upload]:
    if not request.content_type.startswith("multipart/form-data"):
        raise validation("correspondence is uploaded as multipart/form-data with 'metadata' and 'file' parts")
    limit = svc.config.max_upload_bytes
    if request.content_length is not None and request.content_length > limit + _METADATA_LIMIT + 64 * 1024:
        raise too_large(limit)  # refuse before reading a byte of an obviously oversized body
    meta: dict[str, Any] | None = None
    upload: Upload | None = None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise validation("nested multipart bodies are not accepted")
            if part.name == "metadata" and meta is None:
                raw = await part.read(decode=False)
                if len(raw) > _METADATA_LIMIT:
                    raise validation(f"the 'metadata' part exceeds {_METADATA_LIMIT} bytes", "metadata")
                meta = _metadata(bytes(raw))
            elif part.name == "file" and upload is None:
                upload = await svc.documents.receive(part, limit)
            else:
                raise validation(f"unexpected or repeated multipart part {part.name!r}", str(part.name))
    except BaseException:
        if upload is not None:
            upload.path.unlink(missing_ok=True)
        raise
    if meta is None or upload is None:
        if upload is not None:
            upload.path.unlink(missing_ok=True)
        raise validation("both a 'metadata' part and a 'file' part are required", "metadata" if meta is None else "file")
    return meta, upload


@routes.post("/api/v1/files/{file_id}/correspondence")
async def add_correspondence(request: web.Request) -> web.Response:
    svc, file_id = services(request), request.match_info["file_id"]
    await svc.db.run(store.check_file_writable, file_id)  # 404/409 before accepting megabytes
    meta, upload = await _read_parts(request, svc)
    try:
        ref = meta.get("external_ref")
        if ref is not None and ref["content_sha256"] != upload.sha256:
            raise validation("'external_ref.content_sha256' is not the SHA-256 of the uploaded bytes",
                             "external_ref.content_sha256")
        idem = idempotency_key(request, canonical(meta), upload.sha256.encode())
        correspondence_id = new_id("cor")

        def record(conn: sqlite3.Connection) -> tuple[int, dict[str, Any]]:
            # Insert first, move the bytes last: if the insert fails, nothing was put in place.
            result = store.add_correspondence(conn, file_id, correspondence_id, meta, upload.size, upload.sha256,
                                              integration(request))
            svc.documents.commit(upload, correspondence_id)
            return result

        outcome = await svc.db.write_idempotent(idem, record)
    finally:
        upload.path.unlink(missing_ok=True)  # a replay or a failure leaves the temp file behind
    return outcome_response(outcome)


@routes.get("/api/v1/files/{file_id}/correspondence")
async def list_correspondence(request: web.Request) -> web.Response:
    return json_response(await services(request).db.run(store.list_correspondence, request.match_info["file_id"]))


@routes.get("/api/v1/files/{file_id}/correspondence/{correspondence_id}")
async def get_correspondence(request: web.Request) -> web.Response:
    m = request.match_info
    return json_response(await services(request).db.run(store.get_correspondence, m["file_id"],
                                                         m["correspondence_id"]))


@routes.get("/api/v1/files/{file_id}/correspondence/{correspondence_id}/content")
async def get_content(request: web.Request) -> web.StreamResponse:
    m, svc = request.match_info, services(request)
    item = await svc.db.run(store.get_correspondence, m["file_id"], m["correspondence_id"])
    path = svc.documents.path_for(item["correspondence_id"])
    if not path.is_file():
        log.error("document bytes missing for %s at %s", item["correspondence_id"], path)
        raise ApiError(500, "INTERNAL", "the stored document is missing; the operator has been told via the log")
    ascii_name = item["filename"].encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    headers = {
        "Content-Type": item["content_type"],
        "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(item['filename'])}",
        "X-Content-SHA256": item["sha256"],
        "X-Content-Type-Options": "nosniff",
    }
    return web.FileResponse(path, chunk_size=256 * 1024, headers=headers)
