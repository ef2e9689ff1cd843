"""Byte encodings used on the Matrix wire: unpadded base64 and canonical JSON.

Matrix sends keys, ciphertexts and signatures as *unpadded* standard base64, but some peers pad, so
decoding accepts both. Canonical JSON is the exact byte form that signatures are computed over; it
has to be byte-identical to what other implementations produce or no signature will verify.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any


def encode_b64(data: bytes) -> str:
    """Unpadded standard base64, the encoding Matrix uses for keys and ciphertexts."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def decode_b64(text: str) -> bytes:
    """Decode standard base64 with or without padding; raises ValueError on garbage."""
    if not isinstance(text, str):
        raise ValueError("base64 value must be a string")
    stripped = text.strip().rstrip("=")
    try:
        return base64.b64decode(stripped + "=" * (-len(stripped) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"invalid base64: {exc}") from exc


def encode_b64_urlsafe(data: bytes) -> str:
    """Unpadded URL-safe base64, which JSON Web Keys (the ``k`` of an attachment key) require."""
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def decode_b64_urlsafe(text: str) -> bytes:
    """Decode URL-safe base64 with or without padding; raises ValueError on garbage."""
    if not isinstance(text, str):
        raise ValueError("base64 value must be a string")
    stripped = text.strip().rstrip("=")
    padded = stripped + "=" * (-len(stripped) % 4)
    try:
        return base64.b64decode(padded, altchars=b"-_", validate=True)
    except binascii.Error as exc:
        raise ValueError(f"invalid base64: {exc}") from exc


def canonical_json(value: Any) -> bytes:
    """The spec's canonical JSON: sorted keys, no insignificant whitespace, UTF-8 (not \\u escapes).

    Floats are refused because canonical JSON only allows integers, and an implementation that
    rendered a float differently would compute a different signature.
    """
    _reject_floats(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def compact_json(value: Any) -> bytes:
    """Compact UTF-8 JSON for plaintexts that are encrypted rather than signed."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _reject_floats(value: Any) -> None:
    if isinstance(value, float):
        raise ValueError("canonical JSON does not allow floating-point numbers")
    if isinstance(value, dict):
        for item in value.values():
            _reject_floats(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _reject_floats(item)
