"""Room endpoints: createRoom, membership, send, state, redact, members, messages, event, aliases."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import Routes, get_str, json_response, query_int, read_json
from homeserver.errors import MatrixError
from homeserver.services.delayed_events import DELAY_PARAM
from homeserver.services.filters import EventFilter
from homeserver.services.tokens_stream import parse_pagination_token, pagination_token
from homeserver.types import split_user_id


def _room_id(request: web.Request) -> str:
    room_id = request.match_info["room_id"]
    if not room_id.startswith("!"):
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid room ID")
    return room_id


def _target(body: dict[str, Any]) -> str:
    target = get_str(body, "user_id", required=True)
    assert target is not None
    if split_user_id(target) is None:
        raise MatrixError(400, "M_INVALID_PARAM", "user_id must be a user ID")
    return target


async def create_room(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request, allow_empty=True)
    room_id = await hs.room_creation.create_room(requester.user_id, body)
    return json_response({"room_id": room_id})


async def join(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request, allow_empty=True)
    target = request.match_info.get("room_id_or_alias") or request.match_info["room_id"]
    via = request.query.getall("via", []) + request.query.getall("server_name", [])
    room_id = await hs.membership.join(requester.user_id, unquote(target), reason=body.get("reason"), via=via)
    return json_response({"room_id": room_id})


async def knock(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request, allow_empty=True)
    via = request.query.getall("via", []) + request.query.getall("server_name", [])
    room_id = await hs.membership.knock(requester.user_id, unquote(request.match_info["room_id_or_alias"]),
                                        reason=body.get("reason"), via=via)
    return json_response({"room_id": room_id})


def _targeted(action: str) -> Any:
    """invite/kick/ban/unban: the same request shape, a different membership service call."""

    async def handler(request: web.Request) -> web.Response:
        hs = hs_of(request)
        requester = await hs.requester(request)
        body = await read_json(request)
        await getattr(hs.membership, action)(requester.user_id, _room_id(request), _target(body), reason=body.get("reason"))
        return json_response({})

    return handler


async def leave(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request, allow_empty=True)
    await hs.membership.leave(requester.user_id, _room_id(request), reason=body.get("reason"))
    return json_response({})


async def forget(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    await hs.membership.forget(requester.user_id, _room_id(request))
    return json_response({})


async def send(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request)
    service = hs.appservices.by_id(requester.app_service) if requester.app_service else None
    if service is None or service.rate_limited:  # a registration may exempt its bridge (rate_limited: false)
        hs.ratelimiter.check("message", requester.user_id, hs.config.rc_message)
    delay = _delay(request)
    if delay is not None:
        return json_response({"delay_id": await hs.delayed_events.add(
            requester.user_id, requester.device_id, _room_id(request), request.match_info["event_type"], body, None, delay)})
    event_id = await hs.rooms.send_event(
        requester.user_id, requester.device_id, _room_id(request), request.match_info["event_type"], body,
        request.match_info["txn_id"],
    )
    return json_response({"event_id": event_id})


async def put_state(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request)
    event_type = request.match_info["event_type"]
    state_key = request.match_info.get("state_key", "")
    if event_type == "m.room.member":
        raise MatrixError(400, "M_BAD_JSON", "Use the membership endpoints to change membership")
    delay = _delay(request)
    if delay is not None:
        hs.ratelimiter.check("message", requester.user_id, hs.config.rc_message)
        return json_response({"delay_id": await hs.delayed_events.add(
            requester.user_id, requester.device_id, _room_id(request), event_type, body, state_key, delay)})
    event_id = await hs.rooms.send_event(
        requester.user_id, requester.device_id, _room_id(request), event_type, body, None, state_key=state_key,
    )
    return json_response({"event_id": event_id})


def _delay(request: web.Request) -> int | None:
    """MSC4140's delay query parameter, in milliseconds, if the client asked to send the event later."""
    raw = request.query.get(DELAY_PARAM)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", f"{DELAY_PARAM}: must be an integer (milliseconds)") from None


