"""POST /user_directory/search."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import Routes, json_response, read_json
from homeserver.errors import MatrixError

MAX_LIMIT = 100


async def search(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request)
    term = body.get("search_term")
    if not isinstance(term, str):
        raise MatrixError(400, "M_MISSING_PARAM" if term is None else "M_BAD_JSON", "search_term must be a string")
    limit = body.get("limit", 10)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise MatrixError(400, "M_BAD_JSON", "limit must be a non-negative integer")
    cfg = hs.config.user_directory
    if not cfg.enabled or not term.strip():
        return json_response({"results": [], "limited": False})
    candidates = None
    if not cfg.search_all_users:
        # Only people you share a room with, or who sit in public rooms (Synapse's default).
        candidates = sorted(await hs.storage.events.users_sharing_rooms(requester.user_id)
                            | await hs.storage.events.users_in_public_rooms())
    limit = min(limit, MAX_LIMIT)
    rows = await hs.storage.users.search_directory(term.strip(), candidates, limit + 1)
    results = []
    for u, d, a in rows[:limit]:
        entry = {"user_id": u}
        if d is not None:
            entry["display_name"] = d
        if a:
            entry["avatar_url"] = a
        results.append(entry)
    return json_response({"results": results, "limited": len(rows) > limit})


def setup(routes: Routes) -> None:
    routes.client("POST", "/user_directory/search", search)
