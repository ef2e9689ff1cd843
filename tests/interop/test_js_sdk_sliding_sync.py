"""matrix-js-sdk's sliding sync (MSC4186, the protocol Element X speaks) against Qasid."""

from __future__ import annotations

from tests.interop.jsdk import run_js
from tests.support.servers import RunningServer


async def test_js_sdk_on_sliding_sync(server: RunningServer) -> None:
    await server.create_user("alice", "long-enough-pw")
    await server.create_user("bob", "long-enough-pw")
    out = await run_js("sliding.mjs", {
        "baseUrl": server.base_url,
        "alice": {"user": "alice", "password": "long-enough-pw"},
        "bob": {"user": "bob", "password": "long-enough-pw"},
    }, timeout=180)
    assert "errors" not in out, out
    assert out["count"] == 3
    assert out["window_rooms"] == ["Planning", "Budget"]  # the two with the newest activity
    assert out["oldest_in_window_at_start"] is False
    assert out["history_seen"] == ["first words in Planning"]
    assert out["old_room_name"] == "Old news"
    assert out["invite_name"] == "Fresh"
    assert out["conversation"] == ["welcome", "thanks"]
    assert out["typing_seen"] and out["receipt_seen"]
