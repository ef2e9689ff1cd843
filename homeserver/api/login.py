"""/login, /refresh, /logout and /logout/all."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import client_ip, hs_of
from homeserver.api.http import Routes, access_token_from, json_response, read_json
from homeserver.errors import MatrixError


async def get_login(request: web.Request) -> web.Response:
    hs = hs_of(request)
    flows = [{"type": "m.login.password"}] if hs.config.password_config.enabled else []
    if hs.appservices.all:
        flows.append({"type": "m.login.application_service"})
    return json_response({"flows": flows})


async def post_login(request: web.Request) -> web.Response:
    hs = hs_of(request)
    body = await read_json(request)
    ip = client_ip(request)
    hs.ratelimiter.check("login_address", ip, hs.config.rc_login.address)
    login_type = body.get("type")
    if login_type == "m.login.application_service":
        token = access_token_from(request)
        service = hs.appservices.by_token(token) if token else None
        if service is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN" if token else "M_MISSING_TOKEN", "An application service logs in with its as_token")
        user_id = await hs.accounts.resolve_login_user(body)
        if not service.owns_user(user_id):
            raise MatrixError(403, "M_FORBIDDEN", "This user is not in the application service's namespace")
        if not await hs.storage.users.exists(user_id):
            raise MatrixError(403, "M_FORBIDDEN", "No such user")
        result = await hs.accounts.start_session(user_id, body)
        return json_response(result.to_json(hs.config.server_name))
    if login_type != "m.login.password" or not hs.config.password_config.enabled:
        if not isinstance(login_type, str):
            raise MatrixError(400, "M_MISSING_PARAM", "Missing parameter: type")
        raise MatrixError(400, "M_UNKNOWN", f"Unknown login type {login_type}")
    user_id = await hs.accounts.resolve_login_user(body)
    hs.ratelimiter.check("login_account", user_id, hs.config.rc_login.account)
    # Refuse early once an account has seen too many failures, before spending a password hash.
    hs.ratelimiter.check("login_failed", user_id, hs.config.rc_login.failed_attempts, update=False)
    try:
        await hs.accounts.check_password(user_id, body.get("password"))
    except MatrixError as e:
        if e.errcode == "M_FORBIDDEN":
            hs.ratelimiter.record("login_failed", user_id, hs.config.rc_login.failed_attempts)
        raise
    result = await hs.accounts.start_session(user_id, body)
    return json_response(result.to_json(hs.config.server_name))


async def post_refresh(request: web.Request) -> web.Response:
    hs = hs_of(request)
    body = await read_json(request)
    result = await hs.sessions.refresh(body.get("refresh_token"))  # type: ignore[arg-type]
    out: dict[str, object] = {"access_token": result.access_token, "refresh_token": result.refresh_token}
    if result.expires_in_ms is not None:
        out["expires_in_ms"] = result.expires_in_ms
    return json_response(out)


async def post_logout(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.sessions.logout(await hs.requester(request))
    return json_response({})


async def post_logout_all(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    await hs.sessions.logout_all(requester.user_id)
    return json_response({})


def setup(routes: Routes) -> None:
    routes.client("GET", "/login", get_login)
    routes.client("POST", "/login", post_login)
    routes.client("POST", "/refresh", post_refresh, versions=("v3", "v1"))
    routes.client("POST", "/logout", post_logout)
    routes.client("POST", "/logout/all", post_logout_all)
