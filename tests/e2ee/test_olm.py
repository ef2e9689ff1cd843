"""Olm to-device messaging between two machines, including the spec's payload checks and unwedging."""

from __future__ import annotations

import copy
import json
from typing import Any, Callable

import pytest

from e2ee import OlmDecryptionError, OlmMachine, OlmSessionError
from e2ee.machine import UNWEDGE_INTERVAL_MS

from .conftest import ALICE, BOB
from .fakeserver import FakeClock, FakeKeyServer, establish, introduce


def wrap(sender: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"type": "m.room.encrypted", "sender": sender, "content": content}


def test_to_device_both_ways_pre_key_then_normal(
    server: FakeKeyServer, acquainted: tuple[OlmMachine, OlmMachine]
) -> None:
    alice, bob = acquainted
    with pytest.raises(OlmSessionError):
        alice.encrypt_to_device(BOB, "BOBDEV", "m.test", {})
    establish(server, alice, {BOB: None})

    first = alice.encrypt_to_device(BOB, "BOBDEV", "m.test", {"n": 1})
    assert first["algorithm"] == "m.olm.v1.curve25519-aes-sha2"
    assert first["sender_key"] == alice.identity_keys["curve25519"]
    assert list(first["ciphertext"]) == [bob.identity_keys["curve25519"]]
    assert first["ciphertext"][bob.identity_keys["curve25519"]]["type"] == 0  # pre-key until Bob answers
    second = alice.encrypt_to_device(BOB, "BOBDEV", "m.test", {"n": 2})
    assert second["ciphertext"][bob.identity_keys["curve25519"]]["type"] == 0

    one_time_keys_before = len(server.one_time_keys[(BOB, "BOBDEV")])
    got = bob.decrypt_to_device(wrap(ALICE, first))
    assert got.event == {"type": "m.test", "content": {"n": 1}, "sender": ALICE}
    assert got.sender_key == alice.identity_keys["curve25519"]
    assert got.sender_ed25519 == alice.identity_keys["ed25519"]
    assert got.sender_device == "ALICEDEV"
    assert bob.decrypt_to_device(wrap(ALICE, second)).event["content"] == {"n": 2}
    assert len(server.one_time_keys[(BOB, "BOBDEV")]) == one_time_keys_before  # claimed earlier, used now

    # Bob answers over the same session without claiming anything: a normal message.
    assert bob.claim_request({ALICE: None}) is None
    reply = bob.encrypt_to_device(ALICE, "ALICEDEV", "m.test", {"n": 3})
    assert reply["ciphertext"][alice.identity_keys["curve25519"]]["type"] == 1
    assert alice.decrypt_to_device(wrap(BOB, reply)).event["content"] == {"n": 3}

    # Having heard back, Alice now sends normal messages too.
    after = alice.encrypt_to_device(BOB, "BOBDEV", "m.test", {"n": 4})
    assert after["ciphertext"][bob.identity_keys["curve25519"]]["type"] == 1
    assert bob.decrypt_to_device(wrap(ALICE, after)).event["content"] == {"n": 4}


def test_plaintext_payload_has_the_spec_fields(server: FakeKeyServer, acquainted: tuple[OlmMachine, OlmMachine]) -> None:
    alice, bob = acquainted
    establish(server, alice, {BOB: None})
    content = alice.encrypt_to_device(BOB, "BOBDEV", "m.test", {"x": "y"})
    # Decrypt with the raw session machinery to see the payload itself.
    body = content["ciphertext"][bob.identity_keys["curve25519"]]
    plaintext = bob._olm.decrypt(alice.identity_keys["curve25519"], body["type"], body["body"])

    assert json.loads(plaintext) == {
        "type": "m.test",
        "content": {"x": "y"},
        "sender": ALICE,
        "sender_device": "ALICEDEV",
        "keys": {"ed25519": alice.identity_keys["ed25519"]},
        "recipient": BOB,
        "recipient_keys": {"ed25519": bob.identity_keys["ed25519"]},
    }


def test_message_for_another_device_or_from_a_lying_sender_is_rejected(
    server: FakeKeyServer, make_machine: Callable[..., OlmMachine], acquainted: tuple[OlmMachine, OlmMachine]
) -> None:
    alice, bob = acquainted
    establish(server, alice, {BOB: None})
    content = alice.encrypt_to_device(BOB, "BOBDEV", "m.test", {})
    # The event's sender is not who encrypted the payload.
    with pytest.raises(OlmDecryptionError, match="sender"):
        bob.decrypt_to_device(wrap("@mallory:hs3.test", copy.deepcopy(content)))

    # A ciphertext addressed to someone else's key is not for us.
    carol = make_machine("@carol:hs3.test", "CAROLDEV")
    with pytest.raises(OlmDecryptionError, match="no ciphertext for this device"):
        carol.decrypt_to_device(wrap(ALICE, content))


def test_payload_naming_another_recipient_is_rejected(server: FakeKeyServer, acquainted: tuple[OlmMachine, OlmMachine]) -> None:
    alice, bob = acquainted
    establish(server, alice, {BOB: None})
    # Alice's device record for Bob names the wrong ed25519 key: the payload's recipient_keys
    # then does not match Bob's own, as if the message had been meant for another device.
    device = alice.store.get_device(BOB, "BOBDEV")
    assert device is not None
    device.ed25519 = alice.identity_keys["ed25519"]
    alice.store.save_device(device)
    content = alice.encrypt_to_device(BOB, "BOBDEV", "m.test", {})
    with pytest.raises(OlmDecryptionError, match="recipient_keys"):
        bob.decrypt_to_device(wrap(ALICE, content))


