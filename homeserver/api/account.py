"""/account/whoami, /account/password and /account/deactivate."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import Routes, get_bool, json_response, read_json
from homeserver.errors import missing_param
from homeserver.services.passwords import check_password_policy


async def get_whoami(request: web.Request) -> web.Response:
    requester = await hs_of(request).requester(request)
    return json_response({"user_id": requester.user_id, "device_id": requester.device_id, "is_guest": False})


async def post_password(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request)
    logout_devices = get_bool(body, "logout_devices", True)
    # Check the new password before asking the user to re-authenticate for it.
    if "new_password" in body:
        check_password_policy(body["new_password"], hs.config.password_config.policy)
    result = await hs.reauthenticate(request, requester, body)
    new_password = result.clientdict.get("new_password", body.get("new_password"))
    if new_password is None:
        raise missing_param("new_password")
    await hs.accounts.change_password(
        requester.user_id, new_password, logout_devices=logout_devices, keep_device=requester.device_id
    )
    await hs.uia.finish(result.session)
    return json_response({})


async def post_deactivate(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request, allow_empty=True)
    erase = get_bool(body, "erase", False)
    result = await hs.reauthenticate(request, requester, body)
    await hs.accounts.deactivate(requester.user_id, erase=erase)
    await hs.uia.finish(result.session)
    return json_response({"id_server_unbind_result": "no-support"})


async def get_3pids(request: web.Request) -> web.Response:
    """Qasid keeps no third-party identifiers (accounts come from registration tokens): always empty."""
    await hs_of(request).requester(request)
    return json_response({"threepids": []})


async def get_protocols(request: web.Request) -> web.Response:
    """No bridges expose third-party protocols yet (application services are step 8)."""
    await hs_of(request).requester(request)
    return json_response({})


async def post_openid_request_token(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    await read_json(request, allow_empty=True)
    return json_response(await hs.openid.request_token(requester.user_id, request.match_info["user_id"]))


def setup(routes: Routes) -> None:
    routes.client("POST", "/user/{user_id}/openid/request_token", post_openid_request_token)
    routes.client("GET", "/account/whoami", get_whoami)
    routes.client("POST", "/account/password", post_password)
    routes.client("POST", "/account/deactivate", post_deactivate)
    routes.client("GET", "/account/3pid", get_3pids)
    routes.client("GET", "/thirdparty/protocols", get_protocols)
