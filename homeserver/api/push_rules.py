"""/pushrules: read, add, remove, enable and change actions of push rules."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import Routes, json_response, query_int, read_json
from homeserver.errors import MatrixError


def _scope(request: web.Request) -> None:
    if request.match_info.get("scope", "global") != "global":
        raise MatrixError(400, "M_INVALID_PARAM", "Only the global scope is supported")


async def get_all(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    return json_response({"global": await hs.push_rules.ruleset(requester.user_id)})


async def get_scope(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    _scope(request)
    return json_response(await hs.push_rules.ruleset(requester.user_id))


async def get_kind(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    _scope(request)
    kind = request.match_info["kind"]
    rules = await hs.push_rules.ruleset(requester.user_id)
    if kind not in rules:
        raise MatrixError(400, "M_INVALID_PARAM", f"Unknown push rule kind {kind}")
    return json_response(rules[kind])


async def get_rule(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    _scope(request)
    m = request.match_info
    return json_response(await hs.push_rules.find(requester.user_id, m["kind"], m["rule_id"]))


async def put_rule(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    _scope(request)
    body = await read_json(request)
    m = request.match_info
    await hs.push_rules.put(requester.user_id, m["kind"], m["rule_id"], body,
                            request.query.get("before"), request.query.get("after"))
    return json_response({})


async def delete_rule(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    _scope(request)
    m = request.match_info
    await hs.push_rules.delete(requester.user_id, m["kind"], m["rule_id"])
    return json_response({})


async def get_attr(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    _scope(request)
    m = request.match_info
    rule = await hs.push_rules.find(requester.user_id, m["kind"], m["rule_id"])
    return json_response({m["attr"]: rule[m["attr"]]})


async def put_attr(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    _scope(request)
    body = await read_json(request)
    m = request.match_info
    attr = m["attr"]
    if attr not in body:
        raise MatrixError(400, "M_MISSING_PARAM", f"Missing parameter: {attr}")
    if attr == "enabled":
        await hs.push_rules.set_enabled(requester.user_id, m["kind"], m["rule_id"], body[attr])
    else:
        await hs.push_rules.set_actions(requester.user_id, m["kind"], m["rule_id"], body[attr])
    return json_response({})


async def get_notifications(request: web.Request) -> web.Response:
    """GET /notifications: what the user's push rules flagged, newest first."""
    hs = hs_of(request)
    requester = await hs.requester(request)
    before = None
    if request.query.get("from"):
        try:
            before = int(request.query["from"])
        except ValueError:
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid from token") from None
    limit = min(query_int(request, "limit", 20, minimum=1) or 20, 100)
    only = request.query.get("only")
    items, rows = await hs.push.notifications(requester.user_id, before=before, limit=limit, only_highlight=only == "highlight")
    events = await hs.storage.events.get_events([i["event_id"] for i in items])
    formatted = {e["event_id"]: e for e in await hs.rooms.formatter.format(list(events.values()))}
    notifications = [
        {"actions": i["actions"], "event": formatted[i["event_id"]], "read": i["read"], "room_id": i["room_id"], "ts": i["ts"]}
        for i in items if i["event_id"] in formatted
    ]
    out: dict[str, object] = {"notifications": notifications}
    if len(rows) == limit:
        out["next_token"] = str(rows[-1].stream_ordering)
    return json_response(out)


def setup(routes: Routes) -> None:
    c = routes.client
    c("GET", "/notifications", get_notifications)
    c("GET", "/pushrules/", get_all)
    c("GET", "/pushrules", get_all)
    c("GET", "/pushrules/{scope}/", get_scope)
    c("GET", "/pushrules/{scope}/{kind}/", get_kind)
    c("GET", "/pushrules/{scope}/{kind}/{rule_id}", get_rule)
    c("PUT", "/pushrules/{scope}/{kind}/{rule_id}", put_rule)
    c("DELETE", "/pushrules/{scope}/{kind}/{rule_id}", delete_rule)
    c("GET", "/pushrules/{scope}/{kind}/{rule_id}/{attr:enabled|actions}", get_attr)
    c("PUT", "/pushrules/{scope}/{kind}/{rule_id}/{attr:enabled|actions}", put_attr)

