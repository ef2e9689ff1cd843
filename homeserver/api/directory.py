"""Room directory: /directory/list/room/{roomId} and /publicRooms."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import Routes, json_response, query_int, read_json
from homeserver.errors import MatrixError


async def get_visibility(request: web.Request) -> web.Response:
    hs = hs_of(request)
    return json_response({"visibility": await hs.directory.visibility(request.match_info["room_id"])})


async def put_visibility(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request)
    await hs.directory.set_visibility(requester.user_id, request.match_info["room_id"], body.get("visibility"))
    return json_response({})


def _remote(request: web.Request, server: object) -> str | None:
    """The other server whose directory is asked for, or None for ours."""
    hs = hs_of(request)
    if server is None or server == hs.config.server_name:
        return None
    if hs.federation is None:
        raise MatrixError(400, "M_UNKNOWN", "Only this server's room directory can be listed")
    return str(server)


async def get_public_rooms(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.requester(request)
    remote = _remote(request, request.query.get("server"))
    if remote is not None:
        query = {k: v for k, v in (("limit", request.query.get("limit")), ("since", request.query.get("since"))) if v is not None}
        return json_response(await hs.federation.remote_public_rooms(remote, None, query))
    return json_response(await hs.directory.public_rooms(
        limit=query_int(request, "limit", None), since=request.query.get("since"), search=None,
    ))


async def post_public_rooms(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.requester(request)
    remote = _remote(request, request.query.get("server"))
    body = await read_json(request, allow_empty=True)
    limit = body.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise MatrixError(400, "M_BAD_JSON", "limit must be an integer")
    since = body.get("since")
    if since is not None and not isinstance(since, str):
        raise MatrixError(400, "M_BAD_JSON", "since must be a string")
    flt = body.get("filter") or {}
    if not isinstance(flt, dict):
        raise MatrixError(400, "M_BAD_JSON", "filter must be an object")
    term = flt.get("generic_search_term")
    if term is not None and not isinstance(term, str):
        raise MatrixError(400, "M_BAD_JSON", "generic_search_term must be a string")
    if remote is not None:
        forward = {k: v for k, v in (("limit", limit), ("since", since)) if v is not None}
        if term is not None:
            forward["filter"] = {"generic_search_term": term}
        return json_response(await hs.federation.remote_public_rooms(remote, forward, None))
    return json_response(await hs.directory.public_rooms(limit=limit, since=since, search=term))


async def get_hierarchy(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    suggested = request.query.get("suggested_only", "false")
    if suggested not in ("true", "false"):
        raise MatrixError(400, "M_INVALID_PARAM", "suggested_only must be true or false")
    return json_response(await hs.spaces.hierarchy(
        requester.user_id, request.match_info["room_id"], suggested_only=suggested == "true",
        limit=query_int(request, "limit", None, minimum=1), max_depth=query_int(request, "max_depth", None),
        start=request.query.get("from"),
    ))


def setup(routes: Routes) -> None:
    c = routes.client
    c("GET", "/directory/list/room/{room_id}", get_visibility)
    c("PUT", "/directory/list/room/{room_id}", put_visibility)
    c("GET", "/publicRooms", get_public_rooms)
    c("POST", "/publicRooms", post_public_rooms)
    c("GET", "/rooms/{room_id}/hierarchy", get_hierarchy, versions=("v1",))
