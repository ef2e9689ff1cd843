"""Request plumbing shared by the route modules: the services handle, JSON in and out, idempotency keys.

Kept out of the handlers so that every endpoint parses bodies, names integrations and fingerprints
idempotent requests identically.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .config import SandboxConfig
from .db import Database, IdempotencyKey, Outcome
from .documents import DocumentStore
from .errors import ApiError, validation
from .webhooks import WebhookDispatcher

MAX_KEY_LEN = 255


@dataclass
class Services:
    """Everything a handler may use; built once in ``app.py`` (the composition root)."""

    config: SandboxConfig
    db: Database
    documents: DocumentStore
    webhooks: WebhookDispatcher
    feed_changed: asyncio.Event = field(default_factory=asyncio.Event)

    def changed(self) -> None:
        """Release long-polling readers of the event feed, then arm a fresh event for the next change."""
        self.feed_changed.set()
        self.feed_changed = asyncio.Event()


SERVICES = web.AppKey("eoffice_services", Services)
INTEGRATION_KEY = "eoffice_integration"


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def integration(request: web.Request) -> str:
    """Name of the integration whose token authenticated this request (set by the auth middleware)."""
    return str(request[INTEGRATION_KEY])


def json_response(body: dict[str, Any], status: int = 200, replayed: bool = False) -> web.Response:
    resp = web.json_response(body, status=status)
    if replayed:
        resp.headers["Idempotency-Replayed"] = "true"
    return resp


def outcome_response(outcome: Outcome) -> web.Response:
    return json_response(outcome.body, outcome.status, outcome.replayed)


async def json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "VALIDATION", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise validation("the request body must be a JSON object")
    return body


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def idempotency_key(request: web.Request, *parts: bytes) -> IdempotencyKey | None:
    """The request's Idempotency-Key, fingerprinted over method, path and the given body parts.

    The path is part of the fingerprint, so reusing a key on another endpoint is a mismatch (422)
    rather than a surprising replay of an unrelated response.
    """
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not key or len(key) > MAX_KEY_LEN or not key.isascii() or not key.isprintable():
        raise validation(f"Idempotency-Key must be 1-{MAX_KEY_LEN} printable ASCII characters", "Idempotency-Key")
    digest = hashlib.sha256(f"{request.method} {request.path}".encode())
    for part in parts:
        digest.update(b"\n")
        digest.update(hashlib.sha256(part).digest())
    return IdempotencyKey(integration(request), key, digest.hexdigest())
