"""The content repository: /_matrix/media/v3 (upload, create), /_matrix/client/v1/media (authenticated
download, thumbnails, config, URL previews) and, only when authenticated media is switched off, the
legacy unauthenticated downloads.

Downloads are labelled for browsers so nothing uploaded can run as a page of this server: only a short
list of plain media types is served inline, everything else as an attachment; ``nosniff`` and a
sandboxing Content-Security-Policy on every file.
"""

from __future__ import annotations

from typing import AsyncIterator
from urllib.parse import quote

from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import Routes, json_response, query_int
from homeserver.errors import MatrixError
from homeserver.services.media import Served, check_filename

CHUNK = 256 * 1024

# Types browsers may show inline (the spec's list); anything else is downloaded as an attachment.
INLINE_TYPES = frozenset({
    "text/css", "text/plain", "text/csv", "application/json", "application/ld+json", "image/jpeg", "image/gif",
    "image/png", "image/apng", "image/webp", "image/avif", "video/mp4", "video/webm", "video/ogg", "video/quicktime",
    "audio/mp4", "audio/webm", "audio/aac", "audio/mpeg", "audio/ogg", "audio/wave", "audio/wav", "audio/x-wav",
    "audio/x-pn-wav", "audio/flac", "audio/x-flac",
})
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf;"
                               " style-src 'unsafe-inline'; media-src 'self'; object-src 'self';",
    "Cross-Origin-Resource-Policy": "cross-origin",
}


def disposition(content_type: str, filename: str | None) -> str:
    kind = "inline" if content_type.split(";", 1)[0].strip().lower() in INLINE_TYPES else "attachment"
    if not filename:
        return kind
    if filename.isascii() and all(c not in filename for c in '"\\;'):
        return f'{kind}; filename="{filename}"'
    return f"{kind}; filename*=utf-8''{quote(filename, safe='')}"


def _file_response(served: Served, filename: str | None, *, private: bool) -> web.FileResponse:
    content_type = served.content_type
    if content_type.split(";", 1)[0].strip().lower().startswith("text/") and "charset" not in content_type.lower():
        content_type += "; charset=utf-8"
    headers = {
        "Content-Type": content_type,
        "Content-Disposition": disposition(served.content_type, filename or served.upload_name),
        "Cache-Control": "private, max-age=86400" if private else "public, max-age=86400, immutable",
        **SECURITY_HEADERS,
    }
    return web.FileResponse(served.file, chunk_size=CHUNK, headers=headers)


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(CHUNK):
        yield chunk


def _filename(request: web.Request) -> str | None:
    name = request.query.get("filename")
    check_filename(name)
    return name


async def upload(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    mxc = await hs.media.upload(requester.user_id, request.headers.get("Content-Type"), _filename(request), _body(request),
                                request.content_length)
    return json_response({"content_uri": mxc})


async def create(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    return json_response(await hs.media.create(requester.user_id))


async def upload_reserved(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    m = request.match_info
    await hs.media.upload_reserved(requester.user_id, m["server_name"], m["media_id"], request.headers.get("Content-Type"),
                                   _filename(request), _body(request), request.content_length)
    return json_response({})


def _timeout(request: web.Request) -> int | None:
    return query_int(request, "timeout_ms", None)


async def download(request: web.Request) -> web.StreamResponse:
    hs = hs_of(request)
    await hs.requester(request)
    return await _download(request, allow_remote=True)


async def _download(request: web.Request, *, allow_remote: bool) -> web.StreamResponse:
    hs = hs_of(request)
    m = request.match_info
    filename = m.get("filename")
    check_filename(filename)
    served = await hs.media.get(m["server_name"], m["media_id"], timeout_ms=_timeout(request), allow_remote=allow_remote)
    return _file_response(served, filename, private=True)


async def thumbnail(request: web.Request) -> web.StreamResponse:
    hs = hs_of(request)
    await hs.requester(request)
    return await _thumbnail(request)


async def _thumbnail(request: web.Request) -> web.StreamResponse:
    hs = hs_of(request)
    m = request.match_info
    width, height = query_int(request, "width", None), query_int(request, "height", None)
    if width is None or height is None:
        raise MatrixError(400, "M_MISSING_PARAM", "width and height are required")
    served = await hs.media.thumbnail(m["server_name"], m["media_id"], width, height, request.query.get("method", "scale"),
                                      _timeout(request))
    return _file_response(served, None, private=True)


async def legacy_download(request: web.Request) -> web.StreamResponse:
    if hs_of(request).config.enable_authenticated_media:
        raise MatrixError(404, "M_NOT_FOUND", "Not found (this server serves media only to signed-in users)")
    allow_remote = request.query.get("allow_remote", "true").lower() != "false"
    return await _download(request, allow_remote=allow_remote)


async def legacy_thumbnail(request: web.Request) -> web.StreamResponse:
    if hs_of(request).config.enable_authenticated_media:
        raise MatrixError(404, "M_NOT_FOUND", "Not found (this server serves media only to signed-in users)")
    return await _thumbnail(request)


async def config(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.requester(request)
    return json_response({"m.upload.size": hs.config.max_upload_size})


async def preview_url(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.requester(request)
    if not hs.config.url_preview_enabled:
        raise MatrixError(404, "M_UNRECOGNIZED", "URL previews are disabled on this server")
    url = request.query.get("url")
    if not url:
        raise MatrixError(400, "M_MISSING_PARAM", "url is required")
    return json_response(await hs.url_previews.preview(url))


def setup(routes: Routes) -> None:
    for v in ("v3", "r0"):
        routes.add("POST", f"/_matrix/media/{v}/upload", upload)
        routes.add("GET", f"/_matrix/media/{v}/config", config)
        routes.add("GET", f"/_matrix/media/{v}/preview_url", preview_url)
        routes.add("GET", f"/_matrix/media/{v}/download/{{server_name}}/{{media_id}}", legacy_download)
        routes.add("GET", f"/_matrix/media/{v}/download/{{server_name}}/{{media_id}}/{{filename}}", legacy_download)
        routes.add("GET", f"/_matrix/media/{v}/thumbnail/{{server_name}}/{{media_id}}", legacy_thumbnail)
    routes.add("PUT", "/_matrix/media/v3/upload/{server_name}/{media_id}", upload_reserved)
    routes.add("POST", "/_matrix/media/v1/create", create)
    routes.add("GET", "/_matrix/client/v1/media/download/{server_name}/{media_id}", download)
    routes.add("GET", "/_matrix/client/v1/media/download/{server_name}/{media_id}/{filename}", download)
    routes.add("GET", "/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}", thumbnail)
    routes.add("GET", "/_matrix/client/v1/media/config", config)
    routes.add("GET", "/_matrix/client/v1/media/preview_url", preview_url)
