"""/relations and /threads (client API v1)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import Routes, json_response, query_bool, query_int
from homeserver.errors import MatrixError
from homeserver.services.tokens_stream import pagination_token, parse_pagination_token

MAX_LIMIT = 100


async def get_relations(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    m = request.match_info
    room_id, parent = m["room_id"], m["event_id"]
    # Seeing the relations needs the right to see the parent.
    await hs.rooms.get_event(requester.user_id, requester.device_id, room_id, parent)
    direction = request.query.get("dir", "b")
    if direction not in ("b", "f"):
        raise MatrixError(400, "M_INVALID_PARAM", "dir must be 'b' or 'f'")
    query_bool(request, "recurse", False)
    limit = min(query_int(request, "limit", 50, minimum=0) or 0, MAX_LIMIT)
    start = parse_pagination_token(request.query.get("from"), "from")
    end = parse_pagination_token(request.query.get("to"), "to")
    newest_first = direction == "b"
    rels = await hs.storage.relations.children(
        parent, rel_type=m.get("rel_type"), event_type=m.get("event_type"),
        before=start if newest_first else end, after=end if newest_first else start,
        limit=limit + 1, newest_first=newest_first,
    )
    more = len(rels) > limit
    rels = rels[:limit]
    events = await hs.storage.events.get_events([r.event_id for r in rels])
    ordered = [events[r.event_id] for r in rels if r.event_id in events]
    visible = await hs.rooms.visibility.filter(requester.user_id, ordered, currently_joined=True)
    out: dict[str, Any] = {"chunk": await hs.rooms.formatter.format(visible, user_id=requester.user_id, device_id=requester.device_id)}
    if more and rels:
        out["next_batch"] = pagination_token(rels[-1].stream_ordering)
    return json_response(out)


async def get_threads(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    room_id = request.match_info["room_id"]
    await hs.rooms.state(requester.user_id, room_id)  # membership check
    include = request.query.get("include", "all")
    if include not in ("all", "participated"):
        raise MatrixError(400, "M_INVALID_PARAM", "include must be 'all' or 'participated'")
    limit = min(query_int(request, "limit", 20, minimum=1) or 20, MAX_LIMIT)
    before = parse_pagination_token(request.query.get("from"), "from")
    roots = await hs.storage.relations.threads(
        room_id, before=before, limit=limit + 1, participant=requester.user_id if include == "participated" else None,
    )
    more = len(roots) > limit
    roots = roots[:limit]
    events = await hs.storage.events.get_events([r for r, _ in roots])
    ordered = [events[r] for r, _ in roots if r in events]
    visible = await hs.rooms.visibility.filter(requester.user_id, ordered, currently_joined=True)
    out: dict[str, Any] = {"chunk": await hs.rooms.formatter.format(visible, user_id=requester.user_id, device_id=requester.device_id)}
    if more and roots:
        out["next_batch"] = pagination_token(roots[-1][1])
    return json_response(out)


def setup(routes: Routes) -> None:
    c = routes.client
    v1 = ("v1",)
    c("GET", "/rooms/{room_id}/relations/{event_id}", get_relations, versions=v1)
    c("GET", "/rooms/{room_id}/relations/{event_id}/{rel_type}", get_relations, versions=v1)
    c("GET", "/rooms/{room_id}/relations/{event_id}/{rel_type}/{event_type}", get_relations, versions=v1)
    c("GET", "/rooms/{room_id}/threads", get_threads, versions=v1)
