"""Account data, tags, receipts, read markers and typing — over HTTP and through /sync."""

from __future__ import annotations

import asyncio

from tests.rooms.helpers import C, create_room, join, send_text, sync
from tests.support.servers import RunningServer


async def test_global_and_room_account_data(server: RunningServer) -> None:
    alice, ta, _ = await server.login_user("alice")
    bob, tb, _ = await server.login_user("bob")
    room = await create_room(server, ta)
    since = (await sync(server, ta))["next_batch"]
    r = await server.http.put(f"{C}/user/{alice}/account_data/org.example.prefs", {"theme": "dark"}, token=ta)
    assert r.status == 200
    r = await server.http.put(f"{C}/user/{alice}/rooms/{room}/account_data/org.example.note", {"n": 1}, token=ta)
    assert r.status == 200
    assert (await server.http.get(f"{C}/user/{alice}/account_data/org.example.prefs", token=ta)).body == {"theme": "dark"}
    assert (await server.http.get(f"{C}/user/{alice}/rooms/{room}/account_data/org.example.note", token=ta)).body == {"n": 1}
    body = await sync(server, ta, since=since)
    assert {"type": "org.example.prefs", "content": {"theme": "dark"}} in body["account_data"]["events"]
    assert body["rooms"]["join"][room]["account_data"]["events"] == [{"type": "org.example.note", "content": {"n": 1}}]
    # Initial sync carries it too.
    initial = await sync(server, ta)
    assert {"type": "org.example.prefs", "content": {"theme": "dark"}} in initial["account_data"]["events"]
    cases = [
        ("GET", f"{C}/user/{alice}/account_data/org.example.none", None, ta, 404, "M_NOT_FOUND"),
        ("GET", f"{C}/user/{alice}/account_data/org.example.prefs", None, tb, 403, "M_FORBIDDEN"),
        ("PUT", f"{C}/user/{bob}/account_data/x", {}, ta, 403, "M_FORBIDDEN"),
        ("PUT", f"{C}/user/{alice}/account_data/m.push_rules", {}, ta, 405, "M_BAD_JSON"),
        ("PUT", f"{C}/user/{alice}/rooms/{room}/account_data/m.fully_read", {}, ta, 405, "M_BAD_JSON"),
        ("PUT", f"{C}/user/{alice}/account_data/x", None, ta, 400, "M_NOT_JSON"),
        ("PUT", f"{C}/user/{alice}/rooms/!nope:hs1.test/account_data/x", {}, ta, 403, "M_FORBIDDEN"),
    ]
    for method, path, body_, token, status, errcode in cases:
        r = await server.http.request(method, path, body_, token=token)
        assert (r.status, r.errcode) == (status, errcode), (method, path, r.body)
    # The other user sees none of it.
    assert all(e["type"] != "org.example.prefs" for e in (await sync(server, tb))["account_data"]["events"])


async def test_tags(server: RunningServer) -> None:
    alice, ta, _ = await server.login_user("alice")
    room = await create_room(server, ta)
    r = await server.http.put(f"{C}/user/{alice}/rooms/{room}/tags/m.favourite", {"order": 0.5}, token=ta)
    assert r.status == 200
    await server.http.put(f"{C}/user/{alice}/rooms/{room}/tags/u.work", {}, token=ta)
    assert (await server.http.get(f"{C}/user/{alice}/rooms/{room}/tags", token=ta)).body == {
        "tags": {"m.favourite": {"order": 0.5}, "u.work": {}}}
    assert (await server.http.delete(f"{C}/user/{alice}/rooms/{room}/tags/u.work", token=ta)).status == 200
    body = await sync(server, ta)
    assert {"type": "m.tag", "content": {"tags": {"m.favourite": {"order": 0.5}}}} in body["rooms"]["join"][room]["account_data"]["events"]
    r = await server.http.put(f"{C}/user/{alice}/rooms/{room}/tags/x", {"order": 7}, token=ta)
    assert r.status == 400 and r.errcode == "M_INVALID_PARAM"


