"""Where to connect for a server name: the spec's server discovery, after the static directory.

A closed government federation lists its members (and their addresses) in the federation directory,
so discovery normally ends at step 0. Otherwise, per the spec: IP literal → that address; explicit
port → that host and port; ``/.well-known/matrix/server`` delegation; SRV ``_matrix-fed._tcp``
(then the deprecated ``_matrix._tcp``); finally port 8448.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable, Mapping

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8448


@dataclass(frozen=True)
class Destination:
    """Connect to ``host:port``; send ``Host: host_header``; check the certificate for ``tls_name``
    (None for an IP literal, whose certificate must carry the IP address)."""

    host: str
    port: int
    host_header: str
    tls_name: str | None


def split_server_name(server_name: str) -> tuple[str, int | None]:
    """(host, port) of a server name; raises ValueError for one that is not valid."""
    if server_name.startswith("["):
        end = server_name.find("]")
        if end < 0:
            raise ValueError(f"bad server name {server_name!r}")
        host, rest = server_name[1:end], server_name[end + 1:]
        ipaddress.IPv6Address(host)
    else:
        host, sep, port_s = server_name.rpartition(":")
        if not sep:
            host, rest = server_name, ""
        else:
            rest = ":" + port_s
    if not host:
        raise ValueError(f"bad server name {server_name!r}")
    if rest:
        if not rest.startswith(":") or not rest[1:].isdigit() or not 0 < int(rest[1:]) < 65536:
            raise ValueError(f"bad port in server name {server_name!r}")
        return host, int(rest[1:])
    return host, None


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


WellKnownFetcher = Callable[[str], Awaitable[str | None]]
SrvResolver = Callable[[str], Awaitable[list[tuple[str, int]]]]


async def resolve_srv(name: str) -> list[tuple[str, int]]:
    """SRV targets ordered by priority (weights are not balanced: one federation link needs one target)."""
    try:
        import dns.asyncresolver
        import dns.exception
    except ImportError:  # dnspython is a dependency; without it discovery skips SRV
        return []
    try:
        answers = await dns.asyncresolver.resolve(name, "SRV", lifetime=5)
    except (dns.exception.DNSException, OSError):
        return []
    records = sorted(answers, key=lambda r: (r.priority, -r.weight))
    return [(str(r.target).rstrip("."), int(r.port)) for r in records if str(r.target) != "."]


async def discover(
    server_name: str, *, directory: Mapping[str, str] | None = None,
    well_known: WellKnownFetcher | None = None, srv: SrvResolver = resolve_srv,
) -> Destination:
    host, port = split_server_name(server_name)
    if directory and server_name in directory:
        d_host, d_port = split_server_name(directory[server_name])
        # The certificate is checked for the name the directory lists, not for the address it maps to:
        # a national CA issues certificates for server names.
        return Destination(d_host, d_port or DEFAULT_PORT, server_name, None if is_ip_literal(host) else host)
    if is_ip_literal(host):
        return Destination(host, port or DEFAULT_PORT, server_name, None)
    if port is not None:
        return Destination(host, port, server_name, host)
    if well_known is not None:
        try:
            delegated = await asyncio.wait_for(well_known(host), 10)
        except Exception as e:  # noqa: BLE001 - no delegation is the common case
            logger.debug("no .well-known for %s: %s", host, e)
            delegated = None
        if delegated:
            try:
                d_host, d_port = split_server_name(delegated)
            except ValueError:
                d_host, d_port = "", None
            if d_host:
                if is_ip_literal(d_host):
                    return Destination(d_host, d_port or DEFAULT_PORT, delegated, None)
                if d_port is not None:
                    return Destination(d_host, d_port, delegated, d_host)
                for name in (f"_matrix-fed._tcp.{d_host}", f"_matrix._tcp.{d_host}"):
                    targets = await srv(name)
                    if targets:
                        return Destination(targets[0][0], targets[0][1], delegated, d_host)
                return Destination(d_host, DEFAULT_PORT, delegated, d_host)
    for name in (f"_matrix-fed._tcp.{host}", f"_matrix._tcp.{host}"):
        targets = await srv(name)
        if targets:
            return Destination(targets[0][0], targets[0][1], server_name, host)
    return Destination(host, DEFAULT_PORT, server_name, host)
