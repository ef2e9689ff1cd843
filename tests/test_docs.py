"""Docs that must stay true to the code: the configuration reference, the sample config, the route list."""

from __future__ import annotations

from pathlib import Path

from homeserver.api.coverage import BEGIN, END, render
from homeserver.config import config_reference_markdown, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_configuration_reference_is_current() -> None:
    assert (ROOT / "docs" / "configuration.md").read_text() == config_reference_markdown(), (
        "docs/configuration.md is stale: run `make docs`"
    )


def test_sample_config_parses() -> None:
    cfg = load_config(ROOT / "config" / "homeserver.sample.yaml", environ={})
    assert cfg.server_name == "mofa.gov.example"


def test_route_table_is_current() -> None:
    doc = (ROOT / "docs" / "api-coverage.md").read_text()
    assert BEGIN in doc and END in doc
    assert render(doc) == doc, "docs/api-coverage.md is stale: run `make docs`"
