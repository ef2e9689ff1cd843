"""Room upgrades: tombstone, predecessor, carried-over state, aliases, and the old room locked."""

from __future__ import annotations

import pytest

from tests.rooms.helpers import C, create_room, join, send_text, sync
from tests.support.servers import RunningServer


@pytest.mark.parametrize("old, new", [("10", "11"), ("11", "12"), ("12", "12")])
async def test_upgrade(server: RunningServer, old: str, new: str) -> None:
    _, ta, _ = await server.login_user("alice")
    _, tb, _ = await server.login_user("bob")
    room = await create_room(server, ta, room_version=old, preset="public_chat", name="Budget", topic="FY27",
                             room_alias_name="budget", visibility="public")
    await join(server, tb, room)
    await send_text(server, ta, room, "before upgrade")
    r = await server.http.post(f"{C}/rooms/{room}/upgrade", {"new_version": new}, token=tb)
    assert r.status == 403
    r = await server.http.post(f"{C}/rooms/{room}/upgrade", {"new_version": new}, token=ta)
    assert r.status == 200, r.body
    new_room = r.body["replacement_room"]
    assert new_room != room
    tomb = (await server.http.get(f"{C}/rooms/{room}/state/m.room.tombstone", token=tb)).body
    assert tomb["replacement_room"] == new_room
    create = (await server.http.get(f"{C}/rooms/{new_room}/state/m.room.create", token=ta)).body
    assert create["room_version"] == new and create["predecessor"]["room_id"] == room
    state = {(e["type"], e["state_key"]): e["content"] for e in (await server.http.get(f"{C}/rooms/{new_room}/state", token=ta)).body}
    assert state[("m.room.name", "")]["name"] == "Budget" and state[("m.room.topic", "")]["topic"] == "FY27"
    assert state[("m.room.join_rules", "")]["join_rule"] == "public"
    assert state[("m.room.canonical_alias", "")]["alias"] == "#budget:hs1.test"
    assert (await server.http.get(f"{C}/directory/room/%23budget:hs1.test")).body["room_id"] == new_room
    # Bob follows the tombstone; the old room no longer takes his messages.
    await join(server, tb, new_room)
    r = await server.http.put(f"{C}/rooms/{room}/send/m.room.message/up1", {"msgtype": "m.text", "body": "late"}, token=tb)
    assert r.status == 403
    public = (await server.http.get(f"{C}/publicRooms", token=ta)).body["chunk"]
    assert [e["room_id"] for e in public] == [new_room]
    body = await sync(server, tb)
    assert new_room in body["rooms"]["join"]


async def test_upgrade_bad_input(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    room = await create_room(server, ta)
    for body, status, errcode in [({"new_version": "5"}, 400, "M_UNSUPPORTED_ROOM_VERSION"), ({}, 400, "M_MISSING_PARAM")]:
        r = await server.http.post(f"{C}/rooms/{room}/upgrade", body, token=ta)
        assert (r.status, r.errcode) == (status, errcode)
    assert (await server.http.post(f"{C}/rooms/!nope:hs1.test/upgrade", {"new_version": "11"}, token=ta)).status == 403
