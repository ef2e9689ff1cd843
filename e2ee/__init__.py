"""Client-side Olm/Megolm on vodozemac. A client library: never imports homeserver.

The entry point is :class:`OlmMachine` over a :class:`CryptoStore`; attachments and key exports are
plain functions in :mod:`e2ee.attachments` and :mod:`e2ee.export`.
"""

from .errors import (
    AttachmentError,
    DeviceKeysError,
    E2EEError,
    KeyExportError,
    MegolmDecryptionError,
    MissingSessionError,
    OlmDecryptionError,
    OlmSessionError,
    PickleKeyError,
    ReplayError,
    RoomKeyNotSharedError,
    SignatureError,
    StoreMismatchError,
)
from .machine import OlmMachine
from .results import ClaimResult, DecryptedRoomEvent, DecryptedToDevice, KeysQueryResult, ToDeviceRequest
from .store import CryptoStore

__all__ = [
    "AttachmentError",
    "ClaimResult",
    "CryptoStore",
    "DecryptedRoomEvent",
    "DecryptedToDevice",
    "DeviceKeysError",
    "E2EEError",
    "KeyExportError",
    "KeysQueryResult",
    "MegolmDecryptionError",
    "MissingSessionError",
    "OlmDecryptionError",
    "OlmMachine",
    "OlmSessionError",
    "PickleKeyError",
    "ReplayError",
    "RoomKeyNotSharedError",
    "SignatureError",
    "StoreMismatchError",
    "ToDeviceRequest",
]
