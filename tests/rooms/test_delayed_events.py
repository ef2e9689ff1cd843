"""Delayed events (MSC4140) over HTTP, both engines: scheduled sends, restart/cancel/send by delay_id
without a token, the list, the limits, state overwritten by someone else, and a restart of the server."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.rooms.helpers import C, create_room, join
from tests.support.servers import RunningServer

D = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events"
DELAY = "org.matrix.msc4140.delay"


async def _state(server: RunningServer, token: str, room: str, etype: str, key: str) -> Any:
    r = await server.http.get(f"{C}/rooms/{room}/state/{etype}/{key}", token=token)
    return r.body if r.status == 200 else None


async def _messages(server: RunningServer, token: str, room: str) -> list[str]:
    r = await server.http.get(f"{C}/rooms/{room}/messages", token=token, params={"dir": "b", "limit": "50"})
    return [e["content"].get("body") for e in reversed(r.body["chunk"]) if e["type"] == "m.room.message"]


async def _eventually(check: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("did not happen in time")


async def test_call_membership_left_when_the_client_stops_restarting(server: RunningServer) -> None:
    """Element Call's pattern: join the call now, schedule the leave, keep restarting it while present."""
    alice, ta, _ = await server.login_user("alice")
    room = await create_room(server, ta, preset="public_chat")
    key = f"_{alice}_DEVICE"
    etype = "org.matrix.msc3401.call.member"
    r = await server.http.put(f"{C}/rooms/{room}/state/{etype}/{key}", {"application": "m.call", "call_id": ""}, token=ta)
    assert r.status == 200
    r = await server.http.put(f"{C}/rooms/{room}/state/{etype}/{key}", {}, token=ta, params={DELAY: "600"})
    assert r.status == 200 and r.body["delay_id"].startswith("qd_")
    delay_id = r.body["delay_id"]
    listed = (await server.http.get(D, token=ta)).body["delayed_events"]
    assert [(d["delay_id"], d["type"], d["state_key"], d["delay"], d["content"]) for d in listed] == [(delay_id, etype, key, 600, {})]
    # While the client is present it restarts the timer (no access token needed: the ID is the capability).
    for _ in range(4):
        await asyncio.sleep(0.3)
        assert (await server.http.post(f"{D}/{delay_id}", {"action": "restart"})).status == 200
        assert (await _state(server, ta, room, etype, key)) == {"application": "m.call", "call_id": ""}
    # It stops (crashed): the server sends the leave.
    await _eventually(lambda: _is(server, ta, room, etype, key, {}))
    assert (await server.http.get(D, token=ta)).body["delayed_events"] == []
    assert (await server.http.post(f"{D}/{delay_id}/restart", {})).status == 404


async def _is(server: RunningServer, token: str, room: str, etype: str, key: str, want: Any) -> bool:
    return await _state(server, token, room, etype, key) == want


