"""The e-Office connector contract (docs/eoffice-api.md), client side: bearer token, idempotency keys
on every write so a retry after a lost answer never files a note twice, and errors sorted into "try
again later" (e-Office unreachable or failing) and "e-Office refused this" (e.g. a final note)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any
from urllib.parse import quote

import aiohttp

MAX_WEBHOOK_AGE_S = 300


class EOfficeUnavailable(Exception):
    """Unreachable, or a 5xx: the same request is tried again later."""


class EOfficeRefused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def verify_webhook(secret: str, timestamp: str | None, signature: str | None, body: bytes, now: int) -> bool:
    """``X-EOffice-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``, fresh."""
    if not timestamp or not signature:
        return False
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now - ts) > MAX_WEBHOOK_AGE_S:
        return False
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


class EOffice:
    def __init__(self, base_url: str, token: str) -> None:
        self.base = base_url + "/api/v1"
        self.session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"},
                                             timeout=aiohttp.ClientTimeout(total=120))

    async def close(self) -> None:
        await self.session.close()

    async def _request(self, method: str, path: str, *, json_body: Any = None, data: Any = None,
                       idem: str | None = None, params: dict[str, str] | None = None) -> Any:
        headers = {"Idempotency-Key": idem} if idem else {}
        try:
            async with self.session.request(method, self.base + path, json=json_body, data=data, headers=headers, params=params) as r:
                raw = await r.read()
                if r.status >= 500:
                    raise EOfficeUnavailable(f"e-Office answered {r.status}")
                body = json.loads(raw) if raw else None
                if r.status >= 400:
                    err = (body or {}).get("error", {}) if isinstance(body, dict) else {}
                    raise EOfficeRefused(r.status, str(err.get("code", "ERROR")), str(err.get("message", "")))
                return body
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise EOfficeUnavailable(f"e-Office unreachable: {type(e).__name__}") from None

    async def find_file(self, file_no: str) -> dict[str, Any] | None:
        found = await self._request("GET", "/files", params={"file_no": file_no})
        files = found.get("files", []) if isinstance(found, dict) else []
        return files[0] if files else None

    async def file(self, file_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/files/{quote(file_id)}")

    async def employee(self, employee_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/employees/{quote(employee_id)}")

    async def add_note(self, file_id: str, body: dict[str, Any], idem: str) -> dict[str, Any]:
        return await self._request("POST", f"/files/{quote(file_id)}/notes", json_body=body, idem=idem)

    async def patch_note(self, file_id: str, note_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._request("PATCH", f"/files/{quote(file_id)}/notes/{quote(note_id)}", json_body=body)

    async def delete_note(self, file_id: str, note_id: str) -> None:
        await self._request("DELETE", f"/files/{quote(file_id)}/notes/{quote(note_id)}")

    async def add_correspondence(self, file_id: str, metadata: dict[str, Any], content: bytes, filename: str,
                                 content_type: str, idem: str) -> dict[str, Any]:
        form = aiohttp.FormData()
        form.add_field("metadata", json.dumps(metadata), content_type="application/json")
        form.add_field("file", content, filename=filename, content_type=content_type)
        return await self._request("POST", f"/files/{quote(file_id)}/correspondence", data=form, idem=idem)

    async def events(self, after: int, limit: int = 100) -> dict[str, Any]:
        return await self._request("GET", "/events", params={"after": str(after), "limit": str(limit)})

    async def subscribe(self, url: str, secret: str) -> dict[str, Any]:
        hooks = await self._request("GET", "/webhooks")
        for h in (hooks or {}).get("webhooks", []):
            if h.get("url") == url:
                return h
        return await self._request("POST", "/webhooks", json_body={"url": url, "secret": secret, "events": ["*"]},
                                   idem=f"webhook:{url}")
