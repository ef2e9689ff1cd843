"""POST /register with user-interactive auth, /register/available and token validity."""

from __future__ import annotations

from homeserver.clock import FakeClock
from tests.support.servers import RunningServer

REG = "/_matrix/client/v3/register"


async def _token(srv: RunningServer, **kw) -> str:
    return (await srv.hs.registration_tokens.create(**kw)).token


async def test_closed_by_default_offers_only_tokens(server: RunningServer) -> None:
    r = await server.http.post(REG, {"username": "alice", "password": "password123"})
    assert r.status == 401
    assert r.body["flows"] == [{"stages": ["m.login.registration_token"]}]
    assert isinstance(r.body["session"], str)
    # A dummy stage is not accepted when registration is closed.
    r2 = await server.http.post(REG, {"username": "alice", "password": "password123",
                                      "auth": {"type": "m.login.dummy", "session": r.body["session"]}})
    assert r2.status == 400 and r2.errcode == "M_UNRECOGNIZED"
    assert not await server.hs.storage.users.exists("@alice:hs1.test")


async def test_register_with_token_logs_in_and_spends_a_use(server: RunningServer) -> None:
    token = await _token(server, uses_allowed=1)
    r = await server.http.post(REG, {"username": "Alice", "password": "password123",
                                     "initial_device_display_name": "Laptop"})
    session = r.body["session"]
    r = await server.http.post(REG, {"username": "Alice", "password": "password123",
                                     "auth": {"type": "m.login.registration_token", "token": token, "session": session}})
    assert r.status == 200, r.body
    assert r.body["user_id"] == "@alice:hs1.test"  # lower-cased as Synapse does
    who = await server.http.get("/_matrix/client/v3/account/whoami", token=r.body["access_token"])
    assert who.body["user_id"] == "@alice:hs1.test" and who.body["device_id"] == r.body["device_id"]
    devices = await server.http.get("/_matrix/client/v3/devices", token=r.body["access_token"])
    assert devices.body["devices"][0]["display_name"] == "Laptop"
    rec = await server.hs.storage.registration_tokens.get(token)
    assert (rec.completed, rec.pending) == (1, 0)
    # The single use is gone: a second registration is refused.
    r = await server.http.post(REG, {"username": "bob", "password": "password123",
                                     "auth": {"type": "m.login.registration_token", "token": token}})
    assert r.status == 401 and r.body["errcode"] == "M_UNAUTHORIZED"
    assert not await server.hs.storage.users.exists("@bob:hs1.test")


async def test_password_may_be_omitted_after_first_step(server: RunningServer) -> None:
    token = await _token(server)
    r = await server.http.post(REG, {"username": "carol", "password": "password123"})
    r = await server.http.post(REG, {"auth": {"type": "m.login.registration_token", "token": token,
                                              "session": r.body["session"]}})
    assert r.status == 200, r.body
    assert r.body["user_id"] == "@carol:hs1.test"
    assert (await server.http.login("carol", "password123")).status == 200


async def test_expired_or_unknown_token_refused(make_server) -> None:
    clock = FakeClock()
    srv = await make_server(clock=clock)
    token = await _token(srv, expiry_time=clock.time_ms() + 1000)
    clock.advance(2000)
    for t in (token, "nope", "bad token!"):
        r = await srv.http.post(REG, {"username": "dave", "password": "password123",
                                      "auth": {"type": "m.login.registration_token", "token": t}})
        assert r.status == 401 and r.body["errcode"] == "M_UNAUTHORIZED", (t, r.body)
        assert r.body["flows"]
    assert not await srv.hs.storage.users.exists("@dave:hs1.test")


async def test_inhibit_login_and_refresh_token(server: RunningServer) -> None:
    token = await _token(server)
    r = await server.http.post(REG, {"username": "erin", "password": "password123", "inhibit_login": True,
                                     "auth": {"type": "m.login.registration_token", "token": token}})
    assert r.status == 200 and "access_token" not in r.body and r.body["user_id"] == "@erin:hs1.test"
    r = await server.http.post(REG, {"username": "frank", "password": "password123", "refresh_token": True,
                                     "auth": {"type": "m.login.registration_token", "token": token}})
    assert r.status == 200 and r.body["refresh_token"] and r.body["expires_in_ms"] == 300000


async def test_open_registration_uses_dummy(make_server) -> None:
    srv = await make_server(enable_registration=True)
    r = await srv.http.post(REG, {"username": "gina", "password": "password123"})
    assert {"stages": ["m.login.dummy"]} in r.body["flows"]
    r = await srv.http.post(REG, {"username": "gina", "password": "password123",
                                  "auth": {"type": "m.login.dummy", "session": r.body["session"]}})
    assert r.status == 200 and r.body["user_id"] == "@gina:hs1.test"


async def test_open_registration_can_still_require_token(make_server) -> None:
    srv = await make_server(enable_registration=True, registration_requires_token=True)
    r = await srv.http.post(REG, {"username": "gina", "password": "password123"})
    assert r.body["flows"] == [{"stages": ["m.login.registration_token"]}]


