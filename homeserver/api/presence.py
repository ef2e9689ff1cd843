"""/presence/{userId}/status."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import Routes, json_response, read_json
from homeserver.errors import MatrixError


async def get_status(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    target = request.match_info["user_id"]
    if target != requester.user_id and target not in await hs.storage.events.users_sharing_rooms(requester.user_id):
        if not await hs.storage.users.exists(target):
            raise MatrixError(404, "M_NOT_FOUND", "Unknown user")
        raise MatrixError(403, "M_FORBIDDEN", "You do not share a room with this user")
    return json_response(hs.presence.get(target))


async def put_status(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    if request.match_info["user_id"] != requester.user_id:
        raise MatrixError(403, "M_FORBIDDEN", "You can only set your own presence")
    body = await read_json(request)
    if "presence" not in body:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing parameter: presence")
    hs.presence.set(requester.user_id, body["presence"], body.get("status_msg"))
    return json_response({})


def setup(routes: Routes) -> None:
    routes.client("GET", "/presence/{user_id}/status", get_status)
    routes.client("PUT", "/presence/{user_id}/status", put_status)
