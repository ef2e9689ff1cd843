"""A room spanning two Qasid servers: a remote join through an alias, then messages both ways."""

from __future__ import annotations

import asyncio
from typing import Any

from homeserver.events import event_id, sign_event
from tests.support.servers import RunningServer

C = "/_matrix/client/v3"


async def _wait_for_text(srv: RunningServer, token: str, room: str, text: str, since: str | None = None) -> dict[str, Any]:
    for _ in range(50):
        params = {"timeout": "200", **({"since": since} if since else {})}
        r = await srv.http.get(f"{C}/sync", token=token, params=params)
        assert r.status == 200, r.body
        joined = r.body["rooms"]["join"].get(room)
        if joined and any(e.get("content", {}).get("body") == text for e in joined["timeline"]["events"]):
            return r.body
        since = r.body["next_batch"]
    raise AssertionError(f"{text!r} never arrived")


async def test_remote_join_and_messages_both_ways(federation) -> None:
    hs1: RunningServer = await federation("127.0.0.1")
    hs2: RunningServer = await federation("127.0.0.2")
    alice, ta, _ = await hs1.login_user("alice")
    bob, tb, _ = await hs2.login_user("bob")
    name1 = hs1.config.server_name
    r = await hs1.http.post(f"{C}/createRoom", {"preset": "public_chat", "room_alias_name": "lobby", "name": "Lobby"}, token=ta)
    room = r.body["room_id"]

    r = await hs2.http.post(f"{C}/join/%23lobby:{name1}", {}, token=tb)
    assert r.status == 200 and r.body == {"room_id": room}, r.body
    # hs2 now holds the room: its state came from hs1, checked, and bob's join is on top.
    body = (await hs2.http.get(f"{C}/sync", token=tb)).body
    joined = body["rooms"]["join"][room]
    names = [e for e in joined["state"]["events"] + joined["timeline"]["events"] if e["type"] == "m.room.name"]
    assert names and names[0]["content"]["name"] == "Lobby"
    members = (await hs2.http.get(f"{C}/rooms/{room}/joined_members", token=tb)).body["joined"]
    assert set(members) == {alice, bob}
    # hs1 took bob's join too.
    members = (await hs1.http.get(f"{C}/rooms/{room}/joined_members", token=ta)).body["joined"]
    assert set(members) == {alice, bob}

    since_b = body["next_batch"]
    r = await hs1.http.put(f"{C}/rooms/{room}/send/m.room.message/a1", {"msgtype": "m.text", "body": "hello from MoFA"}, token=ta)
    assert r.status == 200
    await _wait_for_text(hs2, tb, room, "hello from MoFA", since_b)
    r = await hs2.http.put(f"{C}/rooms/{room}/send/m.room.message/b1", {"msgtype": "m.text", "body": "hello from MoF"}, token=tb)
    assert r.status == 200
    await _wait_for_text(hs1, ta, room, "hello from MoF")
    # History on both sides is the same, event for event.
    h1 = (await hs1.http.get(f"{C}/rooms/{room}/messages", token=ta, params={"dir": "b", "limit": "3"})).body["chunk"]
    h2 = (await hs2.http.get(f"{C}/rooms/{room}/messages", token=tb, params={"dir": "b", "limit": "3"})).body["chunk"]
    assert [e["event_id"] for e in h1[:2]] == [e["event_id"] for e in h2[:2]]


