"""Full-text /search on both engines: ranking, recency, filters, context, redaction, access."""

from __future__ import annotations

from tests.rooms.helpers import C, create_room, join, send_text
from tests.support.servers import RunningServer


def _query(term: str, **extra) -> dict:
    return {"search_categories": {"room_events": {"search_term": term, **extra}}}


async def test_search(server: RunningServer) -> None:
    alice, ta, _ = await server.login_user("alice")
    _, tb, _ = await server.login_user("bob")
    _, tm, _ = await server.login_user("mallory")
    room = await create_room(server, ta, preset="public_chat", name="Budget committee")
    other = await create_room(server, ta, name="Canteen")
    await join(server, tb, room)
    e1 = await send_text(server, ta, room, "The budget for 2027 is approved")
    e2 = await send_text(server, tb, room, "budget budget budget review tomorrow")
    await send_text(server, ta, room, "lunch at noon")
    secret = await send_text(server, ta, other, "budget secret in another room")
    r = await server.http.post(f"{C}/search", _query("budget"), token=tb)
    assert r.status == 200
    res = r.body["search_categories"]["room_events"]
    ids = [x["result"]["event_id"] for x in res["results"]]
    assert set(ids) >= {e1, e2} and secret not in ids  # bob is not in the other room
    assert res["highlights"] == ["budget"]
    assert res["results"][0]["rank"] >= res["results"][-1]["rank"]
    recent = (await server.http.post(f"{C}/search", _query("budget", order_by="recent", keys=["content.body"]), token=tb)).body
    assert [x["result"]["event_id"] for x in recent["search_categories"]["room_events"]["results"]] == [e2, e1]
    # Prefixes match; every word must match.
    assert [x["result"]["event_id"] for x in (await server.http.post(f"{C}/search", _query("budg approved"), token=tb)).body["search_categories"]["room_events"]["results"]] == [e1]
    names = (await server.http.post(f"{C}/search", _query("committee", keys=["content.name"]), token=tb)).body
    assert [x["result"]["type"] for x in names["search_categories"]["room_events"]["results"]] == ["m.room.name"]
    filtered = (await server.http.post(f"{C}/search", _query("budget", keys=["content.body"], filter={"senders": [alice]}), token=tb)).body
    assert [x["result"]["event_id"] for x in filtered["search_categories"]["room_events"]["results"]] == [e1]
    page = (await server.http.post(f"{C}/search", _query("budget", keys=["content.body"], order_by="recent", filter={"limit": 1}), token=ta)).body["search_categories"]["room_events"]
    assert page["count"] == 3 and len(page["results"]) == 1 and page["next_batch"]
    page2 = (await server.http.post(f"{C}/search", _query("budget", keys=["content.body"], order_by="recent", filter={"limit": 1}), token=ta,
                                    params={"next_batch": page["next_batch"]})).body["search_categories"]["room_events"]
    assert page2["results"][0]["result"]["event_id"] != page["results"][0]["result"]["event_id"]
    ctx = (await server.http.post(f"{C}/search", _query("lunch", event_context={"before_limit": 1, "after_limit": 1, "include_profile": True},
                                                       include_state=True, groupings={"group_by": [{"key": "room_id"}]}), token=tb)).body
    hit = ctx["search_categories"]["room_events"]["results"][0]
    assert [e["event_id"] for e in hit["context"]["events_before"]] == [e2]
    assert alice in hit["context"]["profile_info"]
    assert room in ctx["search_categories"]["room_events"]["state"]
    assert list(ctx["search_categories"]["room_events"]["groups"]["room_id"]) == [room]
    # Redacted messages leave the index.
    assert (await server.http.put(f"{C}/rooms/{room}/redact/{e2}/s1", {}, token=tb)).status == 200
    after = (await server.http.post(f"{C}/search", _query("review"), token=tb)).body
    assert after["search_categories"]["room_events"]["results"] == []
    assert (await server.http.post(f"{C}/search", _query("budget"), token=tm)).body["search_categories"]["room_events"]["results"] == []
    for body in ({}, {"search_categories": {"room_events": {}}}, _query("x", order_by="size"), _query("x", keys=["content.secret"]),
                 _query("x", groupings={"group_by": [{"key": "type"}]})):
        r = await server.http.post(f"{C}/search", body, token=tb)
        assert r.status == 400 and r.errcode, body
    assert (await server.http.post(f"{C}/search", _query("x"), token=tb, params={"next_batch": "zz"})).status == 400
