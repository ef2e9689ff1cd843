"""Events as clients see them (the spec's ClientEvent format), built in batches.

Redactions are applied when reading, never to stored JSON, so the signed original stays available to
federation and auditors while clients see only what the redaction algorithm keeps.
"""

from __future__ import annotations

from typing import Any, Iterable

from homeserver.clock import Clock
from homeserver.events import get_room_version, redact
from homeserver.storage import Storage
from homeserver.storage.events import StoredEvent


class ClientEventFormatter:
    def __init__(self, storage: Storage, clock: Clock) -> None:
        self.storage = storage
        self.clock = clock

    async def format(
        self, events: Iterable[StoredEvent], *, user_id: str | None = None, device_id: str | None = None,
        include_room_id: bool = True,
    ) -> list[dict[str, Any]]:
        events = list(events)
        related_ids = {e.redacted_by for e in events if e.redacted_by} | {e.replaces_state for e in events if e.replaces_state}
        related = await self.storage.events.get_events(related_ids) if related_ids else {}
        versions: dict[str, Any] = {}
        out = []
        now = self.clock.time_ms()
        for ev in events:
            rv = versions.get(ev.room_id)
            if rv is None:
                room = await self.storage.events.get_room(ev.room_id)
                rv = versions[ev.room_id] = get_room_version(room.room_version if room else "12")
            out.append(self._one(ev, rv, related, now, user_id, device_id, include_room_id))
        return out

    def _one(
        self, ev: StoredEvent, rv: Any, related: dict[str, StoredEvent], now: int, user_id: str | None,
        device_id: str | None, include_room_id: bool,
    ) -> dict[str, Any]:
        pdu = ev.pdu
        redaction = related.get(ev.redacted_by) if ev.redacted_by else None
        content = redact(pdu, rv)["content"] if redaction is not None else pdu.get("content", {})
        out: dict[str, Any] = {
            "type": pdu["type"], "content": content, "sender": pdu["sender"], "event_id": ev.event_id,
            "origin_server_ts": pdu.get("origin_server_ts", 0),
        }
        if include_room_id:
            out["room_id"] = ev.room_id
        if "state_key" in pdu:
            out["state_key"] = pdu["state_key"]
        if pdu["type"] == "m.room.redaction":
            target = content.get("redacts") if rv.redacts_in_content else pdu.get("redacts")
            if target is not None:
                out["redacts"] = target  # top-level too, for clients that predate room version 11
        unsigned: dict[str, Any] = {"age": max(0, now - int(pdu.get("origin_server_ts", now)))}
        if ev.txn_id and user_id == pdu["sender"] and device_id is not None and ev.device_id == device_id:
            unsigned["transaction_id"] = ev.txn_id
        if redaction is not None:
            unsigned["redacted_because"] = self._one(redaction, rv, {}, now, None, None, include_room_id)
        if ev.replaces_state:
            unsigned["replaces_state"] = ev.replaces_state
            prev = related.get(ev.replaces_state)
            if prev is not None:
                unsigned["prev_content"] = prev.pdu.get("content", {}) if not prev.redacted_by else {}
                unsigned["prev_sender"] = prev.pdu["sender"]
        out["unsigned"] = unsigned
        return out
