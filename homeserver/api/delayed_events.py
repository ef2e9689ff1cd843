"""MSC4140 delayed events management, at the unstable paths Synapse and Element Call use.

Cancel, restart and send need no access token: the delay_id itself is the capability (the MSC lets a
call's media server end a membership it no longer sees). They are rate-limited per address instead.
"""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import client_ip, hs_of
from homeserver.api.http import Routes, json_response, read_json
from homeserver.errors import MatrixError

PREFIX = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events"
ACTIONS = ("cancel", "restart", "send")


async def _act(request: web.Request, action: str) -> web.Response:
    hs = hs_of(request)
    hs.ratelimiter.check("delayed_events", client_ip(request), hs.config.rc_message)
    delay_id = request.match_info["delay_id"]
    if action == "cancel":
        await hs.delayed_events.cancel(delay_id)
    elif action == "restart":
        await hs.delayed_events.restart(delay_id)
    else:
        await hs.delayed_events.send_now(delay_id)
    return json_response({})


async def update(request: web.Request) -> web.Response:
    body = await read_json(request)
    action = body.get("action")
    if action is None:
        raise MatrixError(400, "M_MISSING_PARAM", "'action' is missing")
    if action not in ACTIONS:
        raise MatrixError(400, "M_INVALID_PARAM", "'action' is not one of " + ", ".join(f"'{a}'" for a in ACTIONS))
    return await _act(request, action)


def _fixed(action: str):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.Response:
        return await _act(request, action)
    return handler


async def list_pending(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    return json_response({"delayed_events": await hs.delayed_events.list_for(requester.user_id)})


def setup(routes: Routes) -> None:
    routes.add("GET", PREFIX, list_pending)
    routes.add("POST", PREFIX + "/{delay_id}", update)
    for action in ACTIONS:
        routes.add("POST", PREFIX + "/{delay_id}/" + action, _fixed(action))
