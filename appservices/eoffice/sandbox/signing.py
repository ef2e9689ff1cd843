"""Webhook signatures: ``sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>``.

The timestamp is inside the MAC so a captured delivery cannot be replayed later with a fresh
timestamp header; receivers reject anything older than five minutes (see docs/eoffice-api.md for
the verification steps a receiver follows).
"""

from __future__ import annotations

import hashlib
import hmac


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()
