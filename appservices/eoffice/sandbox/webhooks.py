"""The webhook delivery worker: one task per subscription, head-of-queue only, retried with backoff.

Only the oldest undelivered event of a subscription is ever attempted, so a receiver sees events in
cursor order even across failures and restarts (the queue lives in SQLite). A delivery counts as done
on any 2xx; anything else — an error status, a refused connection, a timeout — is retried after an
exponentially growing delay, without limit, until the subscription is deleted. Delivery is
at-least-once (a crash between the receiver's 2xx and our bookkeeping repeats it), so receivers
de-duplicate on ``X-EOffice-Event-Id``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp

from . import feed
from .clock import now_ms
from .db import Database
from .signing import sign

log = logging.getLogger(__name__)


class WebhookDispatcher:
    def __init__(self, db: Database, retry_base: float, retry_max: float, timeout: float) -> None:
        self._db = db
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._timeout = timeout
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        self._session: aiohttp.ClientSession | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        self._supervisor = asyncio.create_task(self._supervise(), name="eoffice-webhooks")
        self.wake()

    async def stop(self) -> None:
        tasks = [t for t in (self._supervisor, *self._tasks.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def wake(self) -> None:
        """Something was written: new events may be queued, or subscriptions added or removed."""
        self._changed.set()
        for event in self._wakeups.values():
            event.set()

    async def _supervise(self) -> None:
        while True:
            self._changed.clear()
            current = set(await self._db.run(feed.webhook_ids))
            for webhook_id in current - self._tasks.keys():
                self._wakeups[webhook_id] = asyncio.Event()
                self._tasks[webhook_id] = asyncio.create_task(self._run(webhook_id), name=f"webhook-{webhook_id}")
            for webhook_id in self._tasks.keys() - current:
                self._tasks.pop(webhook_id).cancel()
                self._wakeups.pop(webhook_id, None)
            await self._changed.wait()

    async def _run(self, webhook_id: str) -> None:
        wakeup = self._wakeups[webhook_id]
        while True:
            wakeup.clear()
            item = await self._db.run(feed.next_delivery, webhook_id)
            if item is None:
                await wakeup.wait()
                continue
            delay = (item["next_attempt_at"] - now_ms()) / 1000
            if delay > 0:
                # Sleep until due; a wake-up only re-checks (the subscription may have been deleted).
                try:
                    await asyncio.wait_for(wakeup.wait(), timeout=delay)
                except asyncio.TimeoutError:
                    pass
                continue
            await self._attempt(item)

    async def _attempt(self, item: dict[str, Any]) -> None:
        assert self._session is not None
        event = item["event"]
        body = feed.event_bytes(event)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-EOffice-Event-Id": event["event_id"],
            "X-EOffice-Event-Type": event["type"],
            "X-EOffice-Timestamp": str(timestamp),
            "X-EOffice-Signature": sign(item["secret"], timestamp, body),
        }
        status: int | None = None
        try:
            async with self._session.post(item["url"], data=body, headers=headers, allow_redirects=False) as resp:
                status = resp.status
                await resp.read()
            if 200 <= status < 300:
                await self._db.run(feed.mark_delivered, item["id"], status)
                return
            error = f"HTTP {status}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        delay = min(self._retry_max, self._retry_base * 2 ** item["attempts"])
        log.info("webhook delivery %s of event %s failed (%s); retry in %.1fs",
                 item["id"], event["event_id"], error, delay)
        await self._db.run(feed.mark_failed, item["id"], status, error, now_ms() + int(delay * 1000))
