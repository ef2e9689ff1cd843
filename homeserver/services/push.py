"""Evaluating recipients' push rules when an event is persisted, and the unread counts that follow."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from homeserver.clock import Clock
from homeserver.events import get_room_version
from homeserver.events.auth import user_power_level
from homeserver.services.event_creation import NewEvent
from homeserver.services.push_rules import USER_SPECIFIC_DEFAULTS, EvalContext, PushRuleService, evaluate, notifies
from homeserver.storage import Storage
from homeserver.storage.push_rules import PushAction

logger = logging.getLogger(__name__)


class PushEvaluator:
    def __init__(self, storage: Storage, rules: PushRuleService, clock: Clock, server_name: str) -> None:
        self.storage = storage
        self.rules = rules
        self.clock = clock
        self.server_name = server_name

    async def record(self, conn: Any, new: NewEvent) -> None:
        """Inside the event's own transaction: store what each local member's rules say about it, so
        unread counts never lag the timeline. A failure to evaluate costs notifications, not the event."""
        try:
            rows = await self.evaluate_event(new)
        except Exception:
            logger.exception("push rule evaluation failed for %s", new.event_id)
            return
        await self.storage.push_actions.add(rows, conn)

    async def evaluate_event(self, new: NewEvent) -> list[PushAction]:
        """For each local member but the sender, what their rules say about ``new``."""
        pdu = new.pdu
        room_id = new.room_id
        if new.state is not None:
            member_events = await self.storage.events.get_events(
                [eid for (etype, _), eid in new.state.items() if etype == "m.room.member"]
            )
            members = {ev.state_key or "": ev.event_id for ev in member_events.values()
                       if ev.pdu.get("content", {}).get("membership") == "join"}
            auth_ids = {k: new.state[k] for k in (("m.room.create", ""), ("m.room.power_levels", "")) if k in new.state}
            auth_events = await self.storage.events.get_events(auth_ids.values())
            auth = {k: auth_events[v].pdu for k, v in auth_ids.items() if v in auth_events}
        else:
            members = await self.storage.events.joined_member_events(room_id)
            auth = await self.storage.events.current_state_pdus(room_id, [("m.room.create", ""), ("m.room.power_levels", "")])
        recipients = [u for u in members if u != pdu["sender"] and u.endswith(":" + self.server_name)]
        if not recipients:
            return []
        member_events = await self.storage.events.get_events([members[u] for u in recipients])
        version = await self.storage.events.get_room_version(room_id)
        rv = get_room_version(version or "12")
        pl_content = auth.get(("m.room.power_levels", ""), {}).get("content", {})
        notification_levels = pl_content.get("notifications") if isinstance(pl_content.get("notifications"), dict) else {}
        sender_power = user_power_level(pdu["sender"], auth, rv)
        ctx = EvalContext(
            member_count=len(members), sender_power=int(min(sender_power, 2**31)),
            notification_levels={k: v for k, v in notification_levels.items() if isinstance(v, int)},
        )
        event = {**pdu, "room_id": room_id}
        rows = []
        now = self.clock.time_ms()
        thread_id: str | None = None
        memo: dict[Any, bool] = {}
        # Most recipients never changed a rule, and of the default rules only two look at who the
        # recipient is (an invite for them, a mention of them). For everyone else with default rules
        # the outcome is the same: computed once per event ("shared"), not once per member.
        mentioned = (pdu.get("content") or {}).get("m.mentions", {})
        mentioned = mentioned.get("user_ids") if isinstance(mentioned, dict) else None
        mentioned = set(m for m in mentioned if isinstance(m, str)) if isinstance(mentioned, list) else set()
        may_share = pdu["type"] != "m.room.member"
        shared: list[Any] | None = None
        for user in recipients:
            ruleset = await self.rules.shared_ruleset(user)
            if may_share and user not in mentioned and self.rules.has_default_rules(user):
                if shared is None:
                    shared = evaluate(ruleset, event, ctx, memo, skip=USER_SPECIFIC_DEFAULTS)
                actions = shared
            else:
                member = member_events.get(members[user])
                name = member.pdu["content"].get("displayname") if member is not None else None
                user_ctx = dataclasses.replace(ctx, display_name=name if isinstance(name, str) and name else None)
                actions = evaluate(ruleset, event, user_ctx, memo)
            notify, highlight = notifies(actions)
            if notify:
                if thread_id is None:
                    thread_id = await self._thread_of(pdu)
                rows.append(PushAction(user, room_id, new.stream_ordering, new.event_id, actions, highlight, now, thread_id))
        return rows

    async def _thread_of(self, pdu: dict[str, Any]) -> str:
        """'main', or the root of the thread the event belongs to (an edit or reaction joins its target's thread)."""
        rel = pdu.get("content", {}).get("m.relates_to")
        if not isinstance(rel, dict) or not isinstance(rel.get("event_id"), str):
            return "main"
        if rel.get("rel_type") == "m.thread":
            return rel["event_id"]
        return await self.storage.relations.thread_of(rel["event_id"]) or "main"

    async def unread_counts(self, user_id: str, room_id: str, *, threaded: bool = False) -> dict[str, Any]:
        """Notification counts after the user's read receipts (their own latest message also implies reading).

        An unthreaded receipt marks everything before it read; a threaded one (``main`` or a thread root)
        only its own thread. With ``threaded`` (the client's ``unread_thread_notifications`` filter) the
        room's counts cover the main timeline and each thread is counted apart, as the spec says; without
        it the room's counts cover all threads. Threads with unread notifications come back under
        ``threads`` (the sync service moves them to ``unread_thread_notifications``).
        """
        base = await self.storage.events.last_sent_by(room_id, user_id) or 0
        per_thread: dict[str, int] = {}
        for receipt in await self.storage.user_data.read_receipts(room_id, user_id):
            ev = await self.storage.events.get_event(receipt.event_id)
            if ev is None or ev.room_id != room_id:
                continue
            if receipt.thread_id == "":
                base = max(base, ev.stream_ordering)
            else:
                per_thread[receipt.thread_id] = max(per_thread.get(receipt.thread_id, 0), ev.stream_ordering)
        counts = await self.storage.push_actions.counts_by_thread(user_id, room_id, base)
        for thread, position in per_thread.items():
            if position > base and thread in counts:
                counts[thread] = await self.storage.push_actions.counts_in_thread(user_id, room_id, thread, position)
        counts = {t: c for t, c in counts.items() if c[0] or c[1]}
        if not threaded:
            total = (sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values()))
            return {"notification_count": total[0], "highlight_count": total[1]}
        main = counts.pop("main", (0, 0))
        out: dict[str, Any] = {"notification_count": main[0], "highlight_count": main[1]}
        if counts:
            out["threads"] = {t: {"notification_count": n, "highlight_count": h} for t, (n, h) in sorted(counts.items())}
        return out

    async def read_position(self, user_id: str, room_id: str) -> int:
        """The stream position up to which the user has read the room (receipts, or their own last message)."""
        return await self._read_position(user_id, room_id)

    async def _read_position(self, user_id: str, room_id: str) -> int:
        positions = [await self.storage.events.last_sent_by(room_id, user_id) or 0]
        for rtype in ("m.read", "m.read.private"):
            receipt = await self.storage.user_data.get_receipt(room_id, rtype, user_id)
            if receipt is not None:
                ev = await self.storage.events.get_event(receipt.event_id)
                if ev is not None:
                    positions.append(ev.stream_ordering)
        return max(positions)

    async def notifications(self, user_id: str, *, before: int | None, limit: int, only_highlight: bool) -> tuple[list[dict[str, Any]], list[PushAction]]:
        rows = await self.storage.push_actions.for_user(user_id, before=before, limit=limit, only_highlight=only_highlight)
        events = await self.storage.events.get_events([r.event_id for r in rows])
        read: dict[str, int] = {}
        out = []
        for r in rows:
            if r.room_id not in read:
                read[r.room_id] = await self._read_position(user_id, r.room_id)
            out.append({"actions": r.actions, "room_id": r.room_id, "ts": r.ts, "read": r.stream_ordering <= read[r.room_id],
                        "event_id": r.event_id})
        return [o for o in out if o["event_id"] in events], rows