async def test_pdus_that_fail_the_checks_are_refused(federation) -> None:
    hs1: RunningServer = await federation("127.0.0.1")
    hs2: RunningServer = await federation("127.0.0.2")
    alice, ta, _ = await hs1.login_user("alice")
    bob, tb, _ = await hs2.login_user("bob")
    name1, name2 = hs1.config.server_name, hs2.config.server_name
    room = (await hs1.http.post(f"{C}/createRoom", {"preset": "public_chat", "room_alias_name": "hall"}, token=ta)).body["room_id"]
    assert (await hs2.http.post(f"{C}/join/%23hall:{name1}", {}, token=tb)).status == 200
    version = await hs1.hs.storage.events.get_room_version(room)
    head = await hs1.hs.event_creator._head(room)  # noqa: SLF001 - the test builds PDUs on the real head
    client2 = hs2.hs.federation.client
    key2 = hs2.hs.federation.local_keys.signing_key
    members = await hs1.hs.storage.events.get_current_state_ids(room)
    auth = sorted(members[k] for k in [("m.room.power_levels", ""), ("m.room.member", bob)] if k in members)

    def pdu(sender: str, body: str, key: Any = key2, origin: str = name2, **extra: Any) -> dict[str, Any]:
        ev = {"room_id": room, "type": "m.room.message", "sender": sender, "content": {"msgtype": "m.text", "body": body},
              "prev_events": head.extremities, "auth_events": auth, "depth": head.depth + 1,
              "origin_server_ts": hs2.hs.clock.time_ms(), **extra}
        return sign_event(ev, origin, key, version)

    from nacl.signing import SigningKey

    good = pdu(bob, "fine")
    forged = pdu(alice, "I am alice")  # hs2 may not speak for hs1's users
    tampered = {**pdu(bob, "original"), "content": {"msgtype": "m.text", "body": "changed"}}
    wrong_key = pdu(bob, "signed by someone else", key=SigningKey.generate())  # same key ID, another key
    # bob has power level 0: changing the room's name needs 50, so the auth rules refuse it.
    unauthorised = pdu(bob, "", type="m.room.name", state_key="", content={"name": "Taken over"})
    r = await client2.put_json(name1, "/_matrix/federation/v1/send/t1",
                               {"origin": name2, "pdus": [good, forged, tampered, wrong_key, unauthorised]})
    results = r["pdus"]
    assert results[event_id(good, version)] == {}
    assert "error" in results[event_id(forged, version)]
    assert "signature" in results[event_id(wrong_key, version)]["error"]
    assert "auth" in results[event_id(unauthorised, version)]["error"]
    for refused in (forged, wrong_key, unauthorised):
        assert await hs1.hs.storage.events.get_event(event_id(refused, version)) is None
    stored = await hs1.hs.storage.events.get_event(event_id(tampered, version))
    assert stored is not None and stored.pdu["content"] == {}  # a hash mismatch is stored redacted, never as sent
    name = await hs1.http.get(f"{C}/rooms/{room}/state/m.room.name/", token=ta)
    assert name.status == 404 or name.body.get("name") != "Taken over"
    seen = (await hs1.http.get(f"{C}/rooms/{room}/messages", token=ta, params={"dir": "b", "limit": "10"})).body["chunk"]
    bodies = [e["content"].get("body") for e in seen if e["type"] == "m.room.message"]
    assert "fine" in bodies and "I am alice" not in bodies and "changed" not in bodies
    # The same transaction ID again is answered from memory, not processed twice.
    again = await client2.put_json(name1, "/_matrix/federation/v1/send/t1", {"origin": name2, "pdus": []})
    assert again == r
    await asyncio.sleep(0)


