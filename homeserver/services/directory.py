"""The room directory: which rooms are published, and /publicRooms with search and pagination."""

from __future__ import annotations

from typing import Any

from homeserver.errors import MatrixError, forbidden
from homeserver.events import get_room_version
from homeserver.events.auth import required_power_level, user_power_level
from homeserver.storage import Storage

MAX_LIMIT = 500


class DirectoryService:
    def __init__(self, storage: Storage, server_name: str) -> None:
        self.storage = storage
        self.server_name = server_name

    async def visibility(self, room_id: str) -> str:
        room = await self.storage.events.get_room(room_id)
        if room is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        return "public" if room.is_public else "private"

    async def set_visibility(self, user_id: str, room_id: str, visibility: Any) -> None:
        if visibility not in ("public", "private"):
            raise MatrixError(400, "M_INVALID_PARAM", "visibility must be 'public' or 'private'")
        room = await self.storage.events.get_room(room_id)
        if room is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        # As in Synapse: publishing a room needs the power to set its canonical alias.
        auth = await self.storage.events.current_state_pdus(
            room_id, [("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", user_id)]
        )
        member = auth.get(("m.room.member", user_id), {}).get("content", {}).get("membership")
        rv = get_room_version(room.room_version)
        probe = {"type": "m.room.canonical_alias", "state_key": "", "sender": user_id}
        if member != "join" or user_power_level(user_id, auth, rv) < required_power_level(probe, auth, rv):
            raise forbidden("You may not change this room's directory visibility")
        await self.storage.events.set_public(room_id, visibility == "public")

    async def public_rooms(self, *, limit: int | None, since: str | None, search: str | None) -> dict[str, Any]:
        entries = [await self._entry(r) for r in await self.storage.events.public_room_ids()]
        entries = [e for e in entries if e is not None]
        if search:
            term = search.lower()
            entries = [e for e in entries if any(term in str(e.get(k, "")).lower()
                                                 for k in ("name", "topic", "canonical_alias", "room_id"))]
        entries.sort(key=lambda e: (-e["num_joined_members"], e["room_id"]))
        start = 0
        if since:
            if not since.startswith("p") or not since[1:].isdigit():
                raise MatrixError(400, "M_INVALID_PARAM", "Invalid since token")
            start = int(since[1:])
        if limit is not None and (limit < 0 or limit > MAX_LIMIT):
            limit = MAX_LIMIT
        page = entries[start:start + limit] if limit is not None else entries[start:]
        out: dict[str, Any] = {"chunk": page, "total_room_count_estimate": len(entries)}
        if limit is not None and start + limit < len(entries):
            out["next_batch"] = f"p{start + limit}"
        if start > 0:
            out["prev_batch"] = f"p{max(0, start - (limit or 0))}"
        return out

    async def _entry(self, room_id: str) -> dict[str, Any] | None:
        state = await self.storage.events.get_current_state_ids(room_id)
        wanted = {k: v for k, v in state.items() if k[0] in (
            "m.room.name", "m.room.topic", "m.room.avatar", "m.room.canonical_alias", "m.room.join_rules",
            "m.room.history_visibility", "m.room.guest_access", "m.room.create") and k[1] == ""}
        events = await self.storage.events.get_events(wanted.values())
        content = {k[0]: events[v].pdu.get("content", {}) for k, v in wanted.items() if v in events}
        joined = await self.storage.events.members(room_id, ("join",))
        entry: dict[str, Any] = {
            "room_id": room_id, "num_joined_members": len(joined),
            "world_readable": content.get("m.room.history_visibility", {}).get("history_visibility") == "world_readable",
            "guest_can_join": content.get("m.room.guest_access", {}).get("guest_access") == "can_join",
            "join_rule": content.get("m.room.join_rules", {}).get("join_rule", "invite"),
        }
        for key, etype, field in (("name", "m.room.name", "name"), ("topic", "m.room.topic", "topic"),
                                  ("avatar_url", "m.room.avatar", "url"), ("canonical_alias", "m.room.canonical_alias", "alias")):
            value = content.get(etype, {}).get(field)
            if isinstance(value, str) and value:
                entry[key] = value
        room_type = content.get("m.room.create", {}).get("type")
        if isinstance(room_type, str):
            entry["room_type"] = room_type
        return entry
