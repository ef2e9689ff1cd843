"""This server's published signing keys (``GET /_matrix/key/v2/server``).

The response is signed by the current key and lists retired keys under ``old_verify_keys`` with the
time they stopped being used, so events signed before a ``qasid keys rotate`` still verify elsewhere.
"""

from __future__ import annotations

from typing import Any

from nacl.signing import SigningKey
from unpaddedbase64 import encode_base64

from homeserver.clock import Clock
from homeserver.events.signing import key_id, sign_json
from homeserver.signing_key import OldVerifyKey

# How long other servers may cache our key response (Synapse publishes one day too).
KEY_VALIDITY_MS = 24 * 3600 * 1000


class LocalServerKeys:
    def __init__(self, server_name: str, signing_key: SigningKey, old_keys: list[OldVerifyKey], clock: Clock) -> None:
        self.server_name = server_name
        self.signing_key = signing_key
        self.old_keys = old_keys
        self.clock = clock
        self._cached: dict[str, Any] | None = None

    @property
    def key_id(self) -> str:
        return key_id(self.signing_key)

    @property
    def public_key(self) -> str:
        return encode_base64(bytes(self.signing_key.verify_key))

    def response(self) -> dict[str, Any]:
        """The signed key response; re-signed once half of its validity has passed."""
        now = self.clock.time_ms()
        cached = self._cached
        if cached is None or cached["valid_until_ts"] - now < KEY_VALIDITY_MS // 2:
            body = {
                "server_name": self.server_name,
                "valid_until_ts": now + KEY_VALIDITY_MS,
                "verify_keys": {self.key_id: {"key": self.public_key}},
                "old_verify_keys": {
                    k.key_id: {"key": k.public_key, "expired_ts": k.expired_ts}
                    for k in self.old_keys if k.key_id != self.key_id
                },
            }
            cached = self._cached = sign_json(body, self.server_name, self.signing_key)
        return cached

    def countersign(self, response: dict[str, Any]) -> dict[str, Any]:
        """A notary's signature added to another server's key response."""
        return sign_json(response, self.server_name, self.signing_key)
