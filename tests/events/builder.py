"""Builds rooms of real (hashed, ID'd) events for event-core tests, without a server."""

from __future__ import annotations

import itertools
from typing import Any

from homeserver.events import auth_types_for_event, event_id, get_room_version
from homeserver.events.hashes import add_content_hash, compute_room_id

ALICE, BOB, CAROL, EVE = "@alice:a.test", "@bob:b.test", "@carol:a.test", "@eve:e.test"


class RoomBuilder:
    """Tracks state and the DAG so each new event gets correct auth_events, prev_events and depth."""

    def __init__(self, version: str = "10", creator: str = ALICE, create_content: dict | None = None) -> None:
        self.rv = get_room_version(version)
        self.events: dict[str, dict[str, Any]] = {}
        self.state: dict[tuple[str, str], str] = {}
        self.head: list[str] = []
        self.depth = 0
        self._ts = itertools.count(1000, 10)
        content = {"room_version": version, **(create_content or {})}
        if not self.rv.creator_is_sender:
            content.setdefault("creator", creator)
        create = {"type": "m.room.create", "state_key": "", "sender": creator, "content": content,
                  "prev_events": [], "auth_events": [], "depth": 1, "origin_server_ts": next(self._ts)}
        if self.rv.room_id_from_create_event:
            create = add_content_hash(create)
            self.room_id = compute_room_id(create)
        else:
            self.room_id = f"!room:{creator.split(':')[1]}"
            create["room_id"] = self.room_id
            create = add_content_hash(create)
        self.create_id = event_id(create, self.rv)
        self._store(self.create_id, create)

    def _store(self, eid: str, ev: dict[str, Any]) -> None:
        self.events[eid] = ev
        if "state_key" in ev:
            self.state[(ev["type"], ev["state_key"])] = eid
        self.head = [eid]
        self.depth = ev["depth"]

    def build(self, etype: str, sender: str, content: dict[str, Any], state_key: str | None = None,
              *, prev: list[str] | None = None, state: dict | None = None, **extra: Any) -> dict[str, Any]:
        """An event as it would be created now (not stored); ``state`` overrides the state to draw auth from."""
        state = self.state if state is None else state
        ev: dict[str, Any] = {"room_id": self.room_id, "type": etype, "sender": sender, "content": content,
                              "prev_events": list(prev if prev is not None else self.head),
                              "depth": self.depth + 1, "origin_server_ts": next(self._ts), **extra}
        if state_key is not None:
            ev["state_key"] = state_key
        keys = auth_types_for_event(ev, self.rv)
        ev["auth_events"] = sorted(state[k] for k in keys if k in state)
        return add_content_hash(ev)

    def add(self, etype: str, sender: str, content: dict[str, Any], state_key: str | None = None, **kw: Any) -> str:
        ev = self.build(etype, sender, content, state_key, **kw)
        eid = event_id(ev, self.rv)
        self._store(eid, ev)
        return eid

    def auth_for(self, ev: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
        """What a server passes to check_auth: the listed auth events plus (v12) the create event."""
        out = {}
        for aid in ev["auth_events"]:
            a = self.events[aid]
            out[(a["type"], a["state_key"])] = a
        out[("m.room.create", "")] = self.events[self.create_id]
        return out

    def standard(self, join_rule: str = "public", users: dict[str, int] | None = None) -> "RoomBuilder":
        """Creator joined, power levels, join rules: the usual start of a room."""
        creator = self.events[self.create_id]["sender"]
        self.add("m.room.member", creator, {"membership": "join"}, creator)
        pl_users = {} if self.rv.privileged_creators else {creator: 100}
        pl_users.update(users or {})
        self.add("m.room.power_levels", creator, {"users": pl_users, "users_default": 0, "events_default": 0,
                                                  "state_default": 50, "ban": 50, "kick": 50, "redact": 50,
                                                  "invite": 0, "events": {"m.room.power_levels": 100}}, "")
        self.add("m.room.join_rules", creator, {"join_rule": join_rule}, "")
        return self
