"""Signing events with a server's ed25519 key and verifying events from other servers.

Signatures cover the *redacted* event, so a redacted copy still verifies; the content hash covers the
rest, so a changed body is caught by the hash check instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from unpaddedbase64 import decode_base64, encode_base64

from homeserver.events.canonical import check_strict_json, encode_canonical_json
from homeserver.events.errors import EventFormatError, HashMismatch, SignatureError
from homeserver.events.hashes import check_content_hash, compute_content_hash
from homeserver.events.redaction import redact
from homeserver.events.room_versions import RoomVersion, get_room_version

MAX_PDU_BYTES = 65536
MAX_ID_BYTES = 255
# Used when a caller signs without naming a version and the event is not a create event naming one.
LEGACY_SIGNING_VERSION = "10"


@dataclass(frozen=True)
class VerifyKeyInfo:
    """A server's public key and how long it may be trusted (valid_until_ts for current keys,
    expired_ts for old_verify_keys)."""

    verify_key: VerifyKey
    valid_until_ts: int | None = None
    expired_ts: int | None = None

    def valid_at(self, ts: int) -> bool:
        if self.expired_ts is not None and ts >= self.expired_ts:
            return False
        if self.valid_until_ts is not None and ts > self.valid_until_ts:
            return False
        return True


def key_id(signing_key: SigningKey) -> str:
    version = getattr(signing_key, "version", None) or "auto"
    return f"ed25519:{version}"


def sign_json_bytes(data: bytes, signing_key: SigningKey) -> str:
    return encode_base64(signing_key.sign(data).signature)


def sign_json(obj: Mapping[str, Any], signer: str, signing_key: SigningKey) -> dict[str, Any]:
    """A copy of a JSON object with the signer's signature added (server keys, notary responses)."""
    unsigned = obj.get("unsigned")
    body = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    signatures = {s: dict(v) for s, v in obj.get("signatures", {}).items()}
    signatures.setdefault(signer, {})[key_id(signing_key)] = sign_json_bytes(encode_canonical_json(body), signing_key)
    out = {**body, "signatures": signatures}
    if unsigned is not None:
        out["unsigned"] = unsigned
    return out


def verify_json_signature(obj: Mapping[str, Any], signer: str, key_id_: str, verify_key: VerifyKey) -> bool:
    """Whether ``obj`` carries a valid signature by ``signer``'s key ``key_id_`` over its canonical JSON
    without ``signatures`` and ``unsigned`` (the rule for device keys, cross-signing keys and server keys)."""
    sigs = obj.get("signatures")
    sig = sigs.get(signer, {}).get(key_id_) if isinstance(sigs, Mapping) and isinstance(sigs.get(signer), Mapping) else None
    if not isinstance(sig, str):
        return False
    try:
        body = encode_canonical_json({k: v for k, v in obj.items() if k not in ("signatures", "unsigned")})
        verify_key.verify(body, decode_base64(sig))
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


def sign_event(
    event: Mapping[str, Any], server_name: str, signing_key: SigningKey,
    room_version: str | RoomVersion | None = None,
) -> dict[str, Any]:
    """Add the content hash if missing and this server's signature; returns a new event dict.

    The redaction rules (and so what is signed) depend on the room version: pass it. Without one, a
    create event's declared version is used, else pre-v11 rules.
    """
    if room_version is None:
        declared = event.get("content", {}).get("room_version") if event.get("type") == "m.room.create" else None
        room_version = declared if isinstance(declared, str) else LEGACY_SIGNING_VERSION
    rv = get_room_version(room_version)
    out = {k: v for k, v in event.items()}
    if not isinstance(out.get("hashes"), dict) or "sha256" not in out["hashes"]:
        out["hashes"] = {**(out.get("hashes") or {}), "sha256": compute_content_hash(out)}
    to_sign = redact(out, rv)
    to_sign.pop("signatures", None)
    to_sign.pop("unsigned", None)
    signature = sign_json_bytes(encode_canonical_json(to_sign), signing_key)
    signatures = {s: dict(v) for s, v in (out.get("signatures") or {}).items()}
    signatures.setdefault(server_name, {})[key_id(signing_key)] = signature
    out["signatures"] = signatures
    return out


