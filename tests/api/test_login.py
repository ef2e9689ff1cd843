"""/login, /refresh, /logout, /logout/all and access-token handling."""

from __future__ import annotations

from homeserver.clock import FakeClock
from homeserver.services.tokens import token_hash
from tests.support.servers import RunningServer

LOGIN = "/_matrix/client/v3/login"
WHOAMI = "/_matrix/client/v3/account/whoami"


async def test_flows(server: RunningServer) -> None:
    for prefix in ("r0", "v3"):
        r = await server.http.get(f"/_matrix/client/{prefix}/login")
        assert r.status == 200 and {"type": "m.login.password"} in r.body["flows"]


async def test_password_login_variants(server: RunningServer) -> None:
    await server.create_user("alice", "password123")
    for body in (
        {"identifier": {"type": "m.id.user", "user": "alice"}},
        {"identifier": {"type": "m.id.user", "user": "@alice:hs1.test"}},
        {"identifier": {"type": "m.id.user", "user": "ALICE"}},  # case-insensitive match
        {"user": "alice"},  # legacy top-level field
    ):
        r = await server.http.post(LOGIN, {"type": "m.login.password", "password": "password123", **body})
        assert r.status == 200, (body, r.body)
        assert r.body["user_id"] == "@alice:hs1.test"
        assert r.body["access_token"].startswith("qat_") and r.body["device_id"]
        assert "refresh_token" not in r.body and "expires_in_ms" not in r.body


async def test_token_is_stored_hashed(server: RunningServer) -> None:
    _, token, _ = await server.login_user("alice")
    rows = await server.hs.storage.db.fetch("SELECT token_hash FROM access_tokens")
    assert [r[0] for r in rows] == [token_hash(token)]
    assert token not in str([tuple(r) for r in rows])


async def test_device_id_reuse_keeps_device(server: RunningServer) -> None:
    await server.create_user("alice")
    r1 = await server.http.login("alice", "password123", device_id="PHONE", initial_device_display_name="Phone")
    r2 = await server.http.login("alice", "password123", device_id="PHONE", initial_device_display_name="Other")
    assert r1.body["device_id"] == r2.body["device_id"] == "PHONE"
    devs = (await server.http.get("/_matrix/client/v3/devices", token=r2.body["access_token"])).body["devices"]
    assert [(d["device_id"], d["display_name"]) for d in devs] == [("PHONE", "Phone")]
    # Both sessions for the device are live.
    assert (await server.http.get(WHOAMI, token=r1.body["access_token"])).status == 200


