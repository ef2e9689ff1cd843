"""Wire-format interop with matrix-nio's own Olm machine (an independent Matrix client).

Both libraries use vodozemac for the ratchets, so what this checks is everything around them that
this package wrote itself: signed key shapes, claims, the Olm payload and ciphertext map, m.room_key,
and the Megolm event content and plaintext.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2ee import OlmMachine

from .conftest import ALICE
from .fakeserver import FakeKeyServer, establish, introduce

nio_crypto = pytest.importorskip("nio.crypto")
nio_events = pytest.importorskip("nio.events")
nio_responses = pytest.importorskip("nio.responses")
nio_store = pytest.importorskip("nio.store")

NIO_USER = "@nio:hs2.test"
ROOM = "!interop:hs1.test"


@pytest.fixture
def nio_olm(server: FakeKeyServer) -> Any:
    olm = nio_crypto.Olm(NIO_USER, "NIODEV", nio_store.SqliteMemoryStore(NIO_USER, "NIODEV"))
    response = server.upload(NIO_USER, "NIODEV", olm.share_keys())
    olm.handle_response(nio_responses.KeysUploadResponse.from_dict(response))
    return olm


def nio_query(server: FakeKeyServer, olm: Any, users: list[str]) -> None:
    olm.handle_response(nio_responses.KeysQueryResponse.from_dict(server.query({"device_keys": {u: [] for u in users}})))


def to_device_for_nio(olm: Any, event: dict[str, Any]) -> Any:
    parsed = nio_events.ToDeviceEvent.parse_event(event)
    return olm.handle_to_device_event(parsed)


def test_nio_sends_room_key_and_messages_to_us(server: FakeKeyServer, alice: OlmMachine, nio_olm: Any) -> None:
    nio_query(server, nio_olm, [ALICE])
    introduce(server, alice, [NIO_USER])
    missing = nio_olm.get_missing_sessions([ALICE])
    assert missing == {ALICE: ["ALICEDEV"]}
    claim = server.claim({"one_time_keys": {ALICE: {"ALICEDEV": "signed_curve25519"}}})
    nio_olm.handle_response(nio_responses.KeysClaimResponse.from_dict(claim, ROOM))

    shared_with, body = nio_olm.share_group_session(ROOM, [ALICE], ignore_unverified_devices=True)
    assert shared_with == {(ALICE, "ALICEDEV")}
    group = nio_olm.outbound_group_sessions[ROOM]
    group.shared = True
    group.users_shared_with.update(shared_with)

    content = body["messages"][ALICE]["ALICEDEV"]
    got = alice.decrypt_to_device({"type": "m.room.encrypted", "sender": NIO_USER, "content": content})
    assert got.event["type"] == "m.room_key" and got.sender_device == "NIODEV"

    encrypted = nio_olm.group_encrypt(ROOM, {"type": "m.room.message", "content": {"msgtype": "m.text", "body": "from nio"}})
    event = {
        "type": "m.room.encrypted",
        "room_id": ROOM,
        "sender": NIO_USER,
        "event_id": "$nio1",
        "origin_server_ts": 1,
        "content": encrypted,
    }
    decrypted = alice.decrypt_room_event(event)
    assert decrypted.event["content"] == {"msgtype": "m.text", "body": "from nio"}
    assert decrypted.authentic


def test_we_send_room_key_and_messages_to_nio(server: FakeKeyServer, alice: OlmMachine, nio_olm: Any) -> None:
    introduce(server, alice, [NIO_USER])
    nio_query(server, nio_olm, [ALICE])
    establish(server, alice, {NIO_USER: None})
    request = alice.share_room_key(ROOM, {NIO_USER: None})
    assert request.devices() == [(NIO_USER, "NIODEV")]
    [[content]] = [list(devices.values()) for devices in request.messages.values()]
    room_key = to_device_for_nio(nio_olm, {"type": "m.room.encrypted", "sender": ALICE, "content": content})
    assert room_key is not None and room_key.room_id == ROOM

    encrypted = alice.encrypt_room_event(ROOM, "m.room.message", {"msgtype": "m.text", "body": "to nio"})
    event = nio_events.Event.parse_event(
        {
            "type": "m.room.encrypted",
            "room_id": ROOM,
            "sender": ALICE,
            "event_id": "$alice1",
            "origin_server_ts": 1,
            "content": encrypted,
        }
    )
    decrypted = nio_olm.decrypt_megolm_event(event, ROOM)
    assert decrypted.body == "to nio"

    # And nio answers over the Olm session we started (a normal message after our pre-key one).
    device = nio_olm.device_store[ALICE]["ALICEDEV"]
    session = nio_olm.session_store.get(device.curve25519)
    reply = nio_olm._olm_encrypt(session, device, "m.test", {"hello": "alice"})
    assert reply["ciphertext"][alice.identity_keys["curve25519"]]["type"] == 1
    got = alice.decrypt_to_device({"type": "m.room.encrypted", "sender": NIO_USER, "content": reply})
    assert got.event == {"type": "m.test", "content": {"hello": "alice"}, "sender": NIO_USER}
