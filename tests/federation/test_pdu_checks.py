"""The receipt checks for remote PDUs: format, signatures, content hash (redact on mismatch), auth events."""

from __future__ import annotations

from typing import Any

import pytest
from nacl.signing import SigningKey
from unpaddedbase64 import encode_base64

from federation.keyring import Keyring
from federation.pdu_checks import PduRejected, check_against_auth_events, check_signatures_and_hashes
from federation.server_keys import LocalServerKeys
from homeserver.clock import Clock
from homeserver.events import event_id, sign_event

REMOTE = "remote.example"
V = "10"


def _key(version: str) -> SigningKey:
    k = SigningKey.generate()
    k.version = version  # type: ignore[attr-defined]
    return k


REMOTE_KEY = _key("r1")


def keyring() -> Keyring:
    local = LocalServerKeys("local.example", _key("l1"), [], Clock())
    pinned = {REMOTE: {"ed25519:r1": encode_base64(bytes(REMOTE_KEY.verify_key))}}
    return Keyring(None, Clock(), local, pinned=pinned)  # type: ignore[arg-type]  # pinned keys never touch the store


def make(etype: str, content: dict[str, Any], prev: list[str], auth: list[str], depth: int, state_key: str | None = None,
         sender: str = f"@alice:{REMOTE}", key: SigningKey = REMOTE_KEY) -> tuple[str, dict[str, Any]]:
    ev: dict[str, Any] = {"room_id": f"!room:{REMOTE}", "type": etype, "sender": sender, "content": content,
                          "prev_events": prev, "auth_events": auth, "depth": depth, "origin_server_ts": 1_700_000_000_000 + depth}
    if state_key is not None:
        ev["state_key"] = state_key
    signed = sign_event(ev, REMOTE, key, V)
    return event_id(signed, V), signed


def room() -> dict[str, dict[str, Any]]:
    c_id, create = make("m.room.create", {"creator": f"@alice:{REMOTE}", "room_version": V}, [], [], 1, "")
    j_id, join = make("m.room.member", {"membership": "join"}, [c_id], [c_id], 2, f"@alice:{REMOTE}")
    p_id, pl = make("m.room.power_levels", {"users": {f"@alice:{REMOTE}": 100}}, [j_id], [c_id, j_id], 3, "")
    return {c_id: create, j_id: join, p_id: pl}


async def test_a_good_event_passes_every_check() -> None:
    events = room()
    ids = list(events)
    mid, msg = make("m.room.message", {"body": "hello"}, [ids[2]], ids, 4)
    checked = await check_signatures_and_hashes(msg, V, keyring())
    assert checked.event_id == mid and not checked.redacted_for_hash
    check_against_auth_events(checked, events, V)


async def test_changed_content_is_redacted_not_rejected() -> None:
    events = room()
    ids = list(events)
    _, msg = make("m.room.message", {"body": "hello"}, [ids[2]], ids, 4)
    tampered = {**msg, "content": {"body": "changed in transit"}}
    checked = await check_signatures_and_hashes(tampered, V, keyring())
    assert checked.redacted_for_hash and checked.pdu["content"] == {}


async def test_bad_or_missing_signatures_are_rejected() -> None:
    events = room()
    ids = list(events)
    _, forged = make("m.room.message", {"body": "x"}, [ids[2]], ids, 4, key=_key("r1"))
    with pytest.raises(PduRejected, match="signature"):
        await check_signatures_and_hashes(forged, V, keyring())
    _, unsigned = make("m.room.message", {"body": "x"}, [ids[2]], ids, 4)
    unsigned = {**unsigned, "signatures": {}}
    with pytest.raises(PduRejected, match="signature"):
        await check_signatures_and_hashes(unsigned, V, keyring())
    _, other_sender = make("m.room.message", {"body": "x"}, [ids[2]], ids, 4, sender="@mallory:elsewhere.example")
    with pytest.raises(PduRejected, match="signature"):
        await check_signatures_and_hashes(other_sender, V, keyring())
    _, msg = make("m.room.message", {"body": "x"}, [ids[2]], ids, 4)
    del msg["depth"]
    with pytest.raises(PduRejected, match="format"):
        await check_signatures_and_hashes(msg, V, keyring())


async def test_auth_events_must_be_the_right_ones_and_allow_the_event() -> None:
    events = room()
    ids = list(events)
    # A non-member may not speak.
    _, intruder = make("m.room.message", {"body": "hi"}, [ids[2]], [ids[0], ids[2]], 4, sender=f"@bob:{REMOTE}")
    checked = await check_signatures_and_hashes(intruder, V, keyring())
    with pytest.raises(PduRejected, match="auth rule"):
        check_against_auth_events(checked, events, V)
    # An auth event the rules do not call for.
    mid, msg = make("m.room.message", {"body": "x"}, [ids[2]], ids, 4)
    _, bad = make("m.room.message", {"body": "y"}, [mid], [*ids, mid], 5)
    with pytest.raises(PduRejected, match="not one the rules need"):
        check_against_auth_events(await check_signatures_and_hashes(bad, V, keyring()), {**events, mid: msg}, V)
    # A missing auth event.
    _, gap = make("m.room.message", {"body": "z"}, [ids[2]], [*ids, "$missing"], 4)
    with pytest.raises(PduRejected, match="missing"):
        check_against_auth_events(await check_signatures_and_hashes(gap, V, keyring()), events, V)
