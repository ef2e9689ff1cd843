"""Account data, tags, receipts, read markers and typing."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import Routes, get_bool, json_response, read_json
from homeserver.errors import MatrixError


async def put_account_data(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request)
    m = request.match_info
    await hs.user_data.put(requester.user_id, m["user_id"], m["type"], body, m.get("room_id", ""))
    return json_response({})


async def get_account_data(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    m = request.match_info
    return json_response(await hs.user_data.get(requester.user_id, m["user_id"], m["type"], m.get("room_id", "")))


async def get_tags(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    m = request.match_info
    return json_response(await hs.user_data.tags(requester.user_id, m["user_id"], m["room_id"]))


async def put_tag(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request)
    m = request.match_info
    await hs.user_data.set_tag(requester.user_id, m["user_id"], m["room_id"], m["tag"], body)
    return json_response({})


async def delete_tag(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    m = request.match_info
    await hs.user_data.delete_tag(requester.user_id, m["user_id"], m["room_id"], m["tag"])
    return json_response({})


async def post_receipt(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request, allow_empty=True)
    m = request.match_info
    await hs.user_data.receipt(requester.user_id, m["room_id"], m["receipt_type"], m["event_id"], body.get("thread_id"))
    return json_response({})


async def post_read_markers(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request)
    await hs.user_data.read_markers(requester.user_id, request.match_info["room_id"], body)
    return json_response({})


async def put_typing(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request)
    m = request.match_info
    if m["user_id"] != requester.user_id:
        raise MatrixError(403, "M_FORBIDDEN", "Cannot set typing for another user")
    room_id = m["room_id"]
    member = await hs.membership.membership_of(room_id, requester.user_id)
    if member != "join":
        raise MatrixError(403, "M_FORBIDDEN", "You are not joined to this room")
    hs.typing.set_typing(room_id, requester.user_id, get_bool(body, "typing", False), body.get("timeout"))
    return json_response({})


def setup(routes: Routes) -> None:
    c = routes.client
    c("PUT", "/user/{user_id}/account_data/{type}", put_account_data)
    c("GET", "/user/{user_id}/account_data/{type}", get_account_data)
    c("PUT", "/user/{user_id}/rooms/{room_id}/account_data/{type}", put_account_data)
    c("GET", "/user/{user_id}/rooms/{room_id}/account_data/{type}", get_account_data)
    c("GET", "/user/{user_id}/rooms/{room_id}/tags", get_tags)
    c("PUT", "/user/{user_id}/rooms/{room_id}/tags/{tag}", put_tag)
    c("DELETE", "/user/{user_id}/rooms/{room_id}/tags/{tag}", delete_tag)
    c("POST", "/rooms/{room_id}/receipt/{receipt_type}/{event_id}", post_receipt)
    c("POST", "/rooms/{room_id}/read_markers", post_read_markers)
    c("PUT", "/rooms/{room_id}/typing/{user_id}", put_typing)