async def test_username_and_password_validation(make_server) -> None:
    srv = await make_server(enable_registration=True)
    await srv.create_user("taken")
    cases = [
        ({"username": "taken", "password": "password123"}, 400, "M_USER_IN_USE"),
        ({"username": "TAKEN", "password": "password123"}, 400, "M_USER_IN_USE"),
        ({"username": "bad name", "password": "password123"}, 400, "M_INVALID_USERNAME"),
        ({"username": "_reserved", "password": "password123"}, 400, "M_INVALID_USERNAME"),
        ({"username": "12345", "password": "password123"}, 400, "M_INVALID_USERNAME"),
        ({"username": "x" * 300, "password": "password123"}, 400, "M_INVALID_USERNAME"),
        ({"username": 5, "password": "password123"}, 400, "M_INVALID_USERNAME"),
        ({"username": "newbie", "password": "short"}, 400, "M_WEAK_PASSWORD"),
        ({"username": "newbie", "password": 12345678}, 400, "M_BAD_JSON"),
        ({"username": "newbie", "password": "password123", "inhibit_login": "yes"}, 400, "M_INVALID_PARAM"),
        ({"username": "newbie", "password": "password123", "device_id": 7}, 400, "M_INVALID_PARAM"),
    ]
    for body, status, errcode in cases:
        r = await srv.http.post(REG, {**body, "auth": {"type": "m.login.dummy"}})
        assert (r.status, r.errcode) == (status, errcode), (body, r.body)
    assert await srv.hs.storage.users.count() == 1


async def test_missing_password_at_the_end(make_server) -> None:
    srv = await make_server(enable_registration=True)
    r = await srv.http.post(REG, {"username": "nopass", "auth": {"type": "m.login.dummy"}})
    assert r.status == 400 and r.errcode == "M_MISSING_PARAM"


async def test_guest_registration_refused(server: RunningServer) -> None:
    r = await server.http.post(REG + "?kind=guest", {})
    assert r.status == 403 and r.errcode == "M_GUEST_ACCESS_FORBIDDEN"
    r = await server.http.post(REG + "?kind=robot", {})
    assert r.status == 400 and r.errcode == "M_INVALID_PARAM"


async def test_session_cannot_be_spent_elsewhere(server: RunningServer) -> None:
    r = await server.http.post(REG, {"username": "harry", "password": "password123"})
    _, token, _ = await server.login_user("ivy")
    r2 = await server.http.post("/_matrix/client/v3/delete_devices", {"devices": [],
                                "auth": {"type": "m.login.password", "session": r.body["session"],
                                         "identifier": {"type": "m.id.user", "user": "ivy"}, "password": "password123"}},
                                token=token)
    assert r2.status == 403 and r2.errcode == "M_FORBIDDEN"


async def test_unknown_session(server: RunningServer) -> None:
    r = await server.http.post(REG, {"username": "jack", "password": "password123",
                                     "auth": {"type": "m.login.registration_token", "token": "x", "session": "nope"}})
    assert r.status == 400 and r.errcode == "M_UNKNOWN"


async def test_registration_rate_limited(make_server) -> None:
    srv = await make_server(rc_registration={"per_second": 0.1, "burst_count": 2})
    statuses = [(await srv.http.post(REG, {"username": f"u{i}x", "password": "password123"})).status for i in range(3)]
    assert statuses[:2] == [401, 401]
    r = await srv.http.post(REG, {"username": "zz", "password": "password123"})
    assert r.status == 429 and r.errcode == "M_LIMIT_EXCEEDED" and r.body["retry_after_ms"] > 0
    assert "Retry-After" in r.headers


async def test_r0_path_served(server: RunningServer) -> None:
    r = await server.http.post("/_matrix/client/r0/register", {"username": "kim", "password": "password123"})
    assert r.status == 401 and "session" in r.body


async def test_available(server: RunningServer) -> None:
    await server.create_user("taken")
    r = await server.http.get("/_matrix/client/v3/register/available", params={"username": "free"})
    assert r.status == 200 and r.body == {"available": True}
    r = await server.http.get("/_matrix/client/r0/register/available", params={"username": "Taken"})
    assert r.status == 400 and r.errcode == "M_USER_IN_USE"
    r = await server.http.get("/_matrix/client/v3/register/available", params={"username": "no way"})
    assert r.status == 400 and r.errcode == "M_INVALID_USERNAME"
    r = await server.http.get("/_matrix/client/v3/register/available")
    assert r.status == 400 and r.errcode == "M_MISSING_PARAM"


async def test_token_validity(make_server) -> None:
    clock = FakeClock()
    srv = await make_server(clock=clock)
    path = "/_matrix/client/v1/register/m.login.registration_token/validity"
    good = await _token(srv, uses_allowed=2)
    expiring = await _token(srv, expiry_time=clock.time_ms() + 10)
    used_up = await _token(srv, uses_allowed=0)
    assert (await srv.http.get(path, params={"token": good})).body == {"valid": True}
    assert (await srv.http.get(path, params={"token": expiring})).body == {"valid": True}
    clock.advance(11)
    assert (await srv.http.get(path, params={"token": expiring})).body == {"valid": False}
    assert (await srv.http.get(path, params={"token": used_up})).body == {"valid": False}
    assert (await srv.http.get(path, params={"token": "unknown"})).body == {"valid": False}
    r = await srv.http.get(path)
    assert r.status == 400 and r.errcode == "M_MISSING_PARAM"


async def test_abandoned_session_gives_token_use_back(make_server) -> None:
    clock = FakeClock()
    srv = await make_server(clock=clock, enable_registration=True, registration_requires_token=False)
    token = await _token(srv, uses_allowed=1)
    # Token stage done, but the dummy flow is not what completes it: use a two-stage situation by
    # stopping after the token reservation (the client never comes back).
    r = await srv.http.post(REG, {"username": "lost", "password": "password123"})
    await srv.hs.storage.uia.set_params(r.body["session"], {})
    stage = srv.hs.registration_tokens.stage()
    session = await srv.hs.storage.uia.get(r.body["session"])
    await stage({"token": token}, session)
    assert (await srv.hs.storage.registration_tokens.get(token)).pending == 1
    clock.advance(25 * 3600 * 1000)
    await srv.hs.sweep()
    rec = await srv.hs.storage.registration_tokens.get(token)
    assert (rec.pending, rec.completed) == (0, 0)
    assert rec.is_valid(clock.time_ms())
