"""Encrypted attachments ("Sending encrypted attachments" in the client-server API).

Files in encrypted rooms are uploaded encrypted: AES-256-CTR with a fresh random key per file and
a 16-byte counter block whose low 8 bytes (the counter) start at zero, so that even huge files
never wrap the counter. The SHA-256 of the *ciphertext* travels in the event so a reader can tell
the media repository served the file that was sent before decrypting it. The key is a JSON Web
Key; key, IV and hash travel inside the (Megolm-encrypted) event content, never to the server.

Both directions stream in chunks so a bridge can move large files without holding them in memory.
A streaming decryptor cannot know the hash is right until the end, so ``decrypt_file`` checks the
hash in a first pass when it can seek, and ``AttachmentDecryptor`` makes the caller call
``finalize()`` (which raises on mismatch) before trusting what it produced.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any, BinaryIO, Iterable, Iterator

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .codec import decode_b64, decode_b64_urlsafe, encode_b64, encode_b64_urlsafe
from .errors import AttachmentError

VERSION = "v2"
CHUNK_SIZE = 64 * 1024


class AttachmentEncryptor:
    """Incremental encryption of one file; ``finalize()`` returns the EncryptedFile metadata."""

    def __init__(self) -> None:
        self._key = os.urandom(32)
        # High 8 bytes random (the nonce), low 8 bytes zero (the counter), as the spec requires.
        self._iv = os.urandom(8) + bytes(8)
        self._cipher = Cipher(algorithms.AES(self._key), modes.CTR(self._iv)).encryptor()
        self._hash = hashlib.sha256()
        self._finished = False

    def update(self, chunk: bytes) -> bytes:
        """Encrypt the next chunk; returns ciphertext of the same length."""
        if self._finished:
            raise AttachmentError("encryptor already finalized")
        ciphertext = self._cipher.update(chunk)
        self._hash.update(ciphertext)
        return ciphertext

    def finalize(self) -> dict[str, Any]:
        """EncryptedFile fields except ``url`` (add it after uploading the ciphertext)."""
        if not self._finished:
            tail = self._cipher.finalize()  # CTR is a stream mode: never any tail
            assert tail == b""
            self._finished = True
        return {
            "v": VERSION,
            "key": {
                "kty": "oct",
                "key_ops": ["encrypt", "decrypt"],
                "alg": "A256CTR",
                "k": encode_b64_urlsafe(self._key),
                "ext": True,
            },
            "iv": encode_b64(self._iv),
            "hashes": {"sha256": encode_b64(self._hash.digest())},
        }


def _parse_file_info(info: Any) -> tuple[bytes, bytes, bytes]:
    """Validate EncryptedFile metadata; return (key, iv, expected sha256)."""
    if not isinstance(info, dict):
        raise AttachmentError("encrypted file info is not an object")
    if info.get("v") != VERSION:
        raise AttachmentError(f"unsupported encrypted attachment version {info.get('v')!r}")
    key = info.get("key")
    if not isinstance(key, dict) or key.get("kty") != "oct" or key.get("alg") != "A256CTR":
        raise AttachmentError("attachment key is not an A256CTR JSON Web Key")
    key_ops = key.get("key_ops")
    if not isinstance(key_ops, list) or "decrypt" not in key_ops:
        raise AttachmentError("attachment key may not be used to decrypt")
    hashes = info.get("hashes")
    if not isinstance(hashes, dict) or not isinstance(hashes.get("sha256"), str):
        raise AttachmentError("attachment has no sha256 hash")
    try:
        raw_key = decode_b64_urlsafe(key.get("k"))  # type: ignore[arg-type]
        iv = decode_b64(info.get("iv"))  # type: ignore[arg-type]
        digest = decode_b64(hashes["sha256"])
    except ValueError as exc:
        raise AttachmentError(f"attachment metadata is not valid base64: {exc}") from exc
    if len(raw_key) != 32 or len(iv) != 16 or len(digest) != 32:
        raise AttachmentError("attachment key, iv or hash has the wrong length")
    return raw_key, iv, digest


class AttachmentDecryptor:
    """Incremental decryption; output is untrusted until ``finalize()`` returns without raising."""

    def __init__(self, info: dict[str, Any]) -> None:
        key, iv, self._expected = _parse_file_info(info)
        self._cipher = Cipher(algorithms.AES(key), modes.CTR(iv)).decryptor()
        self._hash = hashlib.sha256()

    def update(self, chunk: bytes) -> bytes:
        """Decrypt the next chunk of ciphertext."""
        self._hash.update(chunk)
        return self._cipher.update(chunk)

    def finalize(self) -> None:
        """Raise AttachmentError if the ciphertext's SHA-256 differs from the metadata's."""
        self._cipher.finalize()
        if not hmac.compare_digest(self._hash.digest(), self._expected):
            raise AttachmentError("attachment ciphertext does not match its sha256 hash")


def encrypt_attachment(plaintext: bytes) -> tuple[bytes, dict[str, Any]]:
    """Encrypt a whole file in memory; return (ciphertext to upload, EncryptedFile minus url)."""
    encryptor = AttachmentEncryptor()
    ciphertext = encryptor.update(plaintext)
    return ciphertext, encryptor.finalize()


def decrypt_attachment(ciphertext: bytes, info: dict[str, Any]) -> bytes:
    """Check the hash, then decrypt a whole file in memory."""
    key, iv, expected = _parse_file_info(info)
    if not hmac.compare_digest(hashlib.sha256(ciphertext).digest(), expected):
        raise AttachmentError("attachment ciphertext does not match its sha256 hash")
    decryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


def encrypt_chunks(chunks: Iterable[bytes], encryptor: AttachmentEncryptor) -> Iterator[bytes]:
    """Encrypt a stream lazily (e.g. to feed a streaming upload); call ``encryptor.finalize()`` after."""
    for chunk in chunks:
        if chunk:
            yield encryptor.update(chunk)


def encrypt_file(source: BinaryIO, destination: BinaryIO, chunk_size: int = CHUNK_SIZE) -> dict[str, Any]:
    """Encrypt ``source`` into ``destination`` chunk by chunk; return EncryptedFile minus url."""
    encryptor = AttachmentEncryptor()
    while chunk := source.read(chunk_size):
        destination.write(encryptor.update(chunk))
    return encryptor.finalize()


def decrypt_file(source: BinaryIO, destination: BinaryIO, info: dict[str, Any], chunk_size: int = CHUNK_SIZE) -> None:
    """Decrypt ``source`` into ``destination`` chunk by chunk, verifying the hash.

    If ``source`` can seek, the hash is checked in a first pass and nothing is written on a
    mismatch. Otherwise plaintext is written as it is decrypted and AttachmentError at the end means
    the caller must discard what was written.
    """
    _, _, expected = _parse_file_info(info)
    if source.seekable():
        start = source.tell()
        digest = hashlib.sha256()
        while chunk := source.read(chunk_size):
            digest.update(chunk)
        if not hmac.compare_digest(digest.digest(), expected):
            raise AttachmentError("attachment ciphertext does not match its sha256 hash")
        source.seek(start)
    decryptor = AttachmentDecryptor(info)
    while chunk := source.read(chunk_size):
        destination.write(decryptor.update(chunk))
    decryptor.finalize()
