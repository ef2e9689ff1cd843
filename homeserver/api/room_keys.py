"""Server-side key backup: /room_keys/version and /room_keys/keys."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import Routes, json_response, read_json
from homeserver.errors import MatrixError


async def post_version(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    return json_response(await hs.key_backup.create_version(requester.user_id, await read_json(request)))


async def get_version(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    return json_response(await hs.key_backup.get_version(requester.user_id, request.match_info.get("version")))


async def put_version(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    await hs.key_backup.update_version(requester.user_id, request.match_info["version"], await read_json(request))
    return json_response({})


async def delete_version(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    await hs.key_backup.delete_version(requester.user_id, request.match_info["version"])
    return json_response({})


async def put_keys(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request)
    m = request.match_info
    room_id, session_id = m.get("room_id"), m.get("session_id")
    if session_id is not None:
        rooms = {room_id: {"sessions": {session_id: body}}}
    elif room_id is not None:
        rooms = {room_id: body}
    else:
        rooms = body.get("rooms")
        if not isinstance(rooms, dict):
            raise MatrixError(400, "M_BAD_JSON", "rooms must be an object")
    return json_response(await hs.key_backup.put_keys(requester.user_id, request.query.get("version"), rooms))


async def get_keys(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    m = request.match_info
    return json_response(await hs.key_backup.get_keys(
        requester.user_id, request.query.get("version"), m.get("room_id"), m.get("session_id")))


async def delete_keys(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    m = request.match_info
    return json_response(await hs.key_backup.delete_keys(
        requester.user_id, request.query.get("version"), m.get("room_id"), m.get("session_id")))


def setup(routes: Routes) -> None:
    c = routes.client
    c("POST", "/room_keys/version", post_version)
    c("GET", "/room_keys/version", get_version)
    c("GET", "/room_keys/version/{version}", get_version)
    c("PUT", "/room_keys/version/{version}", put_version)
    c("DELETE", "/room_keys/version/{version}", delete_version)
    for path in ("/room_keys/keys", "/room_keys/keys/{room_id}", "/room_keys/keys/{room_id}/{session_id}"):
        c("PUT", path, put_keys)
        c("GET", path, get_keys)
        c("DELETE", path, delete_keys)
