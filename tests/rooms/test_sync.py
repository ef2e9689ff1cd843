"""/sync: initial, incremental, long-poll wake-up, limited timelines, invites, leaves, filters."""

from __future__ import annotations

import asyncio
import time

from tests.rooms.helpers import C, create_room, invite, join, send_text, sync
from tests.support.servers import RunningServer


async def test_initial_sync_has_state_and_timeline(server: RunningServer) -> None:
    alice, ta, _ = await server.login_user("alice")
    room = await create_room(server, ta, name="Ops")
    eid = await send_text(server, ta, room, "hi")
    body = await sync(server, ta)
    assert body["next_batch"].startswith("s")
    joined = body["rooms"]["join"][room]
    timeline_ids = [e["event_id"] for e in joined["timeline"]["events"]]
    assert timeline_ids[-1] == eid
    # Everything in state or timeline: together they cover the whole room state.
    types = {e["type"] for e in joined["state"]["events"]} | {e["type"] for e in joined["timeline"]["events"]}
    assert {"m.room.create", "m.room.member", "m.room.power_levels", "m.room.name"} <= types
    assert joined["summary"]["m.joined_member_count"] == 1
    assert "room_id" not in joined["timeline"]["events"][0]


async def test_incremental_sync_and_transaction_id(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    room = await create_room(server, ta)
    first = await sync(server, ta)
    r = await server.http.put(f"{C}/rooms/{room}/send/m.room.message/mytxn", {"msgtype": "m.text", "body": "x"}, token=ta)
    second = await sync(server, ta, since=first["next_batch"])
    events = second["rooms"]["join"][room]["timeline"]["events"]
    assert [e["event_id"] for e in events] == [r.body["event_id"]]
    assert events[0]["unsigned"]["transaction_id"] == "mytxn"
    assert second["rooms"]["join"][room]["timeline"]["limited"] is False
    assert second["rooms"]["join"][room]["state"]["events"] == []
    third = await sync(server, ta, since=second["next_batch"])
    assert third["rooms"]["join"] == {}


async def test_long_poll_wakes_on_message(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    _, tb, _ = await server.login_user("bob")
    room = await create_room(server, ta, preset="public_chat")
    await join(server, tb, room)
    since = (await sync(server, tb))["next_batch"]

    async def later() -> str:
        await asyncio.sleep(0.3)
        return await send_text(server, ta, room, "wake up")

    start = time.monotonic()
    task = asyncio.create_task(later())
    body = await sync(server, tb, since=since, timeout=20000)
    elapsed = time.monotonic() - start
    eid = await task
    assert [e["event_id"] for e in body["rooms"]["join"][room]["timeline"]["events"]] == [eid]
    assert elapsed < 10  # woken by the event, not by the 20 s timeout


async def test_long_poll_times_out_empty(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    since = (await sync(server, ta))["next_batch"]
    body = await sync(server, ta, since=since, timeout=200)
    assert body["rooms"]["join"] == {} and body["next_batch"] == since


async def test_limited_timeline_and_prev_batch(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    room = await create_room(server, ta)
    since = (await sync(server, ta))["next_batch"]
    await server.http.put(f"{C}/rooms/{room}/state/m.room.topic", {"topic": "changed"}, token=ta)
    sent = [await send_text(server, ta, room, f"m{i}") for i in range(8)]
    body = await sync(server, ta, since=since, filter='{"room": {"timeline": {"limit": 3}}}')
    joined = body["rooms"]["join"][room]
    assert joined["timeline"]["limited"] is True
    assert [e["event_id"] for e in joined["timeline"]["events"]] == sent[-3:]
    # The state change that fell in the gap is reported in the state section.
    assert [e["type"] for e in joined["state"]["events"]] == ["m.room.topic"]
    r = await server.http.get(f"{C}/rooms/{room}/messages", token=ta,
                              params={"from": joined["timeline"]["prev_batch"], "dir": "b", "limit": "5"})
    assert [e["event_id"] for e in r.body["chunk"]] == list(reversed(sent[:-3]))


async def test_invite_then_join_then_leave(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    bob, tb, _ = await server.login_user("bob")
    room = await create_room(server, ta, name="Secret plans")
    since = (await sync(server, tb))["next_batch"]
    await invite(server, ta, room, bob)
    body = await sync(server, tb, since=since)
    stripped = body["rooms"]["invite"][room]["invite_state"]["events"]
    assert {"m.room.name", "m.room.member"} <= {e["type"] for e in stripped}
    assert all(set(e) == {"type", "state_key", "sender", "content"} for e in stripped)
    await join(server, tb, room)
    body = await sync(server, tb, since=body["next_batch"])
    joined = body["rooms"]["join"][room]
    # A new join gets the room's full state.
    assert "m.room.create" in {e["type"] for e in joined["state"]["events"] + joined["timeline"]["events"]}
    assert room not in body["rooms"]["invite"]
    assert (await server.http.post(f"{C}/rooms/{room}/leave", {}, token=tb)).status == 200
    body = await sync(server, tb, since=body["next_batch"])
    left = body["rooms"]["leave"][room]
    assert left["timeline"]["events"][-1]["content"]["membership"] == "leave"
    assert room not in body["rooms"]["join"]


async def test_lazy_load_members(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    room = await create_room(server, ta, preset="public_chat")
    tokens = []
    for name in ("bob", "carol", "dave"):
        _, t, _ = await server.login_user(name)
        await join(server, t, room)
        tokens.append(t)
    for _ in range(12):
        await send_text(server, tokens[0], room, "from bob")
    body = await sync(server, ta, filter='{"room": {"state": {"lazy_load_members": true}, "timeline": {"limit": 5}}}')
    joined = body["rooms"]["join"][room]
    members = {e["state_key"] for e in joined["state"]["events"] if e["type"] == "m.room.member"}
    assert members <= {"@bob:hs1.test", "@alice:hs1.test"}
    assert "@carol:hs1.test" not in members and "@dave:hs1.test" not in members


async def test_stored_filter(server: RunningServer) -> None:
    alice, ta, _ = await server.login_user("alice")
    r = await server.http.post(f"{C}/user/{alice}/filter", {"room": {"timeline": {"limit": 1}}}, token=ta)
    assert r.status == 200
    fid = r.body["filter_id"]
    r = await server.http.get(f"{C}/user/{alice}/filter/{fid}", token=ta)
    assert r.body == {"room": {"timeline": {"limit": 1}}}
    room = await create_room(server, ta)
    body = await sync(server, ta, filter=fid)
    assert len(body["rooms"]["join"][room]["timeline"]["events"]) == 1
    bad = [
        await server.http.post(f"{C}/user/{alice}/filter", {"room": {"timeline": {"limit": "x"}}}, token=ta),
        await server.http.get(f"{C}/user/{alice}/filter/999", token=ta),
        await server.http.get(f"{C}/user/@bob:hs1.test/filter/{fid}", token=ta),
        await server.http.get(f"{C}/sync", token=ta, params={"filter": "{bad json"}),
        await server.http.get(f"{C}/sync", token=ta, params={"since": "garbage"}),
        await server.http.get(f"{C}/sync", token=ta, params={"set_presence": "busy"}),
    ]
    assert [r.status for r in bad] == [400, 404, 403, 400, 400, 400]


async def test_sync_token_survives_restart(make_server, db_url) -> None:
    srv = await make_server()
    _, ta, _ = await srv.login_user("alice")
    room = await create_room(srv, ta)
    since = (await sync(srv, ta))["next_batch"]
    eid = await send_text(srv, ta, room, "after token")
    # A second server process over the same database answers the old token correctly.
    srv2 = await make_server()
    body = await sync(srv2, ta, since=since)
    assert [e["event_id"] for e in body["rooms"]["join"][room]["timeline"]["events"]] == [eid]
