"""Pushers over HTTP (/pushers, /pushers/set) and delivery to a real push gateway on a loopback socket."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import jsonschema
import pytest
import yaml

from homeserver.services.pushers import gateway_allowed
from tests.push.gateway import PushGateway, eventually
from tests.rooms.helpers import C, create_room, join, send_text
from tests.support.servers import RunningServer
from tests.support.spec_schemas import SPEC_DIR, validate

R0 = "/_matrix/client/r0"
NOTIFY_SPEC = SPEC_DIR.parent / "push-gateway" / "push_notifier.yaml"


@pytest.fixture
async def gateway() -> AsyncIterator[PushGateway]:
    g = await PushGateway().start()
    yield g
    await g.stop()


def pusher_body(url: str, pushkey: str = "pk-alice-phone-0001", **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "http", "app_id": "gov.example.qasid.android", "pushkey": pushkey,
        "app_display_name": "Qasid", "device_display_name": "Alice's phone", "lang": "en",
        "data": {"url": url},
    }
    body.update(over)
    return body


async def set_pusher(server: RunningServer, token: str, body: dict[str, Any]) -> None:
    r = await server.http.post(f"{C}/pushers/set", body, token=token)
    assert r.status == 200 and r.body == {}, r.body


async def get_pushers(server: RunningServer, token: str, prefix: str = C) -> list[dict[str, Any]]:
    r = await server.http.get(f"{prefix}/pushers", token=token)
    assert r.status == 200, r.body
    if SPEC_DIR.is_dir():
        assert validate("GET", f"{prefix}/pushers", 200, r.body)
    return r.body["pushers"]


def check_against_spec(body: dict[str, Any]) -> None:
    """The body a gateway received, against the push gateway API's request schema."""
    if not NOTIFY_SPEC.is_file():
        return
    doc = yaml.safe_load(NOTIFY_SPEC.read_text())
    schema = doc["paths"]["/notify"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)


async def group_room(server: RunningServer, name: str = "Mission Control") -> tuple[tuple[str, str], tuple[str, str], str, str]:
    """alice (who sets pushers) and bob, in a named room with a third member (so rules see a group room)."""
    alice, ta, _ = await server.login_user("alice")
    bob, tb, _ = await server.login_user("bob")
    _, tc, _ = await server.login_user("carol")
    r = await server.http.put(f"{C}/profile/{bob}/displayname", {"displayname": "Major Tom"}, token=tb)
    assert r.status == 200
    room = await create_room(server, ta, preset="public_chat", name=name)
    await join(server, tb, room)
    await join(server, tc, room)
    return (alice, ta), (bob, tb), tc, room


# --- the client API ------------------------------------------------------------------------------


async def test_set_validation_errors(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    url = "https://push.mofa.gov.example/_matrix/push/v1/notify"
    good = pusher_body(url)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"kind": "http", "app_id": "a", "pushkey": "k"}, "M_MISSING_PARAM"),
        ({k: v for k, v in good.items() if k != "lang"}, "M_MISSING_PARAM"),
        ({k: v for k, v in good.items() if k != "data"}, "M_MISSING_PARAM"),
        ({"kind": None, "app_id": "a"}, "M_MISSING_PARAM"),
        ({**good, "data": {}}, "M_MISSING_PARAM"),
        ({**good, "data": {"format": "event_id_only"}}, "M_MISSING_PARAM"),
        ({**good, "kind": "email", "app_id": "m.email", "pushkey": "alice@mofa.gov.example"}, "M_INVALID_PARAM"),
        ({**good, "kind": "carrier-pigeon"}, "M_INVALID_PARAM"),
        ({**good, "data": {"url": "https://push.mofa.gov.example/notify"}}, "M_INVALID_PARAM"),
        ({**good, "data": {"url": "ftp://push.mofa.gov.example/_matrix/push/v1/notify"}}, "M_INVALID_PARAM"),
        ({**good, "data": {"url": "/_matrix/push/v1/notify"}}, "M_INVALID_PARAM"),
        ({**good, "data": {"url": 42}}, "M_INVALID_PARAM"),
        ({**good, "data": "https://push.mofa.gov.example/_matrix/push/v1/notify"}, "M_INVALID_PARAM"),
        ({**good, "app_id": "x" * 65}, "M_INVALID_PARAM"),
        ({**good, "pushkey": "k" * 513}, "M_INVALID_PARAM"),
        ({**good, "lang": 7}, "M_INVALID_PARAM"),
        ({**good, "append": "yes"}, "M_INVALID_PARAM"),
        ({**good, "profile_tag": ["x"]}, "M_INVALID_PARAM"),
    ]
    for body, errcode in cases:
        r = await server.http.post(f"{C}/pushers/set", body, token=ta)
        assert (r.status, r.errcode) == (400, errcode), (body, r.body)
    r = await server.http.post(f"{C}/pushers/set", {"app_id": "a", "pushkey": "k"}, token=ta)
    assert r.body["errcode"] == "M_MISSING_PARAM" and "kind" in r.body["error"]
    r = await server.http.post(f"{C}/pushers/set", raw=b"{not json", token=ta)
    assert (r.status, r.errcode) == (400, "M_NOT_JSON")
    r = await server.http.post(f"{C}/pushers/set", good)
    assert (r.status, r.errcode) == (401, "M_MISSING_TOKEN")
    r = await server.http.get(f"{C}/pushers")
    assert (r.status, r.errcode) == (401, "M_MISSING_TOKEN")
    assert await get_pushers(server, ta) == []  # nothing invalid was stored


