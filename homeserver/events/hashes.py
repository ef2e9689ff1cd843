"""Content hashes, reference hashes, event IDs and (room version 12) room IDs."""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

from unpaddedbase64 import decode_base64, encode_base64

from homeserver.events.canonical import encode_canonical_json
from homeserver.events.redaction import redact
from homeserver.events.room_versions import RoomVersion, get_room_version


def _content_hash_bytes(event: Mapping[str, Any]) -> bytes:
    stripped = {k: v for k, v in event.items() if k not in ("unsigned", "signatures", "hashes")}
    return hashlib.sha256(encode_canonical_json(stripped)).digest()


def compute_content_hash(event: Mapping[str, Any]) -> str:
    """The spec's content hash: SHA-256 over the event without unsigned, signatures and hashes."""
    return encode_base64(_content_hash_bytes(event))


def add_content_hash(event: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(event)
    out["hashes"] = {"sha256": compute_content_hash(event)}
    return out


def check_content_hash(event: Mapping[str, Any]) -> bool:
    hashes = event.get("hashes")
    if not isinstance(hashes, dict) or not isinstance(hashes.get("sha256"), str):
        return False
    try:
        claimed = decode_base64(hashes["sha256"])
    except Exception:
        return False
    return claimed == _content_hash_bytes(event)


def reference_hash(event: Mapping[str, Any], room_version: str | RoomVersion) -> bytes:
    """SHA-256 of the redacted event without signatures and unsigned: what the event ID encodes."""
    redacted = redact(event, room_version)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    return hashlib.sha256(encode_canonical_json(redacted)).digest()


def compute_event_id(event: Mapping[str, Any], room_version: str | RoomVersion) -> str:
    return "$" + encode_base64(reference_hash(event, get_room_version(room_version)), urlsafe=True)


def compute_room_id(create_event: Mapping[str, Any]) -> str:
    """Room version 12 (MSC4291): the room ID is the create event's reference hash with a ``!`` sigil."""
    version = create_event.get("content", {}).get("room_version", "12")
    return "!" + encode_base64(reference_hash(create_event, version), urlsafe=True)


def create_event_id_for_room(room_id: str) -> str:
    """Room version 12: the create event's ID is implied by the room ID."""
    return "$" + room_id[1:]
