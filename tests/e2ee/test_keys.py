"""Key upload, device-key queries and one-time-key claims, against the spec's shapes and checks."""

from __future__ import annotations

import copy
import json
from typing import Callable

import pytest
import vodozemac

from e2ee import CryptoStore, OlmMachine
from e2ee.codec import canonical_json
from e2ee.signing import verify_signature

from .conftest import ALICE, BOB
from .fakeserver import FakeKeyServer


def test_canonical_json_matches_the_spec_form() -> None:
    assert canonical_json({"b": 1, "a": {"d": "é", "c": [1, 2]}}) == '{"a":{"c":[1,2],"d":"é"},"b":1}'.encode()
    with pytest.raises(ValueError):
        canonical_json({"a": 1.5})


def test_device_keys_are_self_signed_over_canonical_json(alice: OlmMachine) -> None:
    keys = alice.device_keys()
    assert keys["user_id"] == ALICE and keys["device_id"] == "ALICEDEV"
    assert keys["algorithms"] == ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"]
    assert keys["keys"] == {
        "curve25519:ALICEDEV": alice.identity_keys["curve25519"],
        "ed25519:ALICEDEV": alice.identity_keys["ed25519"],
    }
    # Verify independently with vodozemac over the canonical bytes minus signatures/unsigned.
    signed_part = {k: v for k, v in keys.items() if k not in ("signatures", "unsigned")}
    message = json.dumps(signed_part, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    signature = vodozemac.Ed25519Signature.from_base64(keys["signatures"][ALICE]["ed25519:ALICEDEV"])
    vodozemac.Ed25519PublicKey.from_base64(alice.identity_keys["ed25519"]).verify_signature(message, signature)
    # An unsigned annotation from the server does not break the signature.
    verify_signature({**keys, "unsigned": {"device_display_name": "x"}}, ALICE, "ed25519:ALICEDEV", alice.identity_keys["ed25519"])


def test_first_upload_has_device_keys_half_the_one_time_keys_and_a_fallback(
    make_machine: Callable[..., OlmMachine],
) -> None:
    machine = make_machine(ALICE, "NEW", upload=False)
    body = machine.keys_for_upload({})
    assert body is not None
    assert body["device_keys"]["device_id"] == "NEW"
    half = vodozemac.Account().max_number_of_one_time_keys // 2
    assert len(body["one_time_keys"]) == half
    for key_id, key in body["one_time_keys"].items():
        assert key_id.startswith("signed_curve25519:")
        verify_signature(key, ALICE, "ed25519:NEW", machine.identity_keys["ed25519"])
    [(fallback_id, fallback)] = body["fallback_keys"].items()
    assert fallback_id.startswith("signed_curve25519:") and fallback["fallback"] is True
    verify_signature(fallback, ALICE, "ed25519:NEW", machine.identity_keys["ed25519"])

    # Until the upload is confirmed, the same keys are offered again (no new ones pile up).
    again = machine.keys_for_upload({})
    assert again is not None and again["one_time_keys"].keys() == body["one_time_keys"].keys()

    machine.mark_keys_as_published()
    assert machine.keys_for_upload({"signed_curve25519": half}, ["signed_curve25519"]) is None


def test_replenishes_only_what_the_server_lacks(server: FakeKeyServer, alice: OlmMachine) -> None:
    half = vodozemac.Account().max_number_of_one_time_keys // 2
    body = alice.keys_for_upload({"signed_curve25519": half - 3}, ["signed_curve25519"])
    assert body is not None and "device_keys" not in body and "fallback_keys" not in body
    assert len(body["one_time_keys"]) == 3
    alice.mark_keys_as_published()
    # The server reports the fallback key used: a new one is generated.
    body = alice.keys_for_upload({"signed_curve25519": half}, [])
    assert body is not None and list(body) == ["fallback_keys"]


def test_keys_query_stores_verified_devices_and_tracks_deletions(
    server: FakeKeyServer, alice: OlmMachine, bob: OlmMachine
) -> None:
    alice.update_tracked_users([BOB])
    request = alice.keys_query_request()
    assert request == {"device_keys": {BOB: []}, "timeout": 10000}
    result = alice.receive_keys_query(server.query(request))
    assert result.new_devices == [(BOB, "BOBDEV")]
    device = alice.get_device(BOB, "BOBDEV")
    assert device is not None and device.curve25519 == bob.identity_keys["curve25519"]
    assert alice.keys_query_request() is None  # no longer outdated

    alice.receive_device_list_changes(changed=[BOB])
    assert alice.keys_query_request() == {"device_keys": {BOB: []}, "timeout": 10000}
    result = alice.receive_keys_query({"device_keys": {BOB: {}}})
    assert result.deleted_devices == [(BOB, "BOBDEV")]
    assert alice.get_device(BOB, "BOBDEV").deleted  # type: ignore[union-attr]


def test_keys_query_rejects_forged_and_changed_keys(server: FakeKeyServer, alice: OlmMachine, bob: OlmMachine) -> None:
    response = server.query({"device_keys": {BOB: []}})
    forged = copy.deepcopy(response)
    forged["device_keys"][BOB]["BOBDEV"]["keys"]["curve25519:BOBDEV"] = vodozemac.Account().curve25519_key.to_base64()
    result = alice.receive_keys_query(forged)
    assert result.rejected_devices and result.rejected_devices[0][:2] == (BOB, "BOBDEV")
    assert alice.get_device(BOB, "BOBDEV") is None

    misfiled = copy.deepcopy(response)
    misfiled["device_keys"][BOB]["OTHER"] = misfiled["device_keys"][BOB].pop("BOBDEV")
    assert alice.receive_keys_query(misfiled).rejected_devices[0][1] == "OTHER"

    assert alice.receive_keys_query(response).new_devices == [(BOB, "BOBDEV")]
    # A validly self-signed but *different* key set for a known device id is refused.
    impostor = OlmMachine(BOB, "BOBDEV", CryptoStore(":memory:"), b"k" * 32)
    changed = {"device_keys": {BOB: {"BOBDEV": impostor.device_keys()}}}
    result = alice.receive_keys_query(changed)
    assert result.rejected_devices == [(BOB, "BOBDEV", "device keys changed")]
    assert alice.get_device(BOB, "BOBDEV").curve25519 == bob.identity_keys["curve25519"]  # type: ignore[union-attr]


def test_claim_creates_sessions_only_for_validly_signed_keys(
    server: FakeKeyServer, acquainted: tuple[OlmMachine, OlmMachine]
) -> None:
    alice, bob = acquainted
    request = alice.claim_request({BOB: None})
    assert request == {"one_time_keys": {BOB: {"BOBDEV": "signed_curve25519"}}, "timeout": 10000}
    response = server.claim(request)
    tampered = copy.deepcopy(response)
    [key_object] = tampered["one_time_keys"][BOB]["BOBDEV"].values()
    key_object["key"] = vodozemac.Account().curve25519_key.to_base64()
    result = alice.create_olm_sessions(tampered)
    assert result.created == [] and result.failed[0][:2] == (BOB, "BOBDEV")
    assert alice.claim_request({BOB: None}) is not None  # still no session

    result = alice.create_olm_sessions(response)
    assert result.created == [(BOB, "BOBDEV")] and result.unwedge is None
    assert alice.claim_request({BOB: None}) is None


def test_fallback_key_is_used_when_one_time_keys_run_out(
    server: FakeKeyServer, acquainted: tuple[OlmMachine, OlmMachine]
) -> None:
    alice, bob = acquainted
    server.one_time_keys[(BOB, "BOBDEV")].clear()
    response = server.claim(alice.claim_request({BOB: None}))  # type: ignore[arg-type]
    [key_object] = response["one_time_keys"][BOB]["BOBDEV"].values()
    assert key_object["fallback"] is True
    assert alice.create_olm_sessions(response).created == [(BOB, "BOBDEV")]
    content = alice.encrypt_to_device(BOB, "BOBDEV", "m.test", {"n": 1})
    decrypted = bob.decrypt_to_device({"type": "m.room.encrypted", "sender": ALICE, "content": content})
    assert decrypted.event["content"] == {"n": 1}
