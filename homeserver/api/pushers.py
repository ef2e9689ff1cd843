"""/pushers and /pushers/set: the client-server push notifications module."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import Routes, json_response, read_json
from homeserver.errors import MatrixError
from homeserver.services.pushers import NOTIFY_PATH, PusherSettings, gateway_allowed

MAX_APP_ID_CHARS = 64
MAX_PUSHKEY_BYTES = 512
REQUIRED = ("kind", "app_id", "app_display_name", "device_display_name", "pushkey", "lang", "data")


def _invalid(message: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", message)


def _missing(names: list[str]) -> MatrixError:
    return MatrixError(400, "M_MISSING_PARAM", f"Missing parameters: {', '.join(names)}")


def _string(body: dict[str, Any], key: str) -> str:
    value = body[key]
    if not isinstance(value, str):
        raise _invalid(f"{key} must be a string")
    return value


def _ids(body: dict[str, Any]) -> tuple[str, str]:
    missing = [k for k in ("app_id", "pushkey") if body.get(k) is None]
    if missing:
        raise _missing(missing)
    app_id, pushkey = _string(body, "app_id"), _string(body, "pushkey")
    if not app_id or len(app_id) > MAX_APP_ID_CHARS:
        raise _invalid(f"app_id must be 1 to {MAX_APP_ID_CHARS} characters")
    if not pushkey or len(pushkey.encode()) > MAX_PUSHKEY_BYTES:
        raise _invalid(f"pushkey must be 1 to {MAX_PUSHKEY_BYTES} bytes")
    return app_id, pushkey


def parse_settings(body: dict[str, Any]) -> PusherSettings:
    """A pusher to create or update (``kind`` not null), or the spec's 400 naming what is wrong."""
    missing = [k for k in REQUIRED if body.get(k) is None]
    if missing:
        raise _missing(missing)
    app_id, pushkey = _ids(body)
    kind = _string(body, "kind")
    if kind != "http":
        raise _invalid(f"Unsupported pusher kind {kind!r}: this server only sends http pushes")
    data = body["data"]
    if not isinstance(data, dict):
        raise _invalid("data must be an object")
    url = data.get("url")
    if url is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing parameters: data.url (required for http pushers)")
    if not isinstance(url, str):
        raise _invalid("data.url must be a string")
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.path == NOTIFY_PATH
    except ValueError:
        ok = False
    if not ok:
        raise _invalid(f"data.url must be an http(s) URL with the path {NOTIFY_PATH}")
    if "format" in data and not isinstance(data["format"], str):
        raise _invalid("data.format must be a string")
    profile_tag = body.get("profile_tag")
    if profile_tag is not None and not isinstance(profile_tag, str):
        raise _invalid("profile_tag must be a string")
    append = body.get("append", False)
    if not isinstance(append, bool):
        raise _invalid("append must be a boolean")
    return PusherSettings(
        app_id=app_id, pushkey=pushkey, kind=kind, app_display_name=_string(body, "app_display_name"),
        device_display_name=_string(body, "device_display_name"), profile_tag=profile_tag,
        lang=_string(body, "lang"), data=data, append=append,
    )


async def get_pushers(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    return json_response({"pushers": await hs.pushers.list(requester.user_id)})


async def set_pusher(request: web.Request) -> web.Response:
    hs = hs_of(request)
    requester = await hs.requester(request)
    body = await read_json(request)
    if "kind" in body and body["kind"] is None:
        app_id, pushkey = _ids(body)
        await hs.pushers.delete(requester.user_id, app_id, pushkey)
        return json_response({})
    settings = parse_settings(body)
    if not gateway_allowed(settings.data["url"], hs.pushers.gateway_allowlist):
        raise MatrixError(403, "M_FORBIDDEN", "This server only sends push notifications to the push gateways its "
                                              "administrator allowed; ask them to add this one")
    await hs.pushers.set(requester.user_id, requester.device_id, settings)
    return json_response({})


def setup(routes: Routes) -> None:
    routes.client("GET", "/pushers", get_pushers)
    routes.client("POST", "/pushers/set", set_pusher)
