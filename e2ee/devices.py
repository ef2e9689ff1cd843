"""Checking other devices' keys before trusting them with anything.

A homeserver relays device keys and one-time keys but cannot forge them: each device signs its own
keys with its Ed25519 key. Checking those signatures here is what stops a malicious or compromised
server from slipping its own Curve25519 key in and reading room keys.
"""

from __future__ import annotations

from typing import Any

from .errors import DeviceKeysError, SignatureError
from .signing import verify_signature
from .store import StoredDevice

OLM_ALGORITHM = "m.olm.v1.curve25519-aes-sha2"
MEGOLM_ALGORITHM = "m.megolm.v1.aes-sha2"
SIGNED_CURVE25519 = "signed_curve25519"


def verify_device_keys(user_id: str, device_id: str, keys: Any) -> StoredDevice:
    """Validate one entry of a /keys/query ``device_keys`` map and return it as a StoredDevice.

    Checks that the object names the user and device it is filed under (so a server cannot move
    keys between devices), that it has the Curve25519 and Ed25519 keys for that device id, that it
    supports Olm, and that it is self-signed by its Ed25519 key. Raises DeviceKeysError otherwise.
    """
    if not isinstance(keys, dict):
        raise DeviceKeysError(f"device keys of {user_id} {device_id} are not an object")
    if keys.get("user_id") != user_id or keys.get("device_id") != device_id:
        raise DeviceKeysError(f"device keys filed under {user_id} {device_id} name another device")
    key_map = keys.get("keys")
    if not isinstance(key_map, dict):
        raise DeviceKeysError(f"device keys of {user_id} {device_id} have no keys")
    curve25519 = key_map.get(f"curve25519:{device_id}")
    ed25519 = key_map.get(f"ed25519:{device_id}")
    if not isinstance(curve25519, str) or not isinstance(ed25519, str):
        raise DeviceKeysError(f"device {user_id} {device_id} lacks a curve25519 or ed25519 key")
    algorithms = keys.get("algorithms")
    if not isinstance(algorithms, list) or OLM_ALGORITHM not in algorithms:
        raise DeviceKeysError(f"device {user_id} {device_id} does not support {OLM_ALGORITHM}")
    try:
        verify_signature(keys, user_id, f"ed25519:{device_id}", ed25519)
    except SignatureError as exc:
        raise DeviceKeysError(f"device keys of {user_id} {device_id} are not self-signed: {exc}") from exc
    return StoredDevice(user_id=user_id, device_id=device_id, curve25519=curve25519, ed25519=ed25519, keys=keys)


def verify_one_time_key(device: StoredDevice, key_id: str, key_object: Any) -> str:
    """Check a claimed ``signed_curve25519`` key is signed by ``device``; return the key (base64).

    Unsigned ``curve25519`` keys are refused: the signature is what binds the one-time key to the
    device, and without it the server could hand out its own key.
    """
    algorithm = key_id.split(":", 1)[0]
    if algorithm != SIGNED_CURVE25519:
        raise SignatureError(f"one-time key {key_id} of {device.user_id} {device.device_id} is not signed_curve25519")
    if not isinstance(key_object, dict) or not isinstance(key_object.get("key"), str):
        raise SignatureError(f"one-time key {key_id} of {device.user_id} {device.device_id} is malformed")
    verify_signature(key_object, device.user_id, f"ed25519:{device.device_id}", device.ed25519)
    return key_object["key"]
