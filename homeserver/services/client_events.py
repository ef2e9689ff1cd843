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
        include_room_id: bool = True, bundle: bool = True,
    ) -> list[dict[str, Any]]:
        events = list(events)
        formatted = await self._format_plain(events, user_id, device_id, include_room_id)
        if bundle and events:
            await self._bundle(events, formatted, user_id, device_id, include_room_id)
        return formatted

    async def _bundle(
        self, events: list[StoredEvent], formatted: list[dict[str, Any]], user_id: str | None,
        device_id: str | None, include_room_id: bool,
    ) -> None:
        """Add the spec's bundled aggregations (m.replace, m.thread, m.reference) under unsigned.m.relations.

        Annotations (reactions) are deliberately not aggregated: the spec says servers must not.
        """
        by_id = {e.event_id: e for e in events if not e.redacted_by and e.state_key is None}
        if not by_id:
            return
        relations = await self.storage.relations.for_targets(by_id)
        if not relations:
            return
        grouped: dict[str, dict[str, list[Any]]] = {}
        for r in relations:
            grouped.setdefault(r.relates_to_id, {}).setdefault(r.rel_type, []).append(r)
        wanted: set[str] = set()
        picks: dict[str, dict[str, Any]] = {}
        for target, kinds in grouped.items():
            original = by_id[target]
            pick: dict[str, Any] = {}
            edits = [r for r in kinds.get("m.replace", []) if r.sender == original.sender and r.type == original.type
                     and relation_of_pdu(original.pdu) != "m.replace"]
            if edits:
                latest = max(edits, key=lambda r: (r.origin_server_ts, r.event_id))
                pick["m.replace"] = latest.event_id
                wanted.add(latest.event_id)
            thread = kinds.get("m.thread", [])
            if thread:
                latest_t = max(thread, key=lambda r: r.stream_ordering)
                pick["m.thread"] = (latest_t.event_id, len(thread),
                                    user_id is not None and (original.sender == user_id or any(r.sender == user_id for r in thread)))
                wanted.add(latest_t.event_id)
            refs = kinds.get("m.reference", [])
            if refs:
                pick["m.reference"] = [r.event_id for r in sorted(refs, key=lambda r: r.stream_ordering)]
            picks[target] = pick
        related = await self.storage.events.get_events(wanted)
        related_fmt = {
            e["event_id"]: e for e in await self.format(
                list(related.values()), user_id=user_id, device_id=device_id, include_room_id=include_room_id, bundle=False)
        }
        for ev in formatted:
            pick = picks.get(ev["event_id"])
            if not pick:
                continue
            rels: dict[str, Any] = {}
            if pick.get("m.replace") in related_fmt:
                rels["m.replace"] = related_fmt[pick["m.replace"]]
            if "m.thread" in pick and pick["m.thread"][0] in related_fmt:
                latest_id, count, mine = pick["m.thread"]
                rels["m.thread"] = {"latest_event": related_fmt[latest_id], "count": count, "current_user_participated": mine}
            if "m.reference" in pick:
                rels["m.reference"] = {"chunk": [{"event_id": e} for e in pick["m.reference"]]}
            if rels:
                ev["unsigned"]["m.relations"] = rels

    async def _format_plain(
        self, events: list[StoredEvent], user_id: str | None, device_id: str | None, include_room_id: bool,
    ) -> list[dict[str, Any]]:
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


def relation_of_pdu(pdu: dict[str, Any]) -> str | None:
    rel = (pdu.get("content") or {}).get("m.relates_to")
    return rel.get("rel_type") if isinstance(rel, dict) else None
