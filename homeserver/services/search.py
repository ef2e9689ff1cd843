"""POST /search: full-text search over the rooms a user is in, ranked or most recent first."""

from __future__ import annotations

from typing import Any

from homeserver.errors import MatrixError
from homeserver.services.client_events import ClientEventFormatter
from homeserver.services.filters import EventFilter
from homeserver.services.visibility import VisibilityService
from homeserver.storage import Storage
from homeserver.storage.search import SEARCHABLE, search_words

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
MAX_CONTEXT = 20


class SearchService:
    def __init__(self, storage: Storage, formatter: ClientEventFormatter, visibility: VisibilityService) -> None:
        self.storage = storage
        self.formatter = formatter
        self.visibility = visibility

    async def search(self, user_id: str, device_id: str, body: dict[str, Any], next_batch: str | None) -> dict[str, Any]:
        cats = body.get("search_categories")
        if not isinstance(cats, dict):
            raise MatrixError(400, "M_BAD_JSON", "search_categories must be an object")
        crit = cats.get("room_events")
        if crit is None:
            return {"search_categories": {}}
        if not isinstance(crit, dict):
            raise MatrixError(400, "M_BAD_JSON", "room_events must be an object")
        term = crit.get("search_term")
        if not isinstance(term, str):
            raise MatrixError(400, "M_MISSING_PARAM" if term is None else "M_BAD_JSON", "search_term must be a string")
        keys = crit.get("keys", list(SEARCHABLE.values()))
        if not isinstance(keys, list) or not all(k in SEARCHABLE.values() for k in keys):
            raise MatrixError(400, "M_BAD_JSON", f"keys must be a list of {sorted(SEARCHABLE.values())}")
        order_by = crit.get("order_by", "rank")
        if order_by not in ("rank", "recent"):
            raise MatrixError(400, "M_BAD_JSON", "order_by must be 'rank' or 'recent'")
        flt_raw = crit.get("filter") or {}
        flt = EventFilter.parse(flt_raw, "filter")
        rooms_filter = flt_raw.get("rooms") if isinstance(flt_raw, dict) else None
        not_rooms = flt_raw.get("not_rooms") or [] if isinstance(flt_raw, dict) else []
        limit = min(flt.limit if flt.limit is not None else DEFAULT_LIMIT, MAX_LIMIT)
        context = crit.get("event_context")
        if context is not None and not isinstance(context, dict):
            raise MatrixError(400, "M_BAD_JSON", "event_context must be an object")
        offset = 0
        if next_batch:
            if not next_batch.startswith("o") or not next_batch[1:].isdigit():
                raise MatrixError(400, "M_INVALID_PARAM", "Invalid next_batch")
            offset = int(next_batch[1:])

        joined = await self.storage.events.rooms_for_user(user_id, ("join",))
        room_ids = [r for r in sorted(joined) if (rooms_filter is None or r in rooms_filter) and r not in not_rooms]
        hits, total = await self.storage.search.search(
            room_ids, term, keys, order_recent=order_by == "recent", offset=offset, limit=limit,
        )
        events = await self.storage.events.get_events([eid for eid, _ in hits])
        candidates = [events[eid] for eid, _ in hits if eid in events and flt.allows(events[eid].type, events[eid].sender)]
        visible = {e.event_id for e in await self.visibility.filter(user_id, candidates, currently_joined=True)}
        ranks = dict(hits)
        shown = [e for e in candidates if e.event_id in visible]
        formatted = await self.formatter.format(shown, user_id=user_id, device_id=device_id)
        results = []
        for ev, fmt in zip(shown, formatted):
            item: dict[str, Any] = {"rank": ranks[ev.event_id], "result": fmt}
            if context is not None:
                item["context"] = await self._context(user_id, device_id, ev, context)
            results.append(item)
        out: dict[str, Any] = {"results": results, "count": total, "highlights": search_words(term)}
        if offset + len(hits) < total:
            out["next_batch"] = f"o{offset + len(hits)}"
        if crit.get("include_state"):
            state: dict[str, list[dict[str, Any]]] = {}
            for room_id in sorted({e.room_id for e in shown}):
                ids = await self.storage.events.get_current_state_ids(room_id)
                evs = await self.storage.events.get_events(ids.values())
                state[room_id] = await self.formatter.format(sorted(evs.values(), key=lambda e: e.stream_ordering))
            out["state"] = state
        groupings = (crit.get("groupings") or {}).get("group_by") if isinstance(crit.get("groupings"), dict) else None
        if groupings:
            groups: dict[str, dict[str, Any]] = {}
            for g in groupings:
                key = g.get("key") if isinstance(g, dict) else None
                if key not in ("room_id", "sender"):
                    raise MatrixError(400, "M_BAD_JSON", "groupings may be by room_id or sender")
                bucket: dict[str, Any] = {}
                for order, ev in enumerate(shown):
                    value = ev.room_id if key == "room_id" else ev.sender
                    bucket.setdefault(value, {"results": [], "order": order})["results"].append(ev.event_id)
                groups[key] = bucket
            out["groups"] = groups
        return {"search_categories": {"room_events": out}}

    async def _context(self, user_id: str, device_id: str, ev: Any, spec: dict[str, Any]) -> dict[str, Any]:
        before_n = min(int(spec.get("before_limit", 5)), MAX_CONTEXT)
        after_n = min(int(spec.get("after_limit", 5)), MAX_CONTEXT)
        before = await self.storage.events.room_events(ev.room_id, upto=ev.stream_ordering - 1, limit=before_n, backwards=True)
        after = await self.storage.events.room_events(ev.room_id, after=ev.stream_ordering, limit=after_n, backwards=False)
        before = await self.visibility.filter(user_id, before, currently_joined=True)
        after = await self.visibility.filter(user_id, after, currently_joined=True)
        out: dict[str, Any] = {
            "events_before": await self.formatter.format(before, user_id=user_id, device_id=device_id),
            "events_after": await self.formatter.format(after, user_id=user_id, device_id=device_id),
            "start": f"t{(before[-1].stream_ordering if before else ev.stream_ordering) - 1}",
            "end": f"t{after[-1].stream_ordering if after else ev.stream_ordering}",
        }
        if spec.get("include_profile"):
            senders = {e.sender for e in before + after + [ev]}
            profiles = await self.storage.users.get_profiles(sorted(senders))
            out["profile_info"] = {u: {k: p.get(k) for k in ("displayname", "avatar_url")} for u, p in profiles.items()}
        return out
