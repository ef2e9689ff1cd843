"""Media across servers: a user on hs2 downloads (and thumbnails) a file uploaded on hs1; hs2 fetches
it once with a signed federation request, keeps it, and serves it from then on; a server outside the
allowlist gets nothing."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from tests.support.servers import RunningServer

V1 = "/_matrix/client/v1/media"


async def test_remote_media_is_fetched_once_then_served_locally(federation: Any) -> None:
    hs1: RunningServer = await federation("127.0.0.1")
    hs2: RunningServer = await federation("127.0.0.2")
    _, ta, _ = await hs1.login_user("alice")
    _, tb, _ = await hs2.login_user("bob")
    buf = io.BytesIO()
    Image.new("RGB", (400, 300), (10, 120, 10)).save(buf, "PNG")
    png = buf.getvalue()
    r = await hs1.http.request("POST", "/_matrix/media/v3/upload", raw=png, token=ta, params={"filename": "map.png"},
                               headers={"Content-Type": "image/png"})
    server, media_id = r.body["content_uri"][len("mxc://"):].split("/", 1)
    got = await hs2.http.get(f"{V1}/download/{server}/{media_id}", token=tb)
    assert got.status == 200 and got.body == png
    assert got.headers["Content-Type"] == "image/png"
    assert got.headers["Content-Disposition"] == 'inline; filename="map.png"'
    cached = await hs2.hs.storage.media.get_remote(server, media_id)
    assert cached is not None and cached.size == len(png)
    # From now on hs2 serves it without asking hs1.
    calls: list[str] = []
    original = hs2.hs.federation.client.stream

    def counting(method: str, dest: str, path: str, **kw: Any) -> Any:
        calls.append(path)
        return original(method, dest, path, **kw)

    hs2.hs.federation.client.stream = counting  # type: ignore[method-assign]
    assert (await hs2.http.get(f"{V1}/download/{server}/{media_id}", token=tb)).body == png
    thumb = await hs2.http.get(f"{V1}/thumbnail/{server}/{media_id}", token=tb, params={"width": "32", "height": "32", "method": "crop"})
    assert thumb.status == 200 and Image.open(io.BytesIO(thumb.body)).size == (32, 32)
    assert calls == []
    missing = await hs2.http.get(f"{V1}/download/{server}/nosuchmedia", token=tb)
    assert missing.status == 404 and missing.errcode == "M_NOT_FOUND"


async def test_remote_media_obeys_the_allowlist(federation: Any) -> None:
    hs1: RunningServer = await federation("127.0.0.1")
    hs2: RunningServer = await federation("127.0.0.2", federation_domain_whitelist=["elsewhere.example"])
    _, ta, _ = await hs1.login_user("alice")
    _, tb, _ = await hs2.login_user("bob")
    r = await hs1.http.request("POST", "/_matrix/media/v3/upload", raw=b"secret", token=ta, headers={"Content-Type": "text/plain"})
    server, media_id = r.body["content_uri"][len("mxc://"):].split("/", 1)
    refused = await hs2.http.get(f"{V1}/download/{server}/{media_id}", token=tb)
    assert refused.status == 404 and refused.errcode == "M_NOT_FOUND"
    assert await hs2.hs.storage.media.get_remote(server, media_id) is None
    # And hs1 refuses hs2's signed requests when hs2 is outside hs1's allowlist the other way round.
    from federation.client import FederationError

    try:
        await hs2.hs.federation.client.get_json(server, f"/_matrix/federation/v1/media/download/{media_id}")
    except FederationError as e:
        assert e.status == 403
    else:
        raise AssertionError("hs2 must not be able to reach a server outside its allowlist")
