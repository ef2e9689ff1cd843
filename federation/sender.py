"""Sending to the other servers: one queue per destination, transactions of at most 50 PDUs and 100
EDUs, retried with exponential back-off (capped) while a destination is down.

PDUs and the EDUs that must not be lost (to-device messages, device-list updates) are written to the
outbox table before they are queued and removed only once the destination accepted them, so neither a
peer's outage nor a restart of this server loses them; on start-up the outbox is loaded again
(catch-up). Typing and receipts are ephemeral and only kept in memory.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from homeserver.clock import Clock
from homeserver.storage.federation_outbox import FederationOutboxStore

from federation.client import FederationClient, FederationError

logger = logging.getLogger(__name__)

MAX_PDUS = 50
MAX_EDUS = 100
MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 300.0
DURABLE_EDUS = ("m.direct_to_device", "m.device_list_update", "m.signing_key_update")


@dataclass
class _Item:
    seq: int | None  # the outbox row, for durable items
    body: dict[str, Any]


class FederationSender:
    def __init__(self, server_name: str, client: FederationClient, clock: Clock, outbox: FederationOutboxStore) -> None:
        self.server_name = server_name
        self.client = client
        self.clock = clock
        self.outbox = outbox
        self._pdus: dict[str, list[_Item]] = {}
        self._edus: dict[str, list[_Item]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._retry: dict[str, asyncio.Event] = {}

    async def resume(self) -> None:
        """Queue again what was not delivered before the last stop."""
        for seq, dest, kind, body in await self.outbox.pending():
            (self._pdus if kind == "pdu" else self._edus).setdefault(dest, []).append(_Item(seq, body))
        for dest in set(self._pdus) | set(self._edus):
            self._kick(dest)

    async def enqueue(self, destinations: set[str], pdu: dict[str, Any]) -> None:
        dests = sorted(d for d in destinations if d != self.server_name)
        if not dests:
            return
        seqs = await self.outbox.add(dests, "pdu", pdu)
        for dest in dests:
            self._pdus.setdefault(dest, []).append(_Item(seqs[dest], pdu))
            self._kick(dest)

    async def enqueue_edu(self, destinations: set[str], edu_type: str, content: dict[str, Any]) -> None:
        dests = sorted(d for d in destinations if d != self.server_name)
        if not dests:
            return
        edu = {"edu_type": edu_type, "content": content}
        seqs = await self.outbox.add(dests, "edu", edu) if edu_type in DURABLE_EDUS else {}
        for dest in dests:
            self._edus.setdefault(dest, []).append(_Item(seqs.get(dest), edu))
            self._kick(dest)

    def wake(self, destination: str) -> None:
        """Retry a destination in back-off now: it has just sent us a request, so it is reachable again."""
        retry = self._retry.get(destination)
        if retry is not None:
            retry.set()

    def pending(self, destination: str) -> int:
        return len(self._pdus.get(destination, [])) + len(self._edus.get(destination, []))

    def _kick(self, dest: str) -> None:
        self._wake.setdefault(dest, asyncio.Event()).set()
        task = self._tasks.get(dest)
        if task is None or task.done():
            self._tasks[dest] = asyncio.create_task(self._run(dest))

    async def _run(self, dest: str) -> None:
        backoff = MIN_BACKOFF_S
        txn: str | None = None
        batch: list[_Item] = []
        edu_batch: list[_Item] = []
        body: dict[str, Any] = {}
        while True:
            pdus = self._pdus.setdefault(dest, [])
            edus = self._edus.setdefault(dest, [])
            if not pdus and not edus:
                wake = self._wake.setdefault(dest, asyncio.Event())
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), 60)
                except asyncio.TimeoutError:
                    if not self._pdus.get(dest) and not self._edus.get(dest):
                        self._tasks.pop(dest, None)
                        return
                continue
            if txn is None:
                # A retried transaction keeps its ID and its contents, so that a receiver which did get
                # it (and only our side saw a failure) recognises it and does not apply it twice.
                batch, edu_batch = pdus[:MAX_PDUS], edus[:MAX_EDUS]
                txn = secrets.token_hex(8)
                body = {"origin": self.server_name, "origin_server_ts": self.clock.time_ms(),
                        "pdus": [i.body for i in batch], "edus": [i.body for i in edu_batch]}
            try:
                await self.client.put_json(dest, f"/_matrix/federation/v1/send/{txn}", body)
            except FederationError as e:
                if not (e.status is not None and 400 <= e.status < 500 and e.status != 429):
                    logger.info("sending to %s failed (%s); retrying in %.0f s", dest, e, backoff)
                    retry = self._retry.setdefault(dest, asyncio.Event())
                    retry.clear()
                    try:
                        await asyncio.wait_for(retry.wait(), backoff)
                        backoff = MIN_BACKOFF_S  # it spoke to us, so it is back
                        continue
                    except asyncio.TimeoutError:
                        pass
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                    continue
                logger.warning("%s refused a transaction (%s); dropping it", dest, e.status)
            txn = None
            del pdus[:len(batch)]
            del edus[:len(edu_batch)]
            done = [i.seq for i in batch + edu_batch if i.seq is not None]
            if done:
                await self.outbox.remove(done)
            backoff = MIN_BACKOFF_S

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
