"""/devices, /devices/{id}, /delete_devices."""

from __future__ import annotations

from tests.support.servers import RunningServer

AUTH = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "password123"}


async def _two_devices(server: RunningServer) -> tuple[str, str, str]:
    await server.create_user("alice")
    a = (await server.http.login("alice", "password123", device_id="AAA", initial_device_display_name="Desk")).body
    b = (await server.http.login("alice", "password123", device_id="BBB")).body
    return a["access_token"], b["access_token"], "BBB"


async def test_list_get_rename(server: RunningServer) -> None:
    token, _, _ = await _two_devices(server)
    r = await server.http.get("/_matrix/client/v3/devices", token=token)
    assert r.status == 200
    assert [(d["device_id"], d.get("display_name")) for d in r.body["devices"]] == [("AAA", "Desk"), ("BBB", None)]
    assert "display_name" not in r.body["devices"][1]  # absent, not null, as the spec says
    r = await server.http.get("/_matrix/client/r0/devices/AAA", token=token)
    assert r.status == 200 and r.body["device_id"] == "AAA" and r.body["last_seen_ip"] == "127.0.0.1"
    r = await server.http.put("/_matrix/client/v3/devices/BBB", {"display_name": "Phone"}, token=token)
    assert r.status == 200
    assert (await server.http.get("/_matrix/client/v3/devices/BBB", token=token)).body["display_name"] == "Phone"


async def test_device_errors(server: RunningServer) -> None:
    token, _, _ = await _two_devices(server)
    _, bob_token, _ = await server.login_user("bob")
    assert (await server.http.get("/_matrix/client/v3/devices/NOPE", token=token)).errcode == "M_NOT_FOUND"
    # Another user's device is simply not found.
    assert (await server.http.get("/_matrix/client/v3/devices/AAA", token=bob_token)).errcode == "M_NOT_FOUND"
    r = await server.http.put("/_matrix/client/v3/devices/AAA", {"display_name": "x"}, token=bob_token)
    assert r.status == 404
    r = await server.http.put("/_matrix/client/v3/devices/AAA", {"display_name": 5}, token=token)
    assert r.status == 400 and r.errcode == "M_INVALID_PARAM"
    r = await server.http.put("/_matrix/client/v3/devices/AAA", raw=b"nope", token=token)
    assert r.status == 400 and r.errcode == "M_NOT_JSON"
    assert (await server.http.get("/_matrix/client/v3/devices")).errcode == "M_MISSING_TOKEN"


async def test_delete_device_needs_uia(server: RunningServer) -> None:
    token, other_token, other = await _two_devices(server)
    r = await server.http.delete(f"/_matrix/client/v3/devices/{other}", token=token)
    assert r.status == 401 and r.body["flows"] == [{"stages": ["m.login.password"]}]
    r = await server.http.delete(f"/_matrix/client/v3/devices/{other}", {"auth": {**AUTH, "session": r.body["session"]}}, token=token)
    assert r.status == 200
    assert (await server.http.get("/_matrix/client/v3/account/whoami", token=other_token)).errcode == "M_UNKNOWN_TOKEN"
    r = await server.http.delete("/_matrix/client/v3/devices/NOPE", {"auth": AUTH}, token=token)
    assert r.status == 404 and r.errcode == "M_NOT_FOUND"


async def test_delete_devices_bulk(server: RunningServer) -> None:
    token, other_token, _ = await _two_devices(server)
    r = await server.http.post("/_matrix/client/v3/delete_devices", {"devices": ["BBB", "UNKNOWN"]}, token=token)
    assert r.status == 401
    r = await server.http.post("/_matrix/client/v3/delete_devices",
                               {"devices": ["BBB", "UNKNOWN"], "auth": {**AUTH, "password": "bad"}}, token=token)
    assert r.status == 401 and r.body["errcode"] == "M_FORBIDDEN"
    assert (await server.http.get("/_matrix/client/v3/account/whoami", token=other_token)).status == 200
    r = await server.http.post("/_matrix/client/v3/delete_devices", {"devices": ["BBB", "UNKNOWN"], "auth": AUTH}, token=token)
    assert r.status == 200
    ids = [d["device_id"] for d in (await server.http.get("/_matrix/client/v3/devices", token=token)).body["devices"]]
    assert ids == ["AAA"]
    r = await server.http.post("/_matrix/client/v3/delete_devices", {"devices": "BBB"}, token=token)
    assert r.status == 400 and r.errcode == "M_BAD_JSON"
    r = await server.http.post("/_matrix/client/v3/delete_devices", {}, token=token)
    assert r.status == 400 and r.errcode == "M_MISSING_PARAM"
