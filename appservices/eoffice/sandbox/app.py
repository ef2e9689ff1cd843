"""The composition root: builds the services, mounts the routes, and adds error, auth and log middleware."""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from typing import Awaitable, Callable

from aiohttp import web

from . import routes_documents, routes_feed, routes_records, store
from .config import SandboxConfig
from .db import Database
from .documents import DocumentStore
from .errors import ApiError
from .plumbing import INTEGRATION_KEY, SERVICES, Services
from .webhooks import WebhookDispatcher

log = logging.getLogger("appservices.eoffice.sandbox")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PUBLIC = {"/api/v1/health"}
_STATUS_CODES = {400: "VALIDATION", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
                 405: "METHOD_NOT_ALLOWED", 409: "CONFLICT", 413: "TOO_LARGE"}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as ``{"error": {...}}``; one request log line, never with tokens or bodies."""
    request_id = uuid.uuid4().hex[:12]
    started = time.monotonic()
    try:
        resp = await handler(request)
    except ApiError as err:
        resp = web.json_response(err.body(), status=err.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _STATUS_CODES.get(exc.status, "HTTP_ERROR")
        message = "no such endpoint" if exc.status == 404 else exc.reason
        resp = web.json_response({"error": {"code": code, "message": message}}, status=exc.status)
    except Exception:
        log.exception("request %s failed", request_id)
        resp = web.json_response({"error": {"code": "INTERNAL", "message": f"internal error (request {request_id})"}},
                                 status=500)
    resp.headers["X-Request-Id"] = request_id
    log.info("%s %s %s -> %d in %.1fms", request_id, request.method, request.path, resp.status,
             (time.monotonic() - started) * 1000)
    return resp


def auth_middleware(tokens: dict[str, str]) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Bearer tokens per integration; the matching integration's name is kept for audit fields."""
    encoded = [(tok.encode(), name) for tok, name in tokens.items()]

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in _PUBLIC:
            return await handler(request)
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        name = None
        if scheme.lower() == "bearer" and presented:
            candidate = presented.strip().encode()
            for tok, integration in encoded:  # compare with all, in constant time, without early exit
                if hmac.compare_digest(tok, candidate):
                    name = integration
        if name is None:
            err = ApiError(401, "UNAUTHORIZED", "a valid 'Authorization: Bearer <token>' header is required")
            return web.json_response(err.body(), status=401, headers={"WWW-Authenticate": 'Bearer realm="eoffice"'})
        request[INTEGRATION_KEY] = name
        return await handler(request)

    return middleware


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "api_version": "v1"})


def build_app(config: SandboxConfig) -> web.Application:
    app = web.Application(middlewares=[error_middleware, auth_middleware(config.tokens)],
                          client_max_size=2 * 1024 * 1024)
    db = Database(config.db_path)
    documents = DocumentStore(config.documents_dir)
    dispatcher = WebhookDispatcher(db, config.webhook_retry_base, config.webhook_retry_max, config.webhook_timeout)
    svc = Services(config=config, db=db, documents=documents, webhooks=dispatcher)
    app[SERVICES] = svc
    db.on_write(dispatcher.wake)
    db.on_write(svc.changed)

    async def lifecycle(app: web.Application):  # type: ignore[no-untyped-def]
        config.data_dir.mkdir(parents=True, exist_ok=True)
        documents.prepare()
        await db.open()
        await db.write(store.seed_employees, config.employees)
        await dispatcher.start()
        yield
        await dispatcher.stop()
        await db.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/api/v1/health", health)
    app.add_routes(routes_records.routes)
    app.add_routes(routes_documents.routes)
    app.add_routes(routes_feed.routes)
    return app
