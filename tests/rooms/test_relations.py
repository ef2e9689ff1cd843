"""Relations: /relations, /threads, bundled aggregations (edits, threads, references), reactions."""

from __future__ import annotations

import asyncio

from tests.rooms.helpers import C, create_room, join, send_text, sync
from tests.support.servers import RunningServer

V1 = "/_matrix/client/v1"


def rel(rel_type: str, target: str, **extra) -> dict:
    return {"m.relates_to": {"rel_type": rel_type, "event_id": target, **extra}}


async def _send(srv: RunningServer, token: str, room: str, etype: str, content: dict, txn: str) -> str:
    r = await srv.http.put(f"{C}/rooms/{room}/send/{etype}/rel-{txn}", content, token=token)
    assert r.status == 200, r.body
    return r.body["event_id"]


async def test_edits_are_bundled(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    _, tb, _ = await server.login_user("bob")
    room = await create_room(server, ta, preset="public_chat")
    await join(server, tb, room)
    original = await send_text(server, ta, room, "I like cake")
    edit1 = await _send(server, ta, room, "m.room.message", {"body": "* I like pie", "msgtype": "m.text",
                        "m.new_content": {"body": "I like pie", "msgtype": "m.text"}, **rel("m.replace", original)}, "e1")
    # The newest edit wins by origin_server_ts (event ID only breaks ties): keep the two milliseconds apart.
    await asyncio.sleep(0.005)
    edit2 = await _send(server, ta, room, "m.room.message", {"body": "* I like chocolate cake", "msgtype": "m.text",
                        "m.new_content": {"body": "I like chocolate cake", "msgtype": "m.text"}, **rel("m.replace", original)}, "e2")
    # An "edit" by someone else is not a valid replacement.
    await _send(server, tb, room, "m.room.message", {"body": "* hijack", "msgtype": "m.text",
                "m.new_content": {"body": "hijack"}, **rel("m.replace", original)}, "e3")
    ev = (await server.http.get(f"{C}/rooms/{room}/event/{original}", token=tb)).body
    assert ev["content"]["body"] == "I like cake"  # the original content is not replaced
    assert ev["unsigned"]["m.relations"]["m.replace"]["event_id"] == edit2
    body = await sync(server, tb)
    timeline = {e["event_id"]: e for e in body["rooms"]["join"][room]["timeline"]["events"]}
    assert timeline[original]["unsigned"]["m.relations"]["m.replace"]["event_id"] == edit2
    r = await server.http.get(f"{V1}/rooms/{room}/relations/{original}/m.replace", token=tb)
    ids = [e["event_id"] for e in r.body["chunk"]]
    assert len(ids) == 3 and ids.index(edit2) < ids.index(edit1)  # newest first, the invalid edit listed too
    # Redacting the original drops the edit bundle.
    assert (await server.http.put(f"{C}/rooms/{room}/redact/{original}/r1", {}, token=ta)).status == 200
    ev = (await server.http.get(f"{C}/rooms/{room}/event/{original}", token=tb)).body
    assert "m.relations" not in ev["unsigned"]


async def test_threads_and_thread_aggregation(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    _, tb, _ = await server.login_user("bob")
    room = await create_room(server, ta, preset="public_chat")
    await join(server, tb, room)
    root = await send_text(server, ta, room, "thread root")
    other_root = await send_text(server, ta, room, "quiet root")
    replies = [await _send(server, tb if i % 2 else ta, room, "m.room.message",
                           {"body": f"reply {i}", "msgtype": "m.text", **rel("m.thread", root)}, f"t{i}") for i in range(3)]
    await _send(server, ta, room, "m.room.message", {"body": "x", "msgtype": "m.text", **rel("m.thread", other_root)}, "t9")
    ev = (await server.http.get(f"{C}/rooms/{room}/event/{root}", token=tb)).body
    thread = ev["unsigned"]["m.relations"]["m.thread"]
    assert thread["count"] == 3 and thread["latest_event"]["event_id"] == replies[-1]
    assert thread["current_user_participated"] is True
    r = await server.http.get(f"{V1}/rooms/{room}/threads", token=tb)
    assert [e["event_id"] for e in r.body["chunk"]] == [other_root, root]
    r = await server.http.get(f"{V1}/rooms/{room}/threads", token=tb, params={"include": "participated"})
    assert [e["event_id"] for e in r.body["chunk"]] == [root]
    r = await server.http.get(f"{V1}/rooms/{room}/threads", token=tb, params={"limit": "1"})
    assert len(r.body["chunk"]) == 1 and r.body["next_batch"]
    r2 = await server.http.get(f"{V1}/rooms/{room}/threads", token=tb, params={"limit": "1", "from": r.body["next_batch"]})
    assert [e["event_id"] for e in r2.body["chunk"]] == [root]
    r = await server.http.get(f"{V1}/rooms/{room}/relations/{root}/m.thread", token=tb, params={"limit": "2"})
    assert [e["event_id"] for e in r.body["chunk"]] == [replies[2], replies[1]] and r.body["next_batch"]
    r = await server.http.get(f"{V1}/rooms/{room}/relations/{root}/m.thread", token=tb, params={"from": r.body["next_batch"]})
    assert [e["event_id"] for e in r.body["chunk"]] == [replies[0]]
    r = await server.http.get(f"{V1}/rooms/{room}/relations/{root}", token=tb, params={"dir": "f"})
    assert [e["event_id"] for e in r.body["chunk"]] == replies
    # A thread may not start from an event that itself has a relation.
    r = await server.http.put(f"{C}/rooms/{room}/send/m.room.message/t10",
                              {"body": "nested", "msgtype": "m.text", **rel("m.thread", replies[0])}, token=ta)
    assert r.status == 400 and r.errcode == "M_UNKNOWN"


async def test_reactions_and_references(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    _, tm, _ = await server.login_user("mallory")
    room = await create_room(server, ta, preset="private_chat")
    msg = await send_text(server, ta, room, "approve file 42?")
    react = await _send(server, ta, room, "m.reaction", {"m.relates_to": {"rel_type": "m.annotation", "event_id": msg, "key": "👍"}}, "re1")
    ref = await _send(server, ta, room, "m.room.message", {"body": "see above", "msgtype": "m.text", **rel("m.reference", msg)}, "rf1")
    ev = (await server.http.get(f"{C}/rooms/{room}/event/{msg}", token=ta)).body
    assert ev["unsigned"]["m.relations"] == {"m.reference": {"chunk": [{"event_id": ref}]}}  # annotations are not bundled
    r = await server.http.get(f"{V1}/rooms/{room}/relations/{msg}/m.annotation/m.reaction", token=ta)
    assert [e["event_id"] for e in r.body["chunk"]] == [react]
    r = await server.http.get(f"{V1}/rooms/{room}/relations/{msg}", token=tm)
    assert r.status == 403
    for params in ({"dir": "x"}, {"from": "bad"}):
        assert (await server.http.get(f"{V1}/rooms/{room}/relations/{msg}", token=ta, params=params)).status == 400
    assert (await server.http.get(f"{V1}/rooms/{room}/threads", token=ta, params={"include": "x"})).status == 400
    assert (await server.http.get(f"{V1}/rooms/{room}/threads", token=tm)).status == 403
