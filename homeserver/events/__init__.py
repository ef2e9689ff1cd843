"""The Matrix event core: pure, I/O-free, the one place the protocol's event rules live.

Stable public API (other packages and outside tools such as the audit verifier rely on it):

- ``content_hash(event) -> str`` — the unpadded base64 SHA-256 content hash.
- ``event_id(event, room_version) -> str`` — ``$`` + URL-safe unpadded base64 of the reference hash.
- ``redact(event, room_version) -> dict`` — what the redaction algorithm keeps (a new dict).
- ``sign_event(event, server_name, signing_key, room_version=None) -> dict`` — adds hashes and this
  server's signature. Pass ``room_version``: what is signed depends on it (a create event names its own).
- ``verify_event(event, room_version, keys)`` — raises ``SignatureError`` for a missing/bad/expired
  signature, ``HashMismatch`` for a wrong content hash (signatures were good: use the redacted form),
  ``EventFormatError`` for a malformed PDU. ``keys``: server name -> {key ID: ``VerifyKeyInfo``}.
- ``check_auth(event, auth_events, room_version)`` — raises ``AuthError`` naming the rule that refused.
- ``resolve_state(room_version, state_sets, event_map) -> dict[(type, state_key), event_id]``.

``room_version`` may always be the version string or a ``RoomVersion``.
"""

from homeserver.events.auth import auth_types_for_event, check_auth, sender_power_level
from homeserver.events.errors import AuthError, EventError, EventFormatError, HashMismatch, SignatureError
from homeserver.events.hashes import compute_content_hash as content_hash
from homeserver.events.hashes import compute_event_id as event_id
from homeserver.events.hashes import compute_room_id
from homeserver.events.redaction import redact
from homeserver.events.room_versions import (
    DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS, RoomVersion, UnsupportedRoomVersion, get_room_version,
)
from homeserver.events.signing import VerifyKeyInfo, sign_event, verify_event
from homeserver.events.state_res import auth_chain, resolve_state

__all__ = [
    "AuthError", "DEFAULT_ROOM_VERSION", "EventError", "EventFormatError", "HashMismatch", "KNOWN_ROOM_VERSIONS",
    "RoomVersion", "SignatureError", "UnsupportedRoomVersion", "VerifyKeyInfo", "auth_chain", "auth_types_for_event",
    "check_auth", "compute_room_id", "content_hash", "event_id", "get_room_version", "redact", "resolve_state",
    "sender_power_level", "sign_event", "verify_event",
]
