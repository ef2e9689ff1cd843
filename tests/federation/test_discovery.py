"""Server discovery, step by step as the spec orders it (the lookups are injected, so each step is exact)."""

from __future__ import annotations

import pytest

from federation.discovery import Destination, discover, split_server_name


async def _no_srv(name: str) -> list[tuple[str, int]]:
    return []


async def test_directory_then_ip_literal_then_explicit_port() -> None:
    d = await discover("mofa.gov.example", directory={"mofa.gov.example": "10.0.0.5:8448"}, srv=_no_srv)
    # The certificate must name the server as the directory knows it, whatever address it maps to.
    assert d == Destination("10.0.0.5", 8448, "mofa.gov.example", "mofa.gov.example")
    assert await discover("127.0.0.2:38448", srv=_no_srv) == Destination("127.0.0.2", 38448, "127.0.0.2:38448", None)
    assert await discover("[::1]", srv=_no_srv) == Destination("::1", 8448, "[::1]", None)
    assert await discover("hs.example:9000", srv=_no_srv) == Destination("hs.example", 9000, "hs.example:9000", "hs.example")


async def test_well_known_delegation_and_srv() -> None:
    async def wk(host: str) -> str | None:
        return {"a.example": "matrix.a.example:443", "b.example": "matrix.b.example", "c.example": None}[host]

    async def srv(name: str) -> list[tuple[str, int]]:
        return {"_matrix-fed._tcp.matrix.b.example": [("fed.b.example", 8449)],
                "_matrix._tcp.c.example": [("old.c.example", 8500)]}.get(name, [])

    assert await discover("a.example", well_known=wk, srv=srv) == Destination("matrix.a.example", 443, "matrix.a.example:443", "matrix.a.example")
    # Delegated without a port: SRV on the delegated name; Host and certificate name stay the delegated name.
    assert await discover("b.example", well_known=wk, srv=srv) == Destination("fed.b.example", 8449, "matrix.b.example", "matrix.b.example")
    # No delegation: SRV (here the deprecated _matrix._tcp), then the default port.
    assert await discover("c.example", well_known=wk, srv=srv) == Destination("old.c.example", 8500, "c.example", "c.example")
    assert await discover("d.example", srv=_no_srv) == Destination("d.example", 8448, "d.example", "d.example")


@pytest.mark.parametrize("bad", ["", ":80", "host:0", "host:99999", "host:abc", "[::1", "[nothex]:80"])
def test_bad_server_names(bad: str) -> None:
    with pytest.raises(ValueError):
        split_server_name(bad)