async def get_state_event(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    content = await hs.rooms.state_event(
        requester.user_id, _room_id(request), request.match_info["event_type"],
        request.match_info.get("state_key", ""), request.query.get("format"),
    )
    return json_response(content)


async def get_state(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    return json_response(await hs.rooms.state(requester.user_id, _room_id(request)))


async def redact(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request, allow_empty=True)
    event_id = await hs.rooms.redact(
        requester.user_id, requester.device_id, _room_id(request), request.match_info["event_id"],
        request.match_info["txn_id"], body.get("reason"),
    )
    return json_response({"event_id": event_id})


async def members(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    for key in ("membership", "not_membership"):
        value = request.query.get(key)
        if value is not None and value not in ("join", "invite", "knock", "leave", "ban"):
            raise MatrixError(400, "M_INVALID_PARAM", f"{key} must be a membership")
    chunk = await hs.rooms.members(
        requester.user_id, _room_id(request), membership=request.query.get("membership"),
        not_membership=request.query.get("not_membership"),
    )
    return json_response({"chunk": chunk})


async def joined_members(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    return json_response({"joined": await hs.rooms.joined_members(requester.user_id, _room_id(request))})


async def joined_rooms(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    return json_response({"joined_rooms": await hs.rooms.joined_rooms(requester.user_id)})


async def get_event(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    return json_response(await hs.rooms.get_event(
        requester.user_id, requester.device_id, _room_id(request), request.match_info["event_id"]
    ))


async def messages(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    direction = request.query.get("dir", "b")
    if direction not in ("b", "f"):
        raise MatrixError(400, "M_INVALID_PARAM", "dir must be 'b' or 'f'")
    from_pos = parse_pagination_token(request.query.get("from"), "from")
    to_pos = parse_pagination_token(request.query.get("to"), "to")
    limit = query_int(request, "limit", 10) or 0
    event_filter = EventFilter()
    if request.query.get("filter"):
        try:
            event_filter = EventFilter.parse(orjson.loads(request.query["filter"]), "filter")
        except orjson.JSONDecodeError:
            raise MatrixError(400, "M_NOT_JSON", "filter is not valid JSON") from None
    if from_pos is None and direction == "b":
        from_pos = await hs.streams.current_events_position()
    chunk, next_pos, _ = await hs.rooms.messages(
        requester.user_id, requester.device_id, _room_id(request), from_pos=from_pos, to_pos=to_pos,
        backwards=direction == "b", limit=limit, event_filter=event_filter,
    )
    out: dict[str, Any] = {"chunk": chunk, "start": pagination_token(from_pos or 0)}
    if next_pos is not None:
        out["end"] = pagination_token(next_pos)
    return json_response(out)


async def get_alias(request: web.Request) -> web.Response:
    hs = hs_of(request)
    alias = request.match_info["alias"]
    if ":" not in alias or not alias.startswith("#"):
        raise MatrixError(400, "M_INVALID_PARAM", "Not a room alias")
    if alias.split(":", 1)[1] != hs.config.server_name and hs.federation is not None:
        return json_response(await hs.federation.remote_alias(alias))
    found = await hs.storage.aliases.get(alias)
    if found is None and await hs.appservices.query_alias(alias):  # an appservice may create it on demand
        found = await hs.storage.aliases.get(alias)
    if found is None:
        raise MatrixError(404, "M_NOT_FOUND", f"Room alias {alias} not found")
    return json_response({"room_id": found[0], "servers": [hs.config.server_name]})


async def put_alias(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request)
    alias = request.match_info["alias"]
    room_id = get_str(body, "room_id", required=True)
    if not alias.startswith("#") or ":" not in alias:
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid room alias")
    if not alias.endswith(":" + hs.config.server_name):
        raise MatrixError(400, "M_INVALID_PARAM", "Room alias must be on this server")
    if await hs.storage.events.get_room(room_id or "") is None:
        raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
    owner = hs.appservices.exclusive_owner_of_alias(alias)
    if owner is not None and requester.app_service != owner.id:
        raise MatrixError(400, "M_EXCLUSIVE", "This alias is reserved for an application service")
    if not await hs.storage.aliases.create(alias, room_id or "", requester.user_id, hs.clock.time_ms()):
        raise MatrixError(409, "M_UNKNOWN", "Room alias already exists")
    return json_response({})


async def delete_alias(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    alias = request.match_info["alias"]
    found = await hs.storage.aliases.get(alias)
    if found is None:
        raise MatrixError(404, "M_NOT_FOUND", "Room alias not found")
    if found[1] != requester.user_id and not requester.is_admin:
        raise MatrixError(403, "M_FORBIDDEN", "You may only delete aliases you created")
    await hs.storage.aliases.delete(alias)
    return json_response({})


async def room_aliases(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    await hs.rooms.state(requester.user_id, _room_id(request))  # membership check
    return json_response({"aliases": await hs.storage.aliases.for_room(_room_id(request))})


async def get_context(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    limit = min(query_int(request, "limit", 10) or 0, 100)
    event_filter, lazy = None, False
    if request.query.get("filter"):
        try:
            raw = orjson.loads(request.query["filter"])
        except orjson.JSONDecodeError:
            raise MatrixError(400, "M_NOT_JSON", "filter is not valid JSON") from None
        event_filter = EventFilter.parse(raw, "filter")
        lazy = bool(raw.get("lazy_load_members")) if isinstance(raw, dict) else False
    return json_response(await hs.rooms.context(
        requester.user_id, requester.device_id, _room_id(request), request.match_info["event_id"], limit, event_filter, lazy,
    ))


async def timestamp_to_event(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    ts = query_int(request, "ts")
    if ts is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing parameter: ts")
    direction = request.query.get("dir")
    if direction not in ("f", "b"):
        raise MatrixError(400, "M_INVALID_PARAM", "dir must be 'f' or 'b'")
    return json_response(await hs.rooms.event_at_timestamp(requester.user_id, _room_id(request), ts, direction == "f"))


async def report(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request, allow_empty=True)
    await hs.rooms.report(requester.user_id, _room_id(request), request.match_info.get("event_id"), body, hs.clock.time_ms())
    return json_response({})


async def upgrade(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request)
    if "new_version" not in body:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing parameter: new_version")
    new_room = await hs.room_upgrade.upgrade(requester.user_id, _room_id(request), body["new_version"])
    return json_response({"replacement_room": new_room})


def setup(routes: Routes) -> None:
    c = routes.client
    c("POST", "/createRoom", create_room)
    c("POST", "/join/{room_id_or_alias}", join)
    c("POST", "/rooms/{room_id}/join", join)
    c("POST", "/knock/{room_id_or_alias}", knock)
    c("POST", "/rooms/{room_id}/invite", _targeted("invite"))
    c("POST", "/rooms/{room_id}/leave", leave)
    c("POST", "/rooms/{room_id}/kick", _targeted("kick"))
    c("POST", "/rooms/{room_id}/ban", _targeted("ban"))
    c("POST", "/rooms/{room_id}/unban", _targeted("unban"))
    c("POST", "/rooms/{room_id}/forget", forget)
    c("PUT", "/rooms/{room_id}/send/{event_type}/{txn_id}", send)
    c("PUT", "/rooms/{room_id}/state/{event_type}", put_state)
    c("PUT", "/rooms/{room_id}/state/{event_type}/{state_key:.*}", put_state)
    c("GET", "/rooms/{room_id}/state/{event_type}", get_state_event)
    c("GET", "/rooms/{room_id}/state/{event_type}/{state_key:.*}", get_state_event)
    c("GET", "/rooms/{room_id}/state", get_state)
    c("PUT", "/rooms/{room_id}/redact/{event_id}/{txn_id}", redact)
    c("GET", "/rooms/{room_id}/members", members)
    c("GET", "/rooms/{room_id}/joined_members", joined_members)
    c("GET", "/joined_rooms", joined_rooms)
    c("GET", "/rooms/{room_id}/event/{event_id}", get_event)
    c("GET", "/rooms/{room_id}/messages", messages)
    c("GET", "/rooms/{room_id}/aliases", room_aliases)
    c("GET", "/rooms/{room_id}/context/{event_id}", get_context)
    c("POST", "/rooms/{room_id}/upgrade", upgrade)
    c("GET", "/rooms/{room_id}/timestamp_to_event", timestamp_to_event, versions=("v1",))
    c("POST", "/rooms/{room_id}/report/{event_id}", report)
    c("POST", "/rooms/{room_id}/report", report, versions=("v3",))
    c("GET", "/directory/room/{alias}", get_alias)
    c("PUT", "/directory/room/{alias}", put_alias)
    c("DELETE", "/directory/room/{alias}", delete_alias)
