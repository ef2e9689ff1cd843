"""Megolm: one ratchet per sender per room, so a room message is encrypted once for all readers.

The outbound side rotates its session after a number of messages, after a time, or when someone
who had the key should no longer read new messages (a member or device left); a new session's key
is only given to current members. The inbound side keeps where each key came from (the creating
device's keys, any forwarders), because that provenance is all a reader has to judge who really
sent a message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import vodozemac

from .codec import compact_json
from .errors import MegolmDecryptionError, PickleKeyError
from .store import StoredInboundGroupSession, StoredOutboundGroupSession

DEFAULT_ROTATION_PERIOD_MS = 7 * 24 * 60 * 60 * 1000  # the spec's default: one week
DEFAULT_ROTATION_PERIOD_MSGS = 100  # the spec's default


@dataclass
class OutboundGroupSession:
    """The session this device encrypts one room's events with, and its rotation policy."""

    room_id: str
    inner: vodozemac.GroupSession
    created_ms: int
    rotation_period_ms: int = DEFAULT_ROTATION_PERIOD_MS
    rotation_period_msgs: int = DEFAULT_ROTATION_PERIOD_MSGS
    message_count: int = 0
    invalidated: bool = False

    @classmethod
    def create(
        cls,
        room_id: str,
        now_ms: int,
        rotation_period_ms: int = DEFAULT_ROTATION_PERIOD_MS,
        rotation_period_msgs: int = DEFAULT_ROTATION_PERIOD_MSGS,
    ) -> "OutboundGroupSession":
        """A fresh session with a random ratchet."""
        return cls(room_id, vodozemac.GroupSession(), now_ms, rotation_period_ms, rotation_period_msgs)

    @property
    def session_id(self) -> str:
        """Public Ed25519 key of the session, which also identifies it."""
        return self.inner.session_id

    @property
    def message_index(self) -> int:
        """Index the next message will be encrypted at; recipients of the key can read from here on."""
        return self.inner.message_index

    @property
    def session_key(self) -> str:
        """The ratchet state at the current index plus the signing key, for m.room_key."""
        return self.inner.session_key.to_base64()

    def expired(self, now_ms: int) -> bool:
        """Whether the session must be replaced before the next message."""
        return (
            self.invalidated
            or self.message_count >= self.rotation_period_msgs
            or now_ms - self.created_ms >= self.rotation_period_ms
        )

    def encrypt(self, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        """Encrypt an event; the room id is inside the plaintext so it cannot be moved to another room."""
        plaintext = compact_json({"type": event_type, "content": content, "room_id": room_id})
        ciphertext = self.inner.encrypt(plaintext).to_base64()
        self.message_count += 1
        return ciphertext

    def to_stored(self, pickle_key: bytes) -> StoredOutboundGroupSession:
        """Row for the store."""
        return StoredOutboundGroupSession(
            room_id=self.room_id,
            session_id=self.session_id,
            pickle=self.inner.pickle(pickle_key),
            created_ms=self.created_ms,
            message_count=self.message_count,
            rotation_period_ms=self.rotation_period_ms,
            rotation_period_msgs=self.rotation_period_msgs,
            invalidated=self.invalidated,
        )

    @classmethod
    def from_stored(cls, stored: StoredOutboundGroupSession, pickle_key: bytes) -> "OutboundGroupSession":
        """Restore a stored row."""
        try:
            inner = vodozemac.GroupSession.from_pickle(stored.pickle, pickle_key)
        except vodozemac.PickleException as exc:
            raise PickleKeyError(f"cannot open outbound session of {stored.room_id}: {exc}") from exc
        return cls(
            stored.room_id,
            inner,
            stored.created_ms,
            stored.rotation_period_ms,
            stored.rotation_period_msgs,
            stored.message_count,
            stored.invalidated,
        )


@dataclass
class InboundGroupSession:
    """A room key we can decrypt with, and its provenance."""

    room_id: str
    sender_key: str
    signing_key: str
    inner: vodozemac.InboundGroupSession
    forwarding_chain: list[str] = field(default_factory=list)
    imported: bool = False

    @classmethod
    def from_room_key(cls, room_id: str, sender_key: str, signing_key: str, session_key: str) -> "InboundGroupSession":
        """From an m.room_key (signed by the session itself, so it is authentic to the session id)."""
        try:
            inner = vodozemac.InboundGroupSession(vodozemac.SessionKey(session_key))
        except ValueError as exc:
            raise MegolmDecryptionError(f"invalid session key: {exc}") from exc
        return cls(room_id, sender_key, signing_key, inner)

    @classmethod
    def from_export(
        cls,
        room_id: str,
        sender_key: str,
        signing_key: str,
        exported_key: str,
        forwarding_chain: list[str],
    ) -> "InboundGroupSession":
        """From a forwarded key or a key export (unsigned, so marked imported)."""
        try:
            inner = vodozemac.InboundGroupSession.import_session(vodozemac.ExportedSessionKey(exported_key))
        except ValueError as exc:
            raise MegolmDecryptionError(f"invalid exported session key: {exc}") from exc
        return cls(room_id, sender_key, signing_key, inner, list(forwarding_chain), imported=True)

    @property
    def session_id(self) -> str:
        """Identifies the session (its public signing key)."""
        return self.inner.session_id

    @property
    def first_known_index(self) -> int:
        """Earliest message index we can decrypt."""
        return self.inner.first_known_index

    def export_at_first_known_index(self) -> str:
        """The key as exported for m.forwarded_room_key or a key export."""
        exported = self.inner.export_at(self.first_known_index)
        assert exported is not None  # exporting at the first known index cannot fail
        return exported.to_base64()

    def is_same_session(self, other: "InboundGroupSession") -> bool:
        """Whether ``other`` is the same ratchet, possibly known from another index.

        Compares both exported at the later of the two first indices. Used before replacing a stored
        key with one that decrypts more, so that a forged key reusing a session id is not accepted.
        """
        if self.session_id != other.session_id:
            return False
        index = max(self.first_known_index, other.first_known_index)
        mine = self.inner.export_at(index)
        theirs = other.inner.export_at(index)
        return mine is not None and theirs is not None and mine.to_base64() == theirs.to_base64()

    def decrypt(self, ciphertext: str) -> tuple[bytes, int]:
        """Decrypt a Megolm ciphertext; return (plaintext, message index). Raises MegolmDecryptionError."""
        try:
            message = vodozemac.MegolmMessage.from_base64(ciphertext)
            result = self.inner.decrypt(message)
        except (ValueError, TypeError) as exc:
            raise MegolmDecryptionError(f"cannot decrypt with session {self.session_id}: {exc}") from exc
        return result.plaintext, result.message_index

    def to_stored(self, pickle_key: bytes) -> StoredInboundGroupSession:
        """Row for the store."""
        return StoredInboundGroupSession(
            room_id=self.room_id,
            session_id=self.session_id,
            sender_key=self.sender_key,
            signing_key=self.signing_key,
            forwarding_chain=list(self.forwarding_chain),
            pickle=self.inner.pickle(pickle_key),
            first_known_index=self.first_known_index,
            imported=self.imported,
        )

    @classmethod
    def from_stored(cls, stored: StoredInboundGroupSession, pickle_key: bytes) -> "InboundGroupSession":
        """Restore a stored row."""
        try:
            inner = vodozemac.InboundGroupSession.from_pickle(stored.pickle, pickle_key)
        except vodozemac.PickleException as exc:
            raise PickleKeyError(f"cannot open inbound session {stored.session_id}: {exc}") from exc
        return cls(
            stored.room_id,
            stored.sender_key,
            stored.signing_key,
            inner,
            list(stored.forwarding_chain),
            stored.imported,
        )


def parse_room_plaintext(plaintext: bytes, room_id: str) -> dict[str, Any]:
    """Parse a decrypted Megolm payload and check it was encrypted for ``room_id``.

    The room id inside the ciphertext is the only authenticated statement of which room the event
    belongs to; without this check a server could replay an event from one room into another that
    shares the session's key holders.
    """
    try:
        payload = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MegolmDecryptionError(f"Megolm plaintext is not JSON: {exc}") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        raise MegolmDecryptionError("Megolm plaintext lacks a type")
    if not isinstance(payload.get("content"), dict):
        raise MegolmDecryptionError("Megolm plaintext lacks content")
    if payload.get("room_id") != room_id:
        raise MegolmDecryptionError("Megolm plaintext was encrypted for another room")
    return payload
