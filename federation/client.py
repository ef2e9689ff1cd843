"""Outbound federation requests: discovery, TLS (system store or a national CA bundle), X-Matrix
signing, the allowlist, one pooled connection set, timeouts. Errors come back as FederationError."""

from __future__ import annotations

import json
import logging
import ssl
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Mapping
from urllib.parse import quote, urlencode

import aiohttp
import orjson
import yarl
from nacl.signing import SigningKey

from homeserver.events.xmatrix import sign_request

from federation.discovery import Destination, discover
from federation.policy import FederationPolicy

logger = logging.getLogger(__name__)


class FederationError(Exception):
    """A remote server could not be reached or answered with an error."""

    def __init__(self, destination: str, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(f"{destination}: {message}")
        self.destination = destination
        self.status = status
        self.body = body

    @property
    def errcode(self) -> str | None:
        return self.body.get("errcode") if isinstance(self.body, dict) else None


class FederationClient:
    def __init__(
        self, server_name: str, signing_key: SigningKey, policy: FederationPolicy, *,
        ca_bundle: str | None = None, verify_tls: bool = True, timeout_s: float = 30.0,
    ) -> None:
        self.server_name = server_name
        self.signing_key = signing_key
        self.policy = policy
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(10.0, timeout_s))
        if verify_tls:
            self.ssl: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl.create_default_context()
        else:
            self.ssl = False
        self._session: aiohttp.ClientSession | None = None
        self._destinations: dict[str, Destination] = {}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=200, limit_per_host=20, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _well_known(self, host: str) -> str | None:
        async with self._client().get(f"https://{host}/.well-known/matrix/server", ssl=self.ssl,
                                      timeout=aiohttp.ClientTimeout(total=10), allow_redirects=True) as r:
            if r.status != 200:
                return None
            body = json.loads(await r.read())
            server = body.get("m.server") if isinstance(body, dict) else None
            return server if isinstance(server, str) else None

    async def destination(self, server_name: str) -> Destination:
        cached = self._destinations.get(server_name)
        if cached is None:
            cached = await discover(server_name, directory=self.policy.addresses, well_known=self._well_known)
            self._destinations[server_name] = cached
        return cached

    def _prepare(self, method: str, destination: str, path: str, query: Mapping[str, Any] | None, body: Any,
                 signed: bool, dest: Destination) -> tuple[yarl.URL, dict[str, str], bytes | None]:
        uri = path
        if query:
            uri += "?" + urlencode([(k, v) for k, vals in query.items() for v in (vals if isinstance(vals, list) else [vals])])
        headers = {"Host": dest.host_header, "Content-Type": "application/json"}
        if signed:
            headers["Authorization"] = sign_request(self.server_name, destination, method, uri, body, self.signing_key)
        data = orjson.dumps(body) if body is not None else None
        host = f"[{dest.host}]" if ":" in dest.host else dest.host
        # encoded=True: send exactly the URI that was signed (no re-quoting by the HTTP library).
        return yarl.URL(f"https://{host}:{dest.port}{uri}", encoded=True), headers, data

    @asynccontextmanager
    async def stream(self, method: str, destination: str, path: str, *, query: Mapping[str, Any] | None = None,
                     timeout_s: float | None = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """A signed request whose response is read by the caller, piece by piece (media)."""
        if destination == self.server_name:
            raise FederationError(destination, "refusing to send a federation request to ourselves")
        if not self.policy.allows(destination):
            raise FederationError(destination, "not in the federation allowlist", 403)
        dest = await self.destination(destination)
        url, headers, data = self._prepare(method, destination, path, query, None, True, dest)
        timeout = aiohttp.ClientTimeout(total=timeout_s, sock_read=60) if timeout_s else aiohttp.ClientTimeout(total=None, sock_read=60)
        try:
            async with self._client().request(method, url, data=data, headers=headers, ssl=self.ssl,
                                              server_hostname=dest.tls_name, timeout=timeout) as r:
                yield r
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            self._destinations.pop(destination, None)
            raise FederationError(destination, f"request failed: {type(e).__name__}: {e}") from None

    async def request(
        self, method: str, destination: str, path: str, *, query: Mapping[str, Any] | None = None,
        body: Any = None, signed: bool = True,
    ) -> Any:
        """Send one request and return its decoded JSON body; raises FederationError otherwise."""
        if destination == self.server_name:
            raise FederationError(destination, "refusing to send a federation request to ourselves")
        if not self.policy.allows(destination):
            raise FederationError(destination, "not in the federation allowlist", 403)
        dest = await self.destination(destination)
        url, headers, data = self._prepare(method, destination, path, query, body, signed, dest)
        try:
            async with self._client().request(method, url, data=data, headers=headers, ssl=self.ssl,
                                              server_hostname=dest.tls_name) as r:
                raw = await r.read()
                status = r.status
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            self._destinations.pop(destination, None)  # rediscover next time
            raise FederationError(destination, f"request failed: {type(e).__name__}: {e}") from None
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = None
        if status != 200:
            raise FederationError(destination, f"{method} {path} answered {status}", status, decoded)
        if decoded is None and raw:
            raise FederationError(destination, "response is not JSON", status)
        return decoded

    async def get_json(self, destination: str, path: str, query: Mapping[str, Any] | None = None, *, signed: bool = True) -> Any:
        return await self.request("GET", destination, path, query=query, signed=signed)

    async def post_json(self, destination: str, path: str, body: Any, query: Mapping[str, Any] | None = None) -> Any:
        return await self.request("POST", destination, path, query=query, body=body)

    async def put_json(self, destination: str, path: str, body: Any, query: Mapping[str, Any] | None = None) -> Any:
        return await self.request("PUT", destination, path, query=query, body=body)


def path(template: str, *parts: str) -> str:
    """A federation path with each variable part percent-encoded."""
    return template.format(*(quote(p, safe="") for p in parts))
