"""Recipients with the server's default push rules share one evaluation per event, except where a
default rule looks at who the recipient is. This checks that shortcut against full evaluation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from homeserver.services.push_rules import USER_SPECIFIC_DEFAULTS, EvalContext, default_rules, evaluate

ROOM = "!r:hs1.test"
ME = "@zqxme:hs1.test"


def test_only_the_listed_default_rules_name_the_recipient() -> None:
    rules = default_rules(ME)
    for kind, items in rules.items():
        for rule in items:
            text = json.dumps(rule)
            names_me = "zqxme" in text or any(c.get("kind") == "contains_display_name" for c in rule.get("conditions", []))
            assert names_me == (rule["rule_id"] in USER_SPECIFIC_DEFAULTS), rule["rule_id"]
    assert rules["content"] == []  # a content rule (the user's name in the body) would be recipient-specific too


EVENTS: list[dict[str, Any]] = [
    {"type": "m.room.message", "sender": "@a:hs1.test", "content": {"msgtype": "m.text", "body": "hello zqxme"}},
    {"type": "m.room.message", "sender": "@a:hs1.test", "content": {"msgtype": "m.notice", "body": "bot"}},
    {"type": "m.room.message", "sender": "@a:hs1.test", "content": {"msgtype": "m.text", "body": "hi", "m.mentions": {"user_ids": ["@other:hs1.test"]}}},
    {"type": "m.room.message", "sender": "@a:hs1.test", "content": {"msgtype": "m.text", "body": "all", "m.mentions": {"room": True}}},
    {"type": "m.room.encrypted", "sender": "@a:hs1.test", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
    {"type": "m.call.invite", "sender": "@a:hs1.test", "content": {"call_id": "1"}},
    {"type": "m.reaction", "sender": "@a:hs1.test", "content": {}},
    {"type": "m.room.tombstone", "state_key": "", "sender": "@a:hs1.test", "content": {}},
    {"type": "m.room.message", "sender": "@a:hs1.test", "content": {"msgtype": "m.text", "body": "* edit",
                                                                  "m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}}},
]


@pytest.mark.parametrize("members", [2, 3, 20])
@pytest.mark.parametrize("power", [0, 50, 100])
@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e["type"] + ":" + json.dumps(e["content"])[:30])
def test_shared_outcome_equals_each_recipients_own(event: dict[str, Any], members: int, power: int) -> None:
    ctx = EvalContext(member_count=members, sender_power=power, notification_levels={"room": 50})
    ev = {**event, "room_id": ROOM}
    shared = evaluate(default_rules("@first:hs1.test"), ev, ctx, {}, skip=USER_SPECIFIC_DEFAULTS)
    for user in ("@zqxme:hs1.test", "@b:hs1.test", "@other2:hs1.test"):
        assert evaluate(default_rules(user), ev, ctx) == shared, user
