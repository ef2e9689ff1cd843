"""This device's Olm account: its identity keys and the one-time and fallback keys it publishes.

Wraps ``vodozemac.Account`` with what the Matrix key-upload API needs on top: the device's
user/device ids, the spec's signed JSON shapes for /keys/upload, and pickling with the caller's
key. Other devices start Olm sessions with us by claiming one of our one-time keys, so keeping a
stock of them on the server (and a fallback key for when the stock runs out) is what keeps us
reachable.
"""

from __future__ import annotations

from typing import Any

import vodozemac

from .devices import MEGOLM_ALGORITHM, OLM_ALGORITHM, SIGNED_CURVE25519
from .errors import PickleKeyError
from .signing import add_signature


class Account:
    """The device's long-term identity (Curve25519 + Ed25519) and its one-time keys."""

    def __init__(self, user_id: str, device_id: str, inner: vodozemac.Account | None = None) -> None:
        """Wrap ``inner`` or, if None, generate fresh identity keys."""
        self.user_id = user_id
        self.device_id = device_id
        self.inner = inner if inner is not None else vodozemac.Account()

    # --- persistence ---------------------------------------------------------------------------

    def pickle(self, pickle_key: bytes) -> str:
        """Encrypted serialisation for the store."""
        return self.inner.pickle(pickle_key)

    @classmethod
    def from_pickle(cls, user_id: str, device_id: str, pickle: str, pickle_key: bytes) -> "Account":
        """Restore from the store; a wrong key raises PickleKeyError rather than returning garbage."""
        try:
            inner = vodozemac.Account.from_pickle(pickle, pickle_key)
        except vodozemac.PickleException as exc:
            raise PickleKeyError(f"cannot open the stored account: {exc}") from exc
        return cls(user_id, device_id, inner)

    # --- identity ------------------------------------------------------------------------------

    @property
    def curve25519(self) -> str:
        """Identity key for Olm (base64): what peers encrypt to."""
        return self.inner.curve25519_key.to_base64()

    @property
    def ed25519(self) -> str:
        """Fingerprint key (base64): what our signatures verify against."""
        return self.inner.ed25519_key.to_base64()

    def sign(self, message: bytes) -> str:
        """Ed25519 signature over raw bytes, unpadded base64."""
        return self.inner.sign(message).to_base64()

    def sign_json(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Copy of ``obj`` signed by this device under ``ed25519:<device_id>``."""
        return add_signature(obj, self.user_id, f"ed25519:{self.device_id}", self.sign)

    def device_keys(self) -> dict[str, Any]:
        """The signed ``device_keys`` object for /keys/upload."""
        return self.sign_json(
            {
                "user_id": self.user_id,
                "device_id": self.device_id,
                "algorithms": [OLM_ALGORITHM, MEGOLM_ALGORITHM],
                "keys": {
                    f"curve25519:{self.device_id}": self.curve25519,
                    f"ed25519:{self.device_id}": self.ed25519,
                },
            }
        )

    # --- one-time and fallback keys ------------------------------------------------------------

    @property
    def max_one_time_keys(self) -> int:
        """How many one-time keys vodozemac keeps; publishing more would discard private halves."""
        return self.inner.max_number_of_one_time_keys

    def unpublished_one_time_key_count(self) -> int:
        """One-time keys generated but not yet marked as published."""
        return len(self.inner.one_time_keys)

    def generate_one_time_keys(self, count: int) -> None:
        """Add ``count`` new one-time keys to the unpublished set."""
        if count > 0:
            self.inner.generate_one_time_keys(count)

    def generate_fallback_key(self) -> None:
        """Create a new fallback key, used by peers when our one-time keys are exhausted."""
        self.inner.generate_fallback_key()  # type: ignore[attr-defined]  # missing from vodozemac's stubs

    def one_time_keys_for_upload(self) -> dict[str, Any]:
        """Unpublished one-time keys as the signed ``one_time_keys`` map of /keys/upload."""
        return {
            f"{SIGNED_CURVE25519}:{key_id}": self.sign_json({"key": key.to_base64()})
            for key_id, key in self.inner.one_time_keys.items()
        }

    def fallback_keys_for_upload(self) -> dict[str, Any]:
        """The unpublished fallback key (if any) as the signed ``fallback_keys`` map of /keys/upload."""
        return {
            f"{SIGNED_CURVE25519}:{key_id}": self.sign_json({"key": key.to_base64(), "fallback": True})
            for key_id, key in self.inner.fallback_key.items()  # type: ignore[attr-defined]  # ditto
        }

    def mark_keys_as_published(self) -> None:
        """Forget that the current one-time/fallback keys are unpublished (their private halves stay)."""
        self.inner.mark_keys_as_published()

    # --- sessions ------------------------------------------------------------------------------

    def create_outbound_session(self, their_curve25519: str, their_one_time_key: str) -> vodozemac.Session:
        """Start an Olm session to a device using a one-time key we claimed from it."""
        return self.inner.create_outbound_session(
            vodozemac.Curve25519PublicKey.from_base64(their_curve25519),
            vodozemac.Curve25519PublicKey.from_base64(their_one_time_key),
        )

    def create_inbound_session(
        self, their_curve25519: str, message: vodozemac.PreKeyMessage
    ) -> tuple[vodozemac.Session, bytes]:
        """Accept an Olm session a peer started with a pre-key message; consumes our one-time key."""
        return self.inner.create_inbound_session(vodozemac.Curve25519PublicKey.from_base64(their_curve25519), message)
