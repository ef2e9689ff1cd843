"""Media across servers (spec v1.11 authenticated federation media): fetching another server's file
with a signed ``/_matrix/federation/v1/media/download`` and reading its ``multipart/mixed`` answer
piece by piece (never the whole file in memory), following a ``Location`` part if the other server
redirects; and the same answer, streamed, for servers fetching ours."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web

from federation.client import FederationClient, FederationError, path

CHUNK = 256 * 1024

# Called with the other server's content type, file name and a stream of the bytes; stores them.
Sink = Callable[[str, str | None, AsyncIterator[bytes]], Awaitable[None]]


class RemoteMediaError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def fetch_remote_media(client: FederationClient, origin: str, media_id: str, sink: Sink, *,
                             thumbnail: dict[str, str] | None = None, timeout_s: float = 120.0) -> None:
    kind = "thumbnail" if thumbnail else "download"
    query = {"timeout_ms": "20000", **(thumbnail or {})}
    try:
        async with client.stream("GET", origin, path(f"/_matrix/federation/v1/media/{kind}/{{}}", media_id),
                                 query=query, timeout_s=timeout_s) as r:
            if r.status == 404:
                raise RemoteMediaError(404, "The other server has no such media")
            if r.status != 200:
                raise RemoteMediaError(502, f"The other server answered {r.status}")
            if not r.content_type.startswith("multipart/"):
                raise RemoteMediaError(502, "The other server's answer is not multipart")
            reader = aiohttp.MultipartReader(r.headers, r.content)
            meta = await reader.next()
            if meta is None:
                raise RemoteMediaError(502, "Empty multipart answer")
            await meta.release()  # the metadata part is an empty JSON object today
            part = await reader.next()
            if part is None or isinstance(part, aiohttp.MultipartReader):
                raise RemoteMediaError(502, "The multipart answer has no content part")
            location = part.headers.get("Location")
            if location:
                await _follow(client, location, sink, timeout_s)
                return
            content_type = part.headers.get(aiohttp.hdrs.CONTENT_TYPE, "application/octet-stream")

            async def chunks() -> AsyncIterator[bytes]:
                while True:
                    chunk = await part.read_chunk(CHUNK)
                    if not chunk:
                        return
                    yield chunk

            await sink(content_type, part.filename, chunks())
    except FederationError as e:
        raise RemoteMediaError(502, f"Could not fetch the media: {e}") from None


async def _follow(client: FederationClient, location: str, sink: Sink, timeout_s: float) -> None:
    if not location.startswith("https://"):
        raise RemoteMediaError(502, "The other server redirected to a non-HTTPS location")
    session = client._client()  # noqa: SLF001 - one pooled session for all federation traffic
    async with session.get(location, ssl=client.ssl, timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
        if r.status != 200:
            raise RemoteMediaError(502, f"The redirect target answered {r.status}")

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in r.content.iter_chunked(CHUNK):
                yield chunk

        cd = r.headers.get(aiohttp.hdrs.CONTENT_DISPOSITION)
        name = None
        if cd:
            _, params = aiohttp.multipart.parse_content_disposition(cd)
            name = aiohttp.multipart.content_disposition_filename(params, "filename")
        await sink(r.content_type or "application/octet-stream", name, chunks())


async def serve_multipart(request: web.Request, file: Path, content_type: str, disposition: str) -> web.StreamResponse:
    """The federation media answer: a JSON part (``{}``) then the file, streamed from disk."""
    boundary = secrets.token_hex(16)
    resp = web.StreamResponse(status=200, headers={"Content-Type": f"multipart/mixed; boundary={boundary}"})
    await resp.prepare(request)
    await resp.write(f"--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n".encode())
    await resp.write(f"--{boundary}\r\nContent-Type: {content_type}\r\nContent-Disposition: {disposition}\r\n\r\n".encode())
    with open(file, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            await resp.write(chunk)
    await resp.write(f"\r\n--{boundary}--\r\n".encode())
    await resp.write_eof()
    return resp
