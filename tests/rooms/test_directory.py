"""Room directory visibility and /publicRooms."""

from __future__ import annotations

from tests.rooms.helpers import C, create_room, join
from tests.support.servers import RunningServer


async def test_publish_and_list(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    _, tb, _ = await server.login_user("bob")
    big = await create_room(server, ta, visibility="public", name="Ministry announcements", topic="Official", room_alias_name="news")
    small = await create_room(server, ta, preset="public_chat", name="Canteen")
    await create_room(server, ta, name="Hidden")  # private, never listed
    await join(server, tb, big)
    r = await server.http.get(f"{C}/directory/list/room/{small}")
    assert r.body == {"visibility": "private"}
    assert (await server.http.put(f"{C}/directory/list/room/{small}", {"visibility": "public"}, token=tb)).status == 403
    assert (await server.http.put(f"{C}/directory/list/room/{small}", {"visibility": "public"}, token=ta)).status == 200
    r = await server.http.get(f"{C}/publicRooms", token=tb)
    assert r.status == 200 and r.body["total_room_count_estimate"] == 2
    first = r.body["chunk"][0]
    assert first["room_id"] == big and first["num_joined_members"] == 2 and first["name"] == "Ministry announcements"
    assert first["canonical_alias"] == "#news:hs1.test" and first["join_rule"] == "public" and first["topic"] == "Official"
    page = await server.http.get(f"{C}/publicRooms", token=tb, params={"limit": "1"})
    assert [e["room_id"] for e in page.body["chunk"]] == [big] and page.body["next_batch"]
    nxt = await server.http.get(f"{C}/publicRooms", token=tb, params={"limit": "1", "since": page.body["next_batch"]})
    assert [e["room_id"] for e in nxt.body["chunk"]] == [small] and "next_batch" not in nxt.body
    r = await server.http.post(f"{C}/publicRooms", {"filter": {"generic_search_term": "canteen"}}, token=tb)
    assert [e["room_id"] for e in r.body["chunk"]] == [small]
    cases = [
        ("GET", f"{C}/publicRooms", None, {"since": "zzz"}, 400),
        ("GET", f"{C}/publicRooms", None, {"server": "other.test"}, 502),  # unreachable server, as Synapse
        ("POST", f"{C}/publicRooms", {"limit": "ten"}, None, 400),
        ("PUT", f"{C}/directory/list/room/{small}", {"visibility": "secret"}, None, 400),
        ("GET", f"{C}/directory/list/room/!nope:hs1.test", None, None, 404),
    ]
    for method, path, body, params, status in cases:
        r = await server.http.request(method, path, body, token=ta, params=params)
        assert r.status == status and r.errcode, (method, path, r.body)
    assert (await server.http.get(f"{C}/publicRooms")).status == 401
