"""Simplified sliding sync (MSC4186) over HTTP, both engines: lists sorted by activity with windows,
required state and timelines as asked, only changes afterwards, long-polling, subscriptions, filters,
the extensions, and bad input."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.rooms.helpers import C, create_room, invite, join, send_text
from tests.support.servers import RunningServer

SS = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
ALL = {"ranges": [[0, 49]], "timeline_limit": 3,
       "required_state": [["m.room.name", ""], ["m.room.member", "$LAZY"], ["m.room.member", "$ME"], ["m.room.encryption", ""]]}


async def ss(server: RunningServer, token: str, body: dict[str, Any], pos: str | None = None, timeout: int | None = None,
             status: int = 200) -> dict[str, Any]:
    params = {}
    if pos is not None:
        params["pos"] = pos
    if timeout is not None:
        params["timeout"] = str(timeout)
    r = await server.http.post(SS, body, token=token, params=params)
    assert r.status == status, r.body
    return r.body


def bodies(room: dict[str, Any]) -> list[str]:
    return [e["content"].get("body") for e in room.get("timeline", []) if e["type"] == "m.room.message"]


async def test_lists_windows_required_state_and_then_only_changes(server: RunningServer) -> None:
    alice, ta, _ = await server.login_user("alice")
    bob, tb, _ = await server.login_user("bob")
    rooms = []
    for i in range(4):
        room = await create_room(server, ta, preset="public_chat", name=f"Room {i}")
        await join(server, tb, room)
        rooms.append(room)
    for i, room in enumerate(rooms):  # activity order: rooms[3] newest ... rooms[0] oldest
        for n in range(5):
            await send_text(server, tb if n % 2 else ta, room, f"r{i} m{n}")
    await send_text(server, ta, rooms[1], "r1 is the latest now")
    body = {"lists": {"all": {**ALL, "ranges": [[0, 1]]}}}
    first = await ss(server, tb, body)
    assert first["lists"]["all"]["count"] == 4
    assert first["lists"]["all"]["ops"] == [{"op": "SYNC", "range": [0, 1], "room_ids": [rooms[1], rooms[3]]}]
    assert list(first["rooms"]) == [rooms[1], rooms[3]] or set(first["rooms"]) == {rooms[1], rooms[3]}
    r1 = first["rooms"][rooms[1]]
    assert r1["initial"] is True and r1["name"] == "Room 1"
    assert bodies(r1) == ["r1 m3", "r1 m4", "r1 is the latest now"] and r1["limited"] is True
    assert r1["joined_count"] == 2 and r1["invited_count"] == 0
    assert r1["bump_stamp"] > first["rooms"][rooms[3]]["bump_stamp"]
    state = {(e["type"], e["state_key"]) for e in r1["required_state"]}
    assert state == {("m.room.name", ""), ("m.room.member", alice), ("m.room.member", bob)}
    assert r1["notification_count"] == 2  # alice's two messages after bob's last one
    # Nothing happened: a long-poll with a short timeout comes back empty.
    quiet = await ss(server, tb, body, pos=first["pos"], timeout=100)
    assert quiet["rooms"] == {} and quiet["lists"]["all"]["count"] == 4
    # A new message in a room the client holds: only that room, only the new event, not initial.
    await send_text(server, ta, rooms[3], "news")
    nxt = await ss(server, tb, body, pos=quiet["pos"])
    assert list(nxt["rooms"]) == [rooms[3]]
    r3 = nxt["rooms"][rooms[3]]
    assert "initial" not in r3 and bodies(r3) == ["news"] and r3["num_live"] == 1 and r3["limited"] is False
    assert r3["required_state"] == []  # alice's member event was sent before, nothing changed
    # The older room coming into the window is sent whole.
    await send_text(server, ta, rooms[0], "wake up")
    again = await ss(server, tb, body, pos=nxt["pos"])
    assert again["rooms"][rooms[0]]["initial"] is True
    assert bodies(again["rooms"][rooms[0]])[-1] == "wake up"
    # Repeating a request (its answer lost) with the same pos gives the same answer, twice.
    repeat = await ss(server, tb, body, pos=nxt["pos"])
    assert set(repeat["rooms"]) == set(again["rooms"])
    repeat = await ss(server, tb, body, pos=nxt["pos"])
    assert set(repeat["rooms"]) == set(again["rooms"])
    # Going on from the newest acknowledges it: the older positions are gone.
    await ss(server, tb, body, pos=repeat["pos"], timeout=0)
    gone = await ss(server, tb, body, pos=nxt["pos"], status=400)
    assert gone["errcode"] == "M_UNKNOWN_POS"


async def test_long_poll_wakes_on_a_message(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    _, tb, _ = await server.login_user("bob")
    room = await create_room(server, ta, preset="public_chat")
    await join(server, tb, room)
    body = {"lists": {"all": ALL}}
    first = await ss(server, tb, body)

    async def later() -> None:
        await asyncio.sleep(0.3)
        await send_text(server, ta, room, "ping")

    task = asyncio.create_task(later())
    t0 = time.monotonic()
    woken = await ss(server, tb, body, pos=first["pos"], timeout=20000)
    await task
    assert time.monotonic() - t0 < 10
    assert bodies(woken["rooms"][room]) == ["ping"]


async def test_unknown_pos_and_bad_input(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    bad = await ss(server, ta, {"lists": {}}, pos="nope.7", status=400)
    assert bad["errcode"] == "M_UNKNOWN_POS"
    for body, field in [
        ({"lists": {"a": {"ranges": [[5, 1]]}}}, "lists.a.ranges[0]"),
        ({"lists": {"a": {"ranges": [[0, 1]], "timeline_limit": -1}}}, "lists.a.timeline_limit"),
        ({"lists": {"a": {"required_state": [["m.room.name"]]}}}, "lists.a.required_state[0]"),
        ({"lists": {"a": {"filters": {"is_dm": "yes"}}}}, "lists.a.filters.is_dm"),
        ({"room_subscriptions": {"!x:y": []}}, "room_subscriptions.!x:y"),
        ({"extensions": {"to_device": {"enabled": True, "since": 5}}}, "extensions.to_device.since"),
        ({"conn_id": 3}, "conn_id"),
    ]:
        r = await ss(server, ta, body, status=400)
        assert r["errcode"] == "M_INVALID_PARAM" and field in r["error"], (body, r)
    r = await server.http.post(SS, [1, 2], token=ta)
    assert r.status == 400 and r.body["errcode"] == "M_BAD_JSON"
    r = await server.http.post(SS, {}, token=None)
    assert r.status == 401


async def test_filters_invites_subscriptions_and_leaving(server: RunningServer) -> None:
    alice, ta, _ = await server.login_user("alice")
    bob, tb, _ = await server.login_user("bob")
    _, tc, _ = await server.login_user("carol")
    dm = await create_room(server, ta, preset="trusted_private_chat", is_direct=True)
    await invite(server, ta, dm, bob)
    await join(server, tb, dm)
    await server.http.put(f"{C}/user/{bob}/account_data/m.direct", {alice: [dm]}, token=tb)
    encrypted = await create_room(server, ta, preset="public_chat", name="Secret",
                                  initial_state=[{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
    await join(server, tb, encrypted)
    invited = await create_room(server, ta, preset="private_chat", name="Come in")
    await invite(server, ta, invited, bob)
    elsewhere = await create_room(server, tc, preset="public_chat", name="Carol's")
    body = {"lists": {
        "dms": {**ALL, "filters": {"is_dm": True}},
        "invites": {**ALL, "filters": {"is_invite": True}},
        "encrypted": {**ALL, "filters": {"is_encrypted": True}},
        "rooms": {**ALL, "ranges": [[0, 0]], "filters": {"is_dm": False, "is_invite": False}},
    }, "room_subscriptions": {dm: {"timeline_limit": 1}, elsewhere: {"timeline_limit": 5}}}
    first = await ss(server, tb, body)
    assert {k: v["count"] for k, v in first["lists"].items()} == {"dms": 1, "invites": 1, "encrypted": 1, "rooms": 1}
    assert first["rooms"][dm]["is_dm"] is True and "name" not in first["rooms"][dm]
    assert [h["user_id"] for h in first["rooms"][dm]["heroes"]] == [alice]
    inv = first["rooms"][invited]
    assert inv["initial"] is True and "timeline" not in inv and inv["name"] == "Come in"
    assert ("m.room.member", bob) in {(e["type"], e.get("state_key")) for e in inv["invite_state"]}
    assert elsewhere not in first["rooms"]  # never a member: a subscription cannot read it
    # Bob accepts the invite: the room comes again, now as a joined room with its timeline.
    await join(server, tb, invited)
    nxt = await ss(server, tb, body, pos=first["pos"])
    assert nxt["lists"]["invites"]["count"] == 0
    assert nxt["rooms"][invited]["initial"] is True  # held as an invite, now a room: sent whole
    assert bob in {e["state_key"] for e in nxt["rooms"][invited]["required_state"] if e["type"] == "m.room.member"}
    assert nxt["lists"]["invites"]["ops"] == [{"op": "SYNC", "range": [0, 49], "room_ids": []}]
    # Bob leaves the encrypted room: it is sent once more, marked as left.
    assert (await server.http.post(f"{C}/rooms/{encrypted}/leave", {}, token=tb)).status == 200
    after_leave = await ss(server, tb, body, pos=nxt["pos"])
    assert after_leave["rooms"][encrypted]["membership"] == "leave"
    assert after_leave["lists"]["encrypted"]["count"] == 1
    later = await ss(server, tb, body, pos=after_leave["pos"])
    assert later["lists"]["encrypted"]["count"] == 0


async def test_a_longer_timeline_for_a_room_already_sent(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    room = await create_room(server, ta)
    for n in range(6):
        await send_text(server, ta, room, f"m{n}")
    first = await ss(server, ta, {"lists": {"all": {"ranges": [[0, 0]], "timeline_limit": 1}}})
    assert bodies(first["rooms"][room]) == ["m5"]
    more = await ss(server, ta, {"lists": {"all": {"ranges": [[0, 0]], "timeline_limit": 1}},
                                 "room_subscriptions": {room: {"timeline_limit": 4}}}, pos=first["pos"])
    r = more["rooms"][room]
    assert r["unstable_expanded_timeline"] is True and bodies(r) == ["m2", "m3", "m4", "m5"]


async def test_extensions(server: RunningServer) -> None:
    alice, ta, dev_a = await server.login_user("alice")
    bob, tb, dev_b = await server.login_user("bob")
    room = await create_room(server, ta, preset="public_chat")
    await join(server, tb, room)
    ext = {"to_device": {"enabled": True}, "e2ee": {"enabled": True}, "account_data": {"enabled": True},
           "receipts": {"enabled": True}, "typing": {"enabled": True}}
    body = {"lists": {"all": ALL}, "extensions": ext}
    keys = {"one_time_keys": {"signed_curve25519:AAAAAQ": {"key": "k1", "signatures": {}}}}
    assert (await server.http.post(f"{C}/keys/upload", keys, token=tb)).status == 200
    r = await server.http.put(f"{C}/sendToDevice/m.test/t1", {"messages": {bob: {dev_b: {"hello": 1}}}}, token=ta)
    assert r.status == 200
    first = await ss(server, tb, body)
    e = first["extensions"]
    assert [m["content"] for m in e["to_device"]["events"]] == [{"hello": 1}]
    assert e["e2ee"]["device_one_time_keys_count"] == {"signed_curve25519": 1}
    assert "m.push_rules" in {a["type"] for a in e["account_data"]["global"]}
    # Acknowledge the to-device message with the extension's since; it is not sent again.
    body2 = {**body, "extensions": {**ext, "to_device": {"enabled": True, "since": e["to_device"]["next_batch"]}}}
    eid = await send_text(server, ta, room, "read me")
    await server.http.post(f"{C}/rooms/{room}/receipt/m.read/{eid}", {}, token=ta)
    await server.http.put(f"{C}/rooms/{room}/typing/{alice}", {"typing": True, "timeout": 30000}, token=ta)
    r = await server.http.put(f"{C}/user/{bob}/rooms/{room}/account_data/m.tag.x", {"v": 1}, token=tb)
    assert r.status == 200
    nxt = await ss(server, tb, body2, pos=first["pos"])
    e = nxt["extensions"]
    assert e["to_device"]["events"] == []
    assert e["receipts"]["rooms"][room]["content"][eid]["m.read"][alice]["ts"] > 0
    assert e["typing"]["rooms"][room]["content"]["user_ids"] == [alice]
    assert e["account_data"]["rooms"][room] == [{"type": "m.tag.x", "content": {"v": 1}}]
    # Alice signing out a device is a device-list change for bob, who shares a room with her.
    other = (await server.http.login("alice", "password123")).body["access_token"]
    assert (await server.http.post(f"{C}/logout", {}, token=other)).status == 200
    last = await ss(server, tb, body2, pos=nxt["pos"], timeout=100)
    assert alice in last["extensions"]["e2ee"].get("device_lists", {}).get("changed", [])


async def test_versions_advertise_it(server: RunningServer) -> None:
    r = await server.http.get("/_matrix/client/versions")
    assert r.body["unstable_features"]["org.matrix.simplified_msc3575"] is True


async def test_tag_filters(server: RunningServer) -> None:
    alice, ta, _ = await server.login_user("alice")
    rooms = [await create_room(server, ta, name=f"R{i}") for i in range(3)]
    for room, tags in ((rooms[0], {"m.favourite": {}}), (rooms[1], {"m.favourite": {}, "m.lowpriority": {}})):
        r = await server.http.put(f"{C}/user/{alice}/rooms/{room}/account_data/m.tag", {"tags": tags}, token=ta)
        assert r.status == 200
    body = {"lists": {
        "fav": {"ranges": [[0, 9]], "filters": {"tags": ["m.favourite"]}},
        "fav_not_low": {"ranges": [[0, 9]], "filters": {"tags": ["m.favourite"], "not_tags": ["m.lowpriority"]}},
        "untagged_or_other": {"ranges": [[0, 9]], "filters": {"not_tags": ["m.favourite"]}},
    }}
    out = await ss(server, ta, body)
    ids = {name: set(lst["ops"][0]["room_ids"]) for name, lst in out["lists"].items()}
    assert ids == {"fav": {rooms[0], rooms[1]}, "fav_not_low": {rooms[0]}, "untagged_or_other": {rooms[2]}}
    bad = await ss(server, ta, {"lists": {"x": {"filters": {"tags": "m.favourite"}}}}, status=400)
    assert "lists.x.filters.tags" in bad["error"]


async def test_room_name_filter(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    budget = await create_room(server, ta, name="Budget 2027")
    await create_room(server, ta, name="Planning")
    await create_room(server, ta)  # no name: never matches a name filter
    out = await ss(server, ta, {"lists": {"b": {"ranges": [[0, 9]], "filters": {"room_name_like": "bUdGeT"}}}})
    assert out["lists"]["b"]["ops"][0]["room_ids"] == [budget]
    bad = await ss(server, ta, {"lists": {"b": {"filters": {"room_name_like": 7}}}}, status=400)
    assert "lists.b.filters.room_name_like" in bad["error"]


async def test_element_x_style_encryption_connection(server: RunningServer) -> None:
    """Element X runs a second connection with no lists, only to_device and e2ee, long-polling: it must
    wake for a to-device message and keep its own positions apart from the room-list connection."""
    alice, ta, _ = await server.login_user("alice")
    bob, tb, dev_b = await server.login_user("bob")
    room = await create_room(server, ta, preset="public_chat")
    await join(server, tb, room)
    rooms_conn = await ss(server, tb, {"conn_id": "room-list", "lists": {"all": ALL}})
    enc_body = {"conn_id": "encryption", "extensions": {"to_device": {"enabled": True}, "e2ee": {"enabled": True}}}
    enc = await ss(server, tb, enc_body)
    assert enc["rooms"] == {} and "lists" in enc and enc["lists"] == {}
    since = enc["extensions"]["to_device"]["next_batch"]

    async def later() -> None:
        await asyncio.sleep(0.3)
        r = await server.http.put(f"{C}/sendToDevice/m.room_key_request/k1", {"messages": {bob: {dev_b: {"x": 1}}}}, token=ta)
        assert r.status == 200

    task = asyncio.create_task(later())
    t0 = time.monotonic()
    body = {**enc_body, "extensions": {**enc_body["extensions"], "to_device": {"enabled": True, "since": since}}}
    woken = await ss(server, tb, body, pos=enc["pos"], timeout=20000)
    await task
    assert time.monotonic() - t0 < 10
    assert [m["content"] for m in woken["extensions"]["to_device"]["events"]] == [{"x": 1}]
    # The room-list connection's position is still good, and a position of one connection is unknown to the other.
    again = await ss(server, tb, {"conn_id": "room-list", "lists": {"all": ALL}}, pos=rooms_conn["pos"], timeout=0)
    assert again["lists"]["all"]["count"] == 1
    wrong = await ss(server, tb, {"conn_id": "room-list", "lists": {"all": ALL}}, pos=woken["pos"], status=400)
    assert wrong["errcode"] == "M_UNKNOWN_POS"


async def test_extension_scopes(server: RunningServer) -> None:
    alice, ta, _ = await server.login_user("alice")
    _, tb, _ = await server.login_user("bob")
    one = await create_room(server, ta, preset="public_chat", name="one")
    two = await create_room(server, ta, preset="public_chat", name="two")
    for room in (one, two):
        await join(server, tb, room)
    for room in (one, two):
        await server.http.put(f"{C}/rooms/{room}/typing/{alice}", {"typing": True, "timeout": 30000}, token=ta)
    lists = {"first": {"ranges": [[0, 0]], "filters": {"room_name_like": "one"}},
             "second": {"ranges": [[0, 0]], "filters": {"room_name_like": "two"}}}

    async def typing_rooms(scope: dict[str, Any]) -> set[str]:
        out = await ss(server, tb, {"lists": lists, "extensions": {"typing": {"enabled": True, **scope}}})
        return set(out["extensions"]["typing"]["rooms"])

    assert await typing_rooms({}) == {one, two}
    assert await typing_rooms({"lists": ["first"]}) == {one, two}  # rooms defaults to "*": everything
    assert await typing_rooms({"lists": ["first"], "rooms": []}) == {one}
    assert await typing_rooms({"lists": [], "rooms": [two]}) == {two}
    assert await typing_rooms({"lists": ["*"], "rooms": []}) == {one, two}
    bad = await ss(server, tb, {"extensions": {"receipts": {"enabled": True, "rooms": "all"}}}, status=400)
    assert "extensions.receipts.rooms" in bad["error"]
