"""Room-key export files in the spec's standard format ("Key exports" in the client-server API).

The format is what Element and other clients write when a user exports room keys, so a bridge's
keys can be handed to a human's client and back. The file is

    -----BEGIN MEGOLM SESSION DATA-----
    base64( 0x01 | salt(16) | iv(16) | rounds(4, big-endian) | AES-256-CTR(json) | HMAC-SHA-256 )
    -----END MEGOLM SESSION DATA-----

with PBKDF2-HMAC-SHA-512(passphrase, salt, rounds) giving 64 bytes: the first 32 are the AES key,
the last 32 the HMAC key. The HMAC covers everything before it and is checked before decrypting,
which is how a wrong passphrase is detected. The plaintext is a JSON array of sessions, each with
``algorithm``, ``room_id``, ``sender_key``, ``session_id``, ``session_key`` (exported at its first
known index), ``sender_claimed_keys`` and ``forwarding_curve25519_key_chain``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .devices import MEGOLM_ALGORITHM
from .errors import KeyExportError
from .megolm import InboundGroupSession

HEADER = "-----BEGIN MEGOLM SESSION DATA-----"
FOOTER = "-----END MEGOLM SESSION DATA-----"
VERSION = 1
SALT_LENGTH = 16
IV_LENGTH = 16
MAC_LENGTH = 32
# Element's choice: slow enough to make guessing costly, fast enough to export interactively.
DEFAULT_ROUNDS = 500_000
_LINE_LENGTH = 96


def _derive_keys(passphrase: str, salt: bytes, rounds: int) -> tuple[bytes, bytes]:
    derived = hashlib.pbkdf2_hmac("sha512", passphrase.encode("utf-8"), salt, rounds, dklen=64)
    return derived[:32], derived[32:]


def _aes_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    transform = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return transform.update(data) + transform.finalize()


def encrypt_key_export(plaintext: bytes, passphrase: str, rounds: int = DEFAULT_ROUNDS) -> str:
    """Encrypt ``plaintext`` into the armoured export format."""
    if not 1 <= rounds < 2**32:
        raise ValueError("rounds must fit in 32 bits and be positive")
    salt = os.urandom(SALT_LENGTH)
    iv = bytearray(os.urandom(IV_LENGTH))
    # Clear bit 63 so the 64-bit counter some implementations (WebCrypto) use can never wrap.
    iv[8] &= 0x7F
    aes_key, mac_key = _derive_keys(passphrase, salt, rounds)
    body = bytes([VERSION]) + salt + bytes(iv) + rounds.to_bytes(4, "big") + _aes_ctr(aes_key, bytes(iv), plaintext)
    payload = body + hmac.new(mac_key, body, hashlib.sha256).digest()
    encoded = base64.b64encode(payload).decode("ascii")
    lines = [encoded[i : i + _LINE_LENGTH] for i in range(0, len(encoded), _LINE_LENGTH)]
    return "\n".join([HEADER, *lines, FOOTER]) + "\n"


def decrypt_key_export(armoured: str | bytes, passphrase: str) -> bytes:
    """Decrypt an export; raises KeyExportError if malformed or the passphrase is wrong."""
    text = armoured.decode("utf-8") if isinstance(armoured, bytes) else armoured
    lines = [line.strip() for line in text.strip().splitlines()]
    try:
        start = lines.index(HEADER)
        end = lines.index(FOOTER, start + 1)
    except ValueError:
        raise KeyExportError("not a Megolm session export (header or footer missing)") from None
    encoded = "".join(lines[start + 1 : end]).rstrip("=")
    try:
        payload = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error as exc:
        raise KeyExportError(f"key export is not valid base64: {exc}") from exc
    if len(payload) < 1 + SALT_LENGTH + IV_LENGTH + 4 + MAC_LENGTH:
        raise KeyExportError("key export is too short")
    if payload[0] != VERSION:
        raise KeyExportError(f"unsupported key export version {payload[0]}")
    salt = payload[1 : 1 + SALT_LENGTH]
    iv = payload[1 + SALT_LENGTH : 1 + SALT_LENGTH + IV_LENGTH]
    rounds = int.from_bytes(payload[33:37], "big")
    if rounds == 0:
        raise KeyExportError("key export has zero PBKDF2 rounds")
    body, mac = payload[:-MAC_LENGTH], payload[-MAC_LENGTH:]
    aes_key, mac_key = _derive_keys(passphrase, salt, rounds)
    if not hmac.compare_digest(hmac.new(mac_key, body, hashlib.sha256).digest(), mac):
        raise KeyExportError("wrong passphrase or corrupted key export (HMAC mismatch)")
    return _aes_ctr(aes_key, iv, body[37:])


def session_to_export(session: InboundGroupSession) -> dict[str, Any]:
    """One session in the export's JSON form."""
    return {
        "algorithm": MEGOLM_ALGORITHM,
        "room_id": session.room_id,
        "sender_key": session.sender_key,
        "session_id": session.session_id,
        "session_key": session.export_at_first_known_index(),
        "sender_claimed_keys": {"ed25519": session.signing_key},
        "forwarding_curve25519_key_chain": list(session.forwarding_chain),
    }


