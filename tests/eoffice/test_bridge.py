"""The e-Office bridge end to end, every part a real process: Qasid (TLS), the sandbox e-Office and
the bridge; officers are matrix-nio clients in an encrypted room.

An officer links the room to a file; messages become draft notes carrying the Matrix event ID, room,
origin server and content hash; the author's ✅ makes a note final and a later edit is refused (and
the refusal shown in the room); an encrypted attachment reaches e-Office decrypted with the right
SHA-256; a movement in e-Office invites the next officer; while e-Office is down messages wait and
then arrive once, in order; a note written in e-Office appears from the officer's puppet. Webhooks
without the right signature and transactions without the hs_token are refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import nio
import pytest
import yaml

from tests.interop.test_nio_e2ee import PASSWORD, Device
from tests.support.processes import QasidProcess, free_port
from tests.support.tls import LocalCA

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "sandbox-token-for-the-bridge-0123456789"
SECRET = "webhook-secret-0123456789abcdef"
ENCRYPTION = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}


class Proc:
    def __init__(self, args: list[str], log: Path) -> None:
        self.args, self.log = args, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = open(self.log, "ab")
        self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        out.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-60:]) if self.log.exists() else ""


async def until(check: Any, what: str, timeout: float = 45) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def wait_port(port: int) -> None:
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def collect_notices(device: Device) -> list[str]:
    """The bodies of the m.notice messages (the bridge's replies) this client sees, as they arrive."""
    notices: list[str] = []

    async def on_notice(room: Any, event: nio.RoomMessageNotice) -> None:
        notices.append(event.body)

    device.client.add_event_callback(on_notice, nio.RoomMessageNotice)
    return notices


async def wait_for_member(device: Device, room: str, user: str) -> None:
    async def joined() -> bool:
        await device.sync()
        r = device.client.rooms.get(room)
        return bool(r) and user in r.users

    await until(joined, f"{user} to join")


class World:
    def __init__(self, tmp: Path, with_peer: bool = False) -> None:
        self.tmp = tmp
        self.ca = LocalCA(tmp / "ca")
        self.tls = ssl.create_default_context(cafile=str(self.ca.ca_file))
        port = free_port()
        self.hs = QasidProcess(f"127.0.0.1:{port}", "127.0.0.1", port, tmp / "hs")
        # Another ministry's server, federating with this one (for the rules on classified files).
        self.peer: QasidProcess | None = None
        if with_peer:
            peer_port = free_port()
            self.peer = QasidProcess(f"127.0.0.2:{peer_port}", "127.0.0.2", peer_port, tmp / "peer")
        self.name = self.hs.server_name
        self.eo_port, self.bridge_port = free_port(), free_port()
        self.eoffice_url = f"http://127.0.0.1:{self.eo_port}/api/v1"
        employees = {"employees": [{"employee_id": e, "name": n, "designation": "Officer", "section": "Budget",
                                    "email": f"{n.lower()}@mofa.gov.example"} for e, n in (("E1", "Alice"), ("E2", "Bob"))]}
        (tmp / "employees.yaml").write_text(yaml.safe_dump(employees))
        self.sandbox = Proc([sys.executable, "-m", "appservices.eoffice.sandbox", "--data-dir", str(tmp / "eoffice"), "--port",
                             str(self.eo_port), "--token", TOKEN, "--employees", str(tmp / "employees.yaml"),
                             "--webhook-retry-base", "0.2", "--webhook-retry-max", "1"], tmp / "sandbox.log")
        bridge_cfg = {
            "homeserver": {"url": self.hs.base_url, "server_name": self.name, "ca_file": str(self.ca.ca_file)},
            "appservice": {"id": "eoffice", "as_token": "bridge-as-token-1", "hs_token": "bridge-hs-token-1",
                           "listen_port": self.bridge_port},
            "eoffice": {"url": f"http://127.0.0.1:{self.eo_port}", "token": TOKEN, "webhook_secret": SECRET, "poll_interval_s": 1},
            "bridge": {"data_dir": str(tmp / "bridge"), "pickle_key": base64.b64encode(os.urandom(32)).decode()},
            "directory": {"E1": f"@alice:{self.name}", "E2": f"@bob:{self.name}"},
        }
        (tmp / "bridge.yaml").write_text(yaml.safe_dump(bridge_cfg))
        subprocess.run([sys.executable, "-m", "appservices.eoffice.bridge", "-c", str(tmp / "bridge.yaml"),
                        "--write-registration", str(tmp / "registration.yaml")], cwd=ROOT, check=True)
        servers = [self.hs, self.peer] if self.peer is not None else [self.hs]
        self.hs.write_config(self.ca, servers, {"app_service_config_files": [str(tmp / "registration.yaml")]})
        if self.peer is not None:
            self.peer.write_config(self.ca, servers)
        self.bridge = Proc([sys.executable, "-m", "appservices.eoffice.bridge", "-c", str(tmp / "bridge.yaml")], tmp / "bridge.log")

    async def eo(self, session: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> Any:
        async with session.request(method, self.eoffice_url + path, json=body, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            return r.status, (await r.json(content_type=None) if r.status != 204 else None)


async def _world(tmp_path: Path, with_peer: bool) -> AsyncIterator[World]:
    w = World(tmp_path, with_peer)
    try:
        w.sandbox.start()
        await wait_port(w.eo_port)
        await w.hs.start(w.tls)
        if w.peer is not None:
            await w.peer.start(w.tls)
        w.bridge.start()
        await wait_port(w.bridge_port)
        yield w
    finally:
        w.bridge.stop()
        w.sandbox.stop()
        w.hs.stop()
        if w.peer is not None:
            w.peer.stop()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async for w in _world(tmp_path, False):
        yield w


@pytest.fixture
async def world_with_peer(tmp_path: Path) -> AsyncIterator[World]:
    async for w in _world(tmp_path, True):
        yield w


async def test_bridge_end_to_end(world: World, tmp_path: Path) -> None:
    w = world
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=w.tls)) as s:
        alice_id, _ = await w.hs.register(s, "alice", PASSWORD)
        bob_id, _ = await w.hs.register(s, "bob", PASSWORD)
        status, file = await w.eo(s, "POST", "/files", {"subject": "Budget 2027", "classification": "Confidential", "created_by": "E1"})
        assert status in (200, 201), file
        alice = Device(w.hs, alice_id, tmp_path / "nio-a", ssl=w.tls)  # type: ignore[arg-type]
        bob = Device(w.hs, bob_id, tmp_path / "nio-b", ssl=w.tls)  # type: ignore[arg-type]
        notices = collect_notices(alice)
        try:
            await alice.login("alice's laptop")
            await bob.login("bob's laptop")
            # The bridge may have made a room for the new file already; alice links her own room too.
            bot = f"@eofficebot:{w.name}"
            room = (await alice.client.room_create(invite=[bot], initial_state=[ENCRYPTION], name="Budget discussion",
                                                   power_level_override={"users": {bot: 50}})).room_id

            await wait_for_member(alice, room, bot)
            await alice.send(room, f"!eoffice link {file['file_no']}")

            async def linked() -> Any:
                r = await alice.client.room_get_state_event(room, "pk.gov.eoffice.file", "")
                return isinstance(r, nio.RoomGetStateEventResponse) and r.content.get("file_id") == file["file_id"]

            await until(linked, "the room to be linked")
            draft = await alice.send(room, "Draft: approve the revised budget.")

            async def notes() -> list[dict[str, Any]]:
                st, body = await w.eo(s, "GET", f"/files/{file['file_id']}/notes")
                return body.get("notes", body) if isinstance(body, dict) else body

            async def note_for(event_id: str) -> dict[str, Any] | None:
                return next((n for n in await notes() if (n.get("external_ref") or {}).get("matrix_event_id") == event_id), None)

            note = await until(lambda: note_for(draft), "the draft note")
            assert note["status"] == "draft" and note["text"] == "Draft: approve the revised budget." and note["author"] == "E1"
            ref = note["external_ref"]
            assert ref["room_id"] == room and ref["origin_server"] == w.name
            assert ref["content_sha256"] == hashlib.sha256(note["text"].encode()).hexdigest()
            # Final by the author's reaction; an edit afterwards is refused by e-Office.
            await alice.client.room_send(room, "m.reaction", {"m.relates_to": {"rel_type": "m.annotation", "event_id": draft, "key": "✅"}},
                                         ignore_unverified_devices=True)

            async def is_final() -> bool:
                n = await note_for(draft)
                return bool(n) and n["status"] == "final"

            await until(is_final, "the note to become final")
            await alice.client.room_send(room, "m.room.message", {
                "msgtype": "m.text", "body": "* changed", "m.new_content": {"msgtype": "m.text", "body": "changed"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": draft}}, ignore_unverified_devices=True)

            async def refusal_seen() -> bool:
                await alice.sync()
                return any("final" in t and "refused" in t for t in notices)

            await until(refusal_seen, "the refusal notice")
            assert (await note_for(draft))["text"] == "Draft: approve the revised budget."
            # An encrypted attachment arrives decrypted, with its SHA-256.
            document = os.urandom(200_000)
            up, keys = await alice.client.upload(lambda *_: io.BytesIO(document), content_type="application/pdf",
                                                 filename="estimate.pdf", encrypt=True, filesize=len(document))
            await alice.client.room_send(room, "m.room.message", {"msgtype": "m.file", "body": "estimate.pdf",
                                                                  "info": {"mimetype": "application/pdf", "size": len(document)},
                                                                  "file": {"url": up.content_uri, **keys}}, ignore_unverified_devices=True)

            async def correspondence() -> list[dict[str, Any]]:
                st, body = await w.eo(s, "GET", f"/files/{file['file_id']}/correspondence")
                return body.get("correspondence", body) if isinstance(body, dict) else body

            items = await until(correspondence, "the correspondence")
            assert items[0]["sha256"] == hashlib.sha256(document).hexdigest() and items[0]["size"] == len(document)
            # A movement in e-Office invites the next officer.
            st, moved = await w.eo(s, "POST", f"/files/{file['file_id']}/movements", {"from_employee": "E1", "to_employee": "E2",
                                                                                     "remarks": "For your comments"})
            assert st in (200, 201), moved

            async def bob_invited() -> bool:
                await bob.sync()
                return bool(bob.client.invited_rooms)

            await until(bob_invited, "bob's invitation")
            # e-Office down: messages wait, then arrive once, in order.
            w.sandbox.stop()
            queued = [await alice.send(room, f"while e-Office was down {i}") for i in range(3)]
            await asyncio.sleep(1.5)
            w.sandbox.start()
            await wait_port(w.eo_port)

            async def all_queued() -> list[dict[str, Any]]:
                got = [n for n in await notes() if (n.get("external_ref") or {}).get("matrix_event_id") in queued]
                return got if len(got) == 3 else []

            got = await until(all_queued, "the queued notes", timeout=90)
            assert [n["text"] for n in sorted(got, key=lambda n: n["created_at"])] == [f"while e-Office was down {i}" for i in range(3)]
            assert len({n["note_id"] for n in await notes()}) == len(await notes())  # nothing filed twice
            # A note written in e-Office appears in the room from the officer's puppet.
            st, eo_note = await w.eo(s, "POST", f"/files/{file['file_id']}/notes", {"author": "E1", "text": "Approved in e-Office."})
            assert st in (200, 201), eo_note

            async def puppet_spoke() -> bool:
                await alice.sync()
                return "Approved in e-Office." in alice.decrypted.values()

            await until(puppet_spoke, "the puppet's message")
            # The bot's and the puppet's devices are cross-signed by their own users, so officers'
            # clients show their messages without the "unverified device" warning.
            for user in (bot, f"@eoffice_e1:{w.name}"):
                async with aiohttp.ClientSession() as http:
                    async with http.post(f"{alice.client.homeserver}/_matrix/client/v3/keys/query",
                                         json={"device_keys": {user: []}}, ssl=False,
                                         headers={"Authorization": f"Bearer {alice.client.access_token}"}) as resp:
                        seen = await resp.json()
                (ssk_pub,) = seen["self_signing_keys"][user]["keys"].values()
                devices = seen["device_keys"][user]
                assert devices and all(f"ed25519:{ssk_pub}" in d["signatures"][user] for d in devices.values()), user
            # The bridge crashes; messages and a movement happen meanwhile; after its restart everything
            # arrives, once, in order (its E2EE keys, outbox and feed cursor survived).
            assert w.bridge.proc is not None
            w.bridge.proc.kill()
            w.bridge.proc.wait(10)
            missed = [await alice.send(room, f"while the bridge was down {i}") for i in range(3)]
            st, back = await w.eo(s, "POST", f"/files/{file['file_id']}/movements", {"from_employee": "E2", "to_employee": "E1",
                                                                                    "remarks": "Returned with comments"})
            assert st in (200, 201), back
            await asyncio.sleep(1.0)
            w.bridge.start()
            await wait_port(w.bridge_port)

            async def all_missed() -> list[dict[str, Any]]:
                got = [n for n in await notes() if (n.get("external_ref") or {}).get("matrix_event_id") in missed]
                return got if len(got) == 3 else []

            got = await until(all_missed, "the notes sent while the bridge was down", timeout=90)
            assert [n["text"] for n in sorted(got, key=lambda n: n["created_at"])] == [f"while the bridge was down {i}" for i in range(3)]

            async def movement_notice() -> bool:
                await alice.sync()
                return any("Returned with comments" in t for t in notices)

            await until(movement_notice, "the movement made while the bridge was down", timeout=60)
            texts = [n["text"] for n in await notes()]
            assert len(texts) == len(set(texts)) and texts.count("Approved in e-Office.") == 1  # nothing twice
            assert list(alice.decrypted.values()).count("Approved in e-Office.") == 1  # nor posted twice in the room
        finally:
            await alice.close()
            await bob.close()
        # Refused: unsigned or wrongly signed webhooks, transactions without the hs_token.
        base = f"http://127.0.0.1:{w.bridge_port}"
        body = json.dumps({"event_id": "evt_forged", "type": "file.moved", "resource": {}}).encode()
        ts = str(int(time.time()))
        async with s.post(f"{base}/eoffice/webhook", data=body) as r:
            assert r.status == 401
        bad = "sha256=" + hmac.new(b"not-the-secret-at-all", ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        async with s.post(f"{base}/eoffice/webhook", data=body, headers={"X-EOffice-Timestamp": ts, "X-EOffice-Signature": bad}) as r:
            assert r.status == 401
        async with s.put(f"{base}/_matrix/app/v1/transactions/999", json={"events": []}, headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 403 and (await r.json())["errcode"] == "M_FORBIDDEN"


async def test_classified_file_only_in_an_encrypted_room(world: World, tmp_path: Path) -> None:
    """A Secret file's notes must not travel in clear text: linking it from an unencrypted room is
    refused (and nothing is recorded); once the room is encrypted, the same command links it."""
    w = world
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=w.tls)) as s:
        alice_id, _ = await w.hs.register(s, "alice", PASSWORD)
        status, file = await w.eo(s, "POST", "/files", {"subject": "Defence procurement", "classification": "Secret", "created_by": "E1"})
        assert status in (200, 201), file
        alice = Device(w.hs, alice_id, tmp_path / "nio-a", ssl=w.tls)  # type: ignore[arg-type]
        notices = collect_notices(alice)
        try:
            await alice.login("alice's laptop")
            bot = f"@eofficebot:{w.name}"
            room = (await alice.client.room_create(invite=[bot], name="Procurement (clear)",
                                                   power_level_override={"users": {bot: 50}})).room_id

            await wait_for_member(alice, room, bot)
            await alice.client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": f"!eoffice link {file['file_no']}"})

            async def refused() -> bool:
                await alice.sync()
                return any("can only be linked to an encrypted room" in n for n in notices)

            await until(refused, "the refusal")
            r = await alice.client.room_get_state_event(room, "pk.gov.eoffice.file", "")
            assert not isinstance(r, nio.RoomGetStateEventResponse)  # nothing recorded
            r = await alice.client.room_put_state(room, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})
            assert isinstance(r, nio.RoomPutStateResponse), r
            await alice.sync()
            await alice.send(room, f"!eoffice link {file['file_no']}")

            async def linked() -> bool:
                r = await alice.client.room_get_state_event(room, "pk.gov.eoffice.file", "")
                return isinstance(r, nio.RoomGetStateEventResponse) and r.content.get("file_id") == file["file_id"]

            await until(linked, "the room to be linked")
        finally:
            await alice.close()



async def test_secret_file_only_where_every_member_is_on_this_server(world_with_peer: World, tmp_path: Path) -> None:
    """A Secret file must not reach another ministry's server: linking it in an (encrypted) room with a
    member from another server is refused, naming them; Confidential is fine there."""
    w = world_with_peer
    assert w.peer is not None
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=w.tls)) as s:
        alice_id, _ = await w.hs.register(s, "alice", PASSWORD)
        carol_id, _ = await w.peer.register(s, "carol", PASSWORD)
        _, secret = await w.eo(s, "POST", "/files", {"subject": "Treaty draft", "classification": "Secret", "created_by": "E1"})
        _, confidential = await w.eo(s, "POST", "/files", {"subject": "Visit schedule", "classification": "Confidential", "created_by": "E1"})
        alice = Device(w.hs, alice_id, tmp_path / "nio-a", ssl=w.tls)  # type: ignore[arg-type]
        notices = collect_notices(alice)
        try:
            await alice.login("alice's laptop")
            bot = f"@eofficebot:{w.name}"
            room = (await alice.client.room_create(invite=[bot, carol_id], initial_state=[ENCRYPTION], name="Joint working group",
                                                   power_level_override={"users": {bot: 50}})).room_id

            await wait_for_member(alice, room, bot)
            await alice.send(room, f"!eoffice link {secret['file_no']}")

            async def refused() -> bool:
                await alice.sync()
                return any("all belong" in n and carol_id in n for n in notices)

            await until(refused, "the refusal naming the other server's member")
            r = await alice.client.room_get_state_event(room, "pk.gov.eoffice.file", "")
            assert not isinstance(r, nio.RoomGetStateEventResponse)
            await alice.send(room, f"!eoffice link {confidential['file_no']}")

            async def linked() -> bool:
                r = await alice.client.room_get_state_event(room, "pk.gov.eoffice.file", "")
                return isinstance(r, nio.RoomGetStateEventResponse) and r.content.get("file_id") == confidential["file_id"]

            await until(linked, "the Confidential file to be linked")
        finally:
            await alice.close()
