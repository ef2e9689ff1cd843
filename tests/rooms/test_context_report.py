"""/context, /timestamp_to_event and reporting (with the admin's view of reports)."""

from __future__ import annotations

from tests.rooms.helpers import C, create_room, join, send_text
from tests.support.servers import RunningServer


async def test_context(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    _, tb, _ = await server.login_user("bob")
    _, tm, _ = await server.login_user("mallory")
    room = await create_room(server, ta, preset="public_chat")
    await join(server, tb, room)
    ids = [await send_text(server, ta, room, f"m{i}") for i in range(9)]
    r = await server.http.get(f"{C}/rooms/{room}/context/{ids[4]}", token=tb, params={"limit": "4"})
    assert r.status == 200
    assert r.body["event"]["event_id"] == ids[4]
    assert [e["event_id"] for e in r.body["events_before"]] == [ids[3], ids[2]]
    assert [e["event_id"] for e in r.body["events_after"]] == [ids[5], ids[6]]
    assert {"m.room.create", "m.room.member"} <= {e["type"] for e in r.body["state"]}
    # Paginating from the context's tokens continues seamlessly.
    more = await server.http.get(f"{C}/rooms/{room}/messages", token=tb, params={"from": r.body["end"], "dir": "f", "limit": "2"})
    assert [e["event_id"] for e in more.body["chunk"]] == [ids[7], ids[8]]
    back = await server.http.get(f"{C}/rooms/{room}/messages", token=tb, params={"from": r.body["start"], "dir": "b", "limit": "2"})
    assert [e["event_id"] for e in back.body["chunk"]] == [ids[1], ids[0]]
    lazy = await server.http.get(f"{C}/rooms/{room}/context/{ids[4]}", token=tb,
                                 params={"limit": "2", "filter": '{"lazy_load_members": true}'})
    assert {e["state_key"] for e in lazy.body["state"] if e["type"] == "m.room.member"} == {"@alice:hs1.test"}
    assert (await server.http.get(f"{C}/rooms/{room}/context/{ids[4]}", token=tm)).status == 403
    assert (await server.http.get(f"{C}/rooms/{room}/context/$nope", token=tb)).status == 404


async def test_timestamp_to_event(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    room = await create_room(server, ta)
    first = await send_text(server, ta, room, "first")
    ev = (await server.http.get(f"{C}/rooms/{room}/event/{first}", token=ta)).body
    r = await server.http.get(f"/_matrix/client/v1/rooms/{room}/timestamp_to_event", token=ta,
                              params={"ts": str(ev["origin_server_ts"]), "dir": "f"})
    assert r.status == 200 and r.body["origin_server_ts"] >= ev["origin_server_ts"]
    r = await server.http.get(f"/_matrix/client/v1/rooms/{room}/timestamp_to_event", token=ta, params={"ts": "1", "dir": "b"})
    assert r.status == 404 and r.errcode == "M_NOT_FOUND"
    for params in ({"dir": "f"}, {"ts": "1", "dir": "x"}, {"ts": "x", "dir": "f"}):
        r = await server.http.get(f"/_matrix/client/v1/rooms/{room}/timestamp_to_event", token=ta, params=params)
        assert r.status == 400, params


async def test_reports_reach_admins(server: RunningServer) -> None:
    _, admin, _ = await server.login_user("admin", admin=True)
    _, ta, _ = await server.login_user("alice")
    _, tb, _ = await server.login_user("bob")
    room = await create_room(server, ta, preset="public_chat")
    await join(server, tb, room)
    bad = await send_text(server, ta, room, "something inappropriate")
    assert (await server.http.post(f"{C}/rooms/{room}/report/{bad}", {"reason": "abusive", "score": -100}, token=tb)).status == 200
    assert (await server.http.post(f"{C}/rooms/{room}/report", {"reason": "spam room"}, token=tb)).status == 200
    r = await server.http.get("/_synapse/admin/v1/event_reports", token=admin)
    assert r.body["total"] == 2
    assert {(x["event_id"], x["reason"]) for x in r.body["event_reports"]} == {(bad, "abusive"), (None, "spam room")}
    assert (await server.http.get("/_synapse/admin/v1/event_reports", token=tb)).status == 403
    cases = [({"score": 5}, 400), ({"reason": 7}, 400)]
    for body, status in cases:
        assert (await server.http.post(f"{C}/rooms/{room}/report/{bad}", body, token=tb)).status == status
    assert (await server.http.post(f"{C}/rooms/{room}/report/$nope", {}, token=tb)).status == 404
