"""Who may see which events: the spec's history visibility rules, applied at each event's state.

A user sees an event if the room was world_readable then, or they were joined then, or it was
``shared`` and they are joined now, or it was ``invited`` and they were invited then.
"""

from __future__ import annotations

from typing import Iterable

from homeserver.storage import Storage
from homeserver.storage.events import StoredEvent


class VisibilityService:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def _membership_and_visibility(self, snapshot_id: int | None, user_id: str) -> tuple[str | None, str]:
        if snapshot_id is None:
            return None, "shared"
        state = await self.storage.state.get_state(snapshot_id)
        ids = [i for i in (state.get(("m.room.member", user_id)), state.get(("m.room.history_visibility", ""))) if i]
        events = await self.storage.events.get_events(ids) if ids else {}
        member_id = state.get(("m.room.member", user_id))
        hv_id = state.get(("m.room.history_visibility", ""))
        membership = events[member_id].pdu["content"].get("membership") if member_id in events else None
        visibility = events[hv_id].pdu["content"].get("history_visibility", "shared") if hv_id in events else "shared"
        return membership, visibility

    async def ignored_users(self, user_id: str) -> set[str]:
        """Users ``user_id`` has chosen to ignore (m.ignored_user_list account data)."""
        content = await self.storage.user_data.get_account_data(user_id, "", "m.ignored_user_list") or {}
        ignored = content.get("ignored_users")
        return {u for u in ignored if isinstance(u, str)} if isinstance(ignored, dict) else set()

    async def filter(self, user_id: str, events: Iterable[StoredEvent], *, currently_joined: bool) -> list[StoredEvent]:
        ignored = await self.ignored_users(user_id)
        if ignored:
            # Events from ignored users are hidden, except state, which shapes the room for everyone.
            events = [e for e in events if e.sender not in ignored or e.state_key is not None]
        out = []
        memo: dict[int | None, tuple[str | None, str]] = {}
        for ev in events:
            if ev.outlier or ev.rejected:
                continue
            if ev.state_after not in memo:
                memo[ev.state_after] = await self._membership_and_visibility(ev.state_after, user_id)
            membership, visibility = memo[ev.state_after]
            # The user's own membership events are always visible to them.
            if ev.type == "m.room.member" and ev.state_key == user_id:
                out.append(ev)
            elif visibility == "world_readable" or membership == "join":
                out.append(ev)
            elif visibility == "shared" and currently_joined:
                out.append(ev)
            elif visibility == "invited" and membership == "invite":
                out.append(ev)
        return out
