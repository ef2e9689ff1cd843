"""Canonical JSON (the spec's appendix): the only byte form that is hashed or signed.

Room versions 6+ also require every number to be an integer within the interoperable range;
integral floats (``1e10``) are written as integers, as the spec's examples show.
"""

from __future__ import annotations

from typing import Any

import canonicaljson

from homeserver.events.errors import EventFormatError

MIN_INT = -(2**53) + 1
MAX_INT = 2**53 - 1


def _normalise(value: Any, strict: bool) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        if strict and not MIN_INT <= value <= MAX_INT:
            raise EventFormatError(f"integer out of range: {value}")
        return value
    if isinstance(value, float):
        if value.is_integer() and not strict:
            return int(value)
        raise EventFormatError(f"floats are not allowed in canonical JSON: {value!r}")
    if isinstance(value, dict):
        return {str(k): _normalise(v, strict) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v, strict) for v in value]
    raise EventFormatError(f"not JSON: {type(value).__name__}")


def encode_canonical_json(value: Any, *, strict: bool = False) -> bytes:
    """Canonical bytes; ``strict`` refuses floats and out-of-range integers (room versions 6+)."""
    return canonicaljson.encode_canonical_json(_normalise(value, strict))


def check_strict_json(value: Any) -> None:
    """Raise EventFormatError unless ``value`` obeys the v6+ integer rules."""
    _normalise(value, True)
