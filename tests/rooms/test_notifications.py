"""Unread counts in /sync and /notifications, from push rules evaluated when events are persisted."""

from __future__ import annotations

from tests.rooms.helpers import C, create_room, join, send_text, sync
from tests.support.servers import RunningServer


async def test_unread_counts_and_highlights(server: RunningServer) -> None:
    alice, ta, _ = await server.login_user("alice")
    bob, tb, _ = await server.login_user("bob")
    room = await create_room(server, ta, preset="public_chat")
    await join(server, tb, room)
    for i in range(3):
        await send_text(server, ta, room, f"note {i}")
    last = await send_text(server, ta, room, "bob, look", **{"m.mentions": {"user_ids": [bob]}})
    await send_text(server, ta, room, "a notice", msgtype="m.notice")  # suppressed by default rules
    counts = (await sync(server, tb))["rooms"]["join"][room]["unread_notifications"]
    assert counts == {"notification_count": 4, "highlight_count": 1}
    assert (await sync(server, ta))["rooms"]["join"][room]["unread_notifications"] == {"notification_count": 0, "highlight_count": 0}
    since = (await sync(server, tb))["next_batch"]
    assert (await server.http.post(f"{C}/rooms/{room}/receipt/m.read/{last}", {}, token=tb)).status == 200
    body = await sync(server, tb, since=since)
    assert body["rooms"]["join"][room]["unread_notifications"] == {"notification_count": 0, "highlight_count": 0}
    # Bob's own message also counts as having read up to it.
    await send_text(server, ta, room, "one more")
    assert (await sync(server, tb))["rooms"]["join"][room]["unread_notifications"]["notification_count"] == 1
    await send_text(server, tb, room, "replying")
    assert (await sync(server, tb))["rooms"]["join"][room]["unread_notifications"]["notification_count"] == 0


async def test_user_rule_silences_a_room(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    _, tb, _ = await server.login_user("bob")
    room = await create_room(server, ta, preset="public_chat")
    await join(server, tb, room)
    r = await server.http.put(f"{C}/pushrules/global/room/{room}", {"actions": []}, token=tb)
    assert r.status == 200
    await send_text(server, ta, room, "quiet please")
    assert (await sync(server, tb))["rooms"]["join"][room]["unread_notifications"]["notification_count"] == 0


async def test_notifications_endpoint(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    bob, tb, _ = await server.login_user("bob")
    room = await create_room(server, ta, preset="public_chat")
    await join(server, tb, room)
    ids = [await send_text(server, ta, room, f"n{i}") for i in range(3)]
    hl = await send_text(server, ta, room, "ping", **{"m.mentions": {"user_ids": [bob]}})
    r = await server.http.get(f"{C}/notifications", token=tb, params={"limit": "2"})
    assert r.status == 200
    assert [n["event"]["event_id"] for n in r.body["notifications"]] == [hl, ids[2]]
    assert r.body["notifications"][0]["read"] is False and "notify" in r.body["notifications"][0]["actions"]
    r2 = await server.http.get(f"{C}/notifications", token=tb, params={"limit": "2", "from": r.body["next_token"]})
    assert [n["event"]["event_id"] for n in r2.body["notifications"]] == [ids[1], ids[0]]
    r = await server.http.get(f"{C}/notifications", token=tb, params={"only": "highlight"})
    assert [n["event"]["event_id"] for n in r.body["notifications"]] == [hl]
    assert (await server.http.get(f"{C}/notifications", token=tb, params={"from": "x"})).status == 400


async def test_threaded_unread_counts_follow_threaded_receipts(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    bob, tb, _ = await server.login_user("bob")
    room = await create_room(server, ta, preset="public_chat")
    await join(server, tb, room)
    root = await send_text(server, ta, room, "root")
    in_thread = {"m.relates_to": {"rel_type": "m.thread", "event_id": root}}
    t1 = await send_text(server, ta, room, "t1", **in_thread)
    await send_text(server, ta, room, "t2, bob", **in_thread, **{"m.mentions": {"user_ids": [bob]}})
    main2 = await send_text(server, ta, room, "main 2")
    threaded_filter = '{"room":{"timeline":{"unread_thread_notifications":true}}}'

    joined = (await sync(server, tb, filter=threaded_filter))["rooms"]["join"][room]
    assert joined["unread_notifications"] == {"notification_count": 2, "highlight_count": 0}
    assert joined["unread_thread_notifications"] == {root: {"notification_count": 2, "highlight_count": 1}}
    # Without the filter flag, one count covers the whole room.
    plain = (await sync(server, tb))["rooms"]["join"][room]
    assert plain["unread_notifications"] == {"notification_count": 4, "highlight_count": 1}
    assert "unread_thread_notifications" not in plain

    # A receipt in the thread reads only that thread, up to its event.
    r = await server.http.post(f"{C}/rooms/{room}/receipt/m.read/{t1}", {"thread_id": root}, token=tb)
    assert r.status == 200, r.body
    joined = (await sync(server, tb, filter=threaded_filter))["rooms"]["join"][room]
    assert joined["unread_notifications"]["notification_count"] == 2
    assert joined["unread_thread_notifications"] == {root: {"notification_count": 1, "highlight_count": 1}}
    assert (await sync(server, tb))["rooms"]["join"][room]["unread_notifications"] == {"notification_count": 3, "highlight_count": 1}
    # A main-timeline receipt reads the main timeline and leaves the thread alone.
    r = await server.http.post(f"{C}/rooms/{room}/receipt/m.read/{main2}", {"thread_id": "main"}, token=tb)
    assert r.status == 200, r.body
    joined = (await sync(server, tb, filter=threaded_filter))["rooms"]["join"][room]
    assert joined["unread_notifications"] == {"notification_count": 0, "highlight_count": 0}
    assert joined["unread_thread_notifications"][root]["notification_count"] == 1
    # An unthreaded receipt reads everything before it, threads included.
    r = await server.http.post(f"{C}/rooms/{room}/receipt/m.read/{main2}", {}, token=tb)
    assert r.status == 200
    joined = (await sync(server, tb, filter=threaded_filter))["rooms"]["join"][room]
    assert joined["unread_notifications"] == {"notification_count": 0, "highlight_count": 0}
    assert "unread_thread_notifications" not in joined
    r = await server.http.get(f"{C}/sync", token=tb, params={"filter": '{"room":{"timeline":{"unread_thread_notifications":1}}}'})
    assert r.status == 400 and r.body["errcode"] == "M_BAD_JSON"


async def test_contains_display_name_condition_uses_the_recipients_name(server: RunningServer) -> None:
    """The legacy condition (no longer in the spec's defaults) still works in a user's own rule."""
    _, ta, _ = await server.login_user("alice")
    bob, tb, _ = await server.login_user("bob")
    room = await create_room(server, ta, preset="public_chat")
    await join(server, tb, room)
    r = await server.http.put(f"{C}/profile/{bob}/displayname", {"displayname": "Bobby Tables"}, token=tb)
    assert r.status == 200
    rule = {"conditions": [{"kind": "contains_display_name"}], "actions": ["notify", {"set_tweak": "highlight"}]}
    assert (await server.http.put(f"{C}/pushrules/global/override/my_name", rule, token=tb)).status == 200
    await send_text(server, ta, room, "over to you, Bobby Tables.")
    await send_text(server, ta, room, "Bobby alone is not the name")
    counts = (await sync(server, tb))["rooms"]["join"][room]["unread_notifications"]
    assert counts == {"notification_count": 2, "highlight_count": 1}
