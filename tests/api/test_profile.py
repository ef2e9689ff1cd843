"""/profile/{userId} and its fields."""

from __future__ import annotations

from tests.support.servers import RunningServer


async def test_default_displayname_and_updates(server: RunningServer) -> None:
    user, token, _ = await server.login_user("alice")
    r = await server.http.get(f"/_matrix/client/v3/profile/{user}")
    assert r.status == 200 and r.body == {"displayname": "alice"}
    r = await server.http.put(f"/_matrix/client/v3/profile/{user}/displayname", {"displayname": "Alice Khan"}, token=token)
    assert r.status == 200
    r = await server.http.put(f"/_matrix/client/r0/profile/{user}/avatar_url", {"avatar_url": "mxc://hs1.test/abc"}, token=token)
    assert r.status == 200
    r = await server.http.get(f"/_matrix/client/v3/profile/{user}/displayname", token=token)
    assert r.body == {"displayname": "Alice Khan"}
    r = await server.http.get(f"/_matrix/client/v3/profile/{user}")
    assert r.body == {"displayname": "Alice Khan", "avatar_url": "mxc://hs1.test/abc"}


async def test_custom_field_and_delete(server: RunningServer) -> None:
    user, token, _ = await server.login_user("alice")
    r = await server.http.put(f"/_matrix/client/v3/profile/{user}/m.tz", {"m.tz": "Asia/Karachi"}, token=token)
    assert r.status == 200
    assert (await server.http.get(f"/_matrix/client/v3/profile/{user}/m.tz")).body == {"m.tz": "Asia/Karachi"}
    r = await server.http.delete(f"/_matrix/client/v3/profile/{user}/m.tz", token=token)
    assert r.status == 200
    r = await server.http.get(f"/_matrix/client/v3/profile/{user}/m.tz")
    assert r.status == 404 and r.errcode == "M_NOT_FOUND"


async def test_profile_errors(server: RunningServer) -> None:
    user, token, _ = await server.login_user("alice")
    bob, bob_token, _ = await server.login_user("bob")
    cases = [
        ("PUT", f"/_matrix/client/v3/profile/{bob}/displayname", {"displayname": "Hacked"}, token, 403, "M_FORBIDDEN"),
        ("PUT", f"/_matrix/client/v3/profile/{user}/displayname", {"displayname": 5}, token, 400, "M_BAD_JSON"),
        ("PUT", f"/_matrix/client/v3/profile/{user}/displayname", {"displayname": "x" * 300}, token, 400, "M_BAD_JSON"),
        ("PUT", f"/_matrix/client/v3/profile/{user}/avatar_url", {"avatar_url": "http://evil/x.png"}, token, 400, "M_BAD_JSON"),
        ("PUT", f"/_matrix/client/v3/profile/{user}/displayname", {}, token, 400, "M_MISSING_PARAM"),
        ("PUT", f"/_matrix/client/v3/profile/{user}/displayname", {"displayname": "x"}, None, 401, "M_MISSING_TOKEN"),
        ("GET", "/_matrix/client/v3/profile/@nobody:hs1.test", None, token, 404, "M_NOT_FOUND"),
        # An unreachable server: 502, as Synapse answers (the federation tests cover reachable ones).
        ("GET", "/_matrix/client/v3/profile/@someone:remote.test", None, token, 502, "M_UNKNOWN"),
        ("PUT", f"/_matrix/client/v3/profile/{user}/big", {"big": "x" * 70000}, token, 400, "M_PROFILE_TOO_LARGE"),
    ]
    for method, path, body, tok, status, errcode in cases:
        r = await server.http.request(method, path, body, token=tok)
        assert (r.status, r.errcode) == (status, errcode), (method, path, r.body)
    assert (await server.http.get(f"/_matrix/client/v3/profile/{bob}")).body == {"displayname": "bob"}


async def test_profile_can_require_auth(make_server) -> None:
    srv = await make_server(require_auth_for_profile_requests=True)
    user, token, _ = await srv.login_user("alice")
    assert (await srv.http.get(f"/_matrix/client/v3/profile/{user}")).errcode == "M_MISSING_TOKEN"
    assert (await srv.http.get(f"/_matrix/client/v3/profile/{user}", token=token)).status == 200
