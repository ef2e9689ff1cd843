"""The Synapse-compatible admin API, over HTTP on both engines."""

from __future__ import annotations

import hashlib
import hmac

from homeserver.clock import FakeClock
from tests.support.servers import RunningServer

A = "/_synapse/admin"
SECRET = "s3cret-for-tests"  # set by tests/support/servers.py


def _mac(nonce: str, user: str, password: str, admin: bool, user_type: str | None = None, secret: str = SECRET) -> str:
    parts = [nonce, user, password, "admin" if admin else "notadmin"] + ([user_type] if user_type else [])
    return hmac.new(secret.encode(), "\x00".join(parts).encode(), hashlib.sha1).hexdigest()


async def _register(srv: RunningServer, user: str, password: str = "any-pass", admin: bool = False, **extra):
    nonce = (await srv.http.get(f"{A}/v1/register")).body["nonce"]
    return await srv.http.post(f"{A}/v1/register", {
        "nonce": nonce, "username": user, "password": password, "admin": admin,
        "mac": _mac(nonce, user, password, admin, extra.get("user_type")), **extra,
    })


async def test_shared_secret_registration(server: RunningServer) -> None:
    r = await _register(server, "root", admin=True, displayname="Root")
    assert r.status == 200, r.body
    assert r.body["user_id"] == "@root:hs1.test" and r.body["home_server"] == "hs1.test"
    who = await server.http.get("/_matrix/client/v3/account/whoami", token=r.body["access_token"])
    assert who.body["user_id"] == "@root:hs1.test" and who.body["device_id"] == r.body["device_id"]
    u = await server.hs.storage.users.get("@root:hs1.test")
    assert u.admin
    r = await _register(server, "botty", user_type="bot")
    assert r.status == 200 and (await server.hs.storage.users.get("@botty:hs1.test")).user_type == "bot"


async def test_shared_secret_failures(make_server) -> None:
    clock = FakeClock()
    srv = await make_server(clock=clock)
    nonce = (await srv.http.get(f"{A}/v1/register")).body["nonce"]
    r = await srv.http.post(f"{A}/v1/register", {"nonce": nonce, "username": "x", "password": "p", "mac": "00"})
    assert r.status == 403 and r.errcode == "M_FORBIDDEN"
    # The nonce was spent by the failed attempt.
    r = await srv.http.post(f"{A}/v1/register", {"nonce": nonce, "username": "x", "password": "p", "mac": _mac(nonce, "x", "p", False)})
    assert r.status == 400
    nonce = (await srv.http.get(f"{A}/v1/register")).body["nonce"]
    clock.advance(61_000)
    r = await srv.http.post(f"{A}/v1/register", {"nonce": nonce, "username": "x", "password": "p", "mac": _mac(nonce, "x", "p", False)})
    assert r.status == 400
    nonce = (await srv.http.get(f"{A}/v1/register")).body["nonce"]
    r = await srv.http.post(f"{A}/v1/register", {"nonce": nonce, "username": "x", "password": "p", "mac": _mac(nonce, "x", "p", False, secret="wrong")})
    assert r.status == 403
    r = await srv.http.post(f"{A}/v1/register", {"nonce": "n", "username": 5, "password": "p", "mac": "m"})
    assert r.status == 400
    assert not await srv.hs.storage.users.exists("@x:hs1.test")


async def test_shared_secret_disabled(make_server) -> None:
    srv = await make_server(registration_shared_secret=None)
    nonce = (await srv.http.get(f"{A}/v1/register")).body["nonce"]
    r = await srv.http.post(f"{A}/v1/register", {"nonce": nonce, "username": "x", "password": "p", "mac": _mac(nonce, "x", "p", False)})
    assert r.status == 400 and "not enabled" in r.body["error"]


async def test_admin_only(server: RunningServer) -> None:
    _, token, _ = await server.login_user("plain")
    for method, path in [("GET", f"{A}/v2/users"), ("GET", f"{A}/v2/users/@plain:hs1.test"),
                         ("PUT", f"{A}/v2/users/@new:hs1.test"), ("POST", f"{A}/v1/deactivate/@plain:hs1.test"),
                         ("POST", f"{A}/v1/reset_password/@plain:hs1.test"), ("GET", f"{A}/v1/registration_tokens"),
                         ("POST", f"{A}/v1/registration_tokens/new"), ("GET", f"{A}/v1/server_version"),
                         ("GET", f"{A}/v1/whois/@plain:hs1.test")]:
        r = await server.http.request(method, path, {}, token=token)
        assert r.status == 403 and r.errcode == "M_FORBIDDEN", (method, path, r.body)
        r = await server.http.request(method, path, {})
        assert r.status == 401 and r.errcode == "M_MISSING_TOKEN", (method, path)


