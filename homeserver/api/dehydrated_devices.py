"""MSC3814 dehydrated devices, at the unstable paths Synapse and Element use."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import Routes, json_response, read_json

PREFIX = ("unstable/org.matrix.msc3814.v1",)


async def put_device(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    return json_response(await hs.dehydrated_devices.put(requester.user_id, await read_json(request)))


async def get_device(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    return json_response(await hs.dehydrated_devices.get(requester.user_id))


async def delete_device(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    return json_response(await hs.dehydrated_devices.delete(requester.user_id))


async def post_events(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request, allow_empty=True)
    return json_response(await hs.dehydrated_devices.events(
        requester.user_id, request.match_info["device_id"], body.get("next_batch")))


def setup(routes: Routes) -> None:
    c = routes.client
    c("PUT", "/dehydrated_device", put_device, versions=PREFIX)
    c("GET", "/dehydrated_device", get_device, versions=PREFIX)
    c("DELETE", "/dehydrated_device", delete_device, versions=PREFIX)
    c("POST", "/dehydrated_device/{device_id}/events", post_events, versions=PREFIX)
