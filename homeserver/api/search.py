"""POST /search."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import Routes, json_response, read_json


async def post_search(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request)
    return json_response(await hs.search.search(requester.user_id, requester.device_id, body, request.query.get("next_batch")))


def setup(routes: Routes) -> None:
    routes.client("POST", "/search", post_search)
