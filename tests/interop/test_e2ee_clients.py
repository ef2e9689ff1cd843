"""Encrypted rooms across client implementations, over real HTTP against Qasid:
our own ``e2ee`` library with matrix-nio (both ways), and matrix-js-sdk's Rust crypto with matrix-nio."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import nio

from e2ee import CryptoStore, OlmMachine
from tests.interop.jsdk import JsProcess
from tests.interop.test_nio_e2ee import PASSWORD, Device
from tests.support.servers import RunningServer

C = "/_matrix/client/v3"
ENCRYPTION = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}


class E2eeBot:
    """A minimal client on our ``e2ee`` OlmMachine: the HTTP calls a bot or the e-Office bridge makes."""

    def __init__(self, server: RunningServer, user_id: str, token: str, device_id: str, store: Path) -> None:
        self.server, self.user_id, self.token, self.device_id = server, user_id, token, device_id
        self.machine = OlmMachine(user_id, device_id, CryptoStore(str(store)), secrets.token_bytes(32))
        self.since: str | None = None
        self.decrypted: dict[str, str] = {}

    async def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        r = await self.server.http.request(method, C + path, body, token=self.token)
        assert r.status == 200, (path, r.body)
        return r.body

    async def upload_keys(self, counts: dict[str, int] | None = None, fallback: list[str] | None = None) -> None:
        body = self.machine.keys_for_upload(counts or {}, fallback)
        if body:
            await self.call("POST", "/keys/upload", body)
            self.machine.mark_keys_as_published()

    async def sync(self) -> None:
        params = {"timeout": "0", **({"since": self.since} if self.since else {})}
        r = await self.server.http.get(f"{C}/sync", token=self.token, params=params)
        assert r.status == 200, r.body
        body = r.body
        self.since = body["next_batch"]
        self.machine.receive_device_list_changes(body["device_lists"].get("changed", []), body["device_lists"].get("left", []))
        for ev in body["to_device"]["events"]:
            if ev["type"] == "m.room.encrypted":
                self.machine.decrypt_to_device(ev)
        for room_id, room in body["rooms"]["join"].items():
            for ev in room["timeline"]["events"]:
                if ev["type"] == "m.room.encrypted":
                    ev = {**ev, "room_id": room_id}
                    dec = self.machine.decrypt_room_event(ev)
                    self.decrypted[ev["event_id"]] = dec.event["content"].get("body")
        await self.upload_keys(body["device_one_time_keys_count"], body.get("device_unused_fallback_key_types"))

    async def send_encrypted(self, room_id: str, text: str) -> str:
        members = (await self.call("GET", f"/rooms/{room_id}/joined_members"))["joined"]
        query = self.machine.keys_query_request(list(members))
        if query:
            self.machine.receive_keys_query(await self.call("POST", "/keys/query", query))
        claim = self.machine.claim_request({u: None for u in members})
        if claim:
            self.machine.create_olm_sessions(await self.call("POST", "/keys/claim", claim))
        share = self.machine.share_room_key(room_id, {u: None for u in members})
        if share.messages:
            await self.call("PUT", f"/sendToDevice/{share.event_type}/{share.txn_id}", share.body())
        content = self.machine.encrypt_room_event(room_id, "m.room.message", {"msgtype": "m.text", "body": text})
        return (await self.call("PUT", f"/rooms/{room_id}/send/m.room.encrypted/{secrets.token_hex(8)}", content))["event_id"]


async def test_e2ee_library_and_nio_talk_both_ways(server: RunningServer, tmp_path: Path) -> None:
    alice, ta, da = await server.login_user("alice", PASSWORD)
    bob_id = await server.create_user("bob", PASSWORD)
    bot = E2eeBot(server, alice, ta, da, tmp_path / "bot.sqlite")
    bob = Device(server, bob_id, tmp_path / "bob")
    try:
        await bot.upload_keys()
        await bob.login("nio")
        room = (await bot.call("POST", "/createRoom", {"invite": [bob_id], "initial_state": [ENCRYPTION]}))["room_id"]
        await bob.sync()
        assert isinstance(await bob.client.join(room), nio.JoinResponse)
        await bob.sync()
        await bot.sync()

        ours = await bot.send_encrypted(room, "from the e2ee library")
        await bob.sync()
        assert bob.decrypted.get(ours) == "from the e2ee library", bob.undecryptable

        theirs = await bob.send(room, "from matrix-nio")
        await bot.sync()
        assert bot.decrypted.get(theirs) == "from matrix-nio"
    finally:
        await bob.close()


async def test_js_sdk_rust_crypto_decrypts_nio(server: RunningServer, tmp_path: Path) -> None:
    alice_id = await server.create_user("alice", PASSWORD)
    bob_id = await server.create_user("bob", PASSWORD)
    bob = Device(server, bob_id, tmp_path / "bob")
    js: JsProcess | None = None
    try:
        await bob.login("nio")
        created = await bob.client.room_create(name="js and nio", invite=[alice_id], initial_state=[ENCRYPTION])
        assert isinstance(created, nio.RoomCreateResponse), created
        room = created.room_id
        js = await JsProcess.start("e2ee.mjs", {"baseUrl": server.base_url, "user": "alice", "password": PASSWORD,
                                                 "roomId": room, "peer": bob_id})
        ready = await js.next_json()
        assert ready["ready"] is True
        for _ in range(3):
            await bob.sync()
        assert ready["device_id"] in bob.client.device_store[alice_id]
        sent = await bob.send(room, "from nio to js")
        result = await js.next_json()
        assert result["uploaded_keys"] == sorted([f"curve25519:{ready['device_id']}", f"ed25519:{ready['device_id']}"])
        assert result["peer_devices"] == [bob.client.device_id]
        assert result["decrypted_body"] == "from nio to js" and result["wire_type"] == "m.room.encrypted"
        assert result["reply_sent_encrypted"] is True
        # And nio decrypts the js-sdk's reply.
        for _ in range(10):
            await bob.sync()
            if "reply from js-sdk, encrypted" in bob.decrypted.values():
                break
            await asyncio.sleep(0.2)
        assert "reply from js-sdk, encrypted" in bob.decrypted.values(), bob.undecryptable
        assert sent
    finally:
        if js is not None:
            await js.close()
        await bob.close()