async def test_servers_in_a_room_can_read_its_events_state_and_history(federation) -> None:
    from federation.client import FederationError
    import pytest

    hs1: RunningServer = await federation("127.0.0.1")
    hs2: RunningServer = await federation("127.0.0.2")
    hs3: RunningServer = await federation("127.0.0.3")
    alice, ta, _ = await hs1.login_user("alice")
    bob, tb, _ = await hs2.login_user("bob")
    name1 = hs1.config.server_name
    room = (await hs1.http.post(f"{C}/createRoom", {"preset": "public_chat", "room_alias_name": "records",
                                                    "name": "Records"}, token=ta)).body["room_id"]
    ids = [(await hs1.http.put(f"{C}/rooms/{room}/send/m.room.message/m{i}", {"msgtype": "m.text", "body": f"m{i}"},
                               token=ta)).body["event_id"] for i in range(5)]
    assert (await hs2.http.post(f"{C}/join/%23records:{name1}", {}, token=tb)).status == 200
    c2 = hs2.hs.federation.client
    enc = room.replace("!", "%21").replace(":", "%3A")

    got = await c2.get_json(name1, f"/_matrix/federation/v1/event/{ids[2]}")
    assert [p["content"]["body"] for p in got["pdus"]] == ["m2"]
    st = await c2.get_json(name1, f"/_matrix/federation/v1/state_ids/{enc}", {"event_id": ids[4]})
    create = await hs1.hs.storage.events.get_current_state_event_id(room, "m.room.create", "")
    assert create in st["pdu_ids"] or create in st["auth_chain_ids"]
    full = await c2.get_json(name1, f"/_matrix/federation/v1/state/{enc}", {"event_id": ids[4]})
    assert "m.room.name" in {p["type"] for p in full["pdus"]} and len(full["pdus"]) == len(st["pdu_ids"])
    chain = await c2.get_json(name1, f"/_matrix/federation/v1/event_auth/{enc}/{ids[4]}")
    assert "m.room.create" in {p["type"] for p in chain["auth_chain"]}
    back = await c2.get_json(name1, f"/_matrix/federation/v1/backfill/{enc}", {"v": ids[4], "limit": "3"})
    assert [p["content"]["body"] for p in back["pdus"]] == ["m4", "m3", "m2"]
    missing = await c2.post_json(name1, f"/_matrix/federation/v1/get_missing_events/{enc}",
                                 {"earliest_events": [ids[0]], "latest_events": [ids[4]], "limit": 10})
    assert [p["content"]["body"] for p in missing["events"]] == ["m1", "m2", "m3"]

    # A server with no one in the room reads nothing.
    with pytest.raises(FederationError) as e:
        await hs3.hs.federation.client.get_json(name1, f"/_matrix/federation/v1/event/{ids[2]}")
    assert e.value.status == 403
    with pytest.raises(FederationError) as e:
        await hs3.hs.federation.client.get_json(name1, f"/_matrix/federation/v1/state_ids/{enc}", {"event_id": ids[4]})
    assert e.value.status == 403


async def test_invites_across_servers_accept_reject_and_leave(federation) -> None:
    hs1: RunningServer = await federation("127.0.0.1")
    hs2: RunningServer = await federation("127.0.0.2")
    alice, ta, _ = await hs1.login_user("alice")
    bob, tb, _ = await hs2.login_user("bob")
    carol, tc, _ = await hs2.login_user("carol")
    room = (await hs1.http.post(f"{C}/createRoom", {"preset": "private_chat", "name": "Cabinet only"}, token=ta)).body["room_id"]
    since_b = (await hs2.http.get(f"{C}/sync", token=tb)).body["next_batch"]

    r = await hs1.http.post(f"{C}/rooms/{room}/invite", {"user_id": bob}, token=ta)
    assert r.status == 200, r.body
    # The stored invite carries hs2's countersignature.
    inv_id = await hs1.hs.storage.events.get_current_state_event_id(room, "m.room.member", bob)
    inv = await hs1.hs.storage.events.get_event(inv_id)
    assert hs2.config.server_name in inv.pdu["signatures"]
    body = (await hs2.http.get(f"{C}/sync", token=tb, params={"since": since_b})).body
    stripped = body["rooms"]["invite"][room]["invite_state"]["events"]
    assert {"m.room.name", "m.room.member"} <= {e["type"] for e in stripped}
    # Accepting needs no server hint: the invite says who invited.
    r = await hs2.http.post(f"{C}/join/{room}", {}, token=tb)
    assert r.status == 200, r.body
    body = (await hs2.http.get(f"{C}/sync", token=tb)).body
    assert room in body["rooms"]["join"] and room not in body["rooms"]["invite"]

    # Carol rejects her invite: the room never reaches hs2 for her, hs1 records her leave.
    assert (await hs1.http.post(f"{C}/rooms/{room}/invite", {"user_id": carol}, token=ta)).status == 200
    r = await hs2.http.post(f"{C}/rooms/{room}/leave", {}, token=tc)
    assert r.status == 200, r.body
    for _ in range(50):
        membership = (await hs1.http.get(f"{C}/rooms/{room}/state/m.room.member/{carol}", token=ta)).body.get("membership")
        if membership == "leave":
            break
        await asyncio.sleep(0.05)
    assert membership == "leave"
    assert room not in (await hs2.http.get(f"{C}/sync", token=tc)).body["rooms"]["invite"]

    # Bob leaves: hs1 hears it over /send.
    assert (await hs2.http.post(f"{C}/rooms/{room}/leave", {}, token=tb)).status == 200
    for _ in range(50):
        joined = (await hs1.http.get(f"{C}/rooms/{room}/joined_members", token=ta)).body["joined"]
        if bob not in joined:
            break
        await asyncio.sleep(0.05)
    assert set(joined) == {alice}
    # An invite to a user who does not exist is refused by their server, and nothing is stored here.
    r = await hs1.http.post(f"{C}/rooms/{room}/invite", {"user_id": f"@nobody:{hs2.config.server_name}"}, token=ta)
    assert r.status >= 400
    assert await hs1.hs.storage.events.get_current_state_event_id(room, "m.room.member", f"@nobody:{hs2.config.server_name}") is None


