"""Sending our events to the other servers in a room: one queue per destination, transactions of at
most 50 PDUs, retried with exponential back-off (capped) while a destination is down.

The queue is in memory: events sent while a peer is down reach it when it is back *unless this server
restarts in between* — the persisted queue and catch-up of step 5 are not built yet.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from homeserver.clock import Clock

from federation.client import FederationClient, FederationError

logger = logging.getLogger(__name__)

MAX_PDUS = 50
MAX_EDUS = 100
MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 300.0


class FederationSender:
    def __init__(self, server_name: str, client: FederationClient, clock: Clock) -> None:
        self.server_name = server_name
        self.client = client
        self.clock = clock
        self._queues: dict[str, list[dict[str, Any]]] = {}
        self._edus: dict[str, list[dict[str, Any]]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}

    def enqueue(self, destinations: set[str], pdu: dict[str, Any]) -> None:
        for dest in destinations:
            if dest != self.server_name:
                self._queues.setdefault(dest, []).append(pdu)
                self._kick(dest)

    def enqueue_edu(self, destinations: set[str], edu_type: str, content: dict[str, Any]) -> None:
        for dest in destinations:
            if dest != self.server_name:
                self._edus.setdefault(dest, []).append({"edu_type": edu_type, "content": content})
                self._kick(dest)

    def _kick(self, dest: str) -> None:
        self._wake.setdefault(dest, asyncio.Event()).set()
        task = self._tasks.get(dest)
        if task is None or task.done():
            self._tasks[dest] = asyncio.create_task(self._run(dest))

    def pending(self, destination: str) -> int:
        return len(self._queues.get(destination, []))

    async def _run(self, dest: str) -> None:
        backoff = MIN_BACKOFF_S
        while True:
            queue = self._queues.setdefault(dest, [])
            edus = self._edus.setdefault(dest, [])
            if not queue and not edus:
                wake = self._wake.setdefault(dest, asyncio.Event())
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), 60)
                except asyncio.TimeoutError:
                    if not self._queues.get(dest) and not self._edus.get(dest):
                        self._tasks.pop(dest, None)
                        return
                continue
            batch = queue[:MAX_PDUS]
            edu_batch = edus[:MAX_EDUS]
            txn = secrets.token_hex(8)
            body = {"origin": self.server_name, "origin_server_ts": self.clock.time_ms(), "pdus": batch, "edus": edu_batch}
            try:
                await self.client.put_json(dest, f"/_matrix/federation/v1/send/{txn}", body)
            except FederationError as e:
                if e.status is not None and 400 <= e.status < 500 and e.status != 429:
                    logger.warning("%s refused a transaction (%s); dropping %d PDUs", dest, e.status, len(batch))
                    del queue[:len(batch)]
                    del edus[:len(edu_batch)]
                    continue
                logger.info("sending to %s failed (%s); retrying in %.0f s", dest, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            del queue[:len(batch)]
            del edus[:len(edu_batch)]
            backoff = MIN_BACKOFF_S

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
