"""Inbound federation request authentication: X-Matrix signatures, checked against the origin's
keys, after the allowlist. Every federation handler but the key and version endpoints goes through it."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.errors import MatrixError
from homeserver.events.errors import SignatureError
from homeserver.events.xmatrix import XMatrixAuth, parse_authorization, verify_request

from federation.discovery import split_server_name
from federation.keyring import KeyNotFound, Keyring
from federation.policy import FederationPolicy


async def authenticate(request: web.Request, body: Any, *, server_name: str, keyring: Keyring,
                       policy: FederationPolicy) -> str:
    """The origin server of a signed request; 401 M_UNAUTHORIZED if unsigned or badly signed,
    403 M_FORBIDDEN if the origin is not allowed to federate with us."""
    header = request.headers.get("Authorization")
    if not header:
        raise MatrixError(401, "M_UNAUTHORIZED", "Missing X-Matrix Authorization header")
    try:
        auth: XMatrixAuth = parse_authorization(header)
        split_server_name(auth.origin)
    except (SignatureError, ValueError) as e:
        raise MatrixError(401, "M_UNAUTHORIZED", f"Bad Authorization header: {e}") from None
    if not policy.allows(auth.origin):
        raise MatrixError(403, "M_FORBIDDEN", "Federation with your server is not allowed")
    if auth.destination is not None and auth.destination != server_name:
        raise MatrixError(401, "M_UNAUTHORIZED", "Request was meant for another server")
    try:
        key = await keyring.get_key(auth.origin, auth.key)
    except KeyNotFound as e:
        raise MatrixError(401, "M_UNAUTHORIZED", f"Cannot find the signing key: {e}") from None
    try:
        verify_request(auth, request.method, request.raw_path, server_name, body, key.verify_key)
    except SignatureError as e:
        raise MatrixError(401, "M_UNAUTHORIZED", str(e)) from None
    return auth.origin