async def test_users_list_get_put(server: RunningServer) -> None:
    _, admin, _ = await server.login_user("admin", admin=True)
    for name in ("alice", "bob", "carol"):
        await server.create_user(name)
    r = await server.http.get(f"{A}/v2/users", token=admin, params={"limit": "2"})
    assert r.status == 200 and r.body["total"] == 4 and len(r.body["users"]) == 2 and r.body["next_token"] == "2"
    assert r.body["users"][0]["name"] == "@admin:hs1.test" and r.body["users"][0]["admin"] is True
    r = await server.http.get(f"{A}/v2/users", token=admin, params={"from": "2"})
    assert [u["name"] for u in r.body["users"]] == ["@bob:hs1.test", "@carol:hs1.test"] and "next_token" not in r.body
    r = await server.http.get(f"{A}/v2/users", token=admin, params={"name": "ali"})
    assert [u["name"] for u in r.body["users"]] == ["@alice:hs1.test"]
    r = await server.http.get(f"{A}/v2/users", token=admin, params={"admins": "true"})
    assert [u["name"] for u in r.body["users"]] == ["@admin:hs1.test"]

    r = await server.http.put(f"{A}/v2/users/@dan:hs1.test", {"password": "dan-password", "displayname": "Dan", "admin": False}, token=admin)
    assert r.status == 201 and r.body["name"] == "@dan:hs1.test" and r.body["displayname"] == "Dan"
    assert (await server.http.login("dan", "dan-password")).status == 200
    r = await server.http.put(f"{A}/v2/users/@dan:hs1.test", {"displayname": "Daniel", "admin": True}, token=admin)
    assert r.status == 200 and r.body["displayname"] == "Daniel" and r.body["admin"] is True
    r = await server.http.get(f"{A}/v2/users/@dan:hs1.test", token=admin)
    assert r.body["threepids"] == [] and r.body["deactivated"] is False
    r = await server.http.put(f"{A}/v2/users/@dan:hs1.test", {"deactivated": True}, token=admin)
    assert r.body["deactivated"] is True
    assert (await server.http.login("dan", "dan-password")).status == 403
    r = await server.http.put(f"{A}/v2/users/@dan:hs1.test", {"deactivated": False}, token=admin)
    assert r.status == 400 and r.errcode == "M_MISSING_PARAM"
    r = await server.http.put(f"{A}/v2/users/@dan:hs1.test", {"deactivated": False, "password": "back-again"}, token=admin)
    assert r.status == 200 and r.body["deactivated"] is False
    assert (await server.http.login("dan", "back-again")).status == 200
    r = await server.http.get(f"{A}/v3/users", token=admin, params={"deactivated": "true"})
    assert r.body["users"] == []

    cases = [
        ("GET", f"{A}/v2/users/@nobody:hs1.test", None, 404, "M_NOT_FOUND"),
        ("GET", f"{A}/v2/users/@x:remote.test", None, 400, "M_INVALID_PARAM"),
        ("PUT", f"{A}/v2/users/@dan:hs1.test", {"admin": "yes"}, 400, "M_INVALID_PARAM"),
        ("PUT", f"{A}/v2/users/@dan:hs1.test", {"threepids": [{"medium": "email", "address": "a@b"}]}, 400, "M_INVALID_PARAM"),
        ("PUT", f"{A}/v2/users/@admin:hs1.test", {"admin": False}, 400, "M_UNKNOWN"),
        ("GET", f"{A}/v2/users?order_by=bogus", None, 400, "M_INVALID_PARAM"),
    ]
    for method, path, body, status, errcode in cases:
        r = await server.http.request(method, path, body, token=admin)
        assert (r.status, r.errcode) == (status, errcode), (method, path, r.body)


async def test_deactivate_and_reset_password(server: RunningServer) -> None:
    _, admin, _ = await server.login_user("admin", admin=True)
    _, alice_token, _ = await server.login_user("alice")
    r = await server.http.post(f"{A}/v1/reset_password/@alice:hs1.test", {"new_password": "reset-by-admin"}, token=admin)
    assert r.status == 200
    assert (await server.http.get("/_matrix/client/v3/account/whoami", token=alice_token)).status == 401
    assert (await server.http.login("alice", "reset-by-admin")).status == 200
    r = await server.http.post(f"{A}/v1/reset_password/@alice:hs1.test", {"new_password": "x"}, token=admin)
    assert r.status == 400 and r.errcode == "M_WEAK_PASSWORD"
    r = await server.http.post(f"{A}/v1/deactivate/@alice:hs1.test", {"erase": True}, token=admin)
    assert r.status == 200 and r.body == {"id_server_unbind_result": "success"}
    assert (await server.hs.storage.users.get("@alice:hs1.test")).erased
    assert (await server.http.post(f"{A}/v1/deactivate/@ghost:hs1.test", {}, token=admin)).status == 404