async def test_receipts_and_read_markers(server: RunningServer) -> None:
    alice, ta, _ = await server.login_user("alice")
    bob, tb, _ = await server.login_user("bob")
    _, tm, _ = await server.login_user("mallory")
    room = await create_room(server, ta, preset="public_chat")
    await join(server, tb, room)
    eid = await send_text(server, ta, room, "please read")
    since = (await sync(server, ta))["next_batch"]
    assert (await server.http.post(f"{C}/rooms/{room}/receipt/m.read/{eid}", {}, token=tb)).status == 200
    assert (await server.http.post(f"{C}/rooms/{room}/receipt/m.read.private/{eid}", {}, token=tb)).status == 200
    assert (await server.http.post(f"{C}/rooms/{room}/receipt/m.read/{eid}", {"thread_id": "main"}, token=ta)).status == 200
    body = await sync(server, ta, since=since)
    receipts = [e for e in body["rooms"]["join"][room]["ephemeral"]["events"] if e["type"] == "m.receipt"]
    content = receipts[0]["content"][eid]
    assert bob in content["m.read"] and alice in content["m.read"]
    assert content["m.read"][alice]["thread_id"] == "main"
    assert "m.read.private" not in content  # bob's private receipt is not shown to alice
    bob_view = await sync(server, tb)
    bob_receipts = [e for e in bob_view["rooms"]["join"][room]["ephemeral"]["events"] if e["type"] == "m.receipt"][0]
    assert bob in bob_receipts["content"][eid]["m.read.private"]
    r = await server.http.post(f"{C}/rooms/{room}/read_markers", {"m.fully_read": eid, "m.read": eid}, token=tb)
    assert r.status == 200
    r = await server.http.get(f"{C}/user/{bob}/rooms/{room}/account_data/m.fully_read", token=tb)
    assert r.body == {"event_id": eid}
    cases = [
        (f"{C}/rooms/{room}/receipt/m.bogus/{eid}", {}, tb, 400),
        (f"{C}/rooms/{room}/receipt/m.read/$unknown", {}, tb, 404),
        (f"{C}/rooms/{room}/receipt/m.read/{eid}", {}, tm, 403),
        (f"{C}/rooms/{room}/receipt/m.fully_read/{eid}", {"thread_id": "main"}, tb, 400),
        (f"{C}/rooms/{room}/read_markers", {"m.fully_read": 5}, tb, 400),
    ]
    for path, body_, token, status in cases:
        r = await server.http.post(path, body_, token=token)
        assert r.status == status and r.errcode, (path, r.body)


async def test_typing_wakes_sync_and_expires(server: RunningServer) -> None:
    alice, ta, _ = await server.login_user("alice")
    _, tb, _ = await server.login_user("bob")
    _, tm, _ = await server.login_user("mallory")
    room = await create_room(server, ta, preset="public_chat")
    await join(server, tb, room)
    since = (await sync(server, tb))["next_batch"]

    async def type_later() -> None:
        await asyncio.sleep(0.2)
        r = await server.http.put(f"{C}/rooms/{room}/typing/{alice}", {"typing": True, "timeout": 400}, token=ta)
        assert r.status == 200

    task = asyncio.create_task(type_later())
    body = await sync(server, tb, since=since, timeout=10000)
    await task
    typing = [e for e in body["rooms"]["join"][room]["ephemeral"]["events"] if e["type"] == "m.typing"]
    assert typing == [{"type": "m.typing", "content": {"user_ids": [alice]}}]
    # The timeout clears it and wakes the next sync.
    body = await sync(server, tb, since=body["next_batch"], timeout=10000)
    typing = [e for e in body["rooms"]["join"][room]["ephemeral"]["events"] if e["type"] == "m.typing"]
    assert typing == [{"type": "m.typing", "content": {"user_ids": []}}]
    cases = [
        (f"{C}/rooms/{room}/typing/{alice}", {"typing": True}, ta, 400),
        (f"{C}/rooms/{room}/typing/{alice}", {"typing": True, "timeout": 100}, tb, 403),
        (f"{C}/rooms/{room}/typing/@mallory:hs1.test", {"typing": True, "timeout": 100}, tm, 403),
    ]
    for path, body_, token, status in cases:
        r = await server.http.put(path, body_, token=token)
        assert r.status == status and r.errcode, (path, r.body)


async def test_ignored_users(server: RunningServer) -> None:
    alice, ta, _ = await server.login_user("alice")
    bob, tb, _ = await server.login_user("bob")
    room = await create_room(server, ta, preset="public_chat")
    await join(server, tb, room)
    path = f"{C}/user/{alice}/account_data/m.ignored_user_list"
    assert (await server.http.put(path, {"ignored_users": {bob: {}}}, token=ta)).status == 200
    await send_text(server, tb, room, "from bob")
    mine = await send_text(server, ta, room, "from alice")
    timeline = (await sync(server, ta))["rooms"]["join"][room]["timeline"]["events"]
    senders = {e["sender"] for e in timeline if e["type"] == "m.room.message"}
    assert senders == {alice} and mine in [e["event_id"] for e in timeline]
    msgs = (await server.http.get(f"{C}/rooms/{room}/messages", token=ta, params={"limit": "50"})).body["chunk"]
    assert all(e["sender"] != bob for e in msgs if e["type"] == "m.room.message")
    # An invite from an ignored user never shows up.
    other = await create_room(server, tb)
    assert (await server.http.post(f"{C}/rooms/{other}/invite", {"user_id": alice}, token=tb)).status == 200
    assert other not in (await sync(server, ta))["rooms"]["invite"]
    assert (await server.http.put(path, {"ignored_users": {alice: {}}}, token=ta)).status == 400
    assert (await server.http.put(path, {"ignored_users": ["x"]}, token=ta)).status == 400
    assert (await server.http.put(path, {"ignored_users": {}}, token=ta)).status == 200
    assert other in (await sync(server, ta))["rooms"]["invite"]
