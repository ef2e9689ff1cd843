"""The media repository over real HTTP, on SQLite and PostgreSQL: uploads (direct and reserved),
authenticated downloads with browser-safe headers, thumbnails, quotas and limits, bad input, and the
administrator's quarantine, deletion and usage report."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from PIL import Image

from tests.support.servers import RunningServer

M = "/_matrix/media/v3"
V1 = "/_matrix/client/v1/media"


def _image(fmt: str, size: tuple[int, int] = (1000, 600)) -> bytes:
    img = Image.new("RGB", size, (200, 30, 30))
    for x in range(0, size[0], 50):  # something to see, so scaling is real work
        for y in range(size[1]):
            img.putpixel((x, y), (0, 0, 255))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


async def _upload(srv: RunningServer, token: str, data: bytes, content_type: str = "application/octet-stream",
                  filename: str | None = None) -> Any:
    params = {"filename": filename} if filename is not None else None
    return await srv.http.request("POST", f"{M}/upload", raw=data, token=token, params=params,
                                  headers={"Content-Type": content_type})


def _split(mxc: str) -> tuple[str, str]:
    server, media_id = mxc[len("mxc://"):].split("/", 1)
    return server, media_id


def _stored_files(srv: RunningServer) -> list[Path]:
    root = srv.config.resolve_path(srv.config.media_store_path)
    return [p for p in root.rglob("*") if p.is_file() and p.parent.name != "tmp"]


async def test_upload_then_download_with_safe_headers(server: RunningServer) -> None:
    _, token, _ = await server.login_user("alice")
    _, other, _ = await server.login_user("bob")
    r = await _upload(server, token, b"<html><script>alert(1)</script></html>", "text/html", "report.html")
    assert r.status == 200, r.body
    server_name, media_id = _split(r.body["content_uri"])
    assert server_name == server.config.server_name
    # Any signed-in user of the server can fetch it (media IDs are unguessable); anonymous users cannot.
    got = await server.http.get(f"{V1}/download/{server_name}/{media_id}", token=other)
    assert got.status == 200 and got.body == b"<html><script>alert(1)</script></html>"
    assert got.headers["Content-Type"].startswith("text/html")
    assert got.headers["Content-Disposition"] == 'attachment; filename="report.html"'  # never rendered as a page
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in got.headers["Content-Security-Policy"]
    assert (await server.http.get(f"{V1}/download/{server_name}/{media_id}")).errcode == "M_MISSING_TOKEN"
    # Legacy unauthenticated paths are off by default.
    legacy = await server.http.get(f"{M}/download/{server_name}/{media_id}")
    assert legacy.status == 404 and legacy.errcode == "M_NOT_FOUND"
    # An image is shown inline, under the name the client asks for (non-ASCII names encoded per RFC 6266).
    png = _image("PNG", (20, 10))
    r = await _upload(server, token, png, "image/png", "photo.png")
    _, pid = _split(r.body["content_uri"])
    got = await server.http.get(f"{V1}/download/{server_name}/{pid}/{quote('ملف.png')}", token=token)
    assert got.status == 200 and got.body == png
    assert got.headers["Content-Disposition"] == "inline; filename*=utf-8''" + quote("ملف.png", safe="")
    cfg = await server.http.get(f"{V1}/config", token=token)
    assert cfg.body == {"m.upload.size": server.config.max_upload_size}
    # Identical content is stored once.
    before = len(_stored_files(server))
    again = await _upload(server, token, png, "image/png", "copy.png")
    assert again.status == 200 and again.body["content_uri"] != r.body["content_uri"]
    assert len(_stored_files(server)) == before


async def test_legacy_downloads_when_authenticated_media_is_off(make_server: Any) -> None:
    server = await make_server(enable_authenticated_media=False)
    _, token, _ = await server.login_user("alice")
    r = await _upload(server, token, b"hello", "text/plain")
    server_name, media_id = _split(r.body["content_uri"])
    got = await server.http.get(f"{M}/download/{server_name}/{media_id}")
    assert got.status == 200 and got.body == b"hello"
    assert got.headers["Content-Disposition"] == "inline"
    assert got.headers["Content-Type"] == "text/plain; charset=utf-8"


async def test_reserved_upload_is_waited_for_and_owned(server: RunningServer) -> None:
    _, token, _ = await server.login_user("alice")
    _, other, _ = await server.login_user("bob")
    created = await server.http.post("/_matrix/media/v1/create", {}, token=token)
    assert created.status == 200 and created.body["unused_expires_at"] > 0
    server_name, media_id = _split(created.body["content_uri"])
    early = await server.http.get(f"{V1}/download/{server_name}/{media_id}", token=token, params={"timeout_ms": "50"})
    assert early.status == 504 and early.errcode == "M_NOT_YET_UPLOADED"
    # A download that starts first gets the content once it is uploaded.
    waiting = asyncio.create_task(server.http.get(f"{V1}/download/{server_name}/{media_id}", token=token))
    await asyncio.sleep(0.05)
    stolen = await server.http.request("PUT", f"{M}/upload/{server_name}/{media_id}", raw=b"x", token=other,
                                       headers={"Content-Type": "text/plain"})
    assert stolen.status == 403 and stolen.errcode == "M_FORBIDDEN"
    put = await server.http.request("PUT", f"{M}/upload/{server_name}/{media_id}", raw=b"late content", token=token,
                                    headers={"Content-Type": "text/plain"})
    assert put.status == 200 and put.body == {}
    got = await waiting
    assert got.status == 200 and got.body == b"late content"
    twice = await server.http.request("PUT", f"{M}/upload/{server_name}/{media_id}", raw=b"other", token=token,
                                      headers={"Content-Type": "text/plain"})
    assert twice.status == 409 and twice.errcode == "M_CANNOT_OVERWRITE_MEDIA"
    unknown = await server.http.request("PUT", f"{M}/upload/{server_name}/nosuchmedia", raw=b"x", token=token,
                                        headers={"Content-Type": "text/plain"})
    assert unknown.status == 404 and unknown.errcode == "M_NOT_FOUND"
    for _ in range(server.config.max_pending_media_uploads):
        assert (await server.http.post("/_matrix/media/v1/create", {}, token=other)).status == 200
    over = await server.http.post("/_matrix/media/v1/create", {}, token=other)
    assert over.status == 429 and over.errcode == "M_LIMIT_EXCEEDED"


@pytest.mark.parametrize("fmt,content_type", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
async def test_thumbnails_crop_and_scale(server: RunningServer, fmt: str, content_type: str) -> None:
    _, token, _ = await server.login_user("alice")
    r = await _upload(server, token, _image(fmt), content_type, "big.img")
    server_name, media_id = _split(r.body["content_uri"])
    path = f"{V1}/thumbnail/{server_name}/{media_id}"
    crop = await server.http.get(path, token=token, params={"width": "90", "height": "90", "method": "crop"})
    assert crop.status == 200, crop.body
    assert crop.headers["Content-Type"] == content_type
    assert Image.open(io.BytesIO(crop.body)).size == (96, 96)  # the nearest configured size, filled exactly
    scale = await server.http.get(path, token=token, params={"width": "300", "height": "200", "method": "scale"})
    img = Image.open(io.BytesIO(scale.body))
    assert img.size == (320, 192)  # inside 320x240, aspect ratio kept
    again = await server.http.get(path, token=token, params={"width": "300", "height": "200", "method": "scale"})
    assert again.body == scale.body
    assert len(await server.hs.storage.media.thumbnails("", media_id)) == 2  # generated once each, then served
    text = await _upload(server, token, b"not an image", "text/plain")
    _, tid = _split(text.body["content_uri"])
    bad = await server.http.get(f"{V1}/thumbnail/{server_name}/{tid}", token=token, params={"width": "32", "height": "32"})
    assert bad.status == 400 and bad.errcode == "M_UNKNOWN"
    missing = await server.http.get(path, token=token, params={"width": "32"})
    assert missing.status == 400 and missing.errcode == "M_MISSING_PARAM"


async def test_bad_input_is_refused_and_nothing_is_written(make_server: Any) -> None:
    server = await make_server(max_upload_size=1000, media_quota_per_user=2500,
                               media_blocked_content_types=["application/x-msdownload"])
    alice, token, _ = await server.login_user("alice")
    name = server.config.server_name

    async def nothing_written() -> None:
        assert _stored_files(server) == []
        root = server.config.resolve_path(server.config.media_store_path)
        assert list((root / "tmp").iterdir()) == []
        assert (await server.hs.storage.media.user_media(name, alice, 0, 10))[1] == 0

    cases = [
        (b"x" * 1001, "text/plain", None, 413, "M_TOO_LARGE"),
        (b"x", "text/plain", "../../etc/passwd", 400, "M_INVALID_PARAM"),
        (b"x", "text/plain", "a\\b.txt", 400, "M_INVALID_PARAM"),
        (b"x", "text/plain", "line\nbreak", 400, "M_INVALID_PARAM"),
        (b"x", "not a type", None, 400, "M_INVALID_PARAM"),
        (b"MZ", "application/x-msdownload", "setup.exe", 403, "M_FORBIDDEN"),
    ]
    for data, ct, filename, status, errcode in cases:
        r = await _upload(server, token, data, ct, filename)
        assert (r.status, r.errcode) == (status, errcode), (filename, ct, r.body)
    await nothing_written()
    # An oversized body without a Content-Length (chunked) is cut off too.

    async def chunked() -> Any:
        for _ in range(20):
            yield b"y" * 100

    async with server.http.session.post(f"{server.base_url}{M}/upload", data=chunked(),
                                        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"}) as r:
        assert r.status == 413 and (await r.json())["errcode"] == "M_TOO_LARGE"
    await nothing_written()
    # Quota: 2,500 bytes in all.
    for _ in range(2):
        assert (await _upload(server, token, b"q" * 999 + bytes([_]), "text/plain")).status == 200
    over = await _upload(server, token, b"z" * 600, "text/plain")
    assert over.status == 403 and over.errcode == "M_FORBIDDEN"
    # Unknown and malformed media IDs and server names.
    for path, status, errcode in [
        (f"{V1}/download/{name}/doesnotexist", 404, "M_NOT_FOUND"),
        (f"{V1}/download/{name}/bad.id", 400, "M_INVALID_PARAM"),
        (f"{V1}/download/{name}/..%2F..%2Fsigning.key", 400, "M_INVALID_PARAM"),
        (f"{V1}/download/bad%20server/abc", 400, "M_INVALID_PARAM"),
        (f"{V1}/thumbnail/{name}/doesnotexist?width=32&height=32", 404, "M_NOT_FOUND"),
    ]:
        r = await server.http.get(path, token=token)
        assert r.status in (status, 404) and r.errcode in (errcode, "M_UNRECOGNIZED", "M_NOT_FOUND"), (path, r.status, r.body)
        assert isinstance(r.body, dict) and r.body.get("errcode"), path
    good = await _upload(server, token, b"ok", "text/plain")
    _, gid = _split(good.body["content_uri"])
    r = await server.http.get(f"{V1}/download/{name}/{gid}/..%2F..%2Fx", token=token)
    assert r.status in (400, 404) and r.body.get("errcode"), r.body


async def test_admin_quarantine_delete_and_usage(server: RunningServer) -> None:
    alice, token, _ = await server.login_user("alice")
    _, admin, _ = await server.login_user("root", admin=True)
    name = server.config.server_name
    first = await _upload(server, token, b"a" * 300, "text/plain", "one.txt")
    second = await _upload(server, token, b"b" * 200, "text/plain", "two.txt")
    _, m1 = _split(first.body["content_uri"])
    _, m2 = _split(second.body["content_uri"])
    A = "/_synapse/admin/v1"
    assert (await server.http.post(f"{A}/media/quarantine/{name}/{m1}", {}, token=token)).status == 403
    assert (await server.http.post(f"{A}/media/quarantine/{name}/{m1}", {}, token=admin)).status == 200
    hidden = await server.http.get(f"{V1}/download/{name}/{m1}", token=token)
    assert hidden.status == 404 and hidden.errcode == "M_NOT_FOUND"
    info = await server.http.get(f"{A}/media/{name}/{m1}", token=admin)
    assert info.body["media_info"]["quarantined_by"] is not None and info.body["media_info"]["media_length"] == 300
    assert (await server.http.post(f"{A}/media/unquarantine/{name}/{m1}", {}, token=admin)).status == 200
    assert (await server.http.get(f"{V1}/download/{name}/{m1}", token=token)).status == 200
    usage = await server.http.get(f"{A}/statistics/users/media", token=admin)
    assert usage.body["users"] == [{"user_id": alice, "displayname": usage.body["users"][0]["displayname"],
                                    "media_count": 2, "media_length": 500}]
    listing = await server.http.get(f"{A}/users/{quote(alice)}/media", token=admin)
    assert {m["media_id"] for m in listing.body["media"]} == {m1, m2} and listing.body["total"] == 2
    files = len(_stored_files(server))
    deleted = await server.http.delete(f"{A}/media/{name}/{m2}", token=admin)
    assert deleted.body == {"deleted_media": [m2], "total": 1}
    assert (await server.http.get(f"{V1}/download/{name}/{m2}", token=token)).status == 404
    assert len(_stored_files(server)) == files - 1  # the file went with its last reference
    assert (await server.http.delete(f"{A}/media/{name}/{m2}", token=admin)).status == 404


async def test_url_previews_are_off_by_default_and_limited_to_allowed_hosts(make_server: Any) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    async def page(request: web.Request) -> web.Response:
        return web.Response(content_type="text/html", text=(
            "<html><head><title>Circular 12/2026</title>"
            '<meta property="og:description" content="Revised travel rules">'
            '<meta property="og:image" content="http://elsewhere/i.png"></head><body>x</body></html>'))

    app = web.Application()
    app.router.add_get("/circular", page)
    site = TestServer(app, host="127.0.0.1")
    await site.start_server()
    try:
        url = str(site.make_url("/circular"))
        server = await make_server(url_preview_enabled=True, url_preview_allowed_hosts=["127.0.0.1"])
        _, token, _ = await server.login_user("alice")
        r = await server.http.get(f"{V1}/preview_url", token=token, params={"url": url})
        assert r.status == 200, r.body
        assert r.body["og:title"] == "Circular 12/2026" and r.body["og:description"] == "Revised travel rules"
        assert "og:image" not in r.body  # nothing is fetched beyond the page itself
        other = await server.http.get(f"{V1}/preview_url", token=token, params={"url": url.replace("127.0.0.1", "localhost")})
        assert other.status == 403 and other.errcode == "M_FORBIDDEN"
        bad = await server.http.get(f"{V1}/preview_url", token=token, params={"url": "file:///etc/passwd"})
        assert bad.status == 400 and bad.errcode == "M_INVALID_PARAM"
    finally:
        await site.close()


async def test_url_previews_disabled(server: RunningServer) -> None:
    _, token, _ = await server.login_user("alice")
    r = await server.http.get(f"{V1}/preview_url", token=token, params={"url": "https://example.org/"})
    assert r.status == 404 and r.errcode == "M_UNRECOGNIZED"
