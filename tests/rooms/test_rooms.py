"""createRoom, membership, sending, state, redaction, members and history — over HTTP, both engines."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from homeserver.clock import FakeClock

from tests.rooms.helpers import C, create_room, invite, join, send_text
from tests.support.servers import RunningServer


@pytest.mark.parametrize("version", ["10", "11", "12"])
async def test_create_room_state(server: RunningServer, version: str) -> None:
    alice, token, _ = await server.login_user("alice")
    room = await create_room(server, token, name="Budget 2027", topic="Planning", room_version=version,
                             preset="private_chat")
    assert room.startswith("!")
    if version != "12":
        assert room.endswith(":hs1.test")
    r = await server.http.get(f"{C}/rooms/{room}/state", token=token)
    assert r.status == 200
    by_type = {(e["type"], e["state_key"]): e for e in r.body}
    assert by_type[("m.room.create", "")]["content"]["room_version"] == version
    assert by_type[("m.room.member", alice)]["content"]["membership"] == "join"
    assert by_type[("m.room.join_rules", "")]["content"]["join_rule"] == "invite"
    assert by_type[("m.room.history_visibility", "")]["content"]["history_visibility"] == "shared"
    assert by_type[("m.room.name", "")]["content"]["name"] == "Budget 2027"
    assert by_type[("m.room.topic", "")]["content"]["topic"] == "Planning"
    pl = by_type[("m.room.power_levels", "")]["content"]
    assert pl["invite"] == 0
    if version == "12":
        assert alice not in pl["users"]  # creators have infinite power in v12
    else:
        assert pl["users"][alice] == 100
    r = await server.http.get(f"{C}/rooms/{room}/state/m.room.name", token=token)
    assert r.status == 200 and r.body == {"name": "Budget 2027"}
    r = await server.http.get(f"{C}/rooms/{room}/state/m.room.name/", token=token, params={"format": "event"})
    assert r.status == 200 and r.body["content"] == {"name": "Budget 2027"} and r.body["type"] == "m.room.name"


async def test_create_room_options_and_errors(server: RunningServer) -> None:
    _, token, _ = await server.login_user("alice")
    bob, _, _ = await server.login_user("bob")
    room = await create_room(server, token, room_alias_name="budget", visibility="public",
                             initial_state=[{"type": "m.room.guest_access", "content": {"guest_access": "forbidden"}}],
                             power_level_content_override={"events_default": 10}, invite=[bob],
                             creation_content={"m.federate": False})
    r = await server.http.get(f"{C}/directory/room/%23budget:hs1.test")
    assert r.status == 200 and r.body["room_id"] == room
    state = {(e["type"], e["state_key"]): e["content"] for e in (await server.http.get(f"{C}/rooms/{room}/state", token=token)).body}
    assert state[("m.room.join_rules", "")]["join_rule"] == "public"
    assert state[("m.room.guest_access", "")]["guest_access"] == "forbidden"
    assert state[("m.room.power_levels", "")]["events_default"] == 10
    assert state[("m.room.member", bob)]["membership"] == "invite"
    assert state[("m.room.canonical_alias", "")]["alias"] == "#budget:hs1.test"
    assert state[("m.room.create", "")]["m.federate"] is False
    cases = [
        ({"room_version": "5"}, 400, "M_UNSUPPORTED_ROOM_VERSION"),
        ({"room_version": "99"}, 400, "M_UNSUPPORTED_ROOM_VERSION"),
        ({"preset": "secret_chat"}, 400, "M_INVALID_PARAM"),
        ({"visibility": "hidden"}, 400, "M_INVALID_PARAM"),
        ({"invite": "bob"}, 400, "M_INVALID_PARAM"),
        ({"room_alias_name": "budget"}, 400, "M_ROOM_IN_USE"),
        ({"room_alias_name": "has:colon"}, 400, "M_INVALID_PARAM"),
        ({"initial_state": [{"type": "m.room.name"}]}, 400, "M_INVALID_PARAM"),
        ({"name": 5}, 400, "M_INVALID_PARAM"),
    ]
    for body, status, errcode in cases:
        r = await server.http.post(f"{C}/createRoom", body, token=token)
        assert (r.status, r.errcode) == (status, errcode), (body, r.body)
    assert (await server.http.post(f"{C}/createRoom", {})).errcode == "M_MISSING_TOKEN"


async def test_invite_join_send_and_read(server: RunningServer) -> None:
    alice, ta, _ = await server.login_user("alice")
    bob, tb, _ = await server.login_user("bob")
    room = await create_room(server, ta)
    await invite(server, ta, room, bob)
    await join(server, tb, room)
    e1 = await send_text(server, ta, room, "hello bob")
    e2 = await send_text(server, tb, room, "hello alice")
    r = await server.http.get(f"{C}/rooms/{room}/messages", token=tb, params={"dir": "b", "limit": "2"})
    assert r.status == 200
    assert [e["event_id"] for e in r.body["chunk"]] == [e2, e1]
    assert r.body["chunk"][0]["content"]["body"] == "hello alice"
    r = await server.http.get(f"{C}/rooms/{room}/joined_members", token=ta)
    assert set(r.body["joined"]) == {alice, bob}
    r = await server.http.get(f"{C}/joined_rooms", token=tb)
    assert r.body["joined_rooms"] == [room]
    r = await server.http.get(f"{C}/rooms/{room}/event/{e1}", token=tb)
    assert r.status == 200 and r.body["content"]["body"] == "hello bob" and r.body["sender"] == alice


async def test_txn_id_is_idempotent_per_device(server: RunningServer) -> None:
    _, token, _ = await server.login_user("alice")
    other = (await server.http.login("alice", "password123")).body["access_token"]
    room = await create_room(server, token)
    path = f"{C}/rooms/{room}/send/m.room.message/same-txn"
    r1 = await server.http.put(path, {"msgtype": "m.text", "body": "once"}, token=token)
    r2 = await server.http.put(path, {"msgtype": "m.text", "body": "once"}, token=token)
    r3 = await server.http.put(path, {"msgtype": "m.text", "body": "once"}, token=other)
    assert r1.body["event_id"] == r2.body["event_id"] != r3.body["event_id"]


async def test_outsider_cannot_read_or_write(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    _, tm, _ = await server.login_user("mallory")
    room = await create_room(server, ta)
    eid = await send_text(server, ta, room, "secret")
    for method, path, body in [
        ("GET", f"{C}/rooms/{room}/state", None),
        ("GET", f"{C}/rooms/{room}/state/m.room.name", None),
        ("GET", f"{C}/rooms/{room}/members", None),
        ("GET", f"{C}/rooms/{room}/joined_members", None),
        ("GET", f"{C}/rooms/{room}/messages", None),
        ("GET", f"{C}/rooms/{room}/event/{eid}", None),
        ("PUT", f"{C}/rooms/{room}/send/m.room.message/x1", {"msgtype": "m.text", "body": "hi"}),
        ("PUT", f"{C}/rooms/{room}/state/m.room.name", {"name": "pwned"}),
    ]:
        r = await server.http.request(method, path, body, token=tm)
        assert r.status == 403 and r.errcode == "M_FORBIDDEN", (method, path, r.body)
    # Private room: joining without an invite is refused.
    r = await server.http.post(f"{C}/join/{room}", {}, token=tm)
    assert r.status == 403 and r.errcode == "M_FORBIDDEN"


async def test_power_levels_enforced(server: RunningServer) -> None:
    alice, ta, _ = await server.login_user("alice")
    bob, tb, _ = await server.login_user("bob")
    room = await create_room(server, ta, preset="public_chat")
    await join(server, tb, room)
    r = await server.http.put(f"{C}/rooms/{room}/state/m.room.name", {"name": "mine"}, token=tb)
    assert r.status == 403 and r.errcode == "M_FORBIDDEN"
    r = await server.http.post(f"{C}/rooms/{room}/kick", {"user_id": alice}, token=tb)
    assert r.status == 403 and r.errcode == "M_FORBIDDEN"
    # Once promoted, bob may rename the room.
    pl = (await server.http.get(f"{C}/rooms/{room}/state/m.room.power_levels", token=ta)).body
    pl["users"][bob] = 50
    assert (await server.http.put(f"{C}/rooms/{room}/state/m.room.power_levels", pl, token=ta)).status == 200
    r = await server.http.put(f"{C}/rooms/{room}/state/m.room.name", {"name": "mine"}, token=tb)
    assert r.status == 200


async def test_leave_kick_ban_unban_forget(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    bob, tb, _ = await server.login_user("bob")
    room = await create_room(server, ta, preset="public_chat")
    await join(server, tb, room)
    r = await server.http.post(f"{C}/rooms/{room}/kick", {"user_id": bob, "reason": "spam"}, token=ta)
    assert r.status == 200
    members = (await server.http.get(f"{C}/rooms/{room}/members", token=ta)).body["chunk"]
    kicked = next(m for m in members if m["state_key"] == bob)
    assert kicked["content"] == {"membership": "leave", "reason": "spam"}
    await join(server, tb, room)
    assert (await server.http.post(f"{C}/rooms/{room}/ban", {"user_id": bob}, token=ta)).status == 200
    r = await server.http.post(f"{C}/join/{room}", {}, token=tb)
    assert r.status == 403
    assert (await server.http.post(f"{C}/rooms/{room}/unban", {"user_id": bob}, token=ta)).status == 200
    await join(server, tb, room)
    assert (await server.http.post(f"{C}/rooms/{room}/leave", {}, token=tb)).status == 200
    r = await server.http.get(f"{C}/rooms/{room}/members", token=ta, params={"membership": "join"})
    assert [m["state_key"] for m in r.body["chunk"]] == ["@alice:hs1.test"]
    assert (await server.http.post(f"{C}/rooms/{room}/forget", {}, token=tb)).status == 200
    r = await server.http.post(f"{C}/rooms/{room}/forget", {}, token=ta)
    assert r.status == 400


async def test_redaction(server: RunningServer) -> None:
    alice, ta, _ = await server.login_user("alice")
    room = await create_room(server, ta)
    eid = await send_text(server, ta, room, "oops")
    r = await server.http.put(f"{C}/rooms/{room}/redact/{eid}/r1", {"reason": "typo"}, token=ta)
    assert r.status == 200
    redaction_id = r.body["event_id"]
    ev = (await server.http.get(f"{C}/rooms/{room}/event/{eid}", token=ta)).body
    assert ev["content"] == {}
    assert ev["unsigned"]["redacted_because"]["event_id"] == redaction_id
    red = (await server.http.get(f"{C}/rooms/{room}/event/{redaction_id}", token=ta)).body
    assert red["redacts"] == eid and red["content"]["redacts"] == eid


async def test_messages_pagination_both_directions(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    room = await create_room(server, ta)
    sent = [await send_text(server, ta, room, f"m{i}") for i in range(25)]
    seen: list[str] = []
    token = None
    while True:
        params = {"dir": "b", "limit": "7", "filter": '{"types": ["m.room.message"]}'}
        if token:
            params["from"] = token
        r = await server.http.get(f"{C}/rooms/{room}/messages", token=ta, params=params)
        assert r.status == 200
        seen += [e["event_id"] for e in r.body["chunk"] if e["type"] == "m.room.message"]
        token = r.body.get("end")
        if not token:
            break
    assert seen == list(reversed(sent))
    r = await server.http.get(f"{C}/rooms/{room}/messages", token=ta, params={"dir": "f", "limit": "1000"})
    forwards = [e["event_id"] for e in r.body["chunk"] if e["type"] == "m.room.message"]
    assert forwards == sent
    for params in ({"dir": "x"}, {"from": "garbage"}, {"limit": "-1"}):
        r = await server.http.get(f"{C}/rooms/{room}/messages", token=ta, params=params)
        assert r.status == 400, params


async def test_history_visibility_for_late_joiner(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    _, tb, _ = await server.login_user("bob")
    room = await create_room(server, ta, preset="public_chat",
                             initial_state=[{"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}])
    await send_text(server, ta, room, "before bob")
    await join(server, tb, room)
    after = await send_text(server, ta, room, "after bob")
    r = await server.http.get(f"{C}/rooms/{room}/messages", token=tb, params={"dir": "b", "limit": "50"})
    bodies = [e["content"].get("body") for e in r.body["chunk"] if e["type"] == "m.room.message"]
    assert bodies == ["after bob"]
    assert after in [e["event_id"] for e in r.body["chunk"]]


async def test_aliases(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    _, tb, _ = await server.login_user("bob")
    room = await create_room(server, ta, preset="public_chat")
    r = await server.http.put(f"{C}/directory/room/%23ops:hs1.test", {"room_id": room}, token=ta)
    assert r.status == 200
    r = await server.http.put(f"{C}/directory/room/%23ops:hs1.test", {"room_id": room}, token=ta)
    assert r.status == 409
    r = await server.http.put(f"{C}/directory/room/%23ops:elsewhere.test", {"room_id": room}, token=ta)
    assert r.status == 400
    await join(server, tb, "%23ops:hs1.test")
    r = await server.http.get(f"{C}/rooms/{room}/aliases", token=tb)
    assert r.body["aliases"] == ["#ops:hs1.test"]
    assert (await server.http.delete(f"{C}/directory/room/%23ops:hs1.test", token=tb)).status == 403
    assert (await server.http.delete(f"{C}/directory/room/%23ops:hs1.test", token=ta)).status == 200
    assert (await server.http.get(f"{C}/directory/room/%23ops:hs1.test")).status == 404


async def test_bad_input(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    room = await create_room(server, ta)
    cases = [
        ("PUT", f"{C}/rooms/{room}/send/m.room.message/a", None, b"not json", 400, "M_NOT_JSON"),
        ("PUT", f"{C}/rooms/{room}/send/m.room.message/b", None, b"[]", 400, "M_BAD_JSON"),
        ("PUT", f"{C}/rooms/{room}/send/m.room.message/c", {"body": "x" * 70000}, None, 413, "M_TOO_LARGE"),
        ("PUT", f"{C}/rooms/{room}/state/m.room.member/@alice:hs1.test", {"membership": "join"}, None, 400, "M_BAD_JSON"),
        ("POST", f"{C}/rooms/{room}/invite", {}, None, 400, "M_MISSING_PARAM"),
        ("POST", f"{C}/rooms/{room}/invite", {"user_id": "nobody"}, None, 400, "M_INVALID_PARAM"),
        ("POST", f"{C}/rooms/{room}/invite", {"user_id": "@ghost:hs1.test"}, None, 404, "M_NOT_FOUND"),
        ("POST", f"{C}/rooms/{room}/kick", {"user_id": "@ghost:hs1.test"}, None, 403, "M_FORBIDDEN"),
        ("POST", f"{C}/join/!unknown:hs1.test", {}, None, 404, "M_NOT_FOUND"),
        ("POST", f"{C}/join/%23nope:hs1.test", {}, None, 404, "M_NOT_FOUND"),
        ("GET", f"{C}/rooms/{room}/members", {"membership": "x"}, None, 400, "M_INVALID_PARAM"),
        ("GET", f"{C}/rooms/{room}/event/$nope", None, None, 404, "M_NOT_FOUND"),
        ("GET", f"{C}/rooms/{room}/state/m.room.topic", None, None, 404, "M_NOT_FOUND"),
        ("GET", f"{C}/rooms/not-a-room/state", None, None, 400, "M_INVALID_PARAM"),
    ]
    for method, path, body, raw, status, errcode in cases:
        params = body if method == "GET" and body else None
        r = await server.http.request(method, path, None if method == "GET" else body, raw=raw, token=ta, params=params)
        assert (r.status, r.errcode) == (status, errcode), (method, path, r.body)


async def test_redaction_needs_sender_or_power(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    _, tb, _ = await server.login_user("bob")
    room = await create_room(server, ta, preset="public_chat")
    await join(server, tb, room)
    alices = await send_text(server, ta, room, "alice's words")
    bobs = await send_text(server, tb, room, "bob's words")
    r = await server.http.put(f"{C}/rooms/{room}/redact/{alices}/x1", {}, token=tb)
    assert r.status == 403 and r.errcode == "M_FORBIDDEN"
    assert (await server.http.put(f"{C}/rooms/{room}/redact/{bobs}/x2", {}, token=tb)).status == 200
    assert (await server.http.put(f"{C}/rooms/{room}/redact/{bobs}/x3", {}, token=ta)).status == 200  # moderator
    r = await server.http.put(f"{C}/rooms/{room}/redact/$unknown/x4", {}, token=ta)
    assert r.status == 404
    r = await server.http.put(f"{C}/rooms/{room}/send/m.room.redaction/x5", {"redacts": alices}, token=tb)
    assert r.status == 403  # the same rule through /send
    ev = (await server.http.get(f"{C}/rooms/{room}/event/{alices}", token=ta)).body
    assert ev["content"]["body"] == "alice's words"


async def test_profile_change_updates_member_events_in_joined_rooms(server: RunningServer) -> None:
    alice, ta, _ = await server.login_user("alice")
    r1 = await create_room(server, ta, preset="public_chat")
    r2 = await create_room(server, ta, preset="public_chat")
    assert (await server.http.put(f"{C}/profile/{alice}/displayname", {"displayname": "Alice A."}, token=ta)).status == 200
    assert (await server.http.put(f"{C}/profile/{alice}/avatar_url", {"avatar_url": "mxc://x/y"}, token=ta)).status == 200
    for room in (r1, r2):
        r = await server.http.get(f"{C}/rooms/{room}/state/m.room.member/{alice}", token=ta)
        assert r.body == {"membership": "join", "displayname": "Alice A.", "avatar_url": "mxc://x/y"}
    # Leaving a room stops updates there.
    assert (await server.http.post(f"{C}/rooms/{r2}/leave", {}, token=ta)).status == 200
    assert (await server.http.put(f"{C}/profile/{alice}/displayname", {"displayname": "Alice B."}, token=ta)).status == 200
    r = await server.http.get(f"{C}/rooms/{r1}/state/m.room.member/{alice}", token=ta)
    assert r.body["displayname"] == "Alice B."


async def test_same_room_created_in_the_same_millisecond_gets_distinct_ids(make_server: Any) -> None:
    """v12 room IDs are the create event's hash: with the clock standing still, identical /createRoom
    calls would all hash to one room ID. Each must still get a room of its own."""
    server = await make_server(clock=FakeClock())
    _, token, _ = await server.login_user("alice")
    body = {"preset": "private_chat", "room_version": "12"}
    replies = await asyncio.gather(*(server.http.post(f"{C}/createRoom", body, token=token) for _ in range(5)))
    assert [r.status for r in replies] == [200] * 5, [r.body for r in replies]
    rooms = {r.body["room_id"] for r in replies}
    assert len(rooms) == 5
    r = await server.http.get(f"{C}/joined_rooms", token=token)
    assert set(r.body["joined_rooms"]) == rooms
    # Sequential calls at the same millisecond too.
    again = await server.http.post(f"{C}/createRoom", body, token=token)
    assert again.status == 200 and again.body["room_id"] not in rooms
