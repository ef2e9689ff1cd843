"""Synapse-compatible admin API (/_synapse/admin/...): admin-only, checked on every call."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import Routes, get_bool, json_response, query_bool, query_int, read_json
from homeserver.errors import MatrixError
from homeserver.storage.registration_tokens import RegistrationToken
from homeserver.storage.users import UserListQuery

A = "/_synapse/admin"
QASID_VERSION = "0.1.0"


async def get_register_nonce(request: web.Request) -> web.Response:
    return json_response({"nonce": hs_of(request).admin.new_nonce()})


async def post_register(request: web.Request) -> web.Response:
    hs = hs_of(request)
    body = await read_json(request)
    return json_response(await hs.admin.shared_secret_register(body))


async def server_version(request: web.Request) -> web.Response:
    await hs_of(request).admin_requester(request)
    return json_response({"server_version": f"Qasid {QASID_VERSION}"})


def _order(request: web.Request) -> tuple[str, str]:
    order_by = request.query.get("order_by", "name")
    allowed = {"name", "is_guest", "admin", "user_type", "deactivated", "shadow_banned", "displayname",
               "avatar_url", "creation_ts", "locked"}
    if order_by not in allowed:
        raise MatrixError(400, "M_INVALID_PARAM", "Unknown value for order_by")
    direction = request.query.get("dir", "f")
    if direction not in ("f", "b"):
        raise MatrixError(400, "M_INVALID_PARAM", "dir must be 'f' or 'b'")
    return order_by, direction


async def list_users(request: web.Request, *, v3: bool = False) -> web.Response:
    hs = hs_of(request)
    await hs.admin_requester(request)
    order_by, direction = _order(request)
    deactivated = query_bool(request, "deactivated", None)
    q = UserListQuery(
        offset=query_int(request, "from", 0) or 0, limit=query_int(request, "limit", 100, minimum=0) or 0,
        name=request.query.get("name"), user_id=request.query.get("user_id"),
        # v2: deactivated=true *includes* deactivated users; v3: true/false selects, absent means all.
        deactivated=bool(deactivated) if not v3 else deactivated is not False,
        only_deactivated=v3 and deactivated is True,
        admins=query_bool(request, "admins", None), order_by=order_by, direction=direction,
    )
    return json_response(await hs.admin.list_users(q))


async def list_users_v3(request: web.Request) -> web.Response:
    return await list_users(request, v3=True)


async def get_user(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.admin_requester(request)
    return json_response(await hs.admin.user_details(request.match_info["user_id"]))


async def put_user(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.admin_requester(request)
    body = await read_json(request)
    status, details = await hs.admin.upsert_user(requester.user_id, request.match_info["user_id"], body)
    return json_response(details, status=status)


async def deactivate(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.admin_requester(request)
    body = await read_json(request, allow_empty=True)
    erase = get_bool(body, "erase", False)
    user = await hs.admin.require_user(request.match_info["user_id"])
    await hs.accounts.deactivate(user.user_id, erase=erase)
    return json_response({"id_server_unbind_result": "success"})


async def reset_password(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.admin_requester(request)
    body = await read_json(request)
    user = await hs.admin.require_user(request.match_info["user_id"])
    if "new_password" not in body:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing parameter: new_password")
    await hs.accounts.change_password(
        user.user_id, body["new_password"], logout_devices=get_bool(body, "logout_devices", True), keep_device=None,
    )
    return json_response({})


async def user_devices(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.admin_requester(request)
    return json_response(await hs.admin.devices(request.match_info["user_id"]))


async def delete_user_device(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.admin_requester(request)
    user = await hs.admin.require_user(request.match_info["user_id"])
    await hs.devices.delete(user.user_id, [request.match_info["device_id"]])
    return json_response({})


async def whois(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.admin_requester(request)
    return json_response(await hs.admin.whois(request.match_info["user_id"]))


async def get_admin_flag(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.admin_requester(request)
    user = await hs.admin.require_user(request.match_info["user_id"])
    return json_response({"admin": user.admin})


async def put_admin_flag(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.admin_requester(request)
    body = await read_json(request)
    if not isinstance(body.get("admin"), bool):
        raise MatrixError(400, "M_MISSING_PARAM", "Missing boolean parameter: admin")
    user = await hs.admin.require_user(request.match_info["user_id"])
    if user.user_id == requester.user_id:
        raise MatrixError(400, "M_UNKNOWN", "Only other users can be given admin status")
    async with hs.storage.db.transaction() as conn:
        await hs.storage.users.set_flags(conn, user.user_id, admin=body["admin"])
    return json_response({})


def _token_json(t: RegistrationToken) -> dict[str, Any]:
    return {"token": t.token, "uses_allowed": t.uses_allowed, "pending": t.pending, "completed": t.completed,
            "expiry_time": t.expiry_time}


async def list_tokens(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.admin_requester(request)
    valid = query_bool(request, "valid", None)
    now = hs.clock.time_ms()
    tokens = [t for t in await hs.storage.registration_tokens.list() if valid is None or t.is_valid(now) == valid]
    return json_response({"registration_tokens": [_token_json(t) for t in tokens]})


async def get_token(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.admin_requester(request)
    t = await hs.storage.registration_tokens.get(request.match_info["token"])
    if t is None:
        raise MatrixError(404, "M_NOT_FOUND", f"No such registration token: {request.match_info['token']}")
    return json_response(_token_json(t))


async def new_token(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.admin_requester(request)
    body = await read_json(request, allow_empty=True)
    t = await hs.registration_tokens.create(
        body.get("token"), uses_allowed=body.get("uses_allowed"), expiry_time=body.get("expiry_time"),
        length=body.get("length", 16),
    )
    return json_response(_token_json(t))


async def update_token(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.admin_requester(request)
    body = await read_json(request)
    changes: dict[str, int | None] = {}
    if "uses_allowed" in body:
        v = body["uses_allowed"]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise MatrixError(400, "M_INVALID_PARAM", "uses_allowed must be a non-negative integer or null")
        changes["uses_allowed"] = v
    if "expiry_time" in body:
        v = body["expiry_time"]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < hs.clock.time_ms()):
            raise MatrixError(400, "M_INVALID_PARAM", "expiry_time must not be in the past")
        changes["expiry_time"] = v
    t = await hs.storage.registration_tokens.update(request.match_info["token"], changes)
    if t is None:
        raise MatrixError(404, "M_NOT_FOUND", f"No such registration token: {request.match_info['token']}")
    return json_response(_token_json(t))


async def delete_token(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.admin_requester(request)
    if not await hs.storage.registration_tokens.delete(request.match_info["token"]):
        raise MatrixError(404, "M_NOT_FOUND", f"No such registration token: {request.match_info['token']}")
    return json_response({})


async def event_reports(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.admin_requester(request)
    offset = query_int(request, "from", 0) or 0
    limit = query_int(request, "limit", 100) or 0
    reports, total = await hs.storage.events.list_reports(offset, limit)
    out: dict[str, Any] = {"event_reports": [{**r, "name": None, "sender": None} for r in reports], "total": total}
    if offset + len(reports) < total:
        out["next_token"] = offset + len(reports)
    return json_response(out)


def setup(routes: Routes) -> None:
    add = routes.add
    add("GET", f"{A}/v1/register", get_register_nonce)
    add("POST", f"{A}/v1/register", post_register)
    add("GET", f"{A}/v1/server_version", server_version)
    add("GET", f"{A}/v2/users", list_users)
    add("GET", f"{A}/v3/users", list_users_v3)
    add("GET", f"{A}/v2/users/{{user_id}}", get_user)
    add("PUT", f"{A}/v2/users/{{user_id}}", put_user)
    add("GET", f"{A}/v2/users/{{user_id}}/devices", user_devices)
    add("DELETE", f"{A}/v2/users/{{user_id}}/devices/{{device_id}}", delete_user_device)
    add("POST", f"{A}/v1/deactivate/{{user_id}}", deactivate)
    add("POST", f"{A}/v1/reset_password/{{user_id}}", reset_password)
    add("GET", f"{A}/v1/whois/{{user_id}}", whois)
    add("GET", f"{A}/v1/users/{{user_id}}/admin", get_admin_flag)
    add("PUT", f"{A}/v1/users/{{user_id}}/admin", put_admin_flag)
    add("GET", f"{A}/v1/event_reports", event_reports)
    add("GET", f"{A}/v1/registration_tokens", list_tokens)
    add("POST", f"{A}/v1/registration_tokens/new", new_token)
    add("GET", f"{A}/v1/registration_tokens/{{token}}", get_token)
    add("PUT", f"{A}/v1/registration_tokens/{{token}}", update_token)
    add("DELETE", f"{A}/v1/registration_tokens/{{token}}", delete_token)
