"""POST /_matrix/client/v1/appservice/{appserviceId}/ping: an appservice asks the server to call it
back, to prove both directions of its link work (tokens, URL, TLS)."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import Routes, json_response, read_json
from homeserver.errors import MatrixError


async def ping(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    as_id = request.match_info["appservice_id"]
    if requester.app_service != as_id:
        raise MatrixError(403, "M_FORBIDDEN", "Only the application service itself may ping it")
    body = await read_json(request, allow_empty=True)
    txn = body.get("transaction_id")
    if txn is not None and not isinstance(txn, str):
        raise MatrixError(400, "M_INVALID_PARAM", "transaction_id must be a string")
    service = hs.appservices.by_id(as_id)
    assert service is not None
    return json_response({"duration_ms": await hs.appservices.ping(service, txn)})


def setup(routes: Routes) -> None:
    routes.client("POST", "/appservice/{appservice_id}/ping", ping, versions=("v1",))