def server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


def required_signers(event: Mapping[str, Any], rv: RoomVersion) -> set[str]:
    """Servers whose signatures an event must carry: the sender's, and for a restricted join the
    server of the user who authorised it."""
    signers = {server_of(str(event.get("sender", "")))}
    if rv.restricted_joins and event.get("type") == "m.room.member":
        content = event.get("content") or {}
        authoriser = content.get("join_authorised_via_users_server")
        if content.get("membership") == "join" and isinstance(authoriser, str):
            signers.add(server_of(authoriser))
    return signers


def verify_event(
    event: Mapping[str, Any], room_version: str | RoomVersion,
    keys: Mapping[str, Mapping[str, VerifyKeyInfo | VerifyKey]],
) -> None:
    """Raise SignatureError if a required signature is missing or bad, HashMismatch if the content
    hash is wrong (signatures good: the caller should then use the redacted form), else return."""
    rv = get_room_version(room_version)
    check_event_format(event, rv)
    signed = redact(event, rv)
    signed.pop("signatures", None)
    signed.pop("unsigned", None)
    data = encode_canonical_json(signed)
    signatures = event.get("signatures") or {}
    ts = int(event.get("origin_server_ts", 0))
    for server in sorted(required_signers(event, rv)):
        server_sigs = signatures.get(server)
        if not isinstance(server_sigs, dict) or not server_sigs:
            raise SignatureError(f"no signature from {server}")
        known = keys.get(server, {})
        verified = False
        reasons = []
        for kid, sig in server_sigs.items():
            if not kid.startswith("ed25519:"):
                continue
            info = known.get(kid)
            if info is None:
                reasons.append(f"unknown key {kid}")
                continue
            if isinstance(info, VerifyKey):
                info = VerifyKeyInfo(info)
            if not info.valid_at(ts):
                reasons.append(f"key {kid} not valid at {ts}")
                continue
            try:
                info.verify_key.verify(data, decode_base64(sig))
            except (BadSignatureError, ValueError, TypeError):
                reasons.append(f"bad signature with {kid}")
                continue
            verified = True
            break
        if not verified:
            raise SignatureError(f"no valid signature from {server}: {', '.join(reasons) or 'no ed25519 signature'}")
    if not check_content_hash(event):
        raise HashMismatch("content hash does not match")


def check_event_format(event: Mapping[str, Any], room_version: str | RoomVersion) -> None:
    """The PDU format checks: required keys and types, size, ID lengths, v6+ integer rules."""
    rv = get_room_version(room_version)
    if not isinstance(event, Mapping):
        raise EventFormatError("event must be an object")
    for key, kind in (("type", str), ("sender", str), ("content", dict), ("origin_server_ts", int),
                      ("depth", int), ("prev_events", list), ("auth_events", list), ("hashes", dict)):
        value = event.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise EventFormatError(f"{key} missing or not a {kind.__name__}")
    is_v12_create = rv.room_id_from_create_event and event.get("type") == "m.room.create"
    if is_v12_create:
        if "room_id" in event:
            raise EventFormatError("a version 12 create event must not have a room_id")
    elif not isinstance(event.get("room_id"), str):
        raise EventFormatError("room_id missing or not a string")
    for key in ("prev_events", "auth_events"):
        if not all(isinstance(e, str) for e in event[key]):
            raise EventFormatError(f"{key} must be a list of event IDs")
    if "state_key" in event and not isinstance(event["state_key"], str):
        raise EventFormatError("state_key must be a string")
    for key in ("sender", "room_id", "type", "state_key"):
        if key in event and len(str(event[key]).encode()) > MAX_ID_BYTES:
            raise EventFormatError(f"{key} is longer than {MAX_ID_BYTES} bytes")
    if event["depth"] < 0 or event["depth"] > 2**63 - 1:
        raise EventFormatError("depth out of range")
    check_strict_json(dict(event))
    if len(encode_canonical_json(dict(event))) > MAX_PDU_BYTES:
        raise EventFormatError("event is larger than 65536 bytes")
