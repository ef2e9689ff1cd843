"""Presence: set and read, shared through /sync with people who share a room, and the off switch."""

from __future__ import annotations

from tests.rooms.helpers import C, create_room, join, sync
from tests.support.servers import RunningServer


async def test_presence_flow(server: RunningServer) -> None:
    alice, ta, _ = await server.login_user("alice")
    bob, tb, _ = await server.login_user("bob")
    _, tc, _ = await server.login_user("carol")
    room = await create_room(server, ta, preset="public_chat")
    await join(server, tb, room)
    since = (await sync(server, tb))["next_batch"]
    r = await server.http.put(f"{C}/presence/{alice}/status", {"presence": "unavailable", "status_msg": "In a meeting"}, token=ta)
    assert r.status == 200
    body = await sync(server, tb, since=since, timeout=5000)
    ev = [e for e in body["presence"]["events"] if e["sender"] == alice]
    assert ev and ev[0]["content"]["presence"] == "unavailable" and ev[0]["content"]["status_msg"] == "In a meeting"
    r = await server.http.get(f"{C}/presence/{alice}/status", token=tb)
    assert r.body["presence"] == "unavailable" and r.body["status_msg"] == "In a meeting"
    # Carol shares no room with alice.
    assert (await server.http.get(f"{C}/presence/{alice}/status", token=tc)).status == 403
    assert all(e["sender"] != alice for e in (await sync(server, tc))["presence"]["events"])
    cases = [
        ("PUT", f"{C}/presence/{bob}/status", {"presence": "online"}, ta, 403),
        ("PUT", f"{C}/presence/{alice}/status", {"presence": "busy"}, ta, 400),
        ("PUT", f"{C}/presence/{alice}/status", {}, ta, 400),
        ("GET", f"{C}/presence/@ghost:hs1.test/status", None, ta, 404),
    ]
    for method, path, body_, token, status in cases:
        r = await server.http.request(method, path, body_, token=token)
        assert r.status == status and r.errcode, (method, path, r.body)


async def test_sync_marks_online(server: RunningServer) -> None:
    alice, ta, _ = await server.login_user("alice")
    await sync(server, ta)
    assert (await server.http.get(f"{C}/presence/{alice}/status", token=ta)).body["presence"] == "online"


async def test_presence_disabled(make_server) -> None:
    srv = await make_server(presence={"enabled": False})
    alice, ta, _ = await srv.login_user("alice")
    assert (await srv.http.put(f"{C}/presence/{alice}/status", {"presence": "online"}, token=ta)).status == 200
    assert (await srv.http.get(f"{C}/presence/{alice}/status", token=ta)).body == {"presence": "offline"}
    assert (await sync(srv, ta))["presence"]["events"] == []
