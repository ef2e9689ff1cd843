"""matrix-js-sdk (the SDK Element is built on) chatting through Qasid: the step-3 client flow."""

from __future__ import annotations

from tests.interop.jsdk import run_js
from tests.support.servers import RunningServer


async def test_js_sdk_chat_flow(server: RunningServer) -> None:
    await server.create_user("alice", "long-enough-pw")
    await server.create_user("bob", "long-enough-pw")
    out = await run_js("chat.mjs", {
        "baseUrl": server.base_url,
        "alice": {"user": "alice", "password": "long-enough-pw"},
        "bob": {"user": "bob", "password": "long-enough-pw"},
    }, timeout=180)
    assert out["room_name_seen_by_bob"] == "Interop room"
    assert out["edited_body_seen_by_bob"] == "hello, edited"
    assert out["redacted"] and out["typing_seen"] and out["receipt_seen"]
    assert out["history_after_pagination"] == 30 and out["first_message_reached"]
    assert out["after_restart"] == ["after restart"]
