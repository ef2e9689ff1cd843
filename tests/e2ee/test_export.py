"""Room-key export files: the spec's format, interop with other implementations, and import rules."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any, Callable

import pytest

from e2ee import KeyExportError, MegolmDecryptionError, MissingSessionError, OlmMachine
from e2ee.export import FOOTER, HEADER, decrypt_key_export, encrypt_key_export

from .conftest import ALICE, BOB
from .fakeserver import FakeKeyServer, establish, introduce

ROOM = "!room:hs1.test"

# Published test vectors of Element's key export code (matrix-react-sdk's
# MegolmExportEncryption tests, also used by the Android SDK): (passphrase, export, plaintext).
ELEMENT_VECTORS = [
    (
        "password",
        "-----BEGIN MEGOLM SESSION DATA-----\n"
        "AXNhbHRzYWx0c2FsdHNhbHSIiIiIiIiIiIiIiIiIiIiIAAAACmIRUW2OjZ3L2l6j9h0lHlV3M2dx\n"
        "cissyYBxjsfsAndErh065A8=\n"
        "-----END MEGOLM SESSION DATA-----",
        b"plain",
    ),
    (
        "betterpassword",
        "-----BEGIN MEGOLM SESSION DATA-----\n"
        "AW1vcmVzYWx0bW9yZXNhbHT//////////wAAAAAAAAAAAAAD6KyBpe1Niv5M5NPm4ZATsJo5nghk\n"
        "KYu63a0YQ5DRhUWEKk7CcMkrKnAUiZny\n"
        "-----END MEGOLM SESSION DATA-----",
        b"Hello, World",
    ),
    (
        "SWORDFISH",
        "-----BEGIN MEGOLM SESSION DATA-----\n"
        "AXllc3NhbHR5Z29vZG5lc3P//////////wAAAAAAAAAAAAAD6OIW+Je7gwvjd4kYrb+49gKCfExw\n"
        "MgJBMD4mrhLkmgAngwR1pHjbWXaoGybtiAYr0moQ93GrBQsCzPbvl82rZhaXO3iH5uHo/RCEpOqp\n"
        "Pgg29363BGR+/Ripq/VCLKGNbw==\n"
        "-----END MEGOLM SESSION DATA-----",
        b"alphanumericallyalphanumericallyalphanumericallyalphanumerically",
    ),
]


@pytest.mark.parametrize(("passphrase", "armoured", "plaintext"), ELEMENT_VECTORS)
def test_decrypts_elements_published_vectors(passphrase: str, armoured: str, plaintext: bytes) -> None:
    assert decrypt_key_export(armoured, passphrase) == plaintext
    with pytest.raises(KeyExportError):
        decrypt_key_export(armoured, passphrase + "x")


def test_layout_matches_an_independently_built_export() -> None:
    """Build an export byte by byte with pycryptodome's AES (not the code under test) and read it."""
    aes = pytest.importorskip("Crypto.Cipher.AES")
    counter = pytest.importorskip("Crypto.Util.Counter")
    salt, iv, rounds, plaintext = bytes(range(16)), bytes(range(100, 116)), 1000, b'[{"k":"v"}]'
    derived = hashlib.pbkdf2_hmac("sha512", "pass phrase".encode(), salt, rounds, 64)
    cipher = aes.new(derived[:32], aes.MODE_CTR, counter=counter.new(128, initial_value=int.from_bytes(iv, "big")))
    body = b"\x01" + salt + iv + rounds.to_bytes(4, "big") + cipher.encrypt(plaintext)
    blob = body + hmac.new(derived[32:], body, hashlib.sha256).digest()
    armoured = f"{HEADER}\n{base64.b64encode(blob).decode()}\n{FOOTER}\n"
    assert decrypt_key_export(armoured, "pass phrase") == plaintext

    # And our own output has that layout: version, salt, IV with bit 63 clear, rounds, MAC.
    ours = encrypt_key_export(plaintext, "pass phrase", rounds=1234)
    lines = ours.strip().splitlines()
    assert lines[0] == HEADER and lines[-1] == FOOTER
    raw = base64.b64decode("".join(lines[1:-1]))
    assert raw[0] == 1 and int.from_bytes(raw[33:37], "big") == 1234
    assert raw[17 + 8] & 0x80 == 0
    assert len(raw) == 1 + 16 + 16 + 4 + len(plaintext) + 32
    derived = hashlib.pbkdf2_hmac("sha512", b"pass phrase", raw[1:17], 1234, 64)
    assert hmac.new(derived[32:], raw[:-32], hashlib.sha256).digest() == raw[-32:]


def test_interop_with_matrix_nio_key_export() -> None:
    nio_export = pytest.importorskip("nio.crypto.key_export")
    plaintext = json.dumps([{"session_id": "x"}]).encode()
    # nio writes (unarmoured, padded base64), we read.
    payload = nio_export.encrypt(plaintext, "correct horse", count=1000)
    assert decrypt_key_export(f"{HEADER}\n{payload}\n{FOOTER}", "correct horse") == plaintext
    # We write, nio reads.
    ours = encrypt_key_export(plaintext, "correct horse", rounds=1000)
    assert nio_export.decrypt("".join(ours.strip().splitlines()[1:-1]), "correct horse") == plaintext


@pytest.mark.parametrize(
    "text",
    ["", "-----", f"{HEADER}\n-----", f"{HEADER}\nAXNhbHRzYWx0c2FsdHNhbHSIiIiI\n{FOOTER}", f"{HEADER}\n!!!!\n{FOOTER}"],
)
def test_malformed_exports_are_refused(text: str) -> None:
    with pytest.raises(KeyExportError):
        decrypt_key_export(text, "password")


