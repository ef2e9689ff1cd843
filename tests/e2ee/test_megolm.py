"""Room keys over Olm and Megolm room events between two machines: sharing, rotation, replay, tampering."""

from __future__ import annotations

import copy
from typing import Any, Callable

import pytest
import vodozemac

from e2ee import MegolmDecryptionError, MissingSessionError, OlmMachine, ReplayError, RoomKeyNotSharedError
from e2ee.codec import decode_b64, encode_b64

from .conftest import ALICE, BOB
from .fakeserver import FakeClock, FakeKeyServer, establish, introduce

ROOM = "!room:hs1.test"
MEMBERS = {ALICE: None, BOB: None}


class Room:
    """Delivers room events with ids and timestamps, as a server would."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.count = 0

    def event(self, sender: str, content: dict[str, Any], room_id: str = ROOM) -> dict[str, Any]:
        self.count += 1
        return {
            "type": "m.room.encrypted",
            "room_id": room_id,
            "sender": sender,
            "event_id": f"$event{self.count}",
            "origin_server_ts": self.clock.now + self.count,
            "content": content,
        }


def share(server: FakeKeyServer, sender: OlmMachine, receivers: list[OlmMachine], members: dict[str, Any] = MEMBERS, **kw: Any) -> int:
    """Claim, share the room key, deliver it; return how many devices got it."""
    establish(server, sender, members)
    request = sender.share_room_key(ROOM, members, **kw)
    server.send_to_device(sender.user_id, request)
    for receiver in receivers:
        for event in server.take_to_device(receiver.user_id, receiver.device_id):
            receiver.decrypt_to_device(event)
    return len(request)


@pytest.fixture
def room(clock: FakeClock) -> Room:
    return Room(clock)


def test_room_messages_both_ways(
    server: FakeKeyServer, room: Room, acquainted: tuple[OlmMachine, OlmMachine]
) -> None:
    alice, bob = acquainted
    with pytest.raises(RoomKeyNotSharedError):
        alice.encrypt_room_event(ROOM, "m.room.message", {"body": "too early"})
    assert share(server, alice, [bob]) == 1
    content = alice.encrypt_room_event(ROOM, "m.room.message", {"msgtype": "m.text", "body": "hello"})
    assert content["algorithm"] == "m.megolm.v1.aes-sha2"
    assert content["sender_key"] == alice.identity_keys["curve25519"]
    assert content["device_id"] == "ALICEDEV"
    assert content["session_id"] == alice.room_session_id(ROOM)
    assert "hello" not in content["ciphertext"]

    decrypted = bob.decrypt_room_event(room.event(ALICE, content))
    assert decrypted.event["type"] == "m.room.message"
    assert decrypted.event["content"] == {"msgtype": "m.text", "body": "hello"}
    assert decrypted.event["sender"] == ALICE and decrypted.event["event_id"] == "$event1"
    assert decrypted.message_index == 0
    assert decrypted.authentic
    assert decrypted.sender_claimed_ed25519 == alice.identity_keys["ed25519"]

    # Alice can read her own message too.
    assert alice.decrypt_room_event(room.event(ALICE, content)).event["content"]["body"] == "hello"

    assert share(server, bob, [alice]) == 1
    reply = bob.encrypt_room_event(ROOM, "m.room.message", {"msgtype": "m.text", "body": "hi"})
    got = alice.decrypt_room_event(room.event(BOB, reply))
    assert got.event["content"]["body"] == "hi" and got.authentic


def test_sharing_again_sends_nothing_new(server: FakeKeyServer, acquainted: tuple[OlmMachine, OlmMachine]) -> None:
    alice, bob = acquainted
    assert share(server, alice, [bob]) == 1
    session_id = alice.room_session_id(ROOM)
    assert len(alice.share_room_key(ROOM, MEMBERS)) == 0
    assert alice.room_session_id(ROOM) == session_id


def test_devices_without_olm_session_are_skipped_until_claimed(
    server: FakeKeyServer, acquainted: tuple[OlmMachine, OlmMachine]
) -> None:
    alice, bob = acquainted
    assert len(alice.share_room_key(ROOM, MEMBERS)) == 0
    assert share(server, alice, [bob]) == 1


def test_rotation_by_message_count(server: FakeKeyServer, room: Room, acquainted: tuple[OlmMachine, OlmMachine]) -> None:
    alice, bob = acquainted
    share(server, alice, [bob], rotation_period_msgs=2)
    first_session = alice.room_session_id(ROOM)
    contents = [alice.encrypt_room_event(ROOM, "m.room.message", {"body": str(i)}) for i in range(2)]
    with pytest.raises(RoomKeyNotSharedError):
        alice.encrypt_room_event(ROOM, "m.room.message", {"body": "2"})
    assert share(server, alice, [bob], rotation_period_msgs=2) == 1
    assert alice.room_session_id(ROOM) != first_session
    contents.append(alice.encrypt_room_event(ROOM, "m.room.message", {"body": "2"}))
    assert contents[2]["session_id"] != contents[0]["session_id"] == contents[1]["session_id"]
    bodies = [bob.decrypt_room_event(room.event(ALICE, c)).event["content"]["body"] for c in contents]
    assert bodies == ["0", "1", "2"]


def test_rotation_by_default_count_of_100(server: FakeKeyServer, acquainted: tuple[OlmMachine, OlmMachine]) -> None:
    alice, bob = acquainted
    share(server, alice, [bob])
    for i in range(100):
        alice.encrypt_room_event(ROOM, "m.room.message", {"body": str(i)})
    with pytest.raises(RoomKeyNotSharedError):
        alice.encrypt_room_event(ROOM, "m.room.message", {"body": "100"})


def test_rotation_by_age(server: FakeKeyServer, clock: FakeClock, acquainted: tuple[OlmMachine, OlmMachine]) -> None:
    alice, bob = acquainted
    share(server, alice, [bob], rotation_period_ms=60_000)
    first = alice.room_session_id(ROOM)
    clock.advance(59_999)
    alice.encrypt_room_event(ROOM, "m.room.message", {"body": "still fine"})
    clock.advance(1)
    with pytest.raises(RoomKeyNotSharedError):
        alice.encrypt_room_event(ROOM, "m.room.message", {"body": "too old"})
    assert share(server, alice, [bob], rotation_period_ms=60_000) == 1
    assert alice.room_session_id(ROOM) != first

    # The default period is one week.
    clock.advance(7 * 24 * 3600 * 1000 - 1)
    share(server, alice, [bob])
    second = alice.room_session_id(ROOM)
    alice.encrypt_room_event(ROOM, "m.room.message", {"body": "ok"})
    clock.advance(7 * 24 * 3600 * 1000)
    share(server, alice, [bob])
    assert alice.room_session_id(ROOM) != second


def test_rotation_on_invalidate_and_when_a_device_leaves(
    server: FakeKeyServer, room: Room, make_machine: Callable[..., OlmMachine], acquainted: tuple[OlmMachine, OlmMachine]
) -> None:
    alice, bob = acquainted
    share(server, alice, [bob])
    first = alice.room_session_id(ROOM)
    alice.invalidate_room_session(ROOM)
    with pytest.raises(RoomKeyNotSharedError):
        alice.encrypt_room_event(ROOM, "m.room.message", {})
    assert share(server, alice, [bob]) == 1
    second = alice.room_session_id(ROOM)
    assert second != first

    # Bob adds a second device: it gets the *current* session, no rotation.
    bob2 = make_machine(BOB, "BOBDEV2")
    introduce(server, alice, [BOB])
    alice.receive_device_list_changes(changed=[BOB])
    alice.receive_keys_query(server.query(alice.keys_query_request()))  # type: ignore[arg-type]
    assert share(server, alice, [bob, bob2]) == 1
    assert alice.room_session_id(ROOM) == second
    content = alice.encrypt_room_event(ROOM, "m.room.message", {"body": "both"})
    assert bob2.decrypt_room_event(room.event(ALICE, content)).event["content"]["body"] == "both"

    # Bob's second device goes away: the next share rotates and only Bob's first device gets it.
    assert share(server, alice, [bob], members={ALICE: None, BOB: ["BOBDEV"]}) == 1
    third = alice.room_session_id(ROOM)
    assert third != second
    content = alice.encrypt_room_event(ROOM, "m.room.message", {"body": "secret"})
    assert bob.decrypt_room_event(room.event(ALICE, content)).event["content"]["body"] == "secret"
    with pytest.raises(MissingSessionError):
        bob2.decrypt_room_event(room.event(ALICE, content))

    # Bob leaves the room entirely.
    assert share(server, alice, [], members={ALICE: None}) == 0
    assert alice.room_session_id(ROOM) != third


def test_replay_is_detected(server: FakeKeyServer, room: Room, acquainted: tuple[OlmMachine, OlmMachine]) -> None:
    alice, bob = acquainted
    share(server, alice, [bob])
    content = alice.encrypt_room_event(ROOM, "m.room.message", {"body": "once"})
    event = room.event(ALICE, content)
    bob.decrypt_room_event(event)
    # The same event again (e.g. from /messages after /sync) is fine.
    assert bob.decrypt_room_event(copy.deepcopy(event)).event["content"]["body"] == "once"
    # The same ciphertext in a different event is a replay.
    with pytest.raises(ReplayError):
        bob.decrypt_room_event(room.event(ALICE, content))
    replayed = copy.deepcopy(event)
    replayed["origin_server_ts"] += 1
    with pytest.raises(ReplayError):
        bob.decrypt_room_event(replayed)


def test_tampered_ciphertext_is_rejected(server: FakeKeyServer, room: Room, acquainted: tuple[OlmMachine, OlmMachine]) -> None:
    alice, bob = acquainted
    share(server, alice, [bob])
    content = alice.encrypt_room_event(ROOM, "m.room.message", {"body": "intact"})
    raw = bytearray(decode_b64(content["ciphertext"]))
    for position in (10, len(raw) // 2, len(raw) - 1):
        tampered = bytearray(raw)
        tampered[position] ^= 0x01
        with pytest.raises(MegolmDecryptionError):
            bob.decrypt_room_event(room.event(ALICE, {**content, "ciphertext": encode_b64(bytes(tampered))}))
    with pytest.raises(MegolmDecryptionError):
        bob.decrypt_room_event(room.event(ALICE, {**content, "ciphertext": "not base64!"}))
    # A ciphertext re-signed with another key under the same session id is rejected too.
    forged_session = vodozemac.GroupSession()
    forged = forged_session.encrypt(b'{"type":"m.room.message","content":{"body":"forged"},"room_id":"%s"}' % ROOM.encode())
    with pytest.raises(MegolmDecryptionError):
        bob.decrypt_room_event(room.event(ALICE, {**content, "ciphertext": forged.to_base64()}))
    assert bob.decrypt_room_event(room.event(ALICE, content)).event["content"]["body"] == "intact"


def test_event_moved_to_another_room_is_rejected(
    server: FakeKeyServer, room: Room, acquainted: tuple[OlmMachine, OlmMachine]
) -> None:
    alice, bob = acquainted
    share(server, alice, [bob])
    content = alice.encrypt_room_event(ROOM, "m.room.message", {"body": "here"})
    # Even if Bob held the same session under another room id, the plaintext names the real room.
    stored = bob.store.load_inbound_group_session(ROOM, content["session_id"])
    assert stored is not None
    stored.room_id = "!other:hs1.test"
    bob.store.save_inbound_group_session(stored)
    with pytest.raises(MegolmDecryptionError, match="another room"):
        bob.decrypt_room_event(room.event(ALICE, content, room_id="!other:hs1.test"))


def test_unknown_session_reports_what_is_missing(acquainted: tuple[OlmMachine, OlmMachine], room: Room) -> None:
    alice, bob = acquainted
    content = {
        "algorithm": "m.megolm.v1.aes-sha2",
        "ciphertext": "AwgAEhAAAAAA",
        "session_id": "unknownsession",
        "sender_key": alice.identity_keys["curve25519"],
        "device_id": "ALICEDEV",
    }
    with pytest.raises(MissingSessionError) as error:
        bob.decrypt_room_event(room.event(ALICE, content))
    assert (error.value.room_id, error.value.session_id) == (ROOM, "unknownsession")


def test_message_from_wrong_sender_is_not_authentic(
    server: FakeKeyServer, room: Room, acquainted: tuple[OlmMachine, OlmMachine]
) -> None:
    alice, bob = acquainted
    share(server, alice, [bob])
    content = alice.encrypt_room_event(ROOM, "m.room.message", {"body": "mine"})
    # The server claims someone else sent Alice's ciphertext: it decrypts but is not authentic.
    assert not bob.decrypt_room_event(room.event("@mallory:hs3.test", content)).authentic


def test_relations_stay_visible_to_the_server(
    server: FakeKeyServer, room: Room, acquainted: tuple[OlmMachine, OlmMachine]
) -> None:
    alice, bob = acquainted
    share(server, alice, [bob])
    relation = {"rel_type": "m.thread", "event_id": "$root"}
    content = alice.encrypt_room_event(ROOM, "m.room.message", {"body": "in thread", "m.relates_to": relation})
    assert content["m.relates_to"] == relation
    decrypted = bob.decrypt_room_event(room.event(ALICE, content))
    assert decrypted.event["content"]["m.relates_to"] == relation


def test_forwarded_room_key_accepted_only_from_own_devices(
    server: FakeKeyServer, room: Room, make_machine: Callable[..., OlmMachine], acquainted: tuple[OlmMachine, OlmMachine]
) -> None:
    alice, bob = acquainted
    share(server, alice, [bob])
    content = alice.encrypt_room_event(ROOM, "m.room.message", {"body": "forward me"})
    stored = bob.store.load_inbound_group_session(ROOM, content["session_id"])
    assert stored is not None
    from e2ee.megolm import InboundGroupSession

    session = InboundGroupSession.from_stored(stored, bob._pickle_key)
    forwarded = {
        "algorithm": "m.megolm.v1.aes-sha2",
        "room_id": ROOM,
        "sender_key": session.sender_key,
        "session_id": session.session_id,
        "session_key": session.export_at_first_known_index(),
        "sender_claimed_ed25519_key": session.signing_key,
        "forwarding_curve25519_key_chain": [],
    }

    # From Bob's own second device: accepted, decrypts, marked as forwarded (not authentic).
    bob2 = make_machine(BOB, "BOBDEV2")
    introduce(server, bob, [BOB])
    bob.receive_device_list_changes(changed=[BOB])
    bob.receive_keys_query(server.query({"device_keys": {BOB: []}}))
    introduce(server, bob2, [BOB])
    establish(server, bob, {BOB: ["BOBDEV2"]})
    bob2.decrypt_to_device(
        {"type": "m.room.encrypted", "sender": BOB, "content": bob.encrypt_to_device(BOB, "BOBDEV2", "m.forwarded_room_key", forwarded)}
    )
    got = bob2.decrypt_room_event(room.event(ALICE, content))
    assert got.event["content"]["body"] == "forward me"
    assert got.forwarding_chain == [bob.identity_keys["curve25519"]]
    assert not got.authentic

    # From another user: ignored.
    carol = make_machine("@carol:hs3.test", "CAROLDEV")
    introduce(server, carol, [BOB])
    introduce(server, bob, ["@carol:hs3.test"])
    establish(server, bob, {"@carol:hs3.test": None})
    carol.decrypt_to_device(
        {
            "type": "m.room.encrypted",
            "sender": BOB,
            "content": bob.encrypt_to_device("@carol:hs3.test", "CAROLDEV", "m.forwarded_room_key", forwarded),
        }
    )
    with pytest.raises(MissingSessionError):
        carol.decrypt_room_event(room.event(ALICE, content))


def test_room_key_whose_key_does_not_match_its_session_id_is_ignored(
    server: FakeKeyServer, room: Room, acquainted: tuple[OlmMachine, OlmMachine]
) -> None:
    alice, bob = acquainted
    establish(server, alice, {BOB: None})
    real = vodozemac.GroupSession()
    decoy = vodozemac.GroupSession()
    room_key = {
        "algorithm": "m.megolm.v1.aes-sha2",
        "room_id": ROOM,
        "session_id": decoy.session_id,
        "session_key": real.session_key.to_base64(),
    }
    content = alice.encrypt_to_device(BOB, "BOBDEV", "m.room_key", room_key)
    # The to-device event itself decrypts fine, but no session is stored under the decoy id.
    assert bob.decrypt_to_device({"type": "m.room.encrypted", "sender": ALICE, "content": content}).event["type"] == "m.room_key"
    assert bob.store.load_inbound_group_session(ROOM, decoy.session_id) is None
    assert bob.store.load_inbound_group_session(ROOM, real.session_id) is None