async def test_cancel_send_now_and_messages(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    room = await create_room(server, ta)
    r1 = await server.http.put(f"{C}/rooms/{room}/send/m.room.message/d1", {"msgtype": "m.text", "body": "later"}, token=ta, params={DELAY: "60000"})
    r2 = await server.http.put(f"{C}/rooms/{room}/send/m.room.message/d2", {"msgtype": "m.text", "body": "never"}, token=ta, params={DELAY: "60000"})
    assert r1.status == 200 and r2.status == 200
    assert await _messages(server, ta, room) == []
    assert (await server.http.post(f"{D}/{r1.body['delay_id']}/send", {})).status == 200
    assert await _messages(server, ta, room) == ["later"]
    assert (await server.http.post(f"{D}/{r2.body['delay_id']}", {"action": "cancel"})).status == 200
    assert (await server.http.post(f"{D}/{r2.body['delay_id']}", {"action": "send"})).status == 404
    assert (await server.http.get(D, token=ta)).body["delayed_events"] == []
    assert await _messages(server, ta, room) == ["later"]


async def test_someone_else_setting_the_state_voids_a_pending_one(server: RunningServer) -> None:
    alice, ta, _ = await server.login_user("alice")
    _, tb, _ = await server.login_user("bob")
    room = await create_room(server, ta, preset="public_chat")
    await join(server, tb, room)
    levels = (await server.http.get(f"{C}/rooms/{room}/state/m.room.power_levels/", token=ta)).body
    levels["events"]["m.room.topic"] = 0
    assert (await server.http.put(f"{C}/rooms/{room}/state/m.room.power_levels/", levels, token=ta)).status == 200
    mine = await server.http.put(f"{C}/rooms/{room}/state/m.room.topic/", {"topic": "alice's, later"}, token=ta, params={DELAY: "60000"})
    assert (await server.http.put(f"{C}/rooms/{room}/state/m.room.topic/", {"topic": "bob's, now"}, token=tb)).status == 200
    await _eventually(lambda: _none_pending(server, ta))
    assert (await server.http.post(f"{D}/{mine.body['delay_id']}/send", {})).status == 404
    assert (await _state(server, ta, room, "m.room.topic", "")) == {"topic": "bob's, now"}


async def _none_pending(server: RunningServer, token: str) -> bool:
    return (await server.http.get(D, token=token)).body["delayed_events"] == []


async def test_bad_input_and_limits(make_server: Any) -> None:
    server = await make_server(max_event_delay_duration=1000, max_delayed_events_per_user=2)
    _, ta, _ = await server.login_user("alice")
    room = await create_room(server, ta)
    path = f"{C}/rooms/{room}/send/m.room.message"
    body = {"msgtype": "m.text", "body": "x"}
    too_long = await server.http.put(f"{path}/a", body, token=ta, params={DELAY: "1001"})
    assert too_long.status == 403 and too_long.body["errcode"] == "M_FORBIDDEN"
    assert (await server.http.put(f"{path}/b", body, token=ta, params={DELAY: "soon"})).body["errcode"] == "M_INVALID_PARAM"
    assert (await server.http.put(f"{path}/c", body, token=ta, params={DELAY: "-5"})).body["errcode"] == "M_INVALID_PARAM"
    unknown_room = await server.http.put(f"{C}/rooms/!nope:hs1.test/send/m.room.message/d", body, token=ta, params={DELAY: "10"})
    assert unknown_room.status == 404
    assert (await server.http.put(f"{path}/e", body, token=ta, params={DELAY: "900"})).status == 200
    assert (await server.http.put(f"{path}/f", body, token=ta, params={DELAY: "900"})).status == 200
    third = await server.http.put(f"{path}/g", body, token=ta, params={DELAY: "900"})
    assert third.status == 400 and third.body["errcode"] == "M_LIMIT_EXCEEDED"
    r = await server.http.post(f"{D}/qd_unknown", {"action": "explode"})
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"
    r = await server.http.post(f"{D}/qd_unknown", {})
    assert r.status == 400 and r.body["errcode"] == "M_MISSING_PARAM"
    assert (await server.http.post(f"{D}/qd_unknown", {"action": "cancel"})).status == 404
    assert (await server.http.get(D)).status == 401
    # Sent once due; nothing else is left behind.
    await _eventually(lambda: _two_messages(server, ta, room))
    assert (await server.http.get(D, token=ta)).body["delayed_events"] == []


async def _two_messages(server: RunningServer, token: str, room: str) -> bool:
    return await _messages(server, token, room) == ["x", "x"]


async def test_off_when_configured_off(make_server: Any) -> None:
    server = await make_server(max_event_delay_duration=None)
    _, ta, _ = await server.login_user("alice")
    room = await create_room(server, ta)
    r = await server.http.put(f"{C}/rooms/{room}/send/m.room.message/a", {"body": "x", "msgtype": "m.text"}, token=ta, params={DELAY: "10"})
    assert r.status == 403 and r.body["errcode"] == "M_FORBIDDEN"
    versions = (await server.http.get("/_matrix/client/versions")).body
    assert versions["unstable_features"]["org.matrix.msc4140"] is False


async def test_pending_events_survive_a_restart(db_url: str, tmp_path: Any) -> None:
    from tests.support.servers import make_config, running_server

    config = make_config(db_url, tmp_path / "data")
    async with running_server(config) as server:
        _, ta, _ = await server.login_user("alice")
        room = await create_room(server, ta)
        r = await server.http.put(f"{C}/rooms/{room}/send/m.room.message/x", {"msgtype": "m.text", "body": "from the past"},
                                  token=ta, params={DELAY: "700"})
        assert r.status == 200
    await asyncio.sleep(1.0)  # due while the server is down
    async with running_server(config) as server:
        token = (await server.http.login("alice", "password123")).body["access_token"]

        async def arrived() -> bool:
            return await _messages(server, token, room) == ["from the past"]

        await _eventually(arrived)
        assert (await server.http.get(D, token=token)).body["delayed_events"] == []
