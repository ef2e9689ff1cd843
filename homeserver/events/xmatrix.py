"""X-Matrix request authentication between servers (the spec's "Request Authentication")."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from unpaddedbase64 import decode_base64

from homeserver.events.canonical import encode_canonical_json
from homeserver.events.errors import SignatureError
from homeserver.events.signing import key_id, sign_json_bytes


@dataclass(frozen=True)
class XMatrixAuth:
    origin: str
    destination: str | None
    key: str
    sig: str


def request_json(method: str, uri: str, origin: str, destination: str, content: Any = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"method": method, "uri": uri, "origin": origin, "destination": destination}
    if content is not None:
        obj["content"] = content
    return obj


def sign_request(
    origin: str, destination: str, method: str, uri: str, content: Any, signing_key: SigningKey,
) -> str:
    """The Authorization header value for a request from ``origin`` to ``destination``."""
    sig = sign_json_bytes(encode_canonical_json(request_json(method, uri, origin, destination, content)), signing_key)
    return f'X-Matrix origin="{origin}",destination="{destination}",key="{key_id(signing_key)}",sig="{sig}"'


_PARAM = re.compile(r'\s*([A-Za-z0-9_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*(?:,|$)')


def parse_authorization(header: str) -> XMatrixAuth:
    """Parse an ``X-Matrix`` header; raises SignatureError if it is not one or lacks a parameter."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "x-matrix":
        raise SignatureError("not an X-Matrix Authorization header")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if not m or m.end() == pos:
            raise SignatureError("malformed X-Matrix header")
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        pos = m.end()
    for required in ("origin", "key", "sig"):
        if not params.get(required):
            raise SignatureError(f"X-Matrix header lacks {required}")
    return XMatrixAuth(params["origin"], params.get("destination"), params["key"], params["sig"])


def verify_request(
    auth: XMatrixAuth, method: str, uri: str, destination: str, content: Any, verify_key: VerifyKey,
) -> None:
    """Raise SignatureError unless the request was signed by ``verify_key`` for this destination."""
    if auth.destination is not None and auth.destination != destination:
        raise SignatureError("request was meant for another server")
    data = encode_canonical_json(request_json(method, uri, auth.origin, destination, content))
    try:
        verify_key.verify(data, decode_base64(auth.sig))
    except (BadSignatureError, ValueError, TypeError):
        raise SignatureError("bad X-Matrix signature") from None
