"""End-to-end encryption across ministries: matrix-nio clients on two federated Qasid servers, in one
encrypted room, decrypt each other (keys travel by /keys/query and /keys/claim over federation and
room keys by to-device EDUs)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import nio

from tests.interop.test_nio_e2ee import PASSWORD, Device, sync_all
from tests.support.servers import RunningServer

ENCRYPTION = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}


async def test_nio_clients_on_two_servers_decrypt_each_other(federation: Any, test_ca: Any, tmp_path: Path) -> None:
    hs1: RunningServer = await federation("127.0.0.1")
    hs2: RunningServer = await federation("127.0.0.2")
    ctx = ssl.create_default_context(cafile=str(test_ca.ca_file))
    alice = await hs1.create_user("alice", PASSWORD)
    bob = await hs2.create_user("bob", PASSWORD)
    a, b = Device(hs1, alice, tmp_path / "a", ssl=ctx), Device(hs2, bob, tmp_path / "b", ssl=ctx)
    try:
        await a.login("alice at MoFA")
        await b.login("bob at MoF")
        created = await a.client.room_create(invite=[bob], initial_state=[ENCRYPTION])
        assert isinstance(created, nio.RoomCreateResponse), created
        room = created.room_id
        await b.sync()
        assert room in b.client.invited_rooms
        assert isinstance(await b.client.join(room), nio.JoinResponse)
        await sync_all([a, b])
        first = await a.send(room, "encrypted across ministries")
        await sync_all([a, b])
        assert b.decrypted.get(first) == "encrypted across ministries", b.undecryptable
        reply = await b.send(room, "and back")
        await sync_all([a, b])
        assert a.decrypted.get(reply) == "and back", a.undecryptable
        # The servers only ever carried ciphertext.
        history = (await hs2.http.get(f"/_matrix/client/v3/rooms/{room}/messages", token=b.client.access_token,
                                      params={"dir": "b", "limit": "20"})).body["chunk"]
        assert not any(e["type"] == "m.room.message" for e in history)
    finally:
        await a.close()
        await b.close()
