"""Room state where the room's graph forks: the state before an event with several prev events, and
a room's current state across several forward extremities, both by the room version's state
resolution. Servers in a federated room see events in different orders; resolution is what makes them
agree on the state regardless.

Most forks carry no conflicting state (two servers sent messages at once): then the sets are merged
without loading anything. Only a real conflict loads the auth chains the algorithm needs.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from homeserver.events import resolve_state
from homeserver.storage import Storage
from homeserver.storage.events import StoredEvent
from homeserver.storage.state import StateKey, StateMap, StateStore


class StateResolver:
    def __init__(self, storage: Storage, state: StateStore) -> None:
        self.storage = storage
        self.state = state

    async def state_after(self, ev: StoredEvent) -> StateMap | None:
        """The state once ``ev`` is applied, or None if it is not known here (outliers, soft-failed)."""
        if ev.state_after is None or ev.outlier:
            return None
        return await self.state.get_state(ev.state_after)

    async def resolve(self, room_version: str, state_sets: Sequence[StateMap],
                      unstored: Mapping[str, Mapping[str, Any]] | None = None) -> StateMap:
        """``unstored``: events named in the sets that are not in the database yet (the one being
        persisted), by ID."""
        distinct: list[StateMap] = []
        for s in state_sets:
            if not any(s == d for d in distinct):
                distinct.append(s)
        if not distinct:
            return {}
        if len(distinct) == 1:
            return dict(distinct[0])
        if not _conflicts(distinct):
            merged: StateMap = {}
            for s in distinct:
                merged.update(s)
            return merged
        event_map = await self._with_auth_chains((eid for s in distinct for eid in s.values()), unstored or {})
        return resolve_state(room_version, distinct, event_map)

    async def _with_auth_chains(self, start: Iterable[str], unstored: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        """The events named and every auth ancestor of them that is held here, as PDUs keyed by ID."""
        out: dict[str, dict[str, Any]] = {}
        todo = list(dict.fromkeys(start))
        while todo:
            found = {eid: pdu for eid, pdu in unstored.items() if eid in todo}
            found.update({eid: ev.pdu for eid, ev in (await self.storage.events.get_events(todo)).items()})
            todo = []
            for eid, pdu in found.items():
                # The auth rules identify events (the create event above all) by their ID.
                out[eid] = {**pdu, "event_id": eid}
            for pdu in found.values():
                for aid in pdu.get("auth_events") or []:
                    if aid not in out and aid not in todo:
                        todo.append(aid)
            todo = [t for t in todo if t not in out]
        return out


def _conflicts(sets: Sequence[StateMap]) -> bool:
    keys: set[StateKey] = set().union(*(s.keys() for s in sets))
    for k in keys:
        first = sets[0].get(k)
        if any(s.get(k) != first for s in sets[1:]):
            return True
    return False
