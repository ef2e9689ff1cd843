"""Docs that must stay true to the code: the configuration reference, the sample config, the route list."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

from homeserver.api import mount_all
from homeserver.api.http import Routes
from homeserver.config import config_reference_markdown, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_configuration_reference_is_current() -> None:
    assert (ROOT / "docs" / "configuration.md").read_text() == config_reference_markdown(), (
        "docs/configuration.md is stale: run `make docs`"
    )


def test_sample_config_parses() -> None:
    cfg = load_config(ROOT / "config" / "homeserver.sample.yaml", environ={})
    assert cfg.server_name == "mofa.gov.example"


def test_every_served_route_is_documented() -> None:
    app = web.Application()
    mount_all(Routes(app))
    doc = (ROOT / "docs" / "api-coverage.md").read_text()
    missing = []
    for route in app.router.routes():
        path = route.resource.canonical
        m = re.match(r"^/_matrix/client/(r0|v3|v1)(/.*)$", path)
        rest = m.group(2) if m else path
        if not re.search(rf"\| {route.method} \| `[^`]*{re.escape(rest)}`", doc):
            missing.append(f"{route.method} {path}")
    assert not missing, f"served but not in docs/api-coverage.md: {missing}"