async def test_typing_receipts_to_device_and_device_lists_cross_servers(federation) -> None:
    from tests.rooms.test_e2e_keys import _key, device_keys

    hs1: RunningServer = await federation("127.0.0.1")
    hs2: RunningServer = await federation("127.0.0.2")
    alice, ta, da = await hs1.login_user("alice")
    bob, tb, db = await hs2.login_user("bob")
    name1 = hs1.config.server_name
    room = (await hs1.http.post(f"{C}/createRoom", {"preset": "public_chat", "room_alias_name": "edu"}, token=ta)).body["room_id"]
    assert (await hs2.http.post(f"{C}/join/%23edu:{name1}", {}, token=tb)).status == 200
    msg = (await hs1.http.put(f"{C}/rooms/{room}/send/m.room.message/e1", {"msgtype": "m.text", "body": "x"}, token=ta)).body["event_id"]
    await _wait_for_text(hs2, tb, room, "x")
    since_a = (await hs1.http.get(f"{C}/sync", token=ta)).body["next_batch"]
    since_b = (await hs2.http.get(f"{C}/sync", token=tb)).body["next_batch"]

    # Bob types (hs2 -> hs1); alice reads (hs1 -> hs2).
    assert (await hs2.http.put(f"{C}/rooms/{room}/typing/{bob}", {"typing": True, "timeout": 10000}, token=tb)).status == 200
    assert (await hs1.http.post(f"{C}/rooms/{room}/receipt/m.read/{msg}", {}, token=ta)).status == 200

    async def until(srv: RunningServer, token: str, since: str, pred) -> dict[str, Any]:
        for _ in range(60):
            b = (await srv.http.get(f"{C}/sync", token=token, params={"since": since, "timeout": "200"})).body
            if pred(b):
                return b
        raise AssertionError("never seen")

    def typing_seen(b: dict[str, Any]) -> bool:
        evs = b["rooms"]["join"].get(room, {}).get("ephemeral", {}).get("events", [])
        return any(e["type"] == "m.typing" and bob in e["content"]["user_ids"] for e in evs)

    def receipt_seen(b: dict[str, Any]) -> bool:
        evs = b["rooms"]["join"].get(room, {}).get("ephemeral", {}).get("events", [])
        return any(e["type"] == "m.receipt" and alice in e["content"].get(msg, {}).get("m.read", {}) for e in evs)

    await until(hs1, ta, since_a, typing_seen)
    await until(hs2, tb, since_b, receipt_seen)

    # To-device across servers, to a named device and to all of bob's devices.
    r = await hs1.http.put(f"{C}/sendToDevice/m.test/t1", {"messages": {bob: {db: {"n": 1}}}}, token=ta)
    assert r.status == 200
    b = await until(hs2, tb, since_b, lambda b: b["to_device"]["events"])
    assert b["to_device"]["events"] == [{"type": "m.test", "sender": alice, "content": {"n": 1}}]

    # Bob's new device keys: alice's sync on hs1 lists bob as changed, and her query fetches them from hs2.
    since_a = (await hs1.http.get(f"{C}/sync", token=ta)).body["next_batch"]
    assert (await hs2.http.post(f"{C}/keys/upload", {"device_keys": device_keys(bob, db, _key(db))}, token=tb)).status == 200
    b = await until(hs1, ta, since_a, lambda b: bob in b["device_lists"]["changed"])
    r = await hs1.http.post(f"{C}/keys/query", {"device_keys": {bob: []}}, token=ta)
    assert db in r.body["device_keys"][bob]


