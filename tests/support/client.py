"""A deliberately small Matrix client for tests: raw HTTP, so tests see exactly what goes over the wire."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson


@dataclass
class Response:
    status: int
    body: Any
    headers: Any

    @property
    def errcode(self) -> str | None:
        return self.body.get("errcode") if isinstance(self.body, dict) else None


class MatrixHttp:
    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session

    async def request(
        self, method: str, path: str, body: Any = None, *, token: str | None = None, raw: bytes | None = None,
        params: dict[str, str] | None = None, headers: dict[str, str] | None = None,
    ) -> Response:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        if data is not None and "Content-Type" not in hdrs:
            hdrs["Content-Type"] = "application/json"
        async with self.session.request(method, self.base_url + path, data=data, headers=hdrs, params=params) as r:
            text = await r.read()
            try:
                parsed = orjson.loads(text) if text else None
            except orjson.JSONDecodeError:
                parsed = text
            return Response(r.status, parsed, r.headers)

    async def get(self, path: str, **kw: Any) -> Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> Response:
        return await self.request("POST", path, body, **kw)

    async def put(self, path: str, body: Any = None, **kw: Any) -> Response:
        return await self.request("PUT", path, body, **kw)

    async def delete(self, path: str, body: Any = None, **kw: Any) -> Response:
        return await self.request("DELETE", path, body, **kw)

    async def login(self, user: str, password: str, **extra: Any) -> Response:
        return await self.post("/_matrix/client/v3/login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password, **extra,
        })
