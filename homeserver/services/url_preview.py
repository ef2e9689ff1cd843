"""Link previews (Open Graph), off unless the operator turns them on: fetching a page a user linked
sends that page's host the fact that someone here is reading it, and its content into this server —
a data-residency decision. When on, only hosts on the allowed list are fetched, over HTTP(S), with a
size cap and a timeout; only the page's title, description and Open Graph tags are returned."""

from __future__ import annotations

import time
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from homeserver.errors import MatrixError

MAX_PAGE_BYTES = 1024 * 1024
CACHE_S = 3600


class _Meta(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.og: dict[str, str] = {}
        self.title: str | None = None
        self.description: str | None = None
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): v for k, v in attrs if v is not None}
        if tag == "meta":
            prop = (a.get("property") or a.get("name") or "").lower()
            content = a.get("content")
            if content is None:
                return
            if prop.startswith("og:") and prop not in self.og and len(self.og) < 50:
                self.og[prop] = content[:2000]
            elif prop == "description" and self.description is None:
                self.description = content[:2000]
        elif tag == "title" and self.title is None:
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title = ((self.title or "") + data)[:2000]


def host_allowed(host: str, allowed: list[str]) -> bool:
    host = host.lower().rstrip(".")
    for rule in allowed:
        rule = rule.lower()
        if rule.startswith("*.") and (host == rule[2:] or host.endswith(rule[1:])):
            return True
        if host == rule:
            return True
    return False


class UrlPreviewService:
    def __init__(self, allowed_hosts: list[str]) -> None:
        self.allowed = allowed_hosts
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    async def preview(self, url: str) -> dict[str, Any]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise MatrixError(400, "M_INVALID_PARAM", "Only http and https URLs can be previewed")
        if not host_allowed(parts.hostname, self.allowed):
            raise MatrixError(403, "M_FORBIDDEN", "Previews of this site are not allowed on this server")
        hit = self._cache.get(url)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
                async with s.get(url, allow_redirects=False, headers={"User-Agent": "Qasid link preview"}) as r:
                    if r.status != 200:
                        raise MatrixError(502, "M_UNKNOWN", f"The page answered {r.status}")
                    if not r.content_type.startswith("text/html"):
                        return {"og:title": parts.hostname, "matrix:content_type": r.content_type}
                    raw = await r.content.read(MAX_PAGE_BYTES)
                    charset = r.charset or "utf-8"
        except (aiohttp.ClientError, TimeoutError):
            raise MatrixError(502, "M_UNKNOWN", "Could not fetch the page") from None
        parser = _Meta()
        parser.feed(raw.decode(charset, errors="replace"))
        out: dict[str, Any] = dict(parser.og)
        out.setdefault("og:title", (parser.title or "").strip() or parts.hostname)
        if parser.description:
            out.setdefault("og:description", parser.description)
        out.pop("og:image", None)  # images would have to be fetched and stored here: not done
        self._cache[url] = (time.monotonic() + CACHE_S, out)
        return out
