"""End-to-end encryption: device keys, one-time keys, cross-signing, signatures and to-device messages."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import Routes, json_response, read_json


async def post_upload(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request)
    return json_response(await hs.e2e_keys.upload(requester.user_id, requester.device_id, body))


async def post_query(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    return json_response(await hs.e2e_keys.query(requester.user_id, await read_json(request)))


async def post_claim(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.requester(request)
    return json_response(await hs.e2e_keys.claim(await read_json(request)))


async def get_changes(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    q = request.query
    return json_response(await hs.e2e_keys.changes(requester.user_id, q.get("from"), q.get("to")))


async def post_device_signing_upload(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request)
    session = None
    if await hs.e2e_keys.cross_signing_needs_auth(requester.user_id, body):
        session = (await hs.reauthenticate(request, requester, body)).session
    await hs.e2e_keys.upload_cross_signing(requester.user_id, {k: v for k, v in body.items() if k != "auth"})
    if session is not None:
        await hs.uia.finish(session)
    return json_response({})


async def post_signatures_upload(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    return json_response(await hs.e2e_keys.upload_signatures(requester.user_id, await read_json(request)))


async def put_send_to_device(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request)
    m = request.match_info
    await hs.to_device.send(requester.user_id, requester.device_id, m["event_type"], m["txn_id"], body)
    return json_response({})


def setup(routes: Routes) -> None:
    c = routes.client
    c("POST", "/keys/upload", post_upload)
    c("POST", "/keys/upload/{device_id}", post_upload, versions=("r0",))  # deprecated r0 form, still sent by old clients
    c("POST", "/keys/query", post_query)
    c("POST", "/keys/claim", post_claim)
    c("GET", "/keys/changes", get_changes)
    c("POST", "/keys/device_signing/upload", post_device_signing_upload, versions=("r0", "v3", "unstable"))
    c("POST", "/keys/signatures/upload", post_signatures_upload, versions=("r0", "v3", "unstable"))
    c("PUT", "/sendToDevice/{event_type}/{txn_id}", put_send_to_device)
