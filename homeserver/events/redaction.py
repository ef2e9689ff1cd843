"""The redaction algorithm, per room version: what survives when an event is redacted.

Used for hashing/signing (the reference hash and signatures cover the redacted form) as well as for
showing redacted events, so it must match every other server exactly.
"""

from __future__ import annotations

from typing import Any, Mapping

from homeserver.events.room_versions import RoomVersion, get_room_version

_TOP_LEVEL = {
    "event_id", "type", "room_id", "sender", "state_key", "content", "hashes", "signatures", "depth",
    "prev_events", "auth_events", "origin_server_ts",
}
# Dropped from the protected list by room version 11 (MSC2176).
_PRE_V11_TOP_LEVEL = {"origin", "membership", "prev_state"}


def _kept_content_keys(event_type: str, rv: RoomVersion) -> set[str] | None:
    """Content keys kept for this type; None means keep all of it."""
    if event_type == "m.room.member":
        keys = {"membership"}
        if rv.redaction_keeps_authorising_user:
            keys.add("join_authorised_via_users_server")
        if rv.v11_redaction:
            keys.add("third_party_invite")
        return keys
    if event_type == "m.room.create":
        return None if rv.v11_redaction else {"creator"}
    if event_type == "m.room.join_rules":
        return {"join_rule", "allow"} if rv.restricted_joins else {"join_rule"}
    if event_type == "m.room.power_levels":
        keys = {"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"}
        if rv.v11_redaction:
            keys.add("invite")
        return keys
    if event_type == "m.room.history_visibility":
        return {"history_visibility"}
    if event_type == "m.room.redaction" and rv.redacts_in_content:
        return {"redacts"}
    return set()


def redact(event: Mapping[str, Any], room_version: str | RoomVersion) -> dict[str, Any]:
    """A new dict holding what the redaction algorithm keeps; the input is not modified."""
    rv = get_room_version(room_version)
    allowed = _TOP_LEVEL if rv.v11_redaction else _TOP_LEVEL | _PRE_V11_TOP_LEVEL
    out = {k: _copy(v) for k, v in event.items() if k in allowed}
    content = event.get("content")
    content = content if isinstance(content, dict) else {}
    kept = _kept_content_keys(str(event.get("type", "")), rv)
    if kept is None:
        out["content"] = _copy(content)
    else:
        new_content = {k: _copy(v) for k, v in content.items() if k in kept}
        if "third_party_invite" in new_content:
            tpi = new_content["third_party_invite"]
            # Only the signed block of a third-party invite survives (v11).
            if isinstance(tpi, dict) and "signed" in tpi:
                new_content["third_party_invite"] = {"signed": _copy(tpi["signed"])}
            else:
                del new_content["third_party_invite"]
        out["content"] = new_content
    return out


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
