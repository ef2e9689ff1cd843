"""/versions, /.well-known, /capabilities, and the HTTP conventions every endpoint shares."""

from __future__ import annotations

from tests.support.servers import RunningServer


async def test_versions_lists_v1_16_and_legacy(server: RunningServer) -> None:
    r = await server.http.get("/_matrix/client/versions")
    assert r.status == 200
    assert "v1.16" in r.body["versions"] and "r0.6.1" in r.body["versions"]
    assert isinstance(r.body["unstable_features"], dict)


async def test_well_known_client_points_at_base_url(make_server) -> None:
    srv = await make_server(public_baseurl="https://matrix.mofa.gov.example/", extra_well_known_client_content={"org.example.x": {"a": 1}})
    r = await srv.http.get("/.well-known/matrix/client")
    assert r.status == 200
    assert r.body["m.homeserver"]["base_url"] == "https://matrix.mofa.gov.example"
    assert r.body["org.example.x"] == {"a": 1}


async def test_well_known_server_only_when_enabled(make_server) -> None:
    srv = await make_server(serve_server_wellknown=True)
    r = await srv.http.get("/.well-known/matrix/server")
    assert r.status == 200 and r.body == {"m.server": "hs1.test:443"}


async def test_well_known_server_off_by_default(server: RunningServer) -> None:
    r = await server.http.get("/.well-known/matrix/server")
    assert r.status == 404 and r.errcode == "M_NOT_FOUND"


async def test_capabilities_needs_token_and_lists_room_versions(server: RunningServer) -> None:
    r = await server.http.get("/_matrix/client/v3/capabilities")
    assert r.status == 401 and r.errcode == "M_MISSING_TOKEN"
    _, token, _ = await server.login_user("alice")
    for prefix in ("r0", "v3"):
        r = await server.http.get(f"/_matrix/client/{prefix}/capabilities", token=token)
        assert r.status == 200
        caps = r.body["capabilities"]
        assert caps["m.room_versions"]["default"] == "12"
        assert set(caps["m.room_versions"]["available"]) == {str(n) for n in range(6, 13)}
        assert caps["m.change_password"]["enabled"] is True


async def test_unknown_path_is_404_unrecognized(server: RunningServer) -> None:
    r = await server.http.get("/_matrix/client/v3/no/such/thing")
    assert r.status == 404 and r.errcode == "M_UNRECOGNIZED"
    assert r.headers["Access-Control-Allow-Origin"] == "*"


async def test_wrong_method_is_405_unrecognized(server: RunningServer) -> None:
    r = await server.http.put("/_matrix/client/v3/login", {})
    assert r.status == 405 and r.errcode == "M_UNRECOGNIZED"


async def test_cors_preflight_and_headers(server: RunningServer) -> None:
    r = await server.http.request("OPTIONS", "/_matrix/client/v3/login", headers={
        "Origin": "https://app.element.io", "Access-Control-Request-Method": "POST",
    })
    assert r.status == 200
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
    r = await server.http.get("/_matrix/client/versions")
    assert r.headers["Access-Control-Allow-Origin"] == "*"


async def test_not_json_and_bad_json(server: RunningServer) -> None:
    r = await server.http.post("/_matrix/client/v3/login", raw=b"{not json")
    assert r.status == 400 and r.errcode == "M_NOT_JSON"
    r = await server.http.post("/_matrix/client/v3/login", raw=b"[1, 2]")
    assert r.status == 400 and r.errcode == "M_BAD_JSON"


async def test_oversized_body_is_413(make_server) -> None:
    srv = await make_server(max_request_body_size="1K")
    r = await srv.http.post("/_matrix/client/v3/login", {"type": "m.login.password", "pad": "x" * 4096})
    assert r.status == 413 and r.errcode == "M_TOO_LARGE"


async def test_bad_authorization_header(server: RunningServer) -> None:
    r = await server.http.get("/_matrix/client/v3/account/whoami", headers={"Authorization": "Basic abc"})
    assert r.status == 401 and r.errcode == "M_MISSING_TOKEN"
    r = await server.http.get("/_matrix/client/v3/account/whoami", token="qat_nonsense")
    assert r.status == 401 and r.errcode == "M_UNKNOWN_TOKEN"
