"""A small push gateway for tests: a real aiohttp server on 127.0.0.1 that records every POST to
/_matrix/push/v1/notify and answers from a script (default: 200 with no rejected pushkeys)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from aiohttp import web

NOTIFY = "/_matrix/push/v1/notify"


@dataclass
class Attempt:
    body: dict[str, Any]
    status: int  # what the gateway answered

    @property
    def notification(self) -> dict[str, Any]:
        return self.body["notification"]


@dataclass
class PushGateway:
    attempts: list[Attempt] = field(default_factory=list)
    # Answers for the next requests, in order: (status, JSON body). Afterwards: 200 {"rejected": []}.
    script: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _notify(self, request: web.Request) -> web.Response:
        body = await request.json()
        status, answer = self.script.pop(0) if self.script else (200, {"rejected": []})
        self.attempts.append(Attempt(body, status))
        return web.json_response(answer, status=status)

    async def start(self) -> "PushGateway":
        app = web.Application()
        app.router.add_post(NOTIFY, self._notify)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}{NOTIFY}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def delivered(self) -> list[dict[str, Any]]:
        """Notifications the gateway accepted (answered 2xx)."""
        return [a.notification for a in self.attempts if 200 <= a.status < 300]

    async def wait_for(self, predicate: Callable[["PushGateway"], bool], what: str, deadline_s: float = 30.0) -> None:
        """Poll until ``predicate`` holds; the deadline only bounds a broken run, it is not what is tested."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while not predicate(self):
            if loop.time() > end:
                raise AssertionError(f"push gateway never saw {what}; attempts: {self.attempts!r}")
            await asyncio.sleep(0.02)

    async def wait_for_event(self, event_id: str, pushkey: str | None = None) -> dict[str, Any]:
        def found(g: "PushGateway") -> bool:
            return any(n.get("event_id") == event_id and (pushkey is None or n["devices"][0]["pushkey"] == pushkey)
                       for n in g.delivered())
        await self.wait_for(found, f"event {event_id}")
        return next(n for n in self.delivered() if n.get("event_id") == event_id
                    and (pushkey is None or n["devices"][0]["pushkey"] == pushkey))


async def eventually(check: Callable[[], Awaitable[bool]], what: str, deadline_s: float = 30.0) -> None:
    """Poll an async check until it holds (the deadline only bounds a broken run)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not await check():
        if loop.time() > end:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.02)
