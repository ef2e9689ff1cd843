"""Field checks for request bodies, each naming the field at fault (400 VALIDATION).

Kept apart from the handlers so every endpoint rejects bad input the same way and the rules
(e.g. what an ``external_ref`` must hold) live in one place.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Mapping

from .errors import validation

CLASSIFICATIONS = ("Normal", "Confidential", "Secret", "Top Secret")
FILE_STATUSES = ("open", "closed", "parked")
NOTE_STATUSES = ("draft", "final")
EXTERNAL_REF_FIELDS = ("matrix_event_id", "room_id", "origin_server", "content_sha256")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_TEXT = 100_000
MAX_SHORT = 1_000


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise validation("the request body must be a JSON object")
    return body


def reject_unknown(body: Mapping[str, Any], allowed: set[str]) -> None:
    """Unknown fields are refused rather than ignored, so a typo never silently drops data."""
    for key in body:
        if key not in allowed:
            raise validation(f"unknown field {key!r}", key)


def string(body: Mapping[str, Any], key: str, *, required: bool = True, max_len: int = MAX_SHORT) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise validation(f"{key!r} is required", key)
        return None
    if not isinstance(value, str) or not value.strip():
        raise validation(f"{key!r} must be a non-empty string", key)
    if len(value) > max_len:
        raise validation(f"{key!r} is longer than {max_len} characters", key)
    return value


def choice(body: Mapping[str, Any], key: str, options: tuple[str, ...], *, required: bool = True,
           default: str | None = None) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise validation(f"{key!r} is required (one of {', '.join(options)})", key)
        return default
    if value not in options:
        raise validation(f"{key!r} must be one of {', '.join(options)}", key)
    return str(value)


def date(body: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = string(body, key, required=required, max_len=10)
    if value is None:
        return None
    try:
        parsed: dt.date | None = dt.date.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or len(value) != 10:
        raise validation(f"{key!r} must be a date YYYY-MM-DD", key)
    return parsed.isoformat()


def external_ref(body: Mapping[str, Any], *, required: bool = False) -> dict[str, Any] | None:
    """The Matrix provenance of a note or document, stored verbatim for auditors."""
    ref = body.get("external_ref")
    if ref is None:
        if required:
            raise validation("'external_ref' is required", "external_ref")
        return None
    if not isinstance(ref, dict):
        raise validation("'external_ref' must be an object", "external_ref")
    for key in EXTERNAL_REF_FIELDS:
        value = ref.get(key)
        if not isinstance(value, str) or not value or len(value) > MAX_SHORT:
            raise validation(f"'external_ref.{key}' must be a non-empty string", f"external_ref.{key}")
    if not _SHA256_RE.match(ref["content_sha256"]):
        raise validation("'external_ref.content_sha256' must be 64 lower-case hex digits",
                         "external_ref.content_sha256")
    return ref


def int_param(query: Mapping[str, str], key: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise validation(f"query parameter {key!r} must be an integer", key) from None
    if not lo <= value <= hi:
        raise validation(f"query parameter {key!r} must be between {lo} and {hi}", key)
    return value