def session_from_export(data: Any) -> InboundGroupSession:
    """Rebuild a session from one export entry; raises KeyExportError if it is unusable.

    The session id named in the entry must match the key's own, so an entry cannot smuggle a key
    in under another session's id.
    """
    if not isinstance(data, dict):
        raise KeyExportError("exported session is not an object")
    if data.get("algorithm", MEGOLM_ALGORITHM) != MEGOLM_ALGORITHM:
        raise KeyExportError(f"unsupported algorithm {data.get('algorithm')!r}")
    fields = ("room_id", "sender_key", "session_id", "session_key")
    if not all(isinstance(data.get(name), str) for name in fields):
        raise KeyExportError("exported session lacks room_id, sender_key, session_id or session_key")
    claimed = data.get("sender_claimed_keys") or {}
    signing_key = claimed.get("ed25519", "") if isinstance(claimed, dict) else ""
    chain = data.get("forwarding_curve25519_key_chain") or []
    if not isinstance(chain, list) or not all(isinstance(key, str) for key in chain):
        raise KeyExportError("forwarding_curve25519_key_chain is not a list of keys")
    try:
        session = InboundGroupSession.from_export(
            data["room_id"], data["sender_key"], signing_key, data["session_key"], chain
        )
    except Exception as exc:  # MegolmDecryptionError from a malformed key
        raise KeyExportError(f"invalid session key for {data['session_id']}: {exc}") from exc
    if session.session_id != data["session_id"]:
        raise KeyExportError(f"session key does not belong to session {data['session_id']}")
    return session


def export_sessions(sessions: list[InboundGroupSession], passphrase: str, rounds: int = DEFAULT_ROUNDS) -> str:
    """Encrypt sessions into an export file's text."""
    plaintext = json.dumps([session_to_export(s) for s in sessions], ensure_ascii=False).encode("utf-8")
    return encrypt_key_export(plaintext, passphrase, rounds)


def import_sessions(armoured: str | bytes, passphrase: str) -> tuple[list[InboundGroupSession], list[str]]:
    """Decrypt an export; return (sessions, reasons for entries that were skipped)."""
    plaintext = decrypt_key_export(armoured, passphrase)
    try:
        entries = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyExportError(f"decrypted key export is not JSON: {exc}") from exc
    if not isinstance(entries, list):
        raise KeyExportError("decrypted key export is not a JSON array")
    sessions: list[InboundGroupSession] = []
    skipped: list[str] = []
    for entry in entries:
        try:
            sessions.append(session_from_export(entry))
        except KeyExportError as exc:
            skipped.append(str(exc))
    return sessions, skipped
