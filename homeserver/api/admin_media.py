"""Media administration at Synapse's admin paths: quarantine (the file stays for investigators but is
served to no one), deletion, a piece of media's details, a user's uploads, and usage per user."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import Routes, json_response, query_int
from homeserver.errors import MatrixError
from homeserver.storage.media import MediaRecord

A = "/_synapse/admin"


def _info(rec: MediaRecord) -> dict[str, Any]:
    return {"media_id": rec.media_id, "media_origin": rec.origin, "user_id": rec.user_id, "media_type": rec.content_type,
            "media_length": rec.size, "upload_name": rec.upload_name, "created_ts": rec.created_ts,
            "quarantined_by": rec.quarantined_by, "sha256": rec.sha256}


async def quarantine(request: web.Request) -> web.Response:
    hs = hs_of(request)
    admin = await hs.admin_requester(request)
    m = request.match_info
    if not await hs.media.quarantine(m["server_name"], m["media_id"], admin.user_id):
        raise MatrixError(404, "M_NOT_FOUND", "Unknown media")
    return json_response({})


async def unquarantine(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.admin_requester(request)
    m = request.match_info
    if not await hs.media.quarantine(m["server_name"], m["media_id"], None):
        raise MatrixError(404, "M_NOT_FOUND", "Unknown media")
    return json_response({})


async def get_media(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.admin_requester(request)
    m = request.match_info
    rec = await hs.media.info(m["server_name"], m["media_id"])
    if rec is None:
        raise MatrixError(404, "M_NOT_FOUND", "Unknown media")
    return json_response({"media_info": _info(rec)})


async def delete_media(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.admin_requester(request)
    m = request.match_info
    if not await hs.media.delete(m["server_name"], m["media_id"]):
        raise MatrixError(404, "M_NOT_FOUND", "Unknown media")
    return json_response({"deleted_media": [m["media_id"]], "total": 1})


async def user_media(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.admin_requester(request)
    user_id = request.match_info["user_id"]
    offset = query_int(request, "from", 0) or 0
    limit = query_int(request, "limit", 100) or 0
    items, total = await hs.storage.media.user_media(hs.config.server_name, user_id, offset, limit)
    out: dict[str, Any] = {"media": [_info(r) for r in items], "total": total}
    if offset + len(items) < total:
        out["next_token"] = offset + len(items)
    return json_response(out)


async def delete_user_media(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.admin_requester(request)
    user_id = request.match_info["user_id"]
    items, _ = await hs.storage.media.user_media(hs.config.server_name, user_id, 0, 1_000_000)
    deleted = [r.media_id for r in items if await hs.media.delete(hs.config.server_name, r.media_id)]
    return json_response({"deleted_media": deleted, "total": len(deleted)})


async def usage(request: web.Request) -> web.Response:
    """Bytes and files per local user, largest first (what a ministry's usage is billed on)."""
    hs = hs_of(request)
    await hs.admin_requester(request)
    offset = query_int(request, "from", 0) or 0
    limit = query_int(request, "limit", 100) or 0
    rows, total = await hs.storage.media.usage_by_user(offset, limit)
    users = []
    for user_id, count, length in rows:
        profile = await hs.storage.users.get(user_id)
        users.append({"user_id": user_id, "displayname": getattr(profile, "displayname", None),
                      "media_count": count, "media_length": length})
    out: dict[str, Any] = {"users": users, "total": total}
    if offset + len(rows) < total:
        out["next_token"] = offset + len(rows)
    return json_response(out)


def setup(routes: Routes) -> None:
    add = routes.add
    add("POST", f"{A}/v1/media/quarantine/{{server_name}}/{{media_id}}", quarantine)
    add("POST", f"{A}/v1/media/unquarantine/{{server_name}}/{{media_id}}", unquarantine)
    add("GET", f"{A}/v1/media/{{server_name}}/{{media_id}}", get_media)
    add("DELETE", f"{A}/v1/media/{{server_name}}/{{media_id}}", delete_media)
    add("GET", f"{A}/v1/users/{{user_id}}/media", user_media)
    add("DELETE", f"{A}/v1/users/{{user_id}}/media", delete_user_media)
    add("GET", f"{A}/v1/statistics/users/media", usage)
