"""The server's ed25519 signing key file, in Synapse's format (``ed25519 <version> <base64 seed>``)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from signedjson.key import decode_signing_key_base64, encode_signing_key_base64, generate_signing_key
from nacl.signing import SigningKey


def new_key_version() -> str:
    # a_ + 4 random characters, the shape Synapse uses, so key IDs look familiar to operators.
    return "a_" + "".join(secrets.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4))


def write_new_signing_key(path: Path) -> str:
    key = generate_signing_key(new_key_version())
    line = f"ed25519 {key.version} {encode_signing_key_base64(key)}\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(line)
    return f"ed25519:{key.version}"


def read_signing_keys(path: Path) -> list[SigningKey]:
    """All keys in the file; the first is the one used for signing."""
    keys = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or parts[0] != "ed25519":
            raise ValueError(f"{path}:{n}: expected 'ed25519 <version> <key>'")
        try:
            keys.append(decode_signing_key_base64(parts[0], parts[1], parts[2]))
        except Exception:
            raise ValueError(f"{path}:{n}: not a valid ed25519 key") from None
    if not keys:
        raise ValueError(f"{path}: no signing key")
    return keys