async def test_login_failures(server: RunningServer) -> None:
    await server.create_user("alice")
    cases = [
        ({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "wrong"}, 403, "M_FORBIDDEN"),
        ({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "nobody"}, "password": "x"}, 403, "M_FORBIDDEN"),
        ({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "@alice:elsewhere.test"}, "password": "password123"}, 403, "M_FORBIDDEN"),
        ({"type": "m.login.password", "password": "password123"}, 400, "M_MISSING_PARAM"),
        ({"type": "m.login.password", "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "a@b"}, "password": "x"}, 400, "M_UNKNOWN"),
        ({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": 5}, "password": "x"}, 400, "M_INVALID_PARAM"),
        ({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": 5}, 400, "M_BAD_JSON"),
        ({"type": "m.login.token", "token": "abc"}, 400, "M_UNKNOWN"),
        ({"identifier": {"type": "m.id.user", "user": "alice"}, "password": "password123"}, 400, "M_MISSING_PARAM"),
        ({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "password123", "device_id": ""}, 400, "M_INVALID_PARAM"),
        ({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "password123", "refresh_token": "yes"}, 400, "M_INVALID_PARAM"),
    ]
    for body, status, errcode in cases:
        r = await server.http.post(LOGIN, body)
        assert (r.status, r.errcode) == (status, errcode), (body, r.body)
    assert await server.hs.storage.devices.list_devices("@alice:hs1.test") == []


async def test_deactivated_user_cannot_log_in(server: RunningServer) -> None:
    await server.create_user("alice")
    await server.hs.accounts.deactivate("@alice:hs1.test")
    r = await server.http.login("alice", "password123")
    assert r.status == 403 and r.errcode in ("M_USER_DEACTIVATED", "M_FORBIDDEN")


async def test_login_rate_limited_per_address(make_server) -> None:
    srv = await make_server(rc_login={"address": {"per_second": 0.01, "burst_count": 2}})
    await srv.create_user("alice")
    assert (await srv.http.login("alice", "password123")).status == 200
    assert (await srv.http.login("alice", "password123")).status == 200
    r = await srv.http.login("alice", "password123")
    assert r.status == 429 and r.errcode == "M_LIMIT_EXCEEDED" and r.body["retry_after_ms"] > 0


async def test_login_rate_limited_per_account_failures(make_server) -> None:
    srv = await make_server(rc_login={"failed_attempts": {"per_second": 0.01, "burst_count": 2}})
    await srv.create_user("alice")
    for _ in range(2):
        assert (await srv.http.login("alice", "wrong")).status == 403
    r = await srv.http.login("alice", "password123")  # even the right password waits now
    assert r.status == 429 and r.errcode == "M_LIMIT_EXCEEDED"
    # Another account is unaffected.
    await srv.create_user("bob")
    assert (await srv.http.login("bob", "password123")).status == 200


async def test_login_rate_limited_per_account(make_server) -> None:
    srv = await make_server(rc_login={"account": {"per_second": 0.01, "burst_count": 1}})
    await srv.create_user("alice")
    assert (await srv.http.login("alice", "password123")).status == 200
    assert (await srv.http.login("alice", "password123")).status == 429


async def test_access_token_in_query_string(server: RunningServer) -> None:
    _, token, _ = await server.login_user("alice")
    r = await server.http.get(WHOAMI, params={"access_token": token})
    assert r.status == 200 and r.body["user_id"] == "@alice:hs1.test"


async def test_logout_removes_device_and_token(server: RunningServer) -> None:
    _, token, device = await server.login_user("alice")
    _, other = (await server.http.login("alice", "password123")).body["access_token"], None
    r = await server.http.post("/_matrix/client/v3/logout", {}, token=token)
    assert r.status == 200 and r.body == {}
    r = await server.http.get(WHOAMI, token=token)
    assert r.status == 401 and r.errcode == "M_UNKNOWN_TOKEN"
    assert await server.hs.storage.devices.get_device("@alice:hs1.test", device) is None
    assert (await server.http.get(WHOAMI, token=_)).status == 200
    r = await server.http.post("/_matrix/client/v3/logout", {})
    assert r.status == 401 and r.errcode == "M_MISSING_TOKEN"


async def test_logout_all(server: RunningServer) -> None:
    _, t1, _ = await server.login_user("alice")
    t2 = (await server.http.login("alice", "password123")).body["access_token"]
    _, t3, _ = await server.login_user("bob")
    r = await server.http.post("/_matrix/client/r0/logout/all", {}, token=t2)
    assert r.status == 200
    for t in (t1, t2):
        assert (await server.http.get(WHOAMI, token=t)).errcode == "M_UNKNOWN_TOKEN"
    assert (await server.http.get(WHOAMI, token=t3)).status == 200
    assert await server.hs.storage.devices.list_devices("@alice:hs1.test") == []


async def test_refresh_flow(make_server) -> None:
    clock = FakeClock()
    srv = await make_server(clock=clock)
    await srv.create_user("alice")
    r = await srv.http.login("alice", "password123", refresh_token=True)
    assert r.status == 200 and r.body["expires_in_ms"] == 300000
    access1, refresh1 = r.body["access_token"], r.body["refresh_token"]
    assert (await srv.http.get(WHOAMI, token=access1)).status == 200
    clock.advance(300_001)
    r = await srv.http.get(WHOAMI, token=access1)
    assert r.status == 401 and r.errcode == "M_UNKNOWN_TOKEN" and r.body["soft_logout"] is True

    r = await srv.http.post("/_matrix/client/v3/refresh", {"refresh_token": refresh1})
    assert r.status == 200, r.body
    access2, refresh2 = r.body["access_token"], r.body["refresh_token"]
    assert refresh2 != refresh1 and r.body["expires_in_ms"] == 300000
    # A retry with the old refresh token before the new pair is used is still answered.
    r = await srv.http.post("/_matrix/client/v3/refresh", {"refresh_token": refresh1})
    assert r.status == 200
    access2, refresh2 = r.body["access_token"], r.body["refresh_token"]
    who = await srv.http.get(WHOAMI, token=access2)
    assert who.status == 200 and who.body["user_id"] == "@alice:hs1.test"
    # Once the new access token is used, the old refresh token is dead.
    r = await srv.http.post("/_matrix/client/v3/refresh", {"refresh_token": refresh1})
    assert r.status == 401 and r.errcode == "M_UNKNOWN_TOKEN"
    r = await srv.http.post("/_matrix/client/v1/refresh", {"refresh_token": refresh2})
    assert r.status == 200


async def test_refresh_bad_input(server: RunningServer) -> None:
    r = await server.http.post("/_matrix/client/v3/refresh", {"refresh_token": "qrt_nonsense"})
    assert r.status == 401 and r.errcode == "M_UNKNOWN_TOKEN"
    r = await server.http.post("/_matrix/client/v3/refresh", {})
    assert r.status == 400 and r.errcode == "M_MISSING_PARAM"


async def test_refresh_token_expiry(make_server) -> None:
    clock = FakeClock()
    srv = await make_server(clock=clock, refresh_token_lifetime="1h")
    await srv.create_user("alice")
    refresh = (await srv.http.login("alice", "password123", refresh_token=True)).body["refresh_token"]
    clock.advance(3_600_001)
    r = await srv.http.post("/_matrix/client/v3/refresh", {"refresh_token": refresh})
    assert r.status == 401 and r.errcode == "M_UNKNOWN_TOKEN"


async def test_session_lifetime(make_server) -> None:
    clock = FakeClock()
    srv = await make_server(clock=clock, session_lifetime="1d")
    _, token, _ = await srv.login_user("alice")
    clock.advance(86_400_001)
    assert (await srv.http.get(WHOAMI, token=token)).errcode == "M_UNKNOWN_TOKEN"


async def test_locked_user(server: RunningServer) -> None:
    user, token, _ = await server.login_user("alice")
    async with server.hs.storage.db.transaction() as conn:
        await server.hs.storage.users.set_flags(conn, user, locked=True)
    r = await server.http.get(WHOAMI, token=token)
    assert r.status == 401 and r.errcode == "M_USER_LOCKED"
    r = await server.http.login("alice", "password123")
    assert r.status == 401 and r.errcode == "M_USER_LOCKED"


async def test_device_last_seen_recorded(server: RunningServer) -> None:
    _, token, device = await server.login_user("alice")
    await server.http.get(WHOAMI, token=token, headers={"User-Agent": "Element/1.0"})
    d = await server.hs.storage.devices.get_device("@alice:hs1.test", device)
    assert d.last_seen_ip == "127.0.0.1" and d.last_seen_ts is not None