def test_sender_claiming_another_devices_ed25519_is_rejected(
    server: FakeKeyServer, acquainted: tuple[OlmMachine, OlmMachine]
) -> None:
    alice, bob = acquainted
    establish(server, alice, {BOB: None})
    # Bob's record of Alice has a different ed25519 than Alice puts in her payload.
    device = bob.store.get_device(ALICE, "ALICEDEV")
    assert device is not None
    device.ed25519 = bob.identity_keys["ed25519"]
    bob.store.save_device(device)
    content = alice.encrypt_to_device(BOB, "BOBDEV", "m.test", {})
    with pytest.raises(OlmDecryptionError, match="ed25519"):
        bob.decrypt_to_device(wrap(ALICE, content))


def test_replayed_pre_key_message_fails(server: FakeKeyServer, acquainted: tuple[OlmMachine, OlmMachine]) -> None:
    alice, bob = acquainted
    establish(server, alice, {BOB: None})
    content = alice.encrypt_to_device(BOB, "BOBDEV", "m.test", {})
    bob.decrypt_to_device(wrap(ALICE, content))
    with pytest.raises(OlmDecryptionError):
        bob.decrypt_to_device(wrap(ALICE, content))


def test_unwedging_replaces_a_broken_session_and_sends_a_dummy(
    server: FakeKeyServer, clock: FakeClock, acquainted: tuple[OlmMachine, OlmMachine], make_machine: Callable[..., OlmMachine]
) -> None:
    alice, bob = acquainted
    establish(server, alice, {BOB: None})
    bob.decrypt_to_device(wrap(ALICE, alice.encrypt_to_device(BOB, "BOBDEV", "m.test", {})))
    reply = bob.encrypt_to_device(ALICE, "ALICEDEV", "m.test", {})
    alice.decrypt_to_device(wrap(BOB, reply))

    # Bob loses his Olm sessions (e.g. restored an old backup of his store).
    bob.store._db.execute("DELETE FROM olm_sessions")
    normal = alice.encrypt_to_device(BOB, "BOBDEV", "m.test", {"lost": True})
    assert normal["ciphertext"][bob.identity_keys["curve25519"]]["type"] == 1
    with pytest.raises(OlmDecryptionError):
        bob.decrypt_to_device(wrap(ALICE, normal))
    assert bob.sessions_to_unwedge() == {ALICE: ["ALICEDEV"]}

    # Bob claims a key even though the device was known, makes a new session and sends m.dummy.
    request = bob.claim_request()
    assert request == {"one_time_keys": {ALICE: {"ALICEDEV": "signed_curve25519"}}, "timeout": 10000}
    result = bob.create_olm_sessions(server.claim(request))
    assert result.created == [(ALICE, "ALICEDEV")]
    assert result.unwedge is not None and result.unwedge.devices() == [(ALICE, "ALICEDEV")]
    assert bob.sessions_to_unwedge() == {}
    server.send_to_device(BOB, result.unwedge)
    [dummy] = server.take_to_device(ALICE, "ALICEDEV")
    assert alice.decrypt_to_device(dummy).event["type"] == "m.dummy"

    # Alice follows Bob onto the new session, so her next message reaches him.
    again = alice.encrypt_to_device(BOB, "BOBDEV", "m.test", {"n": 5})
    assert bob.decrypt_to_device(wrap(ALICE, again)).event["content"] == {"n": 5}

    # Another failure within the hour does not start yet another session...
    bob.store._db.execute("DELETE FROM olm_sessions")
    with pytest.raises(OlmDecryptionError):
        bob.decrypt_to_device(wrap(ALICE, alice.encrypt_to_device(BOB, "BOBDEV", "m.test", {})))
    assert bob.sessions_to_unwedge() == {}
    # ...but one after it does.
    clock.advance(UNWEDGE_INTERVAL_MS)
    with pytest.raises(OlmDecryptionError):
        bob.decrypt_to_device(wrap(ALICE, alice.encrypt_to_device(BOB, "BOBDEV", "m.test", {})))
    assert bob.sessions_to_unwedge() == {ALICE: ["ALICEDEV"]}


def test_undecryptable_message_from_unknown_device_asks_for_its_keys(
    server: FakeKeyServer, alice: OlmMachine, bob: OlmMachine
) -> None:
    introduce(server, alice, [BOB])
    establish(server, alice, {BOB: None})
    bob.decrypt_to_device(wrap(ALICE, alice.encrypt_to_device(BOB, "BOBDEV", "m.test", {})))
    # Bob never queried Alice's device keys.
    bob.store._db.execute("DELETE FROM olm_sessions")
    with pytest.raises(OlmDecryptionError):
        bob.decrypt_to_device(wrap(ALICE, alice.encrypt_to_device(BOB, "BOBDEV", "m.test", {})))
    assert bob.sessions_to_unwedge() == {}
    assert bob.keys_query_request() == {"device_keys": {ALICE: []}, "timeout": 10000}
    bob.receive_keys_query(server.query(bob.keys_query_request()))  # type: ignore[arg-type]
    assert bob.sessions_to_unwedge() == {ALICE: ["ALICEDEV"]}
