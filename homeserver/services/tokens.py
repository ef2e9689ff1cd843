"""Opaque secrets for clients: generated with the OS CSPRNG, only their SHA-256 digest is stored."""

from __future__ import annotations

import hashlib
import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def random_string(length: int, alphabet: str = _ALPHABET) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def new_access_token() -> str:
    # A recognisable prefix lets secret scanners find leaked tokens; 40 base62 chars ≈ 238 bits.
    return "qat_" + random_string(40)


def new_refresh_token() -> str:
    return "qrt_" + random_string(40)


def new_device_id() -> str:
    return random_string(10, string.ascii_uppercase)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
