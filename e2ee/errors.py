"""Exceptions raised by the e2ee package.

One base class, so that a bot can catch every end-to-end-encryption failure in one place, and
narrow subclasses, so that it can tell "ask for the key" apart from "someone is tampering".
"""

from __future__ import annotations


class E2EEError(Exception):
    """Base class of every error this package raises on purpose."""


class PickleKeyError(E2EEError):
    """The pickle key does not open the stored account (wrong key, or a corrupt store)."""


class StoreMismatchError(E2EEError):
    """The store belongs to another user or device than the machine was created for."""


class SignatureError(E2EEError):
    """A signed JSON object (device keys, one-time key) is unsigned or its signature is invalid."""


class DeviceKeysError(E2EEError):
    """Device keys from /keys/query are malformed, or an already known device changed its keys."""


class OlmSessionError(E2EEError):
    """No Olm session could be set up with, or used for, a device."""


class OlmDecryptionError(E2EEError):
    """An Olm to-device message could not be decrypted, or its plaintext failed the spec's checks."""


class MissingSessionError(E2EEError):
    """A Megolm event refers to a session (room key) we do not hold: request or wait for the key."""

    def __init__(self, room_id: str, session_id: str) -> None:
        super().__init__(f"no inbound Megolm session {session_id} for room {room_id}")
        self.room_id = room_id
        self.session_id = session_id


class MegolmDecryptionError(E2EEError):
    """A Megolm event could not be decrypted (tampered, unknown index, or wrong room)."""


class ReplayError(MegolmDecryptionError):
    """A Megolm message index was seen before in a different event: a replay attack."""


class RoomKeyNotSharedError(E2EEError):
    """encrypt_room_event was called without a current, shared outbound session for the room."""


class AttachmentError(E2EEError):
    """An encrypted attachment's metadata is unusable or its ciphertext does not match its hash."""


class KeyExportError(E2EEError):
    """A key export is malformed, or the passphrase is wrong (its HMAC does not match)."""
