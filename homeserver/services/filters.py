"""Event filters (the spec's Filter object): stored per user, or given inline to /sync."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

import orjson

from homeserver.errors import MatrixError
from homeserver.storage import Storage

MAX_TIMELINE_LIMIT = 1000
DEFAULT_TIMELINE_LIMIT = 10


def _str_list(obj: dict[str, Any], key: str, where: str) -> list[str] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MatrixError(400, "M_BAD_JSON", f"{where}.{key} must be a list of strings")
    return value


@dataclass
class EventFilter:
    types: list[str] | None = None
    not_types: list[str] = field(default_factory=list)
    senders: list[str] | None = None
    not_senders: list[str] = field(default_factory=list)
    limit: int | None = None
    unread_thread_notifications: bool = False

    @classmethod
    def parse(cls, obj: Any, where: str) -> "EventFilter":
        if obj is None:
            return cls()
        if not isinstance(obj, dict):
            raise MatrixError(400, "M_BAD_JSON", f"{where} must be an object")
        limit = obj.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise MatrixError(400, "M_BAD_JSON", f"{where}.limit must be a non-negative integer")
        threaded = obj.get("unread_thread_notifications", False)
        if not isinstance(threaded, bool):
            raise MatrixError(400, "M_BAD_JSON", f"{where}.unread_thread_notifications must be a boolean")
        return cls(
            types=_str_list(obj, "types", where), not_types=_str_list(obj, "not_types", where) or [],
            senders=_str_list(obj, "senders", where), not_senders=_str_list(obj, "not_senders", where) or [],
            limit=limit, unread_thread_notifications=threaded,
        )

    def allows(self, event_type: str, sender: str) -> bool:
        if any(fnmatch.fnmatchcase(event_type, p) for p in self.not_types):
            return False
        if self.types is not None and not any(fnmatch.fnmatchcase(event_type, p) for p in self.types):
            return False
        if sender in self.not_senders:
            return False
        if self.senders is not None and sender not in self.senders:
            return False
        return True


@dataclass
class SyncFilter:
    timeline: EventFilter = field(default_factory=EventFilter)
    state: EventFilter = field(default_factory=EventFilter)
    rooms: list[str] | None = None
    not_rooms: list[str] = field(default_factory=list)
    include_leave: bool = False
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def timeline_limit(self) -> int:
        limit = self.timeline.limit if self.timeline.limit is not None else DEFAULT_TIMELINE_LIMIT
        return min(limit, MAX_TIMELINE_LIMIT)

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    @classmethod
    def parse(cls, obj: Any) -> "SyncFilter":
        if not isinstance(obj, dict):
            raise MatrixError(400, "M_BAD_JSON", "filter must be an object")
        room = obj.get("room", {})
        if not isinstance(room, dict):
            raise MatrixError(400, "M_BAD_JSON", "room must be an object")
        state_obj = room.get("state")
        lazy = False
        redundant = False
        if isinstance(state_obj, dict):
            lazy = state_obj.get("lazy_load_members", False)
            redundant = state_obj.get("include_redundant_members", False)
            if not isinstance(lazy, bool) or not isinstance(redundant, bool):
                raise MatrixError(400, "M_BAD_JSON", "room.state.lazy_load_members must be a boolean")
        include_leave = room.get("include_leave", False)
        if not isinstance(include_leave, bool):
            raise MatrixError(400, "M_BAD_JSON", "room.include_leave must be a boolean")
        for key in ("event_fields",):
            if key in obj:
                _str_list(obj, key, "filter")
        if obj.get("event_format", "client") not in ("client", "federation"):
            raise MatrixError(400, "M_BAD_JSON", "event_format must be 'client' or 'federation'")
        return cls(
            timeline=EventFilter.parse(room.get("timeline"), "room.timeline"),
            state=EventFilter.parse(state_obj, "room.state"),
            rooms=_str_list(room, "rooms", "room"), not_rooms=_str_list(room, "not_rooms", "room") or [],
            include_leave=include_leave, lazy_load_members=lazy, include_redundant_members=redundant, raw=obj,
        )


class FilterService:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def create(self, user_id: str, body: dict[str, Any]) -> str:
        SyncFilter.parse(body)  # validate before storing
        return str(await self.storage.filters.add(user_id, body))

    async def get_raw(self, user_id: str, filter_id: str) -> dict[str, Any]:
        if not filter_id.isdigit():
            raise MatrixError(404, "M_NOT_FOUND", "No such filter")
        raw = await self.storage.filters.get(user_id, int(filter_id))
        if raw is None:
            raise MatrixError(404, "M_NOT_FOUND", "No such filter")
        return raw

    async def resolve(self, user_id: str, param: str | None) -> SyncFilter:
        """/sync's ``filter`` parameter: a stored filter ID or inline JSON."""
        if param is None:
            return SyncFilter()
        if param.startswith("{"):
            try:
                obj = orjson.loads(param)
            except orjson.JSONDecodeError:
                raise MatrixError(400, "M_NOT_JSON", "filter is not valid JSON") from None
            return SyncFilter.parse(obj)
        return SyncFilter.parse(await self.get_raw(user_id, param))
