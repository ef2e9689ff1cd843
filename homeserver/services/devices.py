"""A user's devices as clients see them (GET/PUT/DELETE /devices)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.errors import MatrixError
from homeserver.storage import Storage
from homeserver.storage.devices import DeviceRecord

if TYPE_CHECKING:
    from homeserver.services.e2e_keys import E2eKeyService

MAX_DEVICE_NAME_LEN = 512


def device_json(d: DeviceRecord) -> dict[str, Any]:
    """The spec leaves unknown fields out rather than sending nulls."""
    out: dict[str, Any] = {"device_id": d.device_id}
    for key, value in (("display_name", d.display_name), ("last_seen_ip", d.last_seen_ip), ("last_seen_ts", d.last_seen_ts)):
        if value is not None:
            out[key] = value
    return out


class DeviceService:
    def __init__(self, storage: Storage, keys: "E2eKeyService | None" = None) -> None:
        self.storage = storage
        self.keys = keys

    async def list(self, user_id: str) -> list[dict[str, Any]]:
        return [device_json(d) for d in await self.storage.devices.list_devices(user_id)]

    async def get(self, user_id: str, device_id: str) -> dict[str, Any]:
        d = await self.storage.devices.get_device(user_id, device_id)
        if d is None:
            raise MatrixError(404, "M_NOT_FOUND", "Device not found")
        return device_json(d)

    async def rename(self, user_id: str, device_id: str, body: dict[str, Any]) -> None:
        name = body.get("display_name")
        if name is not None and (not isinstance(name, str) or len(name) > MAX_DEVICE_NAME_LEN):
            raise MatrixError(400, "M_INVALID_PARAM", f"display_name must be a string of at most {MAX_DEVICE_NAME_LEN} characters")
        if "display_name" not in body:
            if await self.storage.devices.get_device(user_id, device_id) is None:
                raise MatrixError(404, "M_NOT_FOUND", "Device not found")
            return
        if not await self.storage.devices.set_display_name(user_id, device_id, name):
            raise MatrixError(404, "M_NOT_FOUND", "Device not found")

    async def delete(self, user_id: str, device_ids: list[str]) -> None:
        """Delete devices and log them out; unknown IDs are ignored, as the spec allows for bulk deletes."""
        async with self.storage.db.transaction() as conn:
            gone = await self.storage.devices.delete_devices(conn, user_id, device_ids)
        if self.keys is not None:
            await self.keys.wake_for_device_change(user_id, gone)
