"""/register, /register/available and registration-token validity."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import client_ip, hs_of
from homeserver.api.http import Routes, access_token_from, json_response, read_json
from homeserver.errors import MatrixError


async def post_register(request: web.Request) -> web.Response:
    hs = hs_of(request)
    body = await read_json(request)
    if body.get("type") == "m.login.application_service":
        token = access_token_from(request)
        if not token:
            raise MatrixError(401, "M_MISSING_TOKEN", "An application service registers users with its as_token")
        service = hs.appservices.by_token(token)
        if service is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown application service token")
        return json_response(await hs.registration.register_for_appservice(service, body))
    result = await hs.registration.register(
        kind=request.query.get("kind", "user"), body=body, method=request.method,
        uri=request.path, ip=client_ip(request),
    )
    return json_response(result)


async def get_available(request: web.Request) -> web.Response:
    hs = hs_of(request)
    username = request.query.get("username")
    if username is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing parameter: username")
    hs.ratelimiter.check("register_available", client_ip(request), hs.config.rc_registration, update=False)
    await hs.accounts.check_available(username.lower())
    return json_response({"available": True})


async def get_token_validity(request: web.Request) -> web.Response:
    hs = hs_of(request)
    token = request.query.get("token")
    if token is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing parameter: token")
    # Rate limited so tokens can't be brute-forced through this endpoint.
    hs.ratelimiter.check("token_validity", client_ip(request), hs.config.rc_registration)
    return json_response({"valid": await hs.registration_tokens.is_valid(token)})


def setup(routes: Routes) -> None:
    routes.client("POST", "/register", post_register)
    routes.client("GET", "/register/available", get_available)
    routes.client(
        "GET", "/register/m.login.registration_token/validity", get_token_validity, versions=("v1",)
    )
