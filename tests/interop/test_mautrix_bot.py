"""A real appservice framework against Qasid: a small bot on mautrix-python (the library most Matrix
bridges are built on), registered with Qasid, receives room events through transactions and answers
through its intent API; it also creates a puppet in its namespace and speaks as it."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import yaml
from mautrix.appservice import AppService
from mautrix.appservice.state_store.file import FileASStateStore
from mautrix.types import EventType, Membership, MessageEvent

C = "/_matrix/client/v3"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_mautrix_bot_receives_and_answers(make_server: Any, tmp_path: Path) -> None:
    port = _free_port()
    reg = {"id": "pingbot", "url": f"http://127.0.0.1:{port}", "as_token": "mautrix-as-token", "hs_token": "mautrix-hs-token",
           "sender_localpart": "pingbot", "rate_limited": False,
           "namespaces": {"users": [{"exclusive": True, "regex": "@pingbot_.*:.*"}], "aliases": [], "rooms": []}}
    (tmp_path / "pingbot.yaml").write_text(yaml.safe_dump(reg))
    server = await make_server(app_service_config_files=[str(tmp_path / "pingbot.yaml")])
    name = server.config.server_name
    bot = AppService(server=server.base_url, domain=name, as_token=reg["as_token"], hs_token=reg["hs_token"],
                     bot_localpart="pingbot", id="pingbot", state_store=FileASStateStore(str(tmp_path / "mx-state.json"), binary=False))
    seen: list[str] = []

    @bot.matrix_event_handler
    async def on_event(evt: Any) -> None:
        if evt.type == EventType.ROOM_MEMBER and evt.state_key == bot.bot_mxid and evt.content.membership == Membership.INVITE:
            await bot.intent.join_room(evt.room_id)
        elif evt.type == EventType.ROOM_MESSAGE and isinstance(evt, MessageEvent) and evt.sender != bot.bot_mxid:
            seen.append(evt.content.body)
            if evt.content.body == "!ping":
                await bot.intent.send_text(evt.room_id, "pong")
                puppet = bot.intent.user(f"@pingbot_officer1:{name}")
                await puppet.ensure_registered()
                await bot.intent.invite_user(evt.room_id, puppet.mxid)
                await puppet.join_room(evt.room_id)
                await puppet.send_text(evt.room_id, "noted, from the puppet")

    await bot.start(host="127.0.0.1", port=port)
    try:
        _, token, _ = await server.login_user("alice")
        room = (await server.http.post(f"{C}/createRoom", {"invite": [f"@pingbot:{name}"]}, token=token)).body["room_id"]
        for _ in range(100):
            members = (await server.http.get(f"{C}/rooms/{room}/joined_members", token=token)).body.get("joined", {})
            if f"@pingbot:{name}" in members:
                break
            await asyncio.sleep(0.05)
        assert f"@pingbot:{name}" in members
        await server.http.put(f"{C}/rooms/{room}/send/m.room.message/1", {"msgtype": "m.text", "body": "!ping"}, token=token)
        for _ in range(200):
            chunk = (await server.http.get(f"{C}/rooms/{room}/messages", token=token, params={"dir": "b", "limit": "20"})).body["chunk"]
            texts = {(e["sender"], e["content"].get("body")) for e in chunk if e["type"] == "m.room.message"}
            if (f"@pingbot_officer1:{name}", "noted, from the puppet") in texts:
                break
            await asyncio.sleep(0.05)
        assert (f"@pingbot:{name}", "pong") in texts
        assert (f"@pingbot_officer1:{name}", "noted, from the puppet") in texts
        assert seen[0] == "!ping"
        # The puppet name is the appservice's alone.
        r = await server.http.get(f"{C}/register/available", params={"username": "pingbot_someone"})
        assert r.status == 400 and r.errcode == "M_EXCLUSIVE"
    finally:
        await bot.stop()
