"""Account data (global and per room), tags, receipts and read markers."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from homeserver.clock import Clock
from homeserver.errors import MatrixError, forbidden
from homeserver.services.notifier import Notifier
from homeserver.storage import Storage
from homeserver.storage.user_data import Receipt

# The server manages these; clients must use the dedicated endpoints.
SERVER_MANAGED_TYPES = ("m.fully_read", "m.push_rules")
RECEIPT_TYPES = ("m.read", "m.read.private", "m.fully_read")
MAX_TAG_LEN = 255


class UserDataService:
    def __init__(self, storage: Storage, clock: Clock, notifier: Notifier) -> None:
        self.storage = storage
        self.clock = clock
        self.notifier = notifier
        # Set by the composition root: public receipts of local users go to the other servers.
        self.on_receipt: Callable[[Receipt], Awaitable[None]] | None = None

    @staticmethod
    def _own(requester: str, target: str) -> None:
        if requester != target:
            raise forbidden("Cannot access another user's account data")

    async def _require_known_room(self, user_id: str, room_id: str) -> None:
        if not room_id.startswith("!"):
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid room ID")
        if await self.storage.events.get_room(room_id) is None:
            raise forbidden("You are not a member of this room")

    async def put(self, requester: str, user_id: str, data_type: str, content: dict[str, Any], room_id: str = "") -> None:
        self._own(requester, user_id)
        if data_type in SERVER_MANAGED_TYPES:
            raise MatrixError(405, "M_BAD_JSON", f"Cannot set {data_type} through this API")
        if room_id:
            await self._require_known_room(user_id, room_id)
        if data_type == "m.ignored_user_list" and not room_id:
            ignored = content.get("ignored_users")
            if not isinstance(ignored, dict) or not all(isinstance(u, str) and u.startswith("@") for u in ignored):
                raise MatrixError(400, "M_BAD_JSON", "ignored_users must be an object keyed by user IDs")
            if user_id in ignored:
                raise MatrixError(400, "M_BAD_JSON", "You cannot ignore yourself")
        await self.storage.user_data.put_account_data(user_id, room_id, data_type, content)
        self.notifier.notify(users=[user_id])

    async def get(self, requester: str, user_id: str, data_type: str, room_id: str = "") -> dict[str, Any]:
        self._own(requester, user_id)
        content = await self.storage.user_data.get_account_data(user_id, room_id, data_type)
        if content is None:
            raise MatrixError(404, "M_NOT_FOUND", "Account data not found")
        return content

    # --- tags (kept as room account data of type m.tag, which is what sync sends) -------------

    async def tags(self, requester: str, user_id: str, room_id: str) -> dict[str, Any]:
        self._own(requester, user_id)
        content = await self.storage.user_data.get_account_data(user_id, room_id, "m.tag") or {}
        return {"tags": content.get("tags", {})}

    async def set_tag(self, requester: str, user_id: str, room_id: str, tag: str, body: dict[str, Any]) -> None:
        self._own(requester, user_id)
        if not tag or len(tag.encode()) > MAX_TAG_LEN:
            raise MatrixError(400, "M_INVALID_PARAM", "Tag names must be 1-255 bytes")
        order = body.get("order")
        if order is not None and (isinstance(order, bool) or not isinstance(order, (int, float)) or not 0 <= order <= 1):
            raise MatrixError(400, "M_INVALID_PARAM", "order must be a number between 0 and 1")
        await self._require_known_room(user_id, room_id)
        tags = (await self.tags(requester, user_id, room_id))["tags"]
        tags[tag] = body
        await self.storage.user_data.put_account_data(user_id, room_id, "m.tag", {"tags": tags})
        self.notifier.notify(users=[user_id])

    async def delete_tag(self, requester: str, user_id: str, room_id: str, tag: str) -> None:
        self._own(requester, user_id)
        tags = (await self.tags(requester, user_id, room_id))["tags"]
        if tags.pop(tag, None) is not None:
            await self.storage.user_data.put_account_data(user_id, room_id, "m.tag", {"tags": tags})
            self.notifier.notify(users=[user_id])

    # --- receipts and read markers --------------------------------------------------------

    async def receipt(self, user_id: str, room_id: str, receipt_type: str, event_id: str, thread_id: Any = None) -> None:
        if receipt_type not in RECEIPT_TYPES:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unknown receipt type {receipt_type}")
        if thread_id is not None and (not isinstance(thread_id, str) or not thread_id):
            raise MatrixError(400, "M_INVALID_PARAM", "thread_id must be 'main' or an event ID")
        if receipt_type == "m.fully_read" and thread_id is not None:
            raise MatrixError(400, "M_INVALID_PARAM", "m.fully_read cannot be threaded")
        ev = await self.storage.events.get_event(event_id)
        member = await self.storage.events.get_current_state_event_id(room_id, "m.room.member", user_id)
        member_ev = await self.storage.events.get_event(member) if member else None
        if member_ev is None or member_ev.pdu["content"].get("membership") != "join":
            raise forbidden("You are not joined to this room")
        if ev is None or ev.room_id != room_id:
            raise MatrixError(404, "M_NOT_FOUND", "Event not found in this room")
        if receipt_type == "m.fully_read":
            await self.storage.user_data.put_account_data(user_id, room_id, "m.fully_read", {"event_id": event_id})
            self.notifier.notify(users=[user_id])
            return
        receipt = Receipt(room_id, receipt_type, user_id, thread_id or "", event_id, self.clock.time_ms())
        await self.storage.user_data.put_receipt(receipt)
        self.notifier.notify(rooms=[room_id])
        if self.on_receipt is not None and receipt_type == "m.read":  # private receipts never leave the server
            await self.on_receipt(receipt)

    async def read_markers(self, user_id: str, room_id: str, body: dict[str, Any]) -> None:
        for key in ("m.fully_read", "m.read", "m.read.private"):
            value = body.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                raise MatrixError(400, "M_BAD_JSON", f"{key} must be an event ID")
            await self.receipt(user_id, room_id, key, value)

    @staticmethod
    def receipt_edu(receipts: list[Receipt], viewer: str) -> dict[str, Any]:
        """Receipts as the m.receipt ephemeral event's content; private receipts only for their owner."""
        content: dict[str, Any] = {}
        for r in receipts:
            if r.receipt_type == "m.read.private" and r.user_id != viewer:
                continue
            entry: dict[str, Any] = {"ts": r.ts}
            if r.thread_id:
                entry["thread_id"] = r.thread_id
            content.setdefault(r.event_id, {}).setdefault(r.receipt_type, {})[r.user_id] = entry
        return content