def test_server_acl_rules() -> None:
    from federation.acl import server_allowed

    acl = {"allow": ["*.gov.example", "127.0.0.*"], "deny": ["bad.gov.example"], "allow_ip_literals": True}
    assert server_allowed("mofa.gov.example", acl) and server_allowed("mofa.gov.example:8448", acl)
    assert not server_allowed("bad.gov.example", acl) and not server_allowed("evil.example", acl)
    assert server_allowed("127.0.0.2:8448", acl)
    assert not server_allowed("127.0.0.2:8448", {**acl, "allow_ip_literals": False})
    assert server_allowed("anything.example", None) and not server_allowed("anything.example", {})


async def test_server_acl_is_enforced_on_federation(federation) -> None:
    from federation.client import FederationError
    import pytest

    hs1: RunningServer = await federation("127.0.0.1")
    hs2: RunningServer = await federation("127.0.0.2")
    hs3: RunningServer = await federation("127.0.0.3")
    alice, ta, _ = await hs1.login_user("alice")
    bob, tb, _ = await hs2.login_user("bob")
    carol, tc, _ = await hs3.login_user("carol")
    name1 = hs1.config.server_name
    room = (await hs1.http.post(f"{C}/createRoom", {"preset": "public_chat", "room_alias_name": "acl"}, token=ta)).body["room_id"]
    assert (await hs2.http.post(f"{C}/join/%23acl:{name1}", {}, token=tb)).status == 200
    r = await hs1.http.put(f"{C}/rooms/{room}/state/m.room.server_acl/", {"allow": ["*"], "deny": ["127.0.0.2", "127.0.0.3"],
                                                                        "allow_ip_literals": True}, token=ta)
    assert r.status == 200, r.body
    await asyncio.sleep(0.3)
    r = await hs2.http.put(f"{C}/rooms/{room}/send/m.room.message/x", {"msgtype": "m.text", "body": "after the ACL"}, token=tb)
    assert r.status == 200  # hs2 stores its own event; hs1 refuses it
    await asyncio.sleep(0.5)
    chunk = (await hs1.http.get(f"{C}/rooms/{room}/messages", token=ta, params={"dir": "b", "limit": "10"})).body["chunk"]
    assert not any(e["content"].get("body") == "after the ACL" for e in chunk)
    r = await hs3.http.post(f"{C}/join/%23acl:{name1}", {}, token=tc)
    assert r.status >= 400
    with pytest.raises(FederationError) as e:
        await hs3.hs.federation.client.get_json(name1, f"/_matrix/federation/v1/make_join/{room}/{carol}", {"ver": ["12"]})
    assert e.value.status == 403


