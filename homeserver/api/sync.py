"""/sync and filters."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import Routes, json_response, query_bool, query_int, read_json
from homeserver.errors import MatrixError
from homeserver.services.sync import SyncRequest
from homeserver.services.tokens_stream import SyncToken

SLIDING_SYNC_PREFIX = "/_matrix/client/unstable/org.matrix.simplified_msc3575"


async def get_sync(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    since_raw = request.query.get("since")
    set_presence = request.query.get("set_presence", "online")
    if set_presence not in ("online", "offline", "unavailable"):
        raise MatrixError(400, "M_INVALID_PARAM", "set_presence must be online, offline or unavailable")
    # Each sync is a sign of life; set_presence says which (offline means: don't mark me online).
    if set_presence != "offline":
        hs.presence.set(requester.user_id, set_presence, keep_status=True)
    req = SyncRequest(
        user_id=requester.user_id, device_id=requester.device_id,
        since=SyncToken.parse(since_raw) if since_raw else None,
        timeout_ms=query_int(request, "timeout", 0) or 0,
        full_state=bool(query_bool(request, "full_state", False)),
        filter=await hs.filters.resolve(requester.user_id, request.query.get("filter")),
    )
    return json_response(await hs.sync.sync(req))


async def post_sliding_sync(request: web.Request) -> web.Response:
    """Simplified sliding sync (MSC4186) at the unstable path Synapse and Element X use."""
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request)
    pos = request.query.get("pos") or None
    timeout_ms = query_int(request, "timeout", 0) or 0
    # Unlike /sync it leaves presence alone (so does Synapse): Element X sets presence itself.
    return json_response(await hs.sliding_sync.handle(requester.user_id, requester.device_id, body, pos, timeout_ms))


def _own_user(request: web.Request, user_id: str) -> None:
    if request.match_info["user_id"] != user_id:
        raise MatrixError(403, "M_FORBIDDEN", "Cannot use filters of other users")


async def post_filter(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    _own_user(request, requester.user_id)
    body = await read_json(request)
    return json_response({"filter_id": await hs.filters.create(requester.user_id, body)})


async def get_filter(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    _own_user(request, requester.user_id)
    return json_response(await hs.filters.get_raw(requester.user_id, request.match_info["filter_id"]))


def setup(routes: Routes) -> None:
    routes.client("GET", "/sync", get_sync)
    routes.add("POST", f"{SLIDING_SYNC_PREFIX}/sync", post_sliding_sync)
    routes.client("POST", "/user/{user_id}/filter", post_filter)
    routes.client("GET", "/user/{user_id}/filter/{filter_id}", get_filter)