def test_tampered_export_is_refused() -> None:
    armoured = encrypt_key_export(b"secret sessions", "pw", rounds=1000)
    lines = armoured.strip().splitlines()
    raw = bytearray(base64.b64decode("".join(lines[1:-1])))
    raw[40] ^= 1
    with pytest.raises(KeyExportError, match="HMAC"):
        decrypt_key_export(f"{HEADER}\n{base64.b64encode(bytes(raw)).decode()}\n{FOOTER}", "pw")


def _room_with_messages(server: FakeKeyServer, alice: OlmMachine, bob: OlmMachine) -> list[dict[str, Any]]:
    establish(server, alice, {BOB: None})
    server.send_to_device(ALICE, alice.share_room_key(ROOM, {BOB: None}))
    for event in server.take_to_device(BOB, "BOBDEV"):
        bob.decrypt_to_device(event)
    return [
        {
            "type": "m.room.encrypted",
            "room_id": ROOM,
            "sender": ALICE,
            "event_id": f"$e{i}",
            "origin_server_ts": 1000 + i,
            "content": alice.encrypt_room_event(ROOM, "m.room.message", {"body": f"message {i}"}),
        }
        for i in range(3)
    ]


def test_export_and_import_between_devices(
    server: FakeKeyServer, make_machine: Callable[..., OlmMachine], acquainted: tuple[OlmMachine, OlmMachine]
) -> None:
    alice, bob = acquainted
    events = _room_with_messages(server, alice, bob)
    exported = bob.export_room_keys("a long passphrase", rounds=1000)

    [entry] = json.loads(decrypt_key_export(exported, "a long passphrase"))
    assert entry == {
        "algorithm": "m.megolm.v1.aes-sha2",
        "room_id": ROOM,
        "sender_key": alice.identity_keys["curve25519"],
        "session_id": events[0]["content"]["session_id"],
        "session_key": entry["session_key"],
        "sender_claimed_keys": {"ed25519": alice.identity_keys["ed25519"]},
        "forwarding_curve25519_key_chain": [],
    }

    bob_laptop = make_machine(BOB, "BOBLAPTOP")
    with pytest.raises(MissingSessionError):
        bob_laptop.decrypt_room_event(events[0])
    with pytest.raises(KeyExportError):
        bob_laptop.import_room_keys(exported, "the wrong passphrase")
    assert bob_laptop.import_room_keys(exported, "a long passphrase") == 1
    for i, event in enumerate(events):
        decrypted = bob_laptop.decrypt_room_event(event)
        assert decrypted.event["content"]["body"] == f"message {i}"
        assert not decrypted.authentic  # imported keys never vouch for the sender
    assert bob_laptop.import_room_keys(exported, "a long passphrase") == 0  # nothing better

    # Alice's own export (her inbound copy of her outbound session) also works, and Bob's
    # directly received key is not replaced by the imported one of equal index.
    assert bob.import_room_keys(alice.export_room_keys("pw", rounds=1000), "pw") == 0
    assert bob.decrypt_room_event(events[0]).authentic


def test_export_starts_at_the_first_known_index(
    server: FakeKeyServer, make_machine: Callable[..., OlmMachine], acquainted: tuple[OlmMachine, OlmMachine]
) -> None:
    alice, bob = acquainted
    events = _room_with_messages(server, alice, bob)
    # Carol joins after three messages: her key starts at index 3.
    carol = make_machine("@carol:hs3.test", "CAROLDEV")
    introduce(server, alice, ["@carol:hs3.test"])
    introduce(server, carol, [ALICE])
    establish(server, alice, {"@carol:hs3.test": None})
    server.send_to_device(ALICE, alice.share_room_key(ROOM, {BOB: None, "@carol:hs3.test": None}))
    for event in server.take_to_device("@carol:hs3.test", "CAROLDEV"):
        carol.decrypt_to_device(event)
    later = {**events[0], "event_id": "$later", "content": alice.encrypt_room_event(ROOM, "m.room.message", {"body": "x"})}
    assert carol.decrypt_room_event(later).message_index == 3

    bob_laptop = make_machine(BOB, "BOBLAPTOP")
    bob_laptop.import_room_keys(carol.export_room_keys("pw", rounds=1000), "pw")
    assert bob_laptop.decrypt_room_event(later).event["content"]["body"] == "x"
    with pytest.raises(MegolmDecryptionError):
        bob_laptop.decrypt_room_event(events[0])  # index 0 is before what Carol could export
    # A better (earlier) copy of the same session replaces the partial one.
    assert bob_laptop.import_room_keys(bob.export_room_keys("pw", rounds=1000), "pw") == 1
    assert bob_laptop.decrypt_room_event(events[0]).event["content"]["body"] == "message 0"


def test_entries_with_a_mismatched_session_id_are_skipped(
    server: FakeKeyServer, make_machine: Callable[..., OlmMachine], acquainted: tuple[OlmMachine, OlmMachine]
) -> None:
    alice, bob = acquainted
    _room_with_messages(server, alice, bob)
    [entry] = json.loads(decrypt_key_export(bob.export_room_keys("pw", rounds=1000), "pw"))
    forged = [{**entry, "session_id": "someothersession"}, {**entry, "session_key": "garbage"}]
    armoured = encrypt_key_export(json.dumps(forged).encode(), "pw", rounds=1000)
    assert make_machine(BOB, "BOBLAPTOP").import_room_keys(armoured, "pw") == 0
