"""HTTP plumbing shared by every handler: errors as Matrix JSON, CORS, request logging, bodies, auth."""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable, Iterable

import orjson
from aiohttp import web

from homeserver.errors import MatrixError, unrecognized

logger = logging.getLogger("qasid.access")
error_logger = logging.getLogger("qasid.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "X-Requested-With, Content-Type, Authorization, Date",
    "Access-Control-Expose-Headers": "ETag, Content-Disposition, Retry-After",
}

REQUEST_ID = web.AppKey("request_counter", list)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _error_response(err: MatrixError) -> web.Response:
    return json_response(err.to_json(), status=err.status, headers=err.headers or None)


def _client_ip(request: web.Request) -> str:
    return request.get("client_ip") or request.remote or "-"


@web.middleware
async def matrix_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes ``{"errcode","error"}``; every response carries CORS; one log line each.

    The log line has method, the path without its query string (which may hold an access token),
    status and time: never bodies, headers or tokens.
    """
    counter = request.app[REQUEST_ID]
    counter[0] += 1
    request_id = f"{counter[0]:x}"
    start = time.perf_counter()
    if request.method == "OPTIONS":
        response: web.StreamResponse = web.Response(status=200, headers=CORS_HEADERS)
        return response
    try:
        response = await handler(request)
    except MatrixError as e:
        response = _error_response(e)
    except web.HTTPException as e:
        response = _map_http_exception(e)
    except Exception:
        error_logger.exception("request %s %s %s failed", request_id, request.method, request.path)
        response = _error_response(MatrixError(500, "M_UNKNOWN", "Internal server error"))
    if not response.prepared:
        response.headers.update(CORS_HEADERS)
    logger.info(
        "%s %s %s %s %d %.1fms", request_id, _client_ip(request), request.method, request.path,
        response.status, (time.perf_counter() - start) * 1000,
    )
    return response


def _map_http_exception(e: web.HTTPException) -> web.Response:
    status = e.status
    if status == 404:
        err = unrecognized(404, "Unrecognized request")
    elif status == 405:
        err = unrecognized(405, "Unrecognized request: method not allowed")
    elif status == 413:
        err = MatrixError(413, "M_TOO_LARGE", "Request body too large")
    elif status < 400:
        # Redirects and the like pass through untouched.
        return web.Response(status=status, headers=e.headers)
    else:
        err = MatrixError(status, "M_UNKNOWN", e.reason or "Error")
    return _error_response(err)


async def read_json(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object, or the spec's M_NOT_JSON / M_BAD_JSON."""
    raw = await request.read()
    if not raw.strip():
        if allow_empty:
            return {}
        raise MatrixError(400, "M_NOT_JSON", "Content not JSON.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MatrixError(400, "M_NOT_JSON", "Content not JSON.") from None
    if not isinstance(body, dict):
        raise MatrixError(400, "M_BAD_JSON", "Content must be a JSON object.")
    return body


def get_str(body: dict[str, Any], key: str, *, required: bool = False, default: str | None = None) -> str | None:
    value = body.get(key, default)
    if value is None:
        if required:
            raise MatrixError(400, "M_MISSING_PARAM", f"Missing parameter: {key}")
        return None
    if not isinstance(value, str):
        raise MatrixError(400, "M_BAD_JSON", f"{key} must be a string")
    return value


def get_bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise MatrixError(400, "M_BAD_JSON", f"{key} must be a boolean")
    return value


def get_str_list(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key)
    if value is None:
        raise MatrixError(400, "M_MISSING_PARAM", f"Missing parameter: {key}")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MatrixError(400, "M_BAD_JSON", f"{key} must be a list of strings")
    return value


def query_int(request: web.Request, key: str, default: int | None = None, *, minimum: int = 0) -> int | None:
    raw = request.query.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", f"{key} must be an integer") from None
    if value < minimum:
        raise MatrixError(400, "M_INVALID_PARAM", f"{key} must be at least {minimum}")
    return value


def query_bool(request: web.Request, key: str, default: bool | None = None) -> bool | None:
    raw = request.query.get(key)
    if raw is None:
        return default
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise MatrixError(400, "M_INVALID_PARAM", f"{key} must be true or false")


def access_token_from(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise MatrixError(401, "M_MISSING_TOKEN", "Invalid Authorization header")
        return token.strip()
    # Deprecated but still used by older clients and bots.
    return request.query.get("access_token")


class Routes:
    """Registers a handler under every prefix a path is served on (legacy r0 beside v3, as Synapse)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def client(
        self, method: str, path: str, handler: Handler, *, versions: Iterable[str] = ("r0", "v3"),
    ) -> None:
        for v in versions:
            self.app.router.add_route(method, f"/_matrix/client/{v}{path}", handler)

    def add(self, method: str, path: str, handler: Handler) -> None:
        self.app.router.add_route(method, path, handler)
