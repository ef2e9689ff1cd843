"""/voip/turnServer: TURN credentials for calls."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import Routes, json_response


async def get_turn_server(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    return json_response(hs.voip.turn_server(requester.user_id))


def setup(routes: Routes) -> None:
    routes.client("GET", "/voip/turnServer", get_turn_server)
