"""How a handler reaches the HomeServer, without importing the composition root (which imports us)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from homeserver.app import HomeServer

HS: web.AppKey["HomeServer"] = web.AppKey("homeserver")


def hs_of(request: web.Request) -> "HomeServer":
    return request.app[HS]


def client_ip(request: web.Request) -> str:
    return request.get("client_ip") or request.remote or ""
