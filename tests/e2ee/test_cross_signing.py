"""Cross-signing of a bot's own device: the uploaded keys form a valid chain, the device signature
verifies, and the private keys persist encrypted in the store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from nacl.exceptions import CryptoError

from e2ee import CryptoStore, OlmMachine
from e2ee.cross_signing import CrossSigningKeys
from e2ee.errors import SignatureError
from e2ee.signing import verify_signature

USER = "@bot:hs1.test"


def _pub(obj: dict) -> str:
    (key,) = obj["keys"].values()
    return key


def test_chain_and_device_signature_verify(tmp_path: Path) -> None:
    key = os.urandom(32)
    machine = OlmMachine(USER, "BOTDEV", CryptoStore(tmp_path / "c.db"), key)
    upload, signatures = machine.cross_signing_requests()
    assert upload is not None
    master, ssk, usk = upload["master_key"], upload["self_signing_key"], upload["user_signing_key"]
    assert master["usage"] == ["master"] and ssk["usage"] == ["self_signing"] and usk["usage"] == ["user_signing"]
    for signed in (ssk, usk):
        verify_signature(signed, USER, f"ed25519:{_pub(master)}", _pub(master))
    device = signatures[USER]["BOTDEV"]
    verify_signature(device, USER, f"ed25519:{_pub(ssk)}", _pub(ssk))
    verify_signature(device, USER, "ed25519:BOTDEV", machine.identity_keys["ed25519"])  # its own stays
    with pytest.raises(SignatureError):
        verify_signature({**device, "keys": {**device["keys"], "ed25519:BOTDEV": "changed"}}, USER, f"ed25519:{_pub(ssk)}", _pub(ssk))
    # Published once; the same keys afterwards, also after reopening the store with the same key.
    machine.mark_cross_signing_published()
    again, _ = machine.cross_signing_requests()
    assert again is None
    reopened = OlmMachine(USER, "BOTDEV", CryptoStore(tmp_path / "c.db"), key)
    keys, published = reopened.cross_signing_keys()
    assert published and keys.public(keys.master) == _pub(master)
    # The seeds are sealed with the pickle key: another key cannot open them.
    sealed, _ = CryptoStore(tmp_path / "c.db").load_cross_signing(USER)
    assert _pub(master) not in sealed
    with pytest.raises(CryptoError):
        CrossSigningKeys.unseal(USER, sealed, os.urandom(32))
