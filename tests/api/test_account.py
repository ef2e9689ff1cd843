"""/account/whoami, /account/password, /account/deactivate (with user-interactive auth)."""

from __future__ import annotations

from tests.support.servers import RunningServer

WHOAMI = "/_matrix/client/v3/account/whoami"


def _pw_auth(user: str, password: str, session: str | None = None) -> dict:
    auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}
    if session:
        auth["session"] = session
    return auth


async def test_whoami(server: RunningServer) -> None:
    user, token, device = await server.login_user("alice")
    for prefix in ("r0", "v3"):
        r = await server.http.get(f"/_matrix/client/{prefix}/account/whoami", token=token)
        assert r.status == 200 and r.body == {"user_id": user, "device_id": device, "is_guest": False}
    assert (await server.http.get(WHOAMI)).errcode == "M_MISSING_TOKEN"


async def test_change_password_uia_and_logout_other_devices(server: RunningServer) -> None:
    _, token, _ = await server.login_user("alice")
    other = (await server.http.login("alice", "password123")).body["access_token"]
    r = await server.http.post("/_matrix/client/v3/account/password", {"new_password": "brand-new-pass"}, token=token)
    assert r.status == 401 and r.body["flows"] == [{"stages": ["m.login.password"]}]
    session = r.body["session"]
    r = await server.http.post("/_matrix/client/v3/account/password",
                               {"new_password": "brand-new-pass", "auth": _pw_auth("alice", "wrong", session)}, token=token)
    assert r.status == 401 and r.body["errcode"] == "M_FORBIDDEN" and r.body["session"] == session
    r = await server.http.post("/_matrix/client/v3/account/password",
                               {"new_password": "brand-new-pass", "auth": _pw_auth("alice", "password123", session)}, token=token)
    assert r.status == 200, r.body
    assert (await server.http.login("alice", "password123")).status == 403
    assert (await server.http.login("alice", "brand-new-pass")).status == 200
    assert (await server.http.get(WHOAMI, token=token)).status == 200  # this device stays
    assert (await server.http.get(WHOAMI, token=other)).errcode == "M_UNKNOWN_TOKEN"
    # The completed session cannot be replayed.
    r = await server.http.post("/_matrix/client/v3/account/password",
                               {"new_password": "another-one-1", "auth": {"type": "m.login.password", "session": session}}, token=token)
    assert r.status == 400 and r.errcode == "M_UNKNOWN"


async def test_change_password_keep_devices(server: RunningServer) -> None:
    _, token, _ = await server.login_user("alice")
    other = (await server.http.login("alice", "password123")).body["access_token"]
    r = await server.http.post("/_matrix/client/v3/account/password",
                               {"new_password": "brand-new-pass", "logout_devices": False,
                                "auth": _pw_auth("alice", "password123")}, token=token)
    assert r.status == 200
    assert (await server.http.get(WHOAMI, token=other)).status == 200


async def test_change_password_bad_input(server: RunningServer) -> None:
    _, token, _ = await server.login_user("alice")
    await server.create_user("bob")
    path = "/_matrix/client/v3/account/password"
    r = await server.http.post(path, {"new_password": "short", "auth": _pw_auth("alice", "password123")}, token=token)
    assert r.status == 400 and r.errcode == "M_WEAK_PASSWORD"
    r = await server.http.post(path, {"auth": _pw_auth("alice", "password123")}, token=token)
    assert r.status == 400 and r.errcode == "M_MISSING_PARAM"
    # Authenticating as somebody else does not count.
    r = await server.http.post(path, {"new_password": "brand-new-pass", "auth": _pw_auth("bob", "password123")}, token=token)
    assert r.status == 401 and r.body["errcode"] == "M_FORBIDDEN"
    r = await server.http.post(path, {"new_password": "brand-new-pass", "logout_devices": "no"}, token=token)
    assert r.status == 400 and r.errcode == "M_BAD_JSON"
    r = await server.http.post(path, {"new_password": "brand-new-pass", "auth": {"type": "m.login.nope"}}, token=token)
    assert r.status == 400 and r.errcode == "M_UNRECOGNIZED"
    r = await server.http.post(path, {"new_password": "brand-new-pass"})
    assert r.status == 401 and r.errcode == "M_MISSING_TOKEN"
    assert (await server.http.login("alice", "password123")).status == 200


async def test_deactivate(server: RunningServer) -> None:
    user, token, _ = await server.login_user("alice")
    path = "/_matrix/client/v3/account/deactivate"
    r = await server.http.post(path, {}, token=token)
    assert r.status == 401 and "session" in r.body
    r = await server.http.post(path, {"auth": _pw_auth("alice", "password123", r.body["session"]), "erase": True}, token=token)
    assert r.status == 200 and r.body == {"id_server_unbind_result": "no-support"}
    assert (await server.http.get(WHOAMI, token=token)).errcode == "M_UNKNOWN_TOKEN"
    assert (await server.http.login("alice", "password123")).status == 403
    rec = await server.hs.storage.users.get(user)
    assert rec.deactivated and rec.erased and rec.password_hash is None
    # The name stays reserved.
    r = await server.http.get("/_matrix/client/v3/register/available", params={"username": "alice"})
    assert r.errcode == "M_USER_IN_USE"


async def test_deactivate_bad_input(server: RunningServer) -> None:
    _, token, _ = await server.login_user("alice")
    r = await server.http.post("/_matrix/client/v3/account/deactivate", {"erase": "yes"}, token=token)
    assert r.status == 400 and r.errcode == "M_BAD_JSON"
    r = await server.http.post("/_matrix/client/v3/account/deactivate", {"auth": _pw_auth("alice", "nope")}, token=token)
    assert r.status == 401 and r.body["errcode"] == "M_FORBIDDEN"
    assert (await server.http.get(WHOAMI, token=token)).status == 200


async def test_3pids_and_protocols_are_empty(server: RunningServer) -> None:
    _, token, _ = await server.login_user("alice")
    assert (await server.http.get("/_matrix/client/v3/account/3pid", token=token)).body == {"threepids": []}
    assert (await server.http.get("/_matrix/client/v3/thirdparty/protocols", token=token)).body == {}
    assert (await server.http.get("/_matrix/client/v3/account/3pid")).status == 401
