"""Push rules over HTTP (defaults, CRUD with ordering, enable/actions, m.push_rules in sync) and evaluation."""

from __future__ import annotations

from homeserver.services.push_rules import EvalContext, default_rules, evaluate, notifies
from tests.rooms.helpers import C, sync
from tests.support.servers import RunningServer


async def test_defaults_served(server: RunningServer) -> None:
    alice, ta, _ = await server.login_user("alice")
    for path in ("/pushrules/", "/pushrules"):
        r = await server.http.get(C + path, token=ta)
        assert r.status == 200
    rules = r.body["global"]
    assert [x["rule_id"] for x in rules["override"]][:2] == [".m.rule.master", ".m.rule.suppress_notices"]
    assert rules["override"][0]["enabled"] is False
    invite = next(x for x in rules["override"] if x["rule_id"] == ".m.rule.invite_for_me")
    assert {"kind": "event_match", "key": "state_key", "pattern": alice} in invite["conditions"]
    assert [x["rule_id"] for x in rules["underride"]] == [
        ".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one", ".m.rule.message", ".m.rule.encrypted"]
    assert rules["content"] == [] and rules["room"] == [] and rules["sender"] == []
    body = await sync(server, ta)
    pushed = [e for e in body["account_data"]["events"] if e["type"] == "m.push_rules"]
    assert pushed and pushed[0]["content"]["global"] == rules


