"""Signing and verifying JSON objects with ed25519, as the spec's "Signing JSON" section describes.

The signature covers the canonical JSON of the object without its ``signatures`` and ``unsigned``
members, so that signatures can be added and servers can annotate ``unsigned`` without breaking
earlier signatures.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import vodozemac

from .codec import canonical_json
from .errors import SignatureError


def signable_bytes(obj: dict[str, Any]) -> bytes:
    """The bytes a signature over ``obj`` covers: canonical JSON minus signatures and unsigned."""
    stripped = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    return canonical_json(stripped)


def add_signature(
    obj: dict[str, Any], user_id: str, key_id: str, sign: Callable[[bytes], str]
) -> dict[str, Any]:
    """Return a copy of ``obj`` with ``signatures[user_id][key_id]`` set by ``sign``.

    ``sign`` takes the signable bytes and returns an unpadded base64 signature; taking a callable
    keeps this module independent of where the private key lives (vodozemac account or pynacl key).
    """
    signed = copy.deepcopy(obj)
    signature = sign(signable_bytes(obj))
    signed.setdefault("signatures", {}).setdefault(user_id, {})[key_id] = signature
    return signed


def verify_signature(obj: dict[str, Any], user_id: str, key_id: str, ed25519_key: str) -> None:
    """Check that ``obj`` carries a valid signature by ``ed25519_key`` under ``user_id``/``key_id``.

    Raises SignatureError when the signature is missing, malformed, or does not verify.
    """
    try:
        signature_b64 = obj["signatures"][user_id][key_id]
    except (KeyError, TypeError):
        raise SignatureError(f"no signature by {user_id} {key_id}") from None
    if not isinstance(signature_b64, str):
        raise SignatureError(f"signature by {user_id} {key_id} is not a string")
    try:
        public_key = vodozemac.Ed25519PublicKey.from_base64(ed25519_key)
        signature = vodozemac.Ed25519Signature.from_base64(signature_b64)
        public_key.verify_signature(signable_bytes(obj), signature)
    except (vodozemac.KeyException, vodozemac.SignatureException, vodozemac.DecodeException, ValueError) as exc:
        raise SignatureError(f"bad signature by {user_id} {key_id}: {exc}") from exc
