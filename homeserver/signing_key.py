"""The server's ed25519 signing key file, in Synapse's format (``ed25519 <version> <base64 seed>``)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from signedjson.key import decode_signing_key_base64, encode_signing_key_base64, generate_signing_key
from nacl.signing import SigningKey
from unpaddedbase64 import encode_base64


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


@dataclass(frozen=True)
class OldVerifyKey:
    """A signing key this server used before: only its public half is kept, for old_verify_keys."""

    key_id: str
    public_key: str
    expired_ts: int


def old_keys_path(signing_key_path: Path) -> Path:
    return signing_key_path.with_name(signing_key_path.name + ".old")


def read_old_verify_keys(signing_key_path: Path) -> list[OldVerifyKey]:
    """Keys retired by ``qasid keys rotate`` (``ed25519 <version> <public key> <expired_ts>`` per line)."""
    path = old_keys_path(signing_key_path)
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 4 or parts[0] != "ed25519" or not parts[3].isdigit():
            raise ValueError(f"{path}:{n}: expected 'ed25519 <version> <public key> <expired_ts>'")
        out.append(OldVerifyKey(f"ed25519:{parts[1]}", parts[2], int(parts[3])))
    return out


def rotate_signing_key(signing_key_path: Path, now_ms: int) -> tuple[str, str]:
    """Replace the signing key with a new one and keep the old one's public half as an old key.

    Returns (old key ID, new key ID). Other servers keep verifying events signed with the old key
    through ``old_verify_keys``; the key file itself is replaced atomically.
    """
    old = read_signing_keys(signing_key_path)[0]
    new = generate_signing_key(new_key_version())
    with old_keys_path(signing_key_path).open("a", encoding="utf-8") as f:
        public = encode_base64(bytes(old.verify_key))
        f.write(f"ed25519 {old.version} {public} {now_ms}\n")
    tmp = signing_key_path.with_name(signing_key_path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"ed25519 {new.version} {encode_signing_key_base64(new)}\n")
    os.replace(tmp, signing_key_path)
    return f"ed25519:{old.version}", f"ed25519:{new.version}"
