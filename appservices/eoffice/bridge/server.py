"""The bridge's HTTP side: the appservice API Qasid calls (transactions, user and alias queries,
ping), and the e-Office webhook endpoint. Qasid must present the hs_token; e-Office must sign each
delivery with the shared secret; anything else is refused before it is read further."""

from __future__ import annotations

import hmac
import json
import time

from aiohttp import web

from .bridge import Bridge
from .eoffice import verify_webhook

BRIDGE = web.AppKey("bridge", Bridge)


def _hs_token_ok(request: web.Request) -> bool:
    bridge = request.app[BRIDGE]
    header = request.headers.get("Authorization", "")
    token = header[len("Bearer "):] if header.startswith("Bearer ") else request.query.get("access_token", "")
    return bool(token) and hmac.compare_digest(token, bridge.config.hs_token)


def _matrix_error(status: int, errcode: str, error: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": error}, status=status)


async def transaction(request: web.Request) -> web.Response:
    if not _hs_token_ok(request):
        return _matrix_error(403, "M_FORBIDDEN", "Bad hs_token")
    try:
        body = await request.json()
    except ValueError:
        return _matrix_error(400, "M_NOT_JSON", "Not JSON")
    if not isinstance(body, dict):
        return _matrix_error(400, "M_BAD_JSON", "Not a JSON object")
    await request.app[BRIDGE].on_transaction(request.match_info["txn_id"], body)
    return web.json_response({})


async def query(request: web.Request) -> web.Response:
    if not _hs_token_ok(request):
        return _matrix_error(403, "M_FORBIDDEN", "Bad hs_token")
    return _matrix_error(404, "M_NOT_FOUND", "The bridge creates its users and rooms itself")


async def ping(request: web.Request) -> web.Response:
    if not _hs_token_ok(request):
        return _matrix_error(403, "M_FORBIDDEN", "Bad hs_token")
    return web.json_response({})


async def webhook(request: web.Request) -> web.Response:
    bridge = request.app[BRIDGE]
    raw = await request.read()
    if not verify_webhook(bridge.config.webhook_secret, request.headers.get("X-EOffice-Timestamp"),
                          request.headers.get("X-EOffice-Signature"), raw, int(time.time())):
        return web.json_response({"error": {"code": "UNAUTHORIZED", "message": "bad or missing signature"}}, status=401)
    try:
        event = json.loads(raw)
    except ValueError:
        return web.json_response({"error": {"code": "VALIDATION", "message": "not JSON"}}, status=400)
    await bridge.on_eoffice_event(event)
    return web.json_response({})


def make_app(bridge: Bridge) -> web.Application:
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app[BRIDGE] = bridge
    for prefix in ("/_matrix/app/v1", ""):
        app.router.add_put(f"{prefix}/transactions/{{txn_id}}", transaction)
        app.router.add_get(f"{prefix}/users/{{user_id}}", query)
        app.router.add_get(f"{prefix}/rooms/{{alias}}", query)
    app.router.add_post("/_matrix/app/v1/ping", ping)
    app.router.add_post("/eoffice/webhook", webhook)
    return app
