"""GET /_qasid/admin/v1/rooms/{roomId}/audit_export: the same file as ``qasid audit export``, streamed
to a server administrator (``from``/``to`` in ms since 1970)."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import CORS_HEADERS, Routes, query_int


async def audit_export(request: web.Request) -> web.StreamResponse:
    hs = hs_of(request)
    await hs.admin_requester(request)
    room_id = request.match_info["room_id"]
    lines = hs.audit.lines(room_id, query_int(request, "from", None), query_int(request, "to", None))
    first = await lines.__anext__()  # an unknown room fails here, before anything is sent
    safe = "".join(c if c.isalnum() else "_" for c in room_id)[:80]
    resp = web.StreamResponse(headers={
        "Content-Type": "application/jsonl; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{safe}.audit.jsonl"', **CORS_HEADERS})
    await resp.prepare(request)
    await resp.write(first.encode())
    async for line in lines:
        await resp.write(line.encode())
    await resp.write_eof()
    return resp


def setup(routes: Routes) -> None:
    routes.add("GET", "/_qasid/admin/v1/rooms/{room_id}/audit_export", audit_export)
