"""/profile/{userId} and its fields (displayname, avatar_url, custom keys of spec v1.16)."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import Routes, access_token_from, json_response, read_json
from homeserver.errors import MatrixError


async def _maybe_authenticate(request: web.Request) -> None:
    """Profiles are public unless the operator says otherwise (Synapse's default), but a token given must be valid."""
    hs = hs_of(request)
    if hs.config.require_auth_for_profile_requests or access_token_from(request):
        await hs.requester(request)


async def get_profile(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await _maybe_authenticate(request)
    return json_response(await hs.profiles.get_profile(request.match_info["user_id"]))


async def get_field(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await _maybe_authenticate(request)
    return json_response(await hs.profiles.get_field(request.match_info["user_id"], request.match_info["field"]))


async def put_field(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    field = request.match_info["field"]
    body = await read_json(request)
    if field not in body:
        raise MatrixError(400, "M_MISSING_PARAM", f"Missing parameter: {field}")
    await hs.profiles.set_field(
        requester.user_id, request.match_info["user_id"], field, body[field], is_admin=requester.is_admin
    )
    return json_response({})


async def delete_field(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    await hs.profiles.delete_field(
        requester.user_id, request.match_info["user_id"], request.match_info["field"], is_admin=requester.is_admin
    )
    return json_response({})


def setup(routes: Routes) -> None:
    routes.client("GET", "/profile/{user_id}", get_profile)
    routes.client("GET", "/profile/{user_id}/{field}", get_field)
    routes.client("PUT", "/profile/{user_id}/{field}", put_field)
    routes.client("DELETE", "/profile/{user_id}/{field}", delete_field)
