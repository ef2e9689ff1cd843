"""User directory search: shared rooms and public rooms by default, everyone when configured."""

from __future__ import annotations

from tests.rooms.helpers import C, create_room, join
from tests.support.servers import RunningServer

SEARCH = f"{C}/user_directory/search"


async def test_default_scope(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    bob, tb, _ = await server.login_user("bob.khan")
    carol, tc, _ = await server.login_user("carol.khan")
    await server.login_user("dave.khan")  # shares nothing with alice
    room = await create_room(server, ta)
    assert (await server.http.post(f"{C}/rooms/{room}/invite", {"user_id": bob}, token=ta)).status == 200
    await join(server, tb, room)
    public = await create_room(server, tc, visibility="public")
    assert public
    r = await server.http.post(SEARCH, {"search_term": "khan"}, token=ta)
    assert r.status == 200
    assert {x["user_id"] for x in r.body["results"]} == {bob, carol}
    await server.http.put(f"{C}/profile/{bob}/displayname", {"displayname": "Bilal Ahmed"}, token=tb)
    r = await server.http.post(SEARCH, {"search_term": "bilal"}, token=ta)
    assert r.body["results"] == [{"user_id": bob, "display_name": "Bilal Ahmed"}]
    r = await server.http.post(SEARCH, {"search_term": "khan", "limit": 1}, token=ta)
    assert len(r.body["results"]) == 1 and r.body["limited"] is True
    for body in ({}, {"search_term": 5}, {"search_term": "x", "limit": "5"}):
        assert (await server.http.post(SEARCH, body, token=ta)).status == 400
    assert (await server.http.post(SEARCH, {"search_term": "x"})).status == 401


async def test_search_all_users(make_server) -> None:
    srv = await make_server(user_directory={"search_all_users": True})
    _, ta, _ = await srv.login_user("alice")
    dave, _, _ = await srv.login_user("dave.khan")
    r = await srv.http.post(SEARCH, {"search_term": "khan"}, token=ta)
    assert [x["user_id"] for x in r.body["results"]] == [dave]
    await srv.hs.accounts.deactivate(dave)
    assert (await srv.http.post(SEARCH, {"search_term": "khan"}, token=ta)).body["results"] == []
