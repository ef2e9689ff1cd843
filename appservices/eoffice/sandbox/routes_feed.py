"""Handlers for the change feed (polling, with optional long-poll) and webhook subscriptions."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from aiohttp import web

from . import feed
from . import validation as v
from .errors import validation
from .plumbing import canonical, idempotency_key, integration, json_body, json_response, outcome_response, services

routes = web.RouteTableDef()


@routes.get("/api/v1/events")
async def list_events(request: web.Request) -> web.Response:
    q, svc = request.query, services(request)
    after = v.int_param(q, "after", 0, 0, 2**62)
    limit = v.int_param(q, "limit", 100, 1, 1000)
    wait = v.int_param(q, "wait", 0, 0, 30)
    changed = svc.feed_changed  # taken before reading, so a write in between is not missed
    page = await svc.db.run(feed.list_events, after, limit)
    if not page["events"] and wait:
        try:
            await asyncio.wait_for(changed.wait(), timeout=wait)
        except asyncio.TimeoutError:
            pass
        else:
            page = await svc.db.run(feed.list_events, after, limit)
    return json_response(page)


@routes.post("/api/v1/webhooks")
async def create_webhook(request: web.Request) -> web.Response:
    body = await json_body(request)
    v.reject_unknown(body, {"url", "secret", "events"})
    url = v.string(body, "url", max_len=2000)
    secret = v.string(body, "secret", max_len=512)
    assert url is not None and secret is not None
    parts = urlsplit(url)
    allowed = ("https", "http") if services(request).config.allow_insecure_webhooks else ("https",)
    if parts.scheme not in allowed or not parts.hostname:
        raise validation(f"'url' must be an absolute {' or '.join(allowed)} URL", "url")
    if len(secret) < 16:
        raise validation("'secret' must be at least 16 characters", "secret")
    events = body.get("events")
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise validation("'events' must be a non-empty list of event types (or [\"*\"])", "events")
    for e in events:
        if e != "*" and e not in feed.EVENT_TYPES:
            raise validation(f"'events': unknown event type {e!r}", "events")
    svc = services(request)
    outcome = await svc.db.write_idempotent(
        idempotency_key(request, canonical(body)), feed.create_webhook, url, secret, events, integration(request))
    return outcome_response(outcome)


@routes.get("/api/v1/webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    return json_response(await services(request).db.run(feed.list_webhooks))


@routes.get("/api/v1/webhooks/{webhook_id}")
async def get_webhook(request: web.Request) -> web.Response:
    return json_response(await services(request).db.run(feed.get_webhook, request.match_info["webhook_id"]))


@routes.delete("/api/v1/webhooks/{webhook_id}")
async def delete_webhook(request: web.Request) -> web.Response:
    await services(request).db.write(feed.delete_webhook, request.match_info["webhook_id"])
    return web.Response(status=204)
