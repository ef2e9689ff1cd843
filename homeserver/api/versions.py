"""Discovery: /versions, /.well-known and /capabilities."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import Routes, json_response
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS

SPEC_VERSIONS = [
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8",
    "v1.9", "v1.10", "v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16",
]
RTC_FOCI_KEY = "org.matrix.msc4143.rtc_foci"


async def get_versions(request: web.Request) -> web.Response:
    features = {"org.matrix.msc3814": True, "org.matrix.simplified_msc3575": True,
                "org.matrix.msc4140": hs_of(request).delayed_events.enabled}
    return json_response({"versions": SPEC_VERSIONS, "unstable_features": features})


async def well_known_client(request: web.Request) -> web.Response:
    cfg = hs_of(request).config
    body: dict[str, object] = {"m.homeserver": {"base_url": cfg.base_url.rstrip("/")}}
    if cfg.matrix_rtc.foci:
        body[RTC_FOCI_KEY] = cfg.matrix_rtc.foci  # MSC4143: where clients find the SFU for group calls
    body.update(cfg.extra_well_known_client_content)  # the operator's explicit keys win
    return json_response(body)


async def well_known_server(request: web.Request) -> web.Response:
    cfg = hs_of(request).config
    if not cfg.serve_server_wellknown:
        return json_response({"errcode": "M_NOT_FOUND", "error": ".well-known not available"}, status=404)
    host = cfg.server_name if ":" in cfg.server_name.rsplit("]", 1)[-1] else f"{cfg.server_name}:443"
    return json_response({"m.server": host})


async def get_capabilities(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.requester(request)
    cfg = hs.config
    return json_response({
        "capabilities": {
            "m.change_password": {"enabled": cfg.password_config.enabled},
            "m.room_versions": {
                "default": cfg.default_room_version,
                "available": {v: ("stable" if rv.stable else "unstable") for v, rv in KNOWN_ROOM_VERSIONS.items()},
            },
            "m.set_displayname": {"enabled": True},
            "m.set_avatar_url": {"enabled": True},
            "m.3pid_changes": {"enabled": False},
            "m.get_login_token": {"enabled": False},
            "m.profile_fields": {"enabled": True},
        }
    })


def setup(routes: Routes) -> None:
    routes.add("GET", "/_matrix/client/versions", get_versions)
    routes.add("GET", "/.well-known/matrix/client", well_known_client)
    routes.add("GET", "/.well-known/matrix/server", well_known_server)
    routes.client("GET", "/capabilities", get_capabilities)
