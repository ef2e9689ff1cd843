"""Federation HTTP handlers: the key server and notary, version, and the queries other servers make
about our users (profiles, aliases, devices and E2EE keys). Thin: authenticate, call, return."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from homeserver.api.admin import QASID_VERSION
from homeserver.api.context import hs_of
from homeserver.api.http import json_response, query_int, read_json
from homeserver.api.media import disposition
from homeserver.errors import MatrixError

from federation.auth import authenticate
from federation.media import serve_multipart

if TYPE_CHECKING:
    from federation.runtime import FederationRuntime

F1 = "/_matrix/federation/v1"


def fed_of(request: web.Request) -> "FederationRuntime":
    fed = hs_of(request).federation
    if fed is None:
        raise MatrixError(404, "M_UNRECOGNIZED", "Federation is disabled on this server")
    return fed


async def _origin(request: web.Request, body: Any = None) -> str:
    fed = fed_of(request)
    origin = await authenticate(request, body, server_name=fed.server_name, keyring=fed.keyring, policy=fed.policy)
    fed.sender.wake(origin)  # a server that talks to us is up: what waits for it need not wait out its back-off
    return origin


# --- keys --------------------------------------------------------------------------------------

async def get_server_keys(request: web.Request) -> web.Response:
    return json_response(fed_of(request).local_keys.response())


async def get_query_keys(request: web.Request) -> web.Response:
    fed = fed_of(request)
    server = request.match_info["server_name"]
    return json_response({"server_keys": await fed.notary_responses(server)})


async def post_query_keys(request: web.Request) -> web.Response:
    fed = fed_of(request)
    body = await read_json(request)
    wanted = body.get("server_keys")
    if not isinstance(wanted, dict):
        raise MatrixError(400, "M_BAD_JSON", "server_keys must be an object")
    out: list[dict[str, Any]] = []
    for server in wanted:
        out += await fed.notary_responses(server)
    return json_response({"server_keys": out})


# --- version and queries --------------------------------------------------------------------

async def get_version(request: web.Request) -> web.Response:
    return json_response({"server": {"name": "Qasid", "version": QASID_VERSION}})


async def get_query_profile(request: web.Request) -> web.Response:
    await _origin(request)
    hs = hs_of(request)
    user_id = request.query.get("user_id")
    if not user_id:
        raise MatrixError(400, "M_MISSING_PARAM", "user_id is required")
    if not hs.profiles.is_local(user_id):
        raise MatrixError(403, "M_FORBIDDEN", "That user is not on this server")
    field = request.query.get("field")
    profile = await hs.profiles.get_profile(user_id)
    if field:
        return json_response({field: profile[field]} if profile.get(field) is not None else {})
    return json_response({k: v for k, v in profile.items() if v is not None})


async def get_query_directory(request: web.Request) -> web.Response:
    await _origin(request)
    hs = hs_of(request)
    alias = request.query.get("room_alias")
    if not alias:
        raise MatrixError(400, "M_MISSING_PARAM", "room_alias is required")
    found = await hs.storage.aliases.get(alias)
    if found is None:
        raise MatrixError(404, "M_NOT_FOUND", "Room alias not found")
    return json_response({"room_id": found[0], "servers": [hs.config.server_name]})


async def get_user_devices(request: web.Request) -> web.Response:
    await _origin(request)
    fed = fed_of(request)
    return json_response(await fed.user_devices(request.match_info["user_id"]))


async def post_user_keys_query(request: web.Request) -> web.Response:
    body = await read_json(request)
    await _origin(request, body)
    fed = fed_of(request)
    return json_response(await fed.keys_query(body))


async def post_user_keys_claim(request: web.Request) -> web.Response:
    body = await read_json(request)
    await _origin(request, body)
    fed = fed_of(request)
    return json_response(await fed.keys_claim(body))


async def get_public_rooms(request: web.Request) -> web.Response:
    await _origin(request)
    hs = hs_of(request)
    limit = request.query.get("limit")
    if limit is not None and not limit.isdigit():
        raise MatrixError(400, "M_INVALID_PARAM", "limit must be a non-negative integer")
    return json_response(await hs.directory.public_rooms(
        limit=int(limit) if limit is not None else None, since=request.query.get("since"), search=None))


async def post_public_rooms(request: web.Request) -> web.Response:
    body = await read_json(request, allow_empty=True)
    await _origin(request, body if body else None)
    hs = hs_of(request)
    limit, since, flt = body.get("limit"), body.get("since"), body.get("filter") or {}
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise MatrixError(400, "M_BAD_JSON", "limit must be an integer")
    if since is not None and not isinstance(since, str):
        raise MatrixError(400, "M_BAD_JSON", "since must be a string")
    term = flt.get("generic_search_term") if isinstance(flt, dict) else None
    if term is not None and not isinstance(term, str):
        raise MatrixError(400, "M_BAD_JSON", "generic_search_term must be a string")
    return json_response(await hs.directory.public_rooms(limit=limit, since=since, search=term))


async def get_openid_userinfo(request: web.Request) -> web.Response:
    """Authenticated by the OpenID token itself (the caller is a third party, not a server)."""
    return json_response(await hs_of(request).openid.userinfo(request.query.get("access_token")))


async def get_make_join(request: web.Request) -> web.Response:
    origin = await _origin(request)
    fed = fed_of(request)
    m = request.match_info
    versions = request.query.getall("ver", []) or ["1"]
    return json_response(await fed.rooms.make_join(origin, m["room_id"], m["user_id"], versions))


async def put_send_join(request: web.Request) -> web.Response:
    body = await read_json(request)
    origin = await _origin(request, body)
    fed = fed_of(request)
    m = request.match_info
    omit = request.query.get("omit_members", "false").lower() == "true"
    return json_response(await fed.rooms.send_join(origin, m["room_id"], m["event_id"], body, omit_members=omit))


async def put_send(request: web.Request) -> web.Response:
    body = await read_json(request)
    origin = await _origin(request, body)
    fed = fed_of(request)
    return json_response(await fed.receive_transaction(origin, request.match_info["txn_id"], body))


async def get_event(request: web.Request) -> web.Response:
    origin = await _origin(request)
    return json_response(await fed_of(request).rooms.get_event(origin, request.match_info["event_id"]))


async def get_state_ids(request: web.Request) -> web.Response:
    origin = await _origin(request)
    return json_response(await fed_of(request).rooms.state_ids(
        origin, request.match_info["room_id"], request.query.get("event_id"), full=False))


async def get_state(request: web.Request) -> web.Response:
    origin = await _origin(request)
    return json_response(await fed_of(request).rooms.state_ids(
        origin, request.match_info["room_id"], request.query.get("event_id"), full=True))


async def get_event_auth(request: web.Request) -> web.Response:
    origin = await _origin(request)
    m = request.match_info
    return json_response(await fed_of(request).rooms.event_auth(origin, m["room_id"], m["event_id"]))


async def get_backfill(request: web.Request) -> web.Response:
    origin = await _origin(request)
    limit = request.query.get("limit", "10")
    if not limit.isdigit():
        raise MatrixError(400, "M_INVALID_PARAM", "limit must be a non-negative integer")
    start = request.query.getall("v", [])
    if not start:
        raise MatrixError(400, "M_MISSING_PARAM", "v is required")
    return json_response(await fed_of(request).rooms.backfill(origin, request.match_info["room_id"], start, int(limit)))


async def post_get_missing_events(request: web.Request) -> web.Response:
    body = await read_json(request)
    origin = await _origin(request, body)
    return json_response(await fed_of(request).rooms.get_missing_events(origin, request.match_info["room_id"], body))


async def put_invite(request: web.Request) -> web.Response:
    body = await read_json(request)
    origin = await _origin(request, body)
    m = request.match_info
    return json_response(await fed_of(request).rooms.receive_invite(origin, m["room_id"], m["event_id"], body))


async def get_make_leave(request: web.Request) -> web.Response:
    origin = await _origin(request)
    m = request.match_info
    return json_response(await fed_of(request).rooms.make_leave(origin, m["room_id"], m["user_id"]))


async def put_send_leave(request: web.Request) -> web.Response:
    body = await read_json(request)
    origin = await _origin(request, body)
    m = request.match_info
    return json_response(await fed_of(request).rooms.send_leave(origin, m["room_id"], m["event_id"], body))


async def get_make_knock(request: web.Request) -> web.Response:
    origin = await _origin(request)
    m = request.match_info
    versions = request.query.getall("ver", []) or ["1"]
    return json_response(await fed_of(request).rooms.make_knock(origin, m["room_id"], m["user_id"], versions))


async def put_send_knock(request: web.Request) -> web.Response:
    body = await read_json(request)
    origin = await _origin(request, body)
    m = request.match_info
    return json_response(await fed_of(request).rooms.send_knock(origin, m["room_id"], m["event_id"], body))


async def get_media(request: web.Request) -> web.StreamResponse:
    """Our users' media for another server (never other servers' media: each fetches from the origin)."""
    await _origin(request)
    hs = hs_of(request)
    served = await hs.media.get(hs.config.server_name, request.match_info["media_id"],
                                timeout_ms=query_int(request, "timeout_ms", None), allow_remote=False)
    return await serve_multipart(request, served.file, served.content_type, disposition(served.content_type, served.upload_name))


async def get_media_thumbnail(request: web.Request) -> web.StreamResponse:
    await _origin(request)
    hs = hs_of(request)
    width, height = query_int(request, "width", None), query_int(request, "height", None)
    if width is None or height is None:
        raise MatrixError(400, "M_MISSING_PARAM", "width and height are required")
    served = await hs.media.thumbnail(hs.config.server_name, request.match_info["media_id"], width, height,
                                      request.query.get("method", "scale"), query_int(request, "timeout_ms", None))
    return await serve_multipart(request, served.file, served.content_type, disposition(served.content_type, None))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_route("GET", "/_matrix/federation/v1/media/download/{media_id}", get_media)
    r.add_route("GET", "/_matrix/federation/v1/media/thumbnail/{media_id}", get_media_thumbnail)
    r.add_route("GET", "/_matrix/key/v2/server", get_server_keys)
    r.add_route("GET", "/_matrix/key/v2/server/{key_id}", get_server_keys)
    r.add_route("GET", "/_matrix/key/v2/query/{server_name}", get_query_keys)
    r.add_route("GET", "/_matrix/key/v2/query/{server_name}/{key_id}", get_query_keys)
    r.add_route("POST", "/_matrix/key/v2/query", post_query_keys)
    r.add_route("GET", f"{F1}/version", get_version)
    r.add_route("GET", f"{F1}/query/profile", get_query_profile)
    r.add_route("GET", f"{F1}/query/directory", get_query_directory)
    r.add_route("GET", f"{F1}/user/devices/{{user_id}}", get_user_devices)
    r.add_route("POST", f"{F1}/user/keys/query", post_user_keys_query)
    r.add_route("POST", f"{F1}/user/keys/claim", post_user_keys_claim)
    r.add_route("GET", f"{F1}/publicRooms", get_public_rooms)
    r.add_route("POST", f"{F1}/publicRooms", post_public_rooms)
    r.add_route("GET", f"{F1}/openid/userinfo", get_openid_userinfo)
    r.add_route("GET", f"{F1}/make_join/{{room_id}}/{{user_id}}", get_make_join)
    r.add_route("PUT", "/_matrix/federation/v2/send_join/{room_id}/{event_id}", put_send_join)
    r.add_route("PUT", f"{F1}/send/{{txn_id}}", put_send)
    r.add_route("GET", f"{F1}/make_knock/{{room_id}}/{{user_id}}", get_make_knock)
    r.add_route("PUT", f"{F1}/send_knock/{{room_id}}/{{event_id}}", put_send_knock)
    r.add_route("PUT", "/_matrix/federation/v2/invite/{room_id}/{event_id}", put_invite)
    r.add_route("GET", f"{F1}/make_leave/{{room_id}}/{{user_id}}", get_make_leave)
    r.add_route("PUT", "/_matrix/federation/v2/send_leave/{room_id}/{event_id}", put_send_leave)
    r.add_route("GET", f"{F1}/event/{{event_id}}", get_event)
    r.add_route("GET", f"{F1}/state_ids/{{room_id}}", get_state_ids)
    r.add_route("GET", f"{F1}/state/{{room_id}}", get_state)
    r.add_route("GET", f"{F1}/event_auth/{{room_id}}/{{event_id}}", get_event_auth)
    r.add_route("GET", f"{F1}/backfill/{{room_id}}", get_backfill)
    r.add_route("POST", f"{F1}/get_missing_events/{{room_id}}", post_get_missing_events)