async def test_user_rules_ordering_and_changes(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    since = (await sync(server, ta))["next_batch"]
    base = f"{C}/pushrules/global"
    assert (await server.http.put(f"{base}/override/first", {"actions": ["notify"], "conditions": []}, token=ta)).status == 200
    assert (await server.http.put(f"{base}/override/second", {"actions": []}, token=ta)).status == 200  # new rules go on top
    assert (await server.http.put(f"{base}/override/third", {"actions": []}, token=ta, params={"after": "first"})).status == 200
    rules = (await server.http.get(f"{base}/", token=ta)).body
    assert [x["rule_id"] for x in rules["override"]][:4] == [".m.rule.master", "second", "first", "third"]
    assert (await server.http.put(f"{base}/room/!r:hs1.test", {"actions": ["dont_notify"]}, token=ta)).status == 200
    room_rule = (await server.http.get(f"{base}/room/!r:hs1.test", token=ta)).body
    assert room_rule["actions"] == [] and room_rule["default"] is False  # dont_notify stripped
    assert (await server.http.put(f"{base}/content/lunch", {"actions": ["notify"], "pattern": "lunch"}, token=ta)).status == 200
    assert (await server.http.put(f"{base}/override/.m.rule.master/enabled", {"enabled": True}, token=ta)).status == 200
    assert (await server.http.get(f"{base}/override/.m.rule.master/enabled", token=ta)).body == {"enabled": True}
    assert (await server.http.put(f"{base}/underride/.m.rule.message/actions", {"actions": []}, token=ta)).status == 200
    assert (await server.http.get(f"{base}/underride/.m.rule.message/actions", token=ta)).body == {"actions": []}
    assert (await server.http.put(f"{base}/override/first/actions", {"actions": []}, token=ta)).status == 200
    assert (await server.http.get(f"{base}/override/first", token=ta)).body["actions"] == []
    assert (await server.http.delete(f"{base}/override/second", token=ta)).status == 200
    assert (await server.http.get(f"{base}/override/second", token=ta)).status == 404
    body = await sync(server, ta, since=since)
    pushed = [e for e in body["account_data"]["events"] if e["type"] == "m.push_rules"][0]["content"]["global"]
    assert pushed["override"][0] == {**pushed["override"][0], "rule_id": ".m.rule.master", "enabled": True}
    assert [x["rule_id"] for x in pushed["content"]] == ["lunch"]
    cases = [
        ("PUT", f"{base}/override/.mine", {"actions": []}, None, 400),
        ("PUT", f"{base}/bogus/x", {"actions": []}, None, 400),
        ("PUT", f"{base}/override/x", {"actions": ["fly"]}, None, 400),
        ("PUT", f"{base}/override/x", {"actions": "notify"}, None, 400),
        ("PUT", f"{base}/content/x", {"actions": []}, None, 400),
        ("PUT", f"{base}/room/not-a-room", {"actions": []}, None, 400),
        ("PUT", f"{base}/override/x", {"actions": []}, {"before": "nope"}, 404),
        ("PUT", f"{base}/override/x", {"actions": []}, {"before": ".m.rule.master"}, 400),
        ("DELETE", f"{base}/override/.m.rule.master", None, None, 400),
        ("DELETE", f"{base}/override/nope", None, None, 404),
        ("GET", f"{base}/override/nope", None, None, 404),
        ("PUT", f"{base}/override/first/enabled", {"enabled": "yes"}, None, 400),
        ("PUT", f"{base}/override/first/enabled", {}, None, 400),
        ("GET", f"{C}/pushrules/device/", None, None, 400),
    ]
    for method, path, body_, params, status in cases:
        r = await server.http.request(method, path, body_, token=ta, params=params)
        assert r.status == status and r.errcode, (method, path, r.body)
    assert (await server.http.get(f"{C}/pushrules/")).status == 401


def _ctx(**kw) -> EvalContext:
    return EvalContext(**{"member_count": 5, "sender_power": 0, "notification_levels": {}, **kw})


def test_evaluation_follows_the_spec() -> None:
    me = "@alice:hs1.test"
    rules = default_rules(me)
    msg = {"type": "m.room.message", "room_id": "!r:x", "sender": "@bob:x", "content": {"msgtype": "m.text", "body": "hi"}}
    assert notifies(evaluate(rules, msg, _ctx())) == (True, False)
    assert notifies(evaluate(rules, msg, _ctx(member_count=2)))[0]
    assert evaluate(rules, msg, _ctx(member_count=2)) == ["notify", {"set_tweak": "sound", "value": "default"}]
    notice = {**msg, "content": {"msgtype": "m.notice", "body": "bot"}}
    assert evaluate(rules, notice, _ctx()) == []
    mention = {**msg, "content": {"body": "hey", "m.mentions": {"user_ids": [me]}}}
    assert notifies(evaluate(rules, mention, _ctx())) == (True, True)
    room_mention = {**msg, "content": {"body": "@room", "m.mentions": {"room": True}}}
    assert notifies(evaluate(rules, room_mention, _ctx(sender_power=0))) == (True, False)  # falls to .m.rule.message
    assert notifies(evaluate(rules, room_mention, _ctx(sender_power=50))) == (True, True)
    edit = {**msg, "content": {"body": "* x", "m.relates_to": {"rel_type": "m.replace", "event_id": "$e"}}}
    assert evaluate(rules, edit, _ctx()) == []
    invite = {"type": "m.room.member", "state_key": me, "sender": "@bob:x", "content": {"membership": "invite"}}
    assert notifies(evaluate(rules, invite, _ctx()))[0]
    other_invite = {**invite, "state_key": "@carol:x"}
    assert evaluate(rules, other_invite, _ctx()) == []
    call = {"type": "m.call.invite", "sender": "@bob:x", "content": {}}
    assert evaluate(rules, call, _ctx()) == ["notify", {"set_tweak": "sound", "value": "ring"}]
    tomb = {"type": "m.room.tombstone", "state_key": "", "sender": "@bob:x", "content": {}}
    assert notifies(evaluate(rules, tomb, _ctx())) == (True, True)
    assert evaluate(rules, {"type": "m.reaction", "sender": "@b:x", "content": {}}, _ctx()) == []
    rules["override"][0]["enabled"] = True  # master rule silences everything
    assert evaluate(rules, mention, _ctx()) == []


def test_event_match_semantics() -> None:
    rules = {"override": [{"rule_id": "t", "enabled": True, "actions": ["notify"],
                           "conditions": [{"kind": "event_match", "key": "content.topic", "pattern": "lunc?*"}]}],
             "content": [{"rule_id": "w", "enabled": True, "actions": ["notify", {"set_tweak": "highlight"}], "pattern": "ex*ple"}]}
    topic = lambda t: {"type": "m.room.topic", "content": {"topic": t}}  # noqa: E731
    assert evaluate(rules, topic("Lunch plans"), _ctx()) == ["notify"]
    assert evaluate(rules, topic("LUNCH"), _ctx()) == ["notify"]
    for miss in (" lunch", "lunc", None):
        assert evaluate(rules, topic(miss), _ctx()) == []
    body = lambda b: {"type": "m.room.message", "content": {"body": b}}  # noqa: E731
    for hit in ("An example event.", "exple", "An exciting triple-whammy"):
        assert notifies(evaluate(rules, body(hit), _ctx()))[1], hit
    assert evaluate(rules, body("counterexamples"), _ctx()) == []
    dotted = {"override": [{"rule_id": "d", "enabled": True, "actions": ["notify"],
                            "conditions": [{"kind": "event_property_is", "key": "content.m\\.flag", "value": 1}]}]}
    assert evaluate(dotted, {"content": {"m.flag": 1}}, _ctx()) == ["notify"]
    assert evaluate(dotted, {"content": {"m.flag": True}}, _ctx()) == []  # exact type match
    unknown = {"override": [{"rule_id": "u", "enabled": True, "actions": ["notify"], "conditions": [{"kind": "mystery"}]}]}
    assert evaluate(unknown, {"content": {}}, _ctx()) == []
