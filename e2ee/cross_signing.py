"""Cross-signing for a bot's or bridge's own user: its master, self-signing and user-signing keys.

Clients show a warning on messages from a device its owner has not verified. A person verifies their
devices interactively; a bot or a bridge's puppet has no one to do that, so it vouches for its own
device itself: it publishes a master key, a self-signing key signed by the master key, and signs its
device with the self-signing key — what a client does after "verify this device" — and Element then
shows its messages as sent by a device verified by its owner.

The private keys (32-byte ed25519 seeds) are kept in the crypto store, encrypted with the store's
pickle key like every other secret there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nacl.secret import SecretBox
from nacl.signing import SigningKey

from .codec import decode_b64, encode_b64
from .signing import add_signature

USAGES = ("master", "self_signing", "user_signing")


@dataclass(frozen=True)
class CrossSigningKeys:
    user_id: str
    master: SigningKey
    self_signing: SigningKey
    user_signing: SigningKey

    @classmethod
    def generate(cls, user_id: str) -> "CrossSigningKeys":
        return cls(user_id, SigningKey.generate(), SigningKey.generate(), SigningKey.generate())

    @staticmethod
    def public(key: SigningKey) -> str:
        return encode_b64(bytes(key.verify_key))

    def _key_object(self, usage: str, key: SigningKey, signer: SigningKey | None) -> dict[str, Any]:
        pub = self.public(key)
        obj: dict[str, Any] = {"user_id": self.user_id, "usage": [usage], "keys": {f"ed25519:{pub}": pub}}
        if signer is not None:
            obj = add_signature(obj, self.user_id, f"ed25519:{self.public(signer)}", lambda b: encode_b64(signer.sign(b).signature))
        return obj

    def upload_body(self) -> dict[str, Any]:
        """The body of POST /keys/device_signing/upload: the master key, and the other two signed by it."""
        return {
            "master_key": self._key_object("master", self.master, None),
            "self_signing_key": self._key_object("self_signing", self.self_signing, self.master),
            "user_signing_key": self._key_object("user_signing", self.user_signing, self.master),
        }

    def sign_device(self, device_keys: dict[str, Any]) -> dict[str, Any]:
        """The device's keys with this user's self-signing signature added (for /keys/signatures/upload)."""
        ssk = self.self_signing
        return add_signature(device_keys, self.user_id, f"ed25519:{self.public(ssk)}", lambda b: encode_b64(ssk.sign(b).signature))

    def seal(self, pickle_key: bytes) -> str:
        seeds = b"".join(bytes(k) for k in (self.master, self.self_signing, self.user_signing))
        return encode_b64(SecretBox(pickle_key).encrypt(seeds))

    @classmethod
    def unseal(cls, user_id: str, sealed: str, pickle_key: bytes) -> "CrossSigningKeys":
        seeds = SecretBox(pickle_key).decrypt(decode_b64(sealed))
        if len(seeds) != 96:
            raise ValueError("corrupt cross-signing keys in the store")
        return cls(user_id, SigningKey(seeds[:32]), SigningKey(seeds[32:64]), SigningKey(seeds[64:]))