async def test_missing_events_are_fetched_before_a_new_one_is_accepted(federation) -> None:
    hs1: RunningServer = await federation("127.0.0.1")
    hs2: RunningServer = await federation("127.0.0.2")
    alice, ta, _ = await hs1.login_user("alice")
    bob, tb, _ = await hs2.login_user("bob")
    name1 = hs1.config.server_name
    room = (await hs1.http.post(f"{C}/createRoom", {"preset": "public_chat", "room_alias_name": "gap"}, token=ta)).body["room_id"]
    assert (await hs2.http.post(f"{C}/join/%23gap:{name1}", {}, token=tb)).status == 200
    sender = hs2.hs.federation.sender
    real = sender.enqueue

    async def lost(destinations: set[str], pdu: dict[str, Any]) -> None:
        return None  # as if these transactions never reached hs1

    sender.enqueue = lost  # type: ignore[method-assign]
    gap = [(await hs2.http.put(f"{C}/rooms/{room}/send/m.room.message/g{i}", {"msgtype": "m.text", "body": f"lost {i}"},
                               token=tb)).body["event_id"] for i in range(2)]
    sender.enqueue = real  # type: ignore[method-assign]
    last = (await hs2.http.put(f"{C}/rooms/{room}/send/m.room.message/g2", {"msgtype": "m.text", "body": "after the gap"},
                               token=tb)).body["event_id"]
    await _wait_for_text(hs1, ta, room, "after the gap")
    chunk = (await hs1.http.get(f"{C}/rooms/{room}/messages", token=ta, params={"dir": "b", "limit": "5"})).body["chunk"]
    assert [e["event_id"] for e in chunk[:3]] == [last, gap[1], gap[0]]


