"""Encrypted attachments: spec metadata shape, streaming, hash verification, interop with matrix-nio."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from e2ee import AttachmentError
from e2ee.attachments import (
    AttachmentDecryptor,
    AttachmentEncryptor,
    decrypt_attachment,
    decrypt_file,
    encrypt_attachment,
    encrypt_chunks,
    encrypt_file,
)
from e2ee.codec import decode_b64, decode_b64_urlsafe, encode_b64


def test_metadata_has_the_spec_shape() -> None:
    plaintext = b"hello attachment"
    ciphertext, info = encrypt_attachment(plaintext)
    assert len(ciphertext) == len(plaintext) and ciphertext != plaintext
    assert info["v"] == "v2"
    key = info["key"]
    assert {k: v for k, v in key.items() if k != "k"} == {
        "kty": "oct",
        "key_ops": ["encrypt", "decrypt"],
        "alg": "A256CTR",
        "ext": True,
    }
    assert "=" not in key["k"] and "+" not in key["k"] and "/" not in key["k"]
    assert len(decode_b64_urlsafe(key["k"])) == 32
    iv = decode_b64(info["iv"])
    assert len(iv) == 16 and iv[8:] == bytes(8) and "=" not in info["iv"]
    assert info["hashes"]["sha256"] == encode_b64(hashlib.sha256(ciphertext).digest())
    assert decrypt_attachment(ciphertext, info) == plaintext


def test_each_file_gets_a_fresh_key_and_iv() -> None:
    _, first = encrypt_attachment(b"same")
    _, second = encrypt_attachment(b"same")
    assert first["key"]["k"] != second["key"]["k"] and first["iv"] != second["iv"]


def test_streaming_round_trip_in_uneven_chunks() -> None:
    plaintext = os.urandom(300_001)
    source, encrypted = io.BytesIO(plaintext), io.BytesIO()
    info = encrypt_file(source, encrypted, chunk_size=7_777)
    # Chunked decryption with a different chunking gives the same bytes.
    decryptor = AttachmentDecryptor(info)
    ciphertext = encrypted.getvalue()
    out = b"".join(decryptor.update(ciphertext[i : i + 4096]) for i in range(0, len(ciphertext), 4096))
    decryptor.finalize()
    assert out == plaintext
    # And the whole-buffer encryption of the same key stream matches chunked output.
    assert decrypt_attachment(ciphertext, info) == plaintext
    target = io.BytesIO()
    decrypt_file(io.BytesIO(ciphertext), target, info, chunk_size=1000)
    assert target.getvalue() == plaintext

    encryptor = AttachmentEncryptor()
    chunks = list(encrypt_chunks([b"ab", b"", b"cdef"], encryptor))
    assert decrypt_attachment(b"".join(chunks), encryptor.finalize()) == b"abcdef"


def test_hash_mismatch_is_detected() -> None:
    ciphertext, info = encrypt_attachment(b"important document")
    tampered = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    with pytest.raises(AttachmentError, match="sha256"):
        decrypt_attachment(tampered, info)
    # A seekable stream is checked before anything is written.
    target = io.BytesIO()
    with pytest.raises(AttachmentError):
        decrypt_file(io.BytesIO(tampered), target, info)
    assert target.getvalue() == b""
    # The incremental decryptor reports the mismatch at finalize().
    decryptor = AttachmentDecryptor(info)
    decryptor.update(tampered)
    with pytest.raises(AttachmentError):
        decryptor.finalize()
    # A hash that does not belong to the file is refused as well.
    wrong = {**info, "hashes": {"sha256": encode_b64(hashlib.sha256(b"x").digest())}}
    with pytest.raises(AttachmentError):
        decrypt_attachment(ciphertext, wrong)


@pytest.mark.parametrize(
    "change",
    [
        {"v": "v1"},
        {"iv": "short"},
        {"hashes": {}},
        {"key": {"kty": "oct", "alg": "A128CTR", "k": "AAAA", "key_ops": ["decrypt"], "ext": True}},
        {"key": {"kty": "oct", "alg": "A256CTR", "k": "AAAA", "key_ops": ["decrypt"], "ext": True}},
    ],
)
def test_unusable_metadata_is_refused(change: dict) -> None:
    ciphertext, info = encrypt_attachment(b"data")
    with pytest.raises(AttachmentError):
        decrypt_attachment(ciphertext, {**info, **change})


def test_interop_with_matrix_nio() -> None:
    nio_attachments = pytest.importorskip("nio.crypto.attachments")
    plaintext = os.urandom(5000)
    # nio encrypts, we decrypt.
    ciphertext, info = nio_attachments.encrypt_attachment(plaintext)
    assert decrypt_attachment(ciphertext, info) == plaintext
    # We encrypt, nio decrypts.
    ciphertext, info = encrypt_attachment(plaintext)
    assert (
        nio_attachments.decrypt_attachment(ciphertext, info["key"]["k"], info["hashes"]["sha256"], info["iv"])
        == plaintext
    )