async def test_set_get_replace_delete(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    url = "https://push.mofa.gov.example/_matrix/push/v1/notify"
    assert await get_pushers(server, ta) == []
    await set_pusher(server, ta, pusher_body(url, profile_tag="xyz", data={"url": url, "format": "event_id_only", "x": 1}))
    assert await get_pushers(server, ta) == [{
        "pushkey": "pk-alice-phone-0001", "kind": "http", "app_id": "gov.example.qasid.android",
        "app_display_name": "Qasid", "device_display_name": "Alice's phone", "profile_tag": "xyz", "lang": "en",
        "data": {"url": url, "format": "event_id_only", "x": 1},
    }]
    # Same app_id and pushkey: updated in place, not added.
    await set_pusher(server, ta, pusher_body(url, lang="ar", device_display_name="هاتف"))
    (only,) = await get_pushers(server, ta)
    assert (only["lang"], only["device_display_name"], only["data"]) == ("ar", "هاتف", {"url": url})
    assert "profile_tag" not in only
    await set_pusher(server, ta, pusher_body(url, pushkey="pk-alice-tablet"))
    await set_pusher(server, ta, pusher_body(url, app_id="gov.example.qasid.ios"))
    assert len(await get_pushers(server, ta, prefix=R0)) == 3  # the legacy prefix serves it too
    # kind: null deletes exactly one; deleting what is not there is fine.
    r = await server.http.post(f"{R0}/pushers/set", {"kind": None, "app_id": "gov.example.qasid.android",
                                                     "pushkey": "pk-alice-tablet"}, token=ta)
    assert (r.status, r.body) == (200, {})
    assert sorted((p["app_id"], p["pushkey"]) for p in await get_pushers(server, ta)) == [
        ("gov.example.qasid.android", "pk-alice-phone-0001"), ("gov.example.qasid.ios", "pk-alice-phone-0001")]
    r = await server.http.post(f"{C}/pushers/set", {"kind": None, "app_id": "nope", "pushkey": "nope"}, token=ta)
    assert (r.status, r.body) == (200, {})


async def test_append_false_takes_the_pushkey_from_other_users(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    _, tb, _ = await server.login_user("bob")
    url = "https://push.mofa.gov.example/_matrix/push/v1/notify"
    await set_pusher(server, ta, pusher_body(url, pushkey="shared-device"))
    await set_pusher(server, tb, pusher_body(url, pushkey="shared-device", append=True))
    assert len(await get_pushers(server, ta)) == 1 and len(await get_pushers(server, tb)) == 1
    await set_pusher(server, tb, pusher_body(url, pushkey="shared-device"))  # append defaults to false
    assert await get_pushers(server, ta) == []
    assert [p["pushkey"] for p in await get_pushers(server, tb)] == ["shared-device"]


async def test_logging_out_the_device_removes_its_pushers(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    r = await server.http.login("alice", "password123")
    other = r.body["access_token"]
    url = "https://push.mofa.gov.example/_matrix/push/v1/notify"
    await set_pusher(server, ta, pusher_body(url, pushkey="from-first-device"))
    await set_pusher(server, other, pusher_body(url, pushkey="from-second-device"))
    assert (await server.http.post(f"{C}/logout", {}, token=ta)).status == 200
    assert [p["pushkey"] for p in await get_pushers(server, other)] == ["from-second-device"]


# --- delivery ------------------------------------------------------------------------------------


async def test_message_reaches_the_gateway(server: RunningServer, gateway: PushGateway) -> None:
    (alice, ta), (bob, tb), _, room = await group_room(server)
    await set_pusher(server, ta, pusher_body(gateway.url, data={"url": gateway.url, "custom": "kept"}))
    first = await send_text(server, tb, room, "I'm floating in a most peculiar way.")
    n = await gateway.wait_for_event(first)
    check_against_spec({"notification": n})
    assert n["room_id"] == room and n["type"] == "m.room.message" and n["sender"] == bob
    assert n["sender_display_name"] == "Major Tom"
    assert n["room_name"] == "Mission Control"
    assert n["content"] == {"msgtype": "m.text", "body": "I'm floating in a most peculiar way."}
    assert n["prio"] == "low"  # a group-room message: notify without sound
    assert n["counts"] == {"unread": 1}
    (device,) = n["devices"]
    assert device["app_id"] == "gov.example.qasid.android" and device["pushkey"] == "pk-alice-phone-0001"
    assert device["data"] == {"custom": "kept"}  # everything but the url
    assert isinstance(device["pushkey_ts"], int) and device["pushkey_ts"] < 10**11  # seconds, not ms
    assert device["tweaks"] == {}
    second = await send_text(server, tb, room, f"{alice}: are you there?", **{"m.mentions": {"user_ids": [alice]}})
    n = await gateway.wait_for_event(second)
    assert n["counts"] == {"unread": 2}
    assert n["prio"] == "high" and n["devices"][0]["tweaks"].get("highlight") is True
    # Reading the room brings the badge down with the next notification.
    assert (await server.http.post(f"{C}/rooms/{room}/receipt/m.read/{second}", {}, token=ta)).status == 200
    third = await send_text(server, tb, room, "ok, later")
    assert (await gateway.wait_for_event(third))["counts"] == {"unread": 1}


async def test_no_push_for_own_messages(server: RunningServer, gateway: PushGateway) -> None:
    (_, ta), (_, tb), _, room = await group_room(server)
    await set_pusher(server, ta, pusher_body(gateway.url))
    own = await send_text(server, ta, room, "my own words")
    theirs = await send_text(server, tb, room, "a reply")
    await gateway.wait_for_event(theirs)
    # One pusher delivers in stream order, so anything for the earlier event would have come first.
    assert [n["event_id"] for n in gateway.delivered()] == [theirs]
    assert own not in [a.body["notification"].get("event_id") for a in gateway.attempts]


async def test_call_invite_is_high_priority(server: RunningServer, gateway: PushGateway) -> None:
    (_, ta), (_, tb), _, room = await group_room(server)
    await set_pusher(server, ta, pusher_body(gateway.url))
    r = await server.http.put(f"{C}/rooms/{room}/send/m.call.invite/call1", {
        "call_id": "c1", "version": "1", "lifetime": 60000, "party_id": "p1",
        "offer": {"type": "offer", "sdp": "v=0"},
    }, token=tb)
    assert r.status == 200
    n = await gateway.wait_for_event(r.body["event_id"])
    check_against_spec({"notification": n})
    assert n["type"] == "m.call.invite" and n["prio"] == "high"
    assert n["devices"][0]["tweaks"] == {"sound": "ring"}


async def test_event_id_only_format(server: RunningServer, gateway: PushGateway) -> None:
    (_, ta), (_, tb), _, room = await group_room(server, name="Budget 2026")
    await set_pusher(server, ta, pusher_body(gateway.url, data={"url": gateway.url, "format": "event_id_only"}))
    eid = await send_text(server, tb, room, "classified figures")
    n = await gateway.wait_for_event(eid)
    check_against_spec({"notification": n})
    assert set(n) == {"event_id", "room_id", "counts", "devices", "prio"}
    assert n["room_id"] == room and n["counts"] == {"unread": 1}
    assert n["devices"][0]["data"] == {"format": "event_id_only"}
    raw = str(gateway.attempts)
    assert "classified" not in raw and "Budget" not in raw and "Major Tom" not in raw


async def test_include_content_off(make_server: Any, gateway: PushGateway) -> None:
    server = await make_server(push={"include_content": False, "gateway_allowlist": ["127.0.0.1"]})
    (_, ta), (bob, tb), _, room = await group_room(server)
    await set_pusher(server, ta, pusher_body(gateway.url))
    eid = await send_text(server, tb, room, "not for the phone vendors")
    n = await gateway.wait_for_event(eid)
    assert "content" not in n and n["sender"] == bob and n["type"] == "m.room.message"
    assert "phone vendors" not in str(gateway.attempts)


async def test_gateway_failure_is_retried(server: RunningServer, gateway: PushGateway) -> None:
    (_, ta), (_, tb), _, room = await group_room(server)
    await set_pusher(server, ta, pusher_body(gateway.url))
    gateway.script = [(500, {"errcode": "M_UNKNOWN"}), (503, {})]
    eid = await send_text(server, tb, room, "please arrive")
    n = await gateway.wait_for_event(eid)
    assert [(a.notification["event_id"], a.status) for a in gateway.attempts] == [(eid, 500), (eid, 503), (eid, 200)]
    assert n["content"]["body"] == "please arrive"
    later = await send_text(server, tb, room, "and the next one")
    await gateway.wait_for_event(later)  # the pusher goes on after recovering
    assert [n["event_id"] for n in gateway.delivered()] == [eid, later]


async def test_rejected_pushkey_removes_the_pusher(server: RunningServer, gateway: PushGateway) -> None:
    (_, ta), (_, tb), _, room = await group_room(server)
    await set_pusher(server, ta, pusher_body(gateway.url, pushkey="expired-token"))
    await set_pusher(server, ta, pusher_body(gateway.url, pushkey="good-token"))
    gateway.script = [(200, {"rejected": ["expired-token"]})] * 2
    eid = await send_text(server, tb, room, "hello")
    await gateway.wait_for(lambda g: any(a.notification["devices"][0]["pushkey"] == "expired-token" for a in g.attempts),
                           "the expired pushkey")

    async def removed() -> bool:
        return [p["pushkey"] for p in await get_pushers(server, ta)] == ["good-token"]

    await eventually(removed, "the rejected pusher removed")
    await gateway.wait_for_event(eid, pushkey="good-token")


# --- the gateway allowlist (data residency) ------------------------------------------------------


def test_gateway_allowlist_matching() -> None:
    allow = ["push.mofa.gov.example", "*.moe.gov.example", "sygnal.local:8443", "[::1]:5000", "10.0.0.7"]
    ok = ["https://push.mofa.gov.example/_matrix/push/v1/notify", "https://PUSH.mofa.gov.example./_matrix/push/v1/notify",
          "https://a.b.moe.gov.example/_matrix/push/v1/notify", "https://sygnal.local:8443/_matrix/push/v1/notify",
          "http://[::1]:5000/_matrix/push/v1/notify", "http://10.0.0.7:9000/_matrix/push/v1/notify"]
    refused = ["https://matrix.org/_matrix/push/v1/notify", "https://moe.gov.example/_matrix/push/v1/notify",
               "https://push.mofa.gov.example.evil.example/_matrix/push/v1/notify", "https://evilmoe.gov.example/_matrix/push/v1/notify",
               "https://sygnal.local/_matrix/push/v1/notify", "https://sygnal.local:8444/_matrix/push/v1/notify",
               "http://[::1]:5001/_matrix/push/v1/notify", "http://127.0.0.1/_matrix/push/v1/notify", "not a url"]
    for url in ok:
        assert gateway_allowed(url, allow), url
    for url in refused:
        assert not gateway_allowed(url, allow), url
    assert not gateway_allowed("https://push.mofa.gov.example/_matrix/push/v1/notify", [])


async def test_default_config_refuses_every_gateway(make_server: Any, gateway: PushGateway) -> None:
    server = await make_server()
    (_, ta), (_, tb), _, room = await group_room(server)
    r = await server.http.post(f"{C}/pushers/set", pusher_body(gateway.url), token=ta)
    assert r.status == 403 and r.body["errcode"] == "M_FORBIDDEN", r.body
    assert await get_pushers(server, ta) == []
    await send_text(server, tb, room, "nobody is told")
    await asyncio.sleep(0.5)
    assert gateway.attempts == []


async def test_gateway_dropped_from_allowlist_gets_nothing(make_server: Any, gateway: PushGateway) -> None:
    """A pusher set while its gateway was allowed gets nothing once the operator removes the gateway."""
    server = await make_server(push={"gateway_allowlist": ["127.0.0.1"]})
    (_, ta), (_, tb), _, room = await group_room(server)
    await set_pusher(server, ta, pusher_body(gateway.url))
    first = await send_text(server, tb, room, "before")
    await gateway.wait_for_event(first)
    server.hs.pushers.gateway_allowlist = ["push.mofa.gov.example"]
    await send_text(server, tb, room, "after")
    await asyncio.sleep(1.0)
    assert [a.notification.get("event_id") for a in gateway.attempts] == [first]
