"""Space hierarchy: breadth-first walk of m.space.child, access rules, suggested_only, depth, paging."""

from __future__ import annotations

from tests.rooms.helpers import C, create_room
from tests.support.servers import RunningServer

V1 = "/_matrix/client/v1"


async def _child(srv: RunningServer, token: str, space: str, child: str, **extra) -> None:
    r = await srv.http.put(f"{C}/rooms/{space}/state/m.space.child/{child}", {"via": ["hs1.test"], **extra}, token=token)
    assert r.status == 200, r.body


async def test_hierarchy(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    _, tb, _ = await server.login_user("bob")
    space = await create_room(server, ta, preset="public_chat", name="Ministry", creation_content={"type": "m.space"})
    sub = await create_room(server, ta, preset="public_chat", name="Finance wing", creation_content={"type": "m.space"})
    general = await create_room(server, ta, preset="public_chat", name="General")
    budget = await create_room(server, ta, preset="public_chat", name="Budget")
    private = await create_room(server, ta, preset="private_chat", name="Private")
    await _child(server, ta, space, general, suggested=True)
    await _child(server, ta, space, sub)
    await _child(server, ta, space, private)
    await _child(server, ta, sub, budget)
    r = await server.http.get(f"{V1}/rooms/{space}/hierarchy", token=tb)
    assert r.status == 200
    names = [x.get("name") for x in r.body["rooms"]]
    assert names[0] == "Ministry" and set(names) == {"Ministry", "General", "Finance wing", "Budget"}  # private hidden from bob
    assert r.body["rooms"][0]["room_type"] == "m.space" and len(r.body["rooms"][0]["children_state"]) == 3
    alice_view = await server.http.get(f"{V1}/rooms/{space}/hierarchy", token=ta)
    assert "Private" in [x.get("name") for x in alice_view.body["rooms"]]
    shallow = await server.http.get(f"{V1}/rooms/{space}/hierarchy", token=tb, params={"max_depth": "0"})
    assert [x["name"] for x in shallow.body["rooms"]] == ["Ministry"]
    suggested = await server.http.get(f"{V1}/rooms/{space}/hierarchy", token=tb, params={"suggested_only": "true"})
    assert [x["name"] for x in suggested.body["rooms"]] == ["Ministry", "General"]
    page = await server.http.get(f"{V1}/rooms/{space}/hierarchy", token=tb, params={"limit": "2"})
    assert len(page.body["rooms"]) == 2 and page.body["next_batch"]
    rest = await server.http.get(f"{V1}/rooms/{space}/hierarchy", token=tb, params={"limit": "2", "from": page.body["next_batch"]})
    assert {x["name"] for x in page.body["rooms"] + rest.body["rooms"]} == {"Ministry", "General", "Finance wing", "Budget"}
    assert (await server.http.get(f"{V1}/rooms/{private}/hierarchy", token=tb)).status == 403
    assert (await server.http.get(f"{V1}/rooms/!nope:hs1.test/hierarchy", token=tb)).status == 404
    assert (await server.http.get(f"{V1}/rooms/{space}/hierarchy", token=tb, params={"suggested_only": "maybe"})).status == 400