async def test_devices_whois_and_admin_flag(server: RunningServer) -> None:
    _, admin, _ = await server.login_user("admin", admin=True)
    _, token, device = await server.login_user("alice")
    await server.http.get("/_matrix/client/v3/account/whoami", token=token, headers={"User-Agent": "Element"})
    r = await server.http.get(f"{A}/v2/users/@alice:hs1.test/devices", token=admin)
    assert r.body["total"] == 1 and r.body["devices"][0]["device_id"] == device
    r = await server.http.get(f"{A}/v1/whois/@alice:hs1.test", token=admin)
    conn = r.body["devices"][device]["sessions"][0]["connections"][0]
    assert conn["ip"] == "127.0.0.1"
    assert (await server.http.delete(f"{A}/v2/users/@alice:hs1.test/devices/{device}", token=admin)).status == 200
    assert (await server.http.get("/_matrix/client/v3/account/whoami", token=token)).status == 401
    assert (await server.http.put(f"{A}/v1/users/@alice:hs1.test/admin", {"admin": True}, token=admin)).status == 200
    assert (await server.http.get(f"{A}/v1/users/@alice:hs1.test/admin", token=admin)).body == {"admin": True}
    assert (await server.http.put(f"{A}/v1/users/@admin:hs1.test/admin", {"admin": False}, token=admin)).status == 400
    r = await server.http.get(f"{A}/v1/server_version", token=admin)
    assert r.body["server_version"].startswith("Qasid")


async def test_registration_tokens_crud(make_server) -> None:
    clock = FakeClock()
    srv = await make_server(clock=clock)
    _, admin, _ = await srv.login_user("admin", admin=True)
    r = await srv.http.post(f"{A}/v1/registration_tokens/new", {}, token=admin)
    assert r.status == 200 and len(r.body["token"]) == 16 and r.body["uses_allowed"] is None
    r = await srv.http.post(f"{A}/v1/registration_tokens/new", {"token": "mofa-2027", "uses_allowed": 1,
                                                                "expiry_time": clock.time_ms() + 1000}, token=admin)
    assert r.body == {"token": "mofa-2027", "uses_allowed": 1, "pending": 0, "completed": 0, "expiry_time": clock.time_ms() + 1000}
    r = await srv.http.post(f"{A}/v1/registration_tokens/new", {"length": 5}, token=admin)
    assert len(r.body["token"]) == 5
    assert len((await srv.http.get(f"{A}/v1/registration_tokens", token=admin)).body["registration_tokens"]) == 3
    clock.advance(2000)
    valid = (await srv.http.get(f"{A}/v1/registration_tokens", token=admin, params={"valid": "true"})).body
    assert "mofa-2027" not in [t["token"] for t in valid["registration_tokens"]] and len(valid["registration_tokens"]) == 2
    r = await srv.http.put(f"{A}/v1/registration_tokens/mofa-2027", {"expiry_time": None, "uses_allowed": 3}, token=admin)
    assert r.body["expiry_time"] is None and r.body["uses_allowed"] == 3
    assert (await srv.http.get(f"{A}/v1/registration_tokens/mofa-2027", token=admin)).body["uses_allowed"] == 3
    assert (await srv.http.delete(f"{A}/v1/registration_tokens/mofa-2027", token=admin)).status == 200
    cases = [
        ("GET", f"{A}/v1/registration_tokens/mofa-2027", None, 404),
        ("DELETE", f"{A}/v1/registration_tokens/mofa-2027", None, 404),
        ("PUT", f"{A}/v1/registration_tokens/nope", {"uses_allowed": 1}, 404),
        ("POST", f"{A}/v1/registration_tokens/new", {"token": "bad token"}, 400),
        ("POST", f"{A}/v1/registration_tokens/new", {"uses_allowed": -1}, 400),
        ("POST", f"{A}/v1/registration_tokens/new", {"expiry_time": 5}, 400),
        ("POST", f"{A}/v1/registration_tokens/new", {"length": 65}, 400),
        ("POST", f"{A}/v1/registration_tokens/new", {"token": valid["registration_tokens"][0]["token"]}, 400),
        ("PUT", f"{A}/v1/registration_tokens/{valid['registration_tokens'][0]['token']}", {"uses_allowed": "x"}, 400),
    ]
    for method, path, body, status in cases:
        r = await srv.http.request(method, path, body, token=admin)
        assert r.status == status and r.errcode, (method, path, r.body)
