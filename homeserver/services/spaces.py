"""GET /rooms/{roomId}/hierarchy: walk a space's m.space.child links breadth-first.

Rooms only other servers hold are skipped until federation exists (step 5).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from homeserver.errors import MatrixError, forbidden
from homeserver.services.directory import DirectoryService
from homeserver.storage import Storage

MAX_LIMIT = 100


class SpaceService:
    def __init__(self, storage: Storage, directory: DirectoryService) -> None:
        self.storage = storage
        self.directory = directory

    async def _accessible(self, user_id: str, room_id: str, entry: dict[str, Any]) -> bool:
        eid = await self.storage.events.get_current_state_event_id(room_id, "m.room.member", user_id)
        ev = await self.storage.events.get_event(eid) if eid else None
        if ev is not None and ev.pdu["content"].get("membership") in ("join", "invite"):
            return True
        return entry["world_readable"] or entry["join_rule"] in ("public", "knock", "restricted", "knock_restricted")

    async def _children(self, room_id: str, suggested_only: bool) -> list[dict[str, Any]]:
        state = await self.storage.events.get_current_state_ids(room_id)
        ids = [v for (t, _), v in state.items() if t == "m.space.child"]
        events = await self.storage.events.get_events(ids)
        out = []
        for ev in sorted(events.values(), key=lambda e: (str(e.pdu["content"].get("order", "")), e.state_key or "")):
            content = ev.pdu.get("content", {})
            via = content.get("via")
            if not isinstance(via, list) or not via:
                continue  # a child without via has been removed
            if suggested_only and not content.get("suggested"):
                continue
            out.append({"type": "m.space.child", "state_key": ev.state_key, "content": content, "sender": ev.sender,
                        "origin_server_ts": ev.pdu.get("origin_server_ts", 0)})
        return out

    async def hierarchy(
        self, user_id: str, root: str, *, suggested_only: bool, limit: int | None, max_depth: int | None, start: str | None,
    ) -> dict[str, Any]:
        root_entry = await self.directory._entry(root) if await self.storage.events.get_room(root) else None
        if root_entry is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        if not await self._accessible(user_id, root, root_entry):
            raise forbidden("You cannot see this space")
        skip = 0
        if start:
            if not start.startswith("h") or not start[1:].isdigit():
                raise MatrixError(400, "M_INVALID_PARAM", "Invalid from token")
            skip = int(start[1:])
        limit = min(limit or 50, MAX_LIMIT)
        queue: deque[tuple[str, int]] = deque([(root, 0)])
        seen = {root}
        rooms: list[dict[str, Any]] = []
        index = 0
        while queue:
            room_id, depth = queue.popleft()
            if await self.storage.events.get_room(room_id) is None:
                continue
            entry = await self.directory._entry(room_id)
            if entry is None or not await self._accessible(user_id, room_id, entry):
                continue
            children = await self._children(room_id, suggested_only)
            if index >= skip:
                rooms.append({**entry, "children_state": children})
            index += 1
            if len(rooms) > limit:
                break
            if max_depth is None or depth < max_depth:
                for child in children:
                    if child["state_key"] not in seen:
                        seen.add(child["state_key"])
                        queue.append((child["state_key"], depth + 1))
        out: dict[str, Any] = {"rooms": rooms[:limit]}
        if len(rooms) > limit:
            out["next_batch"] = f"h{skip + limit}"
        return out
