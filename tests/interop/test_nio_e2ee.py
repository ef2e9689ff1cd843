"""matrix-nio with its Olm/Megolm machine against a running Qasid: two users with two devices each in an
encrypted room; every device decrypts every message; a device added later gets keys for new messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nio

from tests.support.servers import RunningServer

PASSWORD = "long-enough-pw"


class Device:
    """One nio client (one device) that remembers every message it could and could not decrypt."""

    def __init__(self, server: RunningServer, user_id: str, store: Path, ssl: Any = None) -> None:
        store.mkdir(parents=True, exist_ok=True)
        config = nio.AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
        self.client = nio.AsyncClient(server.base_url, user_id, store_path=str(store), config=config, ssl=ssl)
        self.decrypted: dict[str, str] = {}
        self.undecryptable: list[str] = []
        self.client.add_event_callback(self._on_text, nio.RoomMessageText)
        self.client.add_event_callback(self._on_megolm, nio.MegolmEvent)

    async def _on_text(self, room: nio.MatrixRoom, event: nio.RoomMessageText) -> None:
        if event.decrypted:
            self.decrypted[event.event_id] = event.body

    async def _on_megolm(self, room: nio.MatrixRoom, event: nio.MegolmEvent) -> None:
        self.undecryptable.append(event.event_id)

    async def login(self, name: str) -> None:
        resp = await self.client.login(PASSWORD, device_name=name)
        assert isinstance(resp, nio.LoginResponse), resp
        if self.client.should_upload_keys:
            assert isinstance(await self.client.keys_upload(), nio.KeysUploadResponse)

    async def sync(self) -> None:
        resp = await self.client.sync(timeout=0)
        assert isinstance(resp, nio.SyncResponse), resp
        if self.client.should_upload_keys:
            assert isinstance(await self.client.keys_upload(), nio.KeysUploadResponse)
        if self.client.should_query_keys:
            assert isinstance(await self.client.keys_query(), nio.KeysQueryResponse)

    async def send(self, room_id: str, text: str) -> str:
        await self.sync()
        resp = await self.client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": text},
                                           ignore_unverified_devices=True)
        assert isinstance(resp, nio.RoomSendResponse), resp
        return resp.event_id

    async def close(self) -> None:
        await self.client.close()


async def sync_all(devices: list[Device], rounds: int = 3) -> None:
    for _ in range(rounds):
        for d in devices:
            await d.sync()


async def test_two_users_two_devices_each_decrypt_everything(server: RunningServer, tmp_path: Path) -> None:
    alice = await server.create_user("alice", PASSWORD)
    bob = await server.create_user("bob", PASSWORD)
    a1, a2 = Device(server, alice, tmp_path / "a1"), Device(server, alice, tmp_path / "a2")
    b1, b2 = Device(server, bob, tmp_path / "b1"), Device(server, bob, tmp_path / "b2")
    devices = [a1, a2, b1, b2]
    late: Device | None = None
    try:
        for i, d in enumerate(devices):
            await d.login(f"device {i}")
        created = await a1.client.room_create(
            name="Cabinet note", invite=[bob],
            initial_state=[{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
        )
        assert isinstance(created, nio.RoomCreateResponse), created
        room = created.room_id
        await b1.sync()
        assert isinstance(await b1.client.join(room), nio.JoinResponse)
        await sync_all(devices)
        assert all(d.client.rooms[room].encrypted for d in devices)

        sent: dict[str, str] = {}
        for i, d in enumerate(devices):
            text = f"secret {i} from {d.client.user_id}/{d.client.device_id}"
            sent[await d.send(room, text)] = text
        await sync_all(devices)
        for d in devices:
            others = {eid: t for eid, t in sent.items() if not t.endswith(f"/{d.client.device_id}")}
            assert {eid: d.decrypted.get(eid) for eid in others} == others, (d.client.device_id, d.undecryptable)
        # The server only ever saw ciphertext.
        r = await server.http.get(f"/_matrix/client/v3/rooms/{room}/messages", token=b1.client.access_token,
                                  params={"dir": "b", "limit": "20"})
        bodies = [e for e in r.body["chunk"] if e["type"] == "m.room.message"]
        assert bodies == [] and sum(e["type"] == "m.room.encrypted" for e in r.body["chunk"]) == 4

        # A device added later: alice's third device gets keys for messages sent after it appeared.
        late = Device(server, alice, tmp_path / "a3")
        await late.login("late device")
        await sync_all(devices + [late])
        new_id = await b2.send(room, "after the new device")
        await sync_all(devices + [late])
        assert late.decrypted.get(new_id) == "after the new device", late.undecryptable
        assert a1.decrypted.get(new_id) == "after the new device"
    finally:
        for d in devices + ([late] if late else []):
            await d.close()


async def test_keys_backed_up_and_restored_on_a_fresh_device(server: RunningServer, tmp_path: Path) -> None:
    """matrix-nio has no key-backup support of its own, so the test does the client's part (as Element
    would) with vodozemac's PkEncryption and the standard export format, over the real backup API."""
    import json

    import vodozemac

    from e2ee.export import decrypt_key_export, encrypt_key_export

    alice = await server.create_user("alice", PASSWORD)
    bob = await server.create_user("bob", PASSWORD)
    a1, b1 = Device(server, alice, tmp_path / "a1"), Device(server, bob, tmp_path / "b1")
    fresh: Device | None = None
    try:
        await a1.login("first device")
        await b1.login("bob")
        created = await a1.client.room_create(invite=[bob], initial_state=[
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
        room = created.room_id
        await b1.sync()
        await b1.client.join(room)
        await sync_all([a1, b1])
        old = {await b1.send(room, f"old message {i}"): f"old message {i}" for i in range(3)}
        await sync_all([a1, b1])
        assert {e: a1.decrypted.get(e) for e in old} == old

        # Back up a1's room keys, encrypted to a backup key only the client holds.
        backup_key = vodozemac.PkDecryption()
        public = backup_key.public_key.to_base64()
        token = a1.client.access_token
        r = await server.http.post("/_matrix/client/v3/room_keys/version", {
            "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": public}}, token=token)
        version = r.body["version"]
        export_file = tmp_path / "a1.keys"
        await a1.client.export_keys(str(export_file), "pass")
        sessions = json.loads(decrypt_key_export(export_file.read_text(), "pass"))
        assert sessions
        rooms: dict[str, Any] = {}
        encryptor = vodozemac.PkEncryption.from_key(vodozemac.Curve25519PublicKey.from_base64(public))
        for s in sessions:
            plain = {k: s[k] for k in ("algorithm", "sender_key", "session_key", "sender_claimed_keys",
                                       "forwarding_curve25519_key_chain")}
            ephemeral, mac, ciphertext = encryptor.encrypt(json.dumps(plain).encode()).to_base64()
            rooms.setdefault(s["room_id"], {"sessions": {}})["sessions"][s["session_id"]] = {
                "first_message_index": 0, "forwarded_count": 0, "is_verified": False,
                "session_data": {"ephemeral": ephemeral, "mac": mac, "ciphertext": ciphertext}}
        r = await server.http.put("/_matrix/client/v3/room_keys/keys", {"rooms": rooms}, token=token, params={"version": version})
        assert r.status == 200 and r.body["count"] == len(sessions), r.body

        # A fresh device restores the backup and decrypts the old messages from /messages.
        fresh = Device(server, alice, tmp_path / "fresh")
        await fresh.login("restored device")
        await fresh.sync()
        r = await server.http.get("/_matrix/client/v3/room_keys/version", token=fresh.client.access_token)
        assert r.body["auth_data"]["public_key"] == public
        r = await server.http.get("/_matrix/client/v3/room_keys/keys", token=fresh.client.access_token,
                                  params={"version": r.body["version"]})
        restored = []
        for room_id, room_data in r.body["rooms"].items():
            for session_id, k in room_data["sessions"].items():
                d = k["session_data"]
                message = vodozemac.Message.from_base64(d["ciphertext"], d["mac"], d["ephemeral"])
                plain = json.loads(backup_key.decrypt(message))
                restored.append({**plain, "room_id": room_id, "session_id": session_id})
        before = await fresh.client.room_messages(room, start="", limit=50)
        undecryptable = 0
        for ev in before.chunk:
            if isinstance(ev, nio.MegolmEvent):
                try:
                    fresh.client.decrypt_event(ev)
                except nio.EncryptionError:
                    undecryptable += 1
        assert undecryptable == len(old), "the fresh device must have no keys before the restore"
        restore_file = tmp_path / "restore.keys"
        restore_file.write_text(encrypt_key_export(json.dumps(restored).encode(), "restore-pass", rounds=1000))
        await fresh.client.import_keys(str(restore_file), "restore-pass")
        history = await fresh.client.room_messages(room, start="", limit=50)
        assert isinstance(history, nio.RoomMessagesResponse), history
        seen = {}
        for ev in history.chunk:
            if isinstance(ev, nio.MegolmEvent):
                ev = fresh.client.decrypt_event(ev)
            if isinstance(ev, nio.RoomMessageText):
                seen[ev.event_id] = ev.body
        assert {e: seen.get(e) for e in old} == old
    finally:
        for d in (a1, b1) + ((fresh,) if fresh else ()):
            await d.close()
