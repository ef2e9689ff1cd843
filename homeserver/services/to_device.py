"""Sending to-device messages (Olm key shares, verification, call signalling between devices)."""

from __future__ import annotations

import logging
from typing import Any, Mapping

import orjson

from homeserver.clock import Clock
from homeserver.errors import MatrixError
from homeserver.services.notifier import Notifier
from homeserver.storage import Storage

logger = logging.getLogger(__name__)

# One message's content, as Synapse bounds EDUs; the whole request is bounded by max_request_body_size.
MAX_MESSAGE_BYTES = 65536
MAX_MESSAGES_PER_REQUEST = 10_000


class ToDeviceService:
    def __init__(self, storage: Storage, notifier: Notifier, clock: Clock, server_name: str) -> None:
        self.storage = storage
        self.notifier = notifier
        self.clock = clock
        self.server_name = server_name
        # Messages for users on other servers go here once federation is wired in (step 5).
        self.remote_sender: Any = None
        # Told of every message stored for a local device (application services doing E2EE, MSC2409).
        self.on_delivered: Any = None

    async def send(self, sender: str, sender_device: str | None, event_type: str, txn_id: str, body: Mapping[str, Any]) -> None:
        messages = body.get("messages")
        if not isinstance(messages, dict):
            raise MatrixError(400, "M_BAD_JSON", "messages must be an object")
        rows: list[tuple[str, str, dict[str, Any]]] = []
        remote: dict[str, dict[str, Any]] = {}
        for user_id, per_device in messages.items():
            if not isinstance(per_device, dict):
                raise MatrixError(400, "M_BAD_JSON", f"messages.{user_id} must map device IDs to contents")
            if not isinstance(user_id, str) or not user_id.startswith("@") or ":" not in user_id:
                raise MatrixError(400, "M_INVALID_PARAM", f"{user_id!r} is not a user ID")
            for device_id, content in per_device.items():
                if not isinstance(content, dict):
                    raise MatrixError(400, "M_BAD_JSON", f"messages.{user_id}.{device_id} must be an object")
                if len(orjson.dumps(content)) > MAX_MESSAGE_BYTES:
                    raise MatrixError(413, "M_TOO_LARGE", "A to-device message is over 64 KiB")
            if not user_id.endswith(":" + self.server_name):
                remote[user_id] = per_device
                continue
            targets = await self._targets(user_id, per_device)
            for device_id, content in targets:
                rows.append((user_id, device_id, {"type": event_type, "sender": sender, "content": content}))
        if len(rows) > MAX_MESSAGES_PER_REQUEST:
            raise MatrixError(413, "M_TOO_LARGE", f"At most {MAX_MESSAGES_PER_REQUEST} messages per request")
        position = await self.storage.to_device.add(sender, sender_device, txn_id, self.clock.time_ms(), rows)
        if position is None:
            return  # a retried transaction: already queued
        if rows:
            self.notifier.notify(users={r[0] for r in rows})
            await self._tell(rows)
        if remote:
            if self.remote_sender is not None:
                await self.remote_sender(sender, event_type, remote)
            else:
                logger.info("to-device messages for %d remote users dropped: federation is not enabled", len(remote))

    async def deliver_local(self, sender: str, event_type: str, messages: Mapping[str, Any]) -> None:
        """Messages from another server's user (already checked by federation) into our devices' inboxes."""
        rows: list[tuple[str, str, dict[str, Any]]] = []
        for user_id, per_device in messages.items():
            if not isinstance(per_device, dict):
                continue
            valid = {d: c for d, c in per_device.items() if isinstance(c, dict) and len(orjson.dumps(c)) <= MAX_MESSAGE_BYTES}
            for device_id, content in await self._targets(user_id, valid):
                rows.append((user_id, device_id, {"type": event_type, "sender": sender, "content": content}))
        if rows:
            await self.storage.to_device.add(sender, None, None, self.clock.time_ms(), rows[:MAX_MESSAGES_PER_REQUEST])
            self.notifier.notify(users={r[0] for r in rows})
            await self._tell(rows[:MAX_MESSAGES_PER_REQUEST])

    async def _tell(self, rows: list[tuple[str, str, dict[str, Any]]]) -> None:
        if self.on_delivered is None:
            return
        try:
            await self.on_delivered(rows)
        except Exception:  # the messages are stored; an observer's failure must not fail the send
            logger.exception("to-device observer failed")

    async def _targets(self, user_id: str, per_device: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Expand ``*`` to every device of the user; a message for a named device wins over ``*``."""
        out: dict[str, dict[str, Any]] = {}
        if "*" in per_device:
            for device in await self.storage.devices.list_devices(user_id):
                out[device.device_id] = per_device["*"]
        existing: set[str] | None = None
        for device_id, content in per_device.items():
            if device_id == "*":
                continue
            if existing is None:
                existing = {d.device_id for d in await self.storage.devices.list_devices(user_id)}
            if device_id in existing:
                out[device_id] = content
        return list(out.items())
