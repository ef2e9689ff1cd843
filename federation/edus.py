"""Ephemeral data between servers (EDUs): typing, read receipts, to-device messages and device-list
changes — out to the servers that share a room (or the recipient's server), and in from them.

An EDU is only believed for the origin's own users, and only about rooms they are in.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from homeserver.events.signing import server_of
from homeserver.storage.e2e_keys import DeviceChange
from homeserver.storage.user_data import Receipt

if TYPE_CHECKING:
    from homeserver.app import HomeServer
    from federation.runtime import FederationRuntime

logger = logging.getLogger(__name__)

REMOTE_TYPING_TIMEOUT_MS = 30_000


class EduHandler:
    def __init__(self, hs: "HomeServer", fed: "FederationRuntime") -> None:
        self.hs = hs
        self.fed = fed
        self.server_name = fed.server_name
        self._seen_messages: set[tuple[str, str]] = set()

    def _local(self, user_id: str) -> bool:
        return user_id.endswith(":" + self.server_name)

    async def _remote_servers(self, room_id: str) -> set[str]:
        servers = await self.fed.rooms.servers_in_room(room_id)
        servers.discard(self.server_name)
        return {s for s in servers if self.fed.policy.allows(s)}

    # --- outbound ----------------------------------------------------------------------------

    def typing_changed(self, room_id: str, user_id: str, typing: bool) -> None:
        if self._local(user_id):
            asyncio.get_running_loop().create_task(self._send_typing(room_id, user_id, typing))

    async def _send_typing(self, room_id: str, user_id: str, typing: bool) -> None:
        servers = await self._remote_servers(room_id)
        if servers:
            await self.fed.sender.enqueue_edu(servers, "m.typing", {"room_id": room_id, "user_id": user_id, "typing": typing})

    def presence_changed(self, user_id: str) -> None:
        if self._local(user_id):
            asyncio.get_running_loop().create_task(self._send_presence(user_id))

    async def _send_presence(self, user_id: str) -> None:
        servers: set[str] = set()
        for room_id in await self.hs.storage.events.rooms_for_user(user_id, ("join",)):
            servers |= await self._remote_servers(room_id)
        if servers:
            await self.fed.sender.enqueue_edu(servers, "m.presence", {"push": [{"user_id": user_id, **self.hs.presence.get(user_id)}]})

    async def receipt_sent(self, receipt: Receipt) -> None:
        servers = await self._remote_servers(receipt.room_id)
        if servers:
            data: dict[str, Any] = {"ts": receipt.ts}
            if receipt.thread_id:
                data["thread_id"] = receipt.thread_id
            content = {receipt.room_id: {"m.read": {receipt.user_id: {"event_ids": [receipt.event_id], "data": data}}}}
            await self.fed.sender.enqueue_edu(servers, "m.receipt", content)

    async def send_to_device(self, sender: str, event_type: str, messages: Mapping[str, Any]) -> None:
        by_server: dict[str, dict[str, Any]] = {}
        for user_id, per_device in messages.items():
            by_server.setdefault(server_of(user_id), {})[user_id] = per_device
        for server, msgs in by_server.items():
            if self.fed.policy.allows(server):
                await self.fed.sender.enqueue_edu({server}, "m.direct_to_device", {
                    "sender": sender, "type": event_type, "message_id": secrets.token_hex(12), "messages": msgs})

    async def device_list_changed(self, user_id: str, devices: Sequence[DeviceChange] | None = None,
                                  cross_signing: bool = False) -> None:
        """Tell the servers sharing a room with ``user_id`` what changed (see
        E2eKeyService.wake_for_device_change): one m.device_list_update per changed device, carrying its
        keys or ``deleted``, chained by stream_id/prev_id from the database (so the chain survives our
        restart); m.signing_key_update for cross-signing keys; the bare "" form only when we cannot
        say which device changed."""
        rooms = await self.hs.storage.events.rooms_for_user(user_id, ("join",))
        servers: set[str] = set()
        for room_id in rooms:
            servers |= await self._remote_servers(room_id)
        if not servers:
            return  # a server that later shares a room with the user fetches the whole list then
        for edu_type, content in await self.hs.e2e_keys.outbound_device_edus(user_id, devices, cross_signing):
            await self.fed.sender.enqueue_edu(servers, edu_type, content)

    # --- inbound -----------------------------------------------------------------------------

    async def receive(self, origin: str, edus: list[Any]) -> None:
        for edu in edus[:100]:
            if not isinstance(edu, dict) or not isinstance(edu.get("content"), dict):
                continue
            try:
                await self._one(origin, str(edu.get("edu_type")), edu["content"])
            except Exception:  # one bad EDU must not lose the others or fail the transaction
                logger.exception("EDU %s from %s failed", edu.get("edu_type"), origin)

    async def _member(self, room_id: str, user_id: str) -> bool:
        if not await self.fed.rooms.acl_allows(room_id, server_of(user_id)):
            return False
        eid = await self.hs.storage.events.get_current_state_event_id(room_id, "m.room.member", user_id)
        ev = await self.hs.storage.events.get_event(eid) if eid else None
        return ev is not None and ev.pdu.get("content", {}).get("membership") == "join"

    async def _one(self, origin: str, kind: str, content: dict[str, Any]) -> None:
        if kind == "m.typing":
            room_id, user_id, typing = content.get("room_id"), content.get("user_id"), content.get("typing")
            if isinstance(room_id, str) and isinstance(user_id, str) and server_of(user_id) == origin \
                    and isinstance(typing, bool) and await self._member(room_id, user_id):
                self.hs.typing.set_typing(room_id, user_id, typing, REMOTE_TYPING_TIMEOUT_MS if typing else None)
        elif kind == "m.receipt":
            for room_id, by_type in content.items():
                for user_id, r in ((by_type or {}).get("m.read") or {}).items():
                    if server_of(user_id) != origin or not isinstance(r, dict) or not await self._member(room_id, user_id):
                        continue
                    ids = r.get("event_ids") or []
                    data = r.get("data") if isinstance(r.get("data"), dict) else {}
                    if ids and isinstance(ids[-1], str):
                        thread = data.get("thread_id") if isinstance(data.get("thread_id"), str) else ""
                        ts = data.get("ts") if isinstance(data.get("ts"), int) else self.hs.clock.time_ms()
                        await self.hs.storage.user_data.put_receipt(Receipt(room_id, "m.read", user_id, thread, ids[-1], ts))
                        self.hs.notifier.notify(rooms=[room_id])
        elif kind == "m.direct_to_device":
            sender, etype, mid = content.get("sender"), content.get("type"), content.get("message_id")
            if not isinstance(sender, str) or server_of(sender) != origin or not isinstance(etype, str):
                return
            if isinstance(mid, str):
                if (origin, mid) in self._seen_messages:
                    return
                self._seen_messages.add((origin, mid))
            messages = {u: m for u, m in (content.get("messages") or {}).items() if isinstance(u, str) and self._local(u)}
            if messages:
                await self.hs.to_device.deliver_local(sender, etype, messages)
        elif kind == "m.presence":
            for item in (content.get("push") or [])[:1000]:
                user_id = item.get("user_id") if isinstance(item, dict) else None
                if not isinstance(user_id, str) or server_of(user_id) != origin:
                    continue
                if not await self.hs.storage.events.users_sharing_rooms(user_id):
                    continue  # we only keep presence of people our users share a room with
                try:
                    self.hs.presence.set(user_id, item.get("presence"), item.get("status_msg"))
                except Exception:  # noqa: BLE001 - a malformed entry is skipped, not fatal
                    continue
                rooms = await self.hs.storage.events.rooms_for_user(user_id, ("join",))
                self.hs.notifier.notify(rooms=list(rooms))
        elif kind in ("m.device_list_update", "m.signing_key_update"):
            user_id = content.get("user_id")
            if isinstance(user_id, str) and server_of(user_id) == origin:
                # Keep our cache of the user's devices current (it checks the content itself)...
                cache = self.hs.e2e_keys.remote_devices
                if cache is not None:
                    try:
                        if kind == "m.device_list_update":
                            await cache.device_list_update(origin, content)
                        else:
                            await cache.signing_key_update(origin, content)
                    except Exception:  # noqa: BLE001 - local clients must still hear of the change
                        logger.exception("caching %s for %s failed", kind, user_id)
                # ...and have our users' clients query the keys again.
                async with self.hs.storage.db.transaction() as conn:
                    await self.hs.storage.e2e_keys.mark_device_list_changed(conn, [user_id])
                await self.hs.e2e_keys.wake_for_device_change(user_id)
