"""The checks every PDU from another server passes before anything about it is stored as accepted,
in the spec's order ("Checks performed on receipt of a PDU"): format, signatures, content hash (a
mismatch means the redacted form is used, not a rejection), then the auth rules against the event's
own auth events. State-before and soft-fail checks need the room's state and come after these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from homeserver.events import (
    AuthError, EventFormatError, HashMismatch, SignatureError, VerifyKeyInfo, auth_types_for_event, check_auth,
    event_id, get_room_version, redact, verify_event,
)
from homeserver.events.signing import check_event_format, required_signers

from homeserver.storage import Storage

from federation.keyring import KeyNotFound, Keyring


class PduRejected(Exception):
    """The PDU must not be accepted; ``reason`` says which check refused it."""

    def __init__(self, event_id: str | None, reason: str) -> None:
        super().__init__(f"{event_id or 'PDU'}: {reason}")
        self.event_id = event_id
        self.reason = reason


@dataclass(frozen=True)
class CheckedPdu:
    event_id: str
    pdu: dict[str, Any]
    # True when the content hash did not match and the redacted form replaced the event.
    redacted_for_hash: bool


async def check_signatures_and_hashes(pdu: Mapping[str, Any], room_version: str, keyring: Keyring) -> CheckedPdu:
    rv = get_room_version(room_version)
    try:
        check_event_format(pdu, rv)
        eid = event_id(dict(pdu), rv)
    except EventFormatError as e:
        raise PduRejected(None, f"format: {e}") from None
    ts = pdu.get("origin_server_ts")
    keys: dict[str, dict[str, VerifyKeyInfo]] = {}
    signatures = pdu.get("signatures") if isinstance(pdu.get("signatures"), dict) else {}
    for server in required_signers(pdu, rv):
        for kid in (signatures.get(server) or {}):
            try:
                keys.setdefault(server, {})[kid] = await keyring.get_key(server, kid, ts if isinstance(ts, int) else None)
            except KeyNotFound:
                continue  # verify_event reports the missing key
    try:
        verify_event(pdu, rv, keys)
    except SignatureError as e:
        raise PduRejected(eid, f"signature: {e}") from None
    except HashMismatch:
        return CheckedPdu(eid, redact(dict(pdu), rv), True)
    except EventFormatError as e:
        raise PduRejected(eid, f"format: {e}") from None
    return CheckedPdu(eid, dict(pdu), False)


def check_against_auth_events(
    checked: CheckedPdu, auth_events: Mapping[str, Mapping[str, Any]], room_version: str,
    create_event: Mapping[str, Any] | None = None,
) -> None:
    """Auth rules against the event's own auth events (``auth_events``: event ID → PDU, each already
    checked). The listed auth events must be the ones the rules call for, one per (type, state key).
    From room version 12 the create event is implied by the room ID and not listed: pass it as
    ``create_event``."""
    rv = get_room_version(room_version)
    pdu = checked.pdu
    listed = pdu.get("auth_events") or []
    wanted = auth_types_for_event(pdu, rv)
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    for aid in listed:
        auth = auth_events.get(aid)
        if auth is None:
            raise PduRejected(checked.event_id, f"auth event {aid} is missing")
        key = (str(auth.get("type")), str(auth.get("state_key", "")))
        if key in by_key:
            raise PduRejected(checked.event_id, f"two auth events for {key}")
        if key not in wanted and key != ("m.room.create", ""):
            raise PduRejected(checked.event_id, f"auth event {aid} ({key[0]}) is not one the rules need")
        if auth.get("room_id") is not None and pdu.get("room_id") is not None and auth.get("room_id") != pdu.get("room_id"):
            raise PduRejected(checked.event_id, f"auth event {aid} is from another room")
        by_key[key] = {**auth, "event_id": aid}
    if rv.room_id_from_create_event and create_event is not None and pdu.get("type") != "m.room.create":
        if ("m.room.create", "") in by_key:
            raise PduRejected(checked.event_id, "room version 12 events must not list the create event")
        by_key[("m.room.create", "")] = dict(create_event)
    try:
        check_auth({**pdu, "event_id": checked.event_id}, by_key, rv)
    except AuthError as e:
        raise PduRejected(checked.event_id, f"auth rule {e}") from None


async def check_against_state(
    storage: Storage, state: Mapping[tuple[str, str], str], eid: str, pdu: Mapping[str, Any], room_version: str,
    which: str, unstored: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """The auth rules against a state map (the state before the event, or the current state for the
    soft-fail check). ``unstored``: events the state names that are not in the database yet."""
    wanted = auth_types_for_event(pdu, room_version) | {("m.room.create", "")}
    ids = {k: state[k] for k in wanted if k in state}
    extra = unstored or {}
    events = await storage.events.get_events([i for i in ids.values() if i not in extra])
    auth = {k: {**(extra[v] if v in extra else events[v].pdu), "event_id": v} for k, v in ids.items() if v in extra or v in events}
    try:
        check_auth({**pdu, "event_id": eid}, auth, room_version)
    except AuthError as e:
        raise PduRejected(eid, f"refused by the {which}: {e}") from None
