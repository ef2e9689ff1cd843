"""Persistence: a machine reopened from its store with the same pickle key carries on where it left off."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from e2ee import CryptoStore, OlmMachine, PickleKeyError, StoreMismatchError
from e2ee.megolm import OutboundGroupSession

from .conftest import ALICE, BOB
from .fakeserver import FakeClock, FakeKeyServer, establish, introduce, upload_keys

ROOM = "!room:hs1.test"


def test_reopened_store_keeps_identity_sessions_and_room_keys(
    tmp_path: Path, server: FakeKeyServer, clock: FakeClock
) -> None:
    alice_key, bob_key = os.urandom(32), os.urandom(32)
    alice = OlmMachine(ALICE, "ALICEDEV", CryptoStore(tmp_path / "alice.db"), alice_key, clock=clock)
    bob_store = CryptoStore(tmp_path / "bob.db")
    bob = OlmMachine(BOB, "BOBDEV", bob_store, bob_key, clock=clock)
    for machine in (alice, bob):
        upload_keys(server, machine)
    for machine in (alice, bob):
        introduce(server, machine, [ALICE, BOB])
    establish(server, alice, {BOB: None})
    server.send_to_device(ALICE, alice.share_room_key(ROOM, {BOB: None}))
    for to_device_event in server.take_to_device(BOB, "BOBDEV"):
        bob.decrypt_to_device(to_device_event)
    first = alice.encrypt_room_event(ROOM, "m.room.message", {"body": "before restart"})
    identity = bob.identity_keys
    bob_store.close()

    # Bob restarts: same identity, same room key, same Olm session, published state remembered.
    bob = OlmMachine(BOB, "BOBDEV", CryptoStore(tmp_path / "bob.db"), bob_key, clock=clock)
    assert bob.identity_keys == identity
    # Device keys stay published; only the one-time key Alice claimed is replaced.
    upload = bob.keys_for_upload(server.counts(BOB, "BOBDEV"), ["signed_curve25519"])
    assert upload is not None and list(upload) == ["one_time_keys"] and len(upload["one_time_keys"]) == 1
    event: dict[str, Any] = {"room_id": ROOM, "sender": ALICE, "event_id": "$1", "origin_server_ts": 1, "content": first}
    assert bob.decrypt_room_event(event).event["content"]["body"] == "before restart"
    to_device = alice.encrypt_to_device(BOB, "BOBDEV", "m.test", {"after": "restart"})
    got = bob.decrypt_to_device({"type": "m.room.encrypted", "sender": ALICE, "content": to_device})
    assert got.event["content"] == {"after": "restart"}

    # Replay state is persistent too.
    second = alice.encrypt_room_event(ROOM, "m.room.message", {"body": "later"})
    assert bob.decrypt_room_event({**event, "event_id": "$2", "content": second}).message_index == 1

    # Alice restarts and keeps encrypting with the same outbound session and message count.
    alice.store.close()
    alice = OlmMachine(ALICE, "ALICEDEV", CryptoStore(tmp_path / "alice.db"), alice_key, clock=clock)
    third = alice.encrypt_room_event(ROOM, "m.room.message", {"body": "third"})
    assert third["session_id"] == first["session_id"]
    assert bob.decrypt_room_event({**event, "event_id": "$3", "content": third}).message_index == 2


def test_wrong_pickle_key_fails(tmp_path: Path) -> None:
    OlmMachine(ALICE, "ALICEDEV", CryptoStore(tmp_path / "a.db"), b"1" * 32).store.close()
    with pytest.raises(PickleKeyError):
        OlmMachine(ALICE, "ALICEDEV", CryptoStore(tmp_path / "a.db"), b"2" * 32)
    with pytest.raises(ValueError):
        OlmMachine(ALICE, "ALICEDEV", CryptoStore(tmp_path / "b.db"), b"short")


def test_store_of_another_device_is_refused(tmp_path: Path) -> None:
    OlmMachine(ALICE, "ALICEDEV", CryptoStore(tmp_path / "a.db"), b"1" * 32).store.close()
    with pytest.raises(StoreMismatchError):
        OlmMachine(ALICE, "OTHERDEV", CryptoStore(tmp_path / "a.db"), b"1" * 32)


def test_no_secret_is_stored_in_the_clear(
    tmp_path: Path, server: FakeKeyServer, clock: FakeClock
) -> None:
    alice = OlmMachine(ALICE, "ALICEDEV", CryptoStore(tmp_path / "alice.db"), os.urandom(32), clock=clock)
    bob = OlmMachine(BOB, "BOBDEV", CryptoStore(tmp_path / "bob.db"), os.urandom(32), clock=clock)
    for machine in (alice, bob):
        upload_keys(server, machine)
    for machine in (alice, bob):
        introduce(server, machine, [ALICE, BOB])
    establish(server, alice, {BOB: None})
    request = alice.share_room_key(ROOM, {BOB: None})
    stored = alice.store.load_outbound_group_session(ROOM)
    assert stored is not None
    session_key = OutboundGroupSession.from_stored(stored, alice._pickle_key).session_key
    assert len(request) == 1
    alice.store.close()
    dump = "\n".join(sqlite3.connect(tmp_path / "alice.db").iterdump())
    assert session_key not in dump
    # Every pickle is ciphertext that opens only with the right key.
    db = sqlite3.connect(tmp_path / "alice.db")
    [(pickle,)] = db.execute("SELECT pickle FROM outbound_group_sessions").fetchall()
    with pytest.raises(PickleKeyError):
        OutboundGroupSession.from_stored(replace(stored, pickle=pickle), os.urandom(32))
    assert OutboundGroupSession.from_stored(replace(stored, pickle=pickle), alice._pickle_key).session_key == session_key