async def test_knock_across_servers_then_invite_and_join(federation) -> None:
    hs1: RunningServer = await federation("127.0.0.1")
    hs2: RunningServer = await federation("127.0.0.2")
    alice, ta, _ = await hs1.login_user("alice")
    bob, tb, _ = await hs2.login_user("bob")
    name1 = hs1.config.server_name
    room = (await hs1.http.post(f"{C}/createRoom", {"preset": "private_chat", "room_alias_name": "door", "name": "Door",
                                                    "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                                                                       "content": {"join_rule": "knock"}}]}, token=ta)).body["room_id"]
    since_a = (await hs1.http.get(f"{C}/sync", token=ta)).body["next_batch"]
    r = await hs2.http.post(f"{C}/knock/%23door:{name1}", {"reason": "may I?"}, token=tb)
    assert r.status == 200 and r.body == {"room_id": room}, r.body
    knock = (await hs2.http.get(f"{C}/sync", token=tb)).body["rooms"]["knock"][room]["knock_state"]["events"]
    assert {"type": "m.room.name", "state_key": "", "sender": alice, "content": {"name": "Door"}} in knock
    state = (await hs1.http.get(f"{C}/rooms/{room}/state/m.room.member/{bob}", token=ta)).body
    assert state["membership"] == "knock" and state["reason"] == "may I?"
    # Alice lets bob in: an invite over federation, then bob joins.
    assert (await hs1.http.post(f"{C}/rooms/{room}/invite", {"user_id": bob}, token=ta)).status == 200
    body = (await hs2.http.get(f"{C}/sync", token=tb)).body
    assert room in body["rooms"]["invite"] and room not in body["rooms"]["knock"]
    assert (await hs2.http.post(f"{C}/join/{room}", {}, token=tb)).status == 200
    assert set((await hs1.http.get(f"{C}/rooms/{room}/joined_members", token=ta)).body["joined"]) == {alice, bob}
    # A room that does not allow knocking refuses it.
    closed = (await hs1.http.post(f"{C}/createRoom", {"preset": "private_chat", "room_alias_name": "closed"}, token=ta)).body["room_id"]
    r = await hs2.http.post(f"{C}/knock/%23closed:{name1}", {}, token=tb)
    assert r.status >= 400 and closed


async def test_presence_across_servers(federation) -> None:
    hs1: RunningServer = await federation("127.0.0.1")
    hs2: RunningServer = await federation("127.0.0.2")
    alice, ta, _ = await hs1.login_user("alice")
    bob, tb, _ = await hs2.login_user("bob")
    name1 = hs1.config.server_name
    room = (await hs1.http.post(f"{C}/createRoom", {"preset": "public_chat", "room_alias_name": "here"}, token=ta)).body["room_id"]
    assert (await hs2.http.post(f"{C}/join/%23here:{name1}", {}, token=tb)).status == 200 and room
    since = (await hs1.http.get(f"{C}/sync", token=ta)).body["next_batch"]
    r = await hs2.http.put(f"{C}/presence/{bob}/status", {"presence": "unavailable", "status_msg": "in a meeting"}, token=tb)
    assert r.status == 200
    for _ in range(50):
        body = (await hs1.http.get(f"{C}/sync", token=ta, params={"since": since, "timeout": "200"})).body
        mine = [e for e in body["presence"]["events"] if e["sender"] == bob]
        if mine:
            break
        since = body["next_batch"]
    assert mine and mine[-1]["content"]["presence"] == "unavailable" and mine[-1]["content"]["status_msg"] == "in a meeting"
    r = await hs1.http.get(f"{C}/presence/{bob}/status", token=ta)
    assert r.status == 200 and r.body["presence"] == "unavailable"


async def test_an_event_refused_by_the_current_state_is_soft_failed(federation) -> None:
    hs1: RunningServer = await federation("127.0.0.1")
    hs2: RunningServer = await federation("127.0.0.2")
    alice, ta, _ = await hs1.login_user("alice")
    bob, tb, _ = await hs2.login_user("bob")
    name1, name2 = hs1.config.server_name, hs2.config.server_name
    _, tc, _ = await hs2.login_user("carol")  # keeps hs2 in the room after bob's ban
    room = (await hs1.http.post(f"{C}/createRoom", {"preset": "public_chat", "room_alias_name": "soft"}, token=ta)).body["room_id"]
    assert (await hs2.http.post(f"{C}/join/%23soft:{name1}", {}, token=tb)).status == 200
    assert (await hs2.http.post(f"{C}/join/{room}", {}, token=tc)).status == 200
    version = await hs1.hs.storage.events.get_room_version(room)
    head = await hs1.hs.event_creator._head(room)  # noqa: SLF001
    state = await hs1.hs.storage.events.get_current_state_ids(room)
    auth = sorted(state[k] for k in [("m.room.power_levels", ""), ("m.room.member", bob)])
    # Written while bob was still a member...
    ev = sign_event({"room_id": room, "type": "m.room.message", "sender": bob, "content": {"msgtype": "m.text", "body": "late"},
                     "prev_events": head.extremities, "auth_events": auth, "depth": head.depth + 1,
                     "origin_server_ts": hs2.hs.clock.time_ms()}, name2, hs2.hs.federation.local_keys.signing_key, version)
    # ...arriving after he was banned.
    assert (await hs1.http.post(f"{C}/rooms/{room}/ban", {"user_id": bob}, token=ta)).status == 200
    r = await hs2.hs.federation.client.put_json(name1, "/_matrix/federation/v1/send/soft1", {"origin": name2, "pdus": [ev]})
    eid = event_id(ev, version)
    assert r["pdus"][eid] == {}
    stored = await hs1.hs.storage.events.get_event(eid)
    assert stored is not None and stored.soft_failed
    chunk = (await hs1.http.get(f"{C}/rooms/{room}/messages", token=ta, params={"dir": "b", "limit": "20"})).body["chunk"]
    assert eid not in {e["event_id"] for e in chunk}


async def test_messages_backfills_history_from_before_the_join(federation) -> None:
    """A server that joined late pages back through /messages into history it never received: the
    older events come from a peer by /backfill, checked, in order, and the whole history — down to
    the room's creation — is the same on both servers. A redaction made before the join still hides
    the redacted message, and a history that reaches the create event stops asking."""
    hs1: RunningServer = await federation("127.0.0.1")
    hs2: RunningServer = await federation("127.0.0.2")
    alice, ta, _ = await hs1.login_user("alice")
    bob, tb, _ = await hs2.login_user("bob")
    r = await hs1.http.post(f"{C}/createRoom", {"preset": "public_chat", "room_alias_name": "archive",
                                                "initial_state": [{"type": "m.room.history_visibility", "state_key": "",
                                                                   "content": {"history_visibility": "shared"}}]}, token=ta)
    room = r.body["room_id"]
    before = []
    for i in range(30):
        r = await hs1.http.put(f"{C}/rooms/{room}/send/m.room.message/old{i}", {"msgtype": "m.text", "body": f"old {i}"}, token=ta)
        before.append(r.body["event_id"])
    r = await hs1.http.put(f"{C}/rooms/{room}/redact/{before[3]}/r", {}, token=ta)
    assert r.status == 200
    assert (await hs2.http.post(f"{C}/join/%23archive:{hs1.config.server_name}", {}, token=tb)).status == 200

    async def page_all(srv: RunningServer, token: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        params = {"dir": "b", "limit": "7"}
        while True:
            body = (await srv.http.get(f"{C}/rooms/{room}/messages", token=token, params=params)).body
            out += body["chunk"]
            if "end" not in body:
                return out
            params = {"dir": "b", "limit": "7", "from": body["end"]}

    h1 = await page_all(hs1, ta)
    h2 = await page_all(hs2, tb)
    assert [e["event_id"] for e in h2] == [e["event_id"] for e in h1]
    assert h2[-1]["type"] == "m.room.create"
    texts = [e["content"].get("body") for e in reversed(h2) if e["type"] == "m.room.message"]
    assert texts == [None if i == 3 else f"old {i}" for i in range(30)]  # the redacted one has no body
    redacted = next(e for e in h2 if e["event_id"] == before[3])
    assert redacted["content"] == {}
    # Paging forwards from the very start also walks the backfilled events, oldest first.
    first = (await hs2.http.get(f"{C}/rooms/{room}/messages", token=tb, params={"dir": "f", "limit": "3"})).body
    assert first["chunk"][0]["type"] == "m.room.create"
    # Nothing more to fetch: another full walk asks hs1 for nothing.
    calls = []
    original = hs2.hs.federation.client.get_json

    async def counting(dest: str, path: str, *a: Any, **kw: Any) -> Any:
        calls.append(path)
        return await original(dest, path, *a, **kw)

    hs2.hs.federation.client.get_json = counting  # type: ignore[method-assign]
    assert [e["event_id"] for e in await page_all(hs2, tb)] == [e["event_id"] for e in h1]
    assert not [c for c in calls if "/backfill/" in c]


async def test_send_join_with_omit_members_returns_a_reduced_state(federation) -> None:
    """A server able to take a partial state asks for it with omit_members=true: member events are left
    out (except, in a room with no name, the heroes a client needs to name it), nothing in the state is
    repeated in the auth chain, and the join's own auth events are all there."""
    from federation.client import path

    hs1: RunningServer = await federation("127.0.0.1")
    hs2: RunningServer = await federation("127.0.0.2")
    alice, ta, _ = await hs1.login_user("alice")
    name1 = hs1.config.server_name
    for i in range(8):
        await hs1.create_user(f"member{i}")
    for named in (True, False):
        room = (await hs1.http.post(f"{C}/createRoom", {"preset": "public_chat", **({"name": "Big"} if named else {})},
                                    token=ta)).body["room_id"]
        for i in range(8):
            login = await hs1.http.login(f"member{i}", "password123")
            assert (await hs1.http.post(f"{C}/join/{room}", {}, token=login.body["access_token"])).status == 200
        bob = await hs2.create_user(f"bob{int(named)}")
        rooms2 = hs2.hs.federation.rooms
        _, eid, signed = await rooms2._sign_template(name1, "join", room, bob, {})  # noqa: SLF001 - the wire call itself is under test
        resp = await hs2.hs.federation.client.put_json(name1, path("/_matrix/federation/v2/send_join/{}/{}", room, eid), signed,
                                                       {"omit_members": "true"})
        assert resp["members_omitted"] is True
        members = sorted(p["state_key"] for p in resp["state"] if p["type"] == "m.room.member")
        assert members == ([] if named else sorted([alice] + [f"@member{i}:{name1}" for i in range(4)]))
        state_ids = {event_id(p, "12") for p in resp["state"]}
        chain_ids = {event_id(p, "12") for p in resp["auth_chain"]}
        assert not state_ids & chain_ids
        assert set(signed["auth_events"]) <= state_ids | chain_ids
        full = await hs1.http.get(f"{C}/rooms/{room}/joined_members", token=ta)
        assert bob in full.body["joined"]  # the join itself went through
