"""Dehydrated devices (MSC3814, as Synapse serves it): a device with no running client that still
receives room keys, so a user who logs in on a new device after all others are gone can read history."""

from __future__ import annotations

from typing import Any, Mapping

from homeserver.clock import Clock
from homeserver.errors import MatrixError
from homeserver.services.e2e_keys import E2eKeyService
from homeserver.storage import Storage

EVENTS_BATCH = 100


class DehydratedDeviceService:
    def __init__(self, storage: Storage, keys: E2eKeyService, clock: Clock) -> None:
        self.storage = storage
        self.keys = keys
        self.clock = clock

    async def put(self, user_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        device_id, data = body.get("device_id"), body.get("device_data")
        name = body.get("initial_device_display_name")
        if not isinstance(device_id, str) or not device_id or len(device_id) > 255:
            raise MatrixError(400, "M_INVALID_PARAM", "device_id must be a non-empty string")
        if not isinstance(data, dict):
            raise MatrixError(400, "M_BAD_JSON", "device_data must be an object")
        if name is not None and not isinstance(name, str):
            raise MatrixError(400, "M_BAD_JSON", "initial_device_display_name must be a string")
        if not isinstance(body.get("device_keys"), dict):
            raise MatrixError(400, "M_MISSING_PARAM", "device_keys are required: a dehydrated device must support encryption")
        existing = await self.storage.devices.get_device(user_id, device_id)
        previous = await self.storage.dehydrated_devices.get(user_id)
        if existing is not None and (previous is None or previous[0] != device_id):
            raise MatrixError(400, "M_INVALID_PARAM", "That device ID belongs to an existing device")
        async with self.storage.db.transaction() as conn:
            await self.storage.devices.upsert_device(conn, user_id, device_id, name, self.clock.time_ms())
        try:
            await self.keys.upload(user_id, device_id, {k: body[k] for k in ("device_keys", "one_time_keys", "fallback_keys") if k in body})
        except MatrixError:
            if existing is None:
                async with self.storage.db.transaction() as conn:
                    await self.storage.devices.delete_devices(conn, user_id, [device_id])
            raise
        async with self.storage.db.transaction() as conn:
            if previous is not None and previous[0] != device_id:
                await self.storage.devices.delete_devices(conn, user_id, [previous[0]])
            await self.storage.dehydrated_devices.set(conn, user_id, device_id, data)
        return {"device_id": device_id}

    async def get(self, user_id: str) -> dict[str, Any]:
        found = await self.storage.dehydrated_devices.get(user_id)
        if found is None:
            raise MatrixError(404, "M_NOT_FOUND", "No dehydrated device available")
        return {"device_id": found[0], "device_data": found[1]}

    async def delete(self, user_id: str) -> dict[str, Any]:
        found = await self.storage.dehydrated_devices.get(user_id)
        if found is None:
            raise MatrixError(404, "M_NOT_FOUND", "No dehydrated device available")
        async with self.storage.db.transaction() as conn:
            gone = await self.storage.devices.delete_devices(conn, user_id, [found[0]])
            await self.storage.dehydrated_devices.clear(conn, user_id)
        await self.keys.wake_for_device_change(user_id, gone)
        return {"device_id": found[0]}

    async def events(self, user_id: str, device_id: str, next_batch: Any) -> dict[str, Any]:
        """The dehydrated device's to-device messages in batches. Unlike /sync nothing is deleted, so an
        interrupted rehydration can start again; an empty batch means the client has everything."""
        found = await self.storage.dehydrated_devices.get(user_id)
        if found is None or found[0] != device_id:
            raise MatrixError(403, "M_FORBIDDEN", "That is not your dehydrated device")
        if next_batch is None:
            after = 0
        elif isinstance(next_batch, str) and next_batch.isdigit():
            after = int(next_batch)
        else:
            raise MatrixError(400, "M_INVALID_PARAM", "next_batch is not a token from this endpoint")
        upto = 2**62
        rows = await self.storage.to_device.fetch(user_id, device_id, after, upto, EVENTS_BATCH)
        return {"events": [m for _, m in rows], "next_batch": str(rows[-1][0] if rows else after)}
