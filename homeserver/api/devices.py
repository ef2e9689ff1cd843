"""/devices, /devices/{deviceId} and /delete_devices."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import Routes, get_str_list, json_response, read_json


async def get_devices(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    return json_response({"devices": await hs.devices.list(requester.user_id)})


async def get_device(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    return json_response(await hs.devices.get(requester.user_id, request.match_info["device_id"]))


async def put_device(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request)
    await hs.devices.rename(requester.user_id, request.match_info["device_id"], body)
    return json_response({})


async def delete_device(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request, allow_empty=True)
    device_id = request.match_info["device_id"]
    await hs.devices.get(requester.user_id, device_id)  # 404 before asking for a password
    result = await hs.reauthenticate(request, requester, body)
    await hs.devices.delete(requester.user_id, [device_id])
    await hs.uia.finish(result.session)
    return json_response({})


async def post_delete_devices(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request)
    device_ids = get_str_list(body, "devices")
    result = await hs.reauthenticate(request, requester, body)
    await hs.devices.delete(requester.user_id, device_ids)
    await hs.uia.finish(result.session)
    return json_response({})


def setup(routes: Routes) -> None:
    routes.client("GET", "/devices", get_devices)
    routes.client("GET", "/devices/{device_id}", get_device)
    routes.client("PUT", "/devices/{device_id}", put_device)
    routes.client("DELETE", "/devices/{device_id}", delete_device)
    routes.client("POST", "/delete_devices", post_delete_devices)
