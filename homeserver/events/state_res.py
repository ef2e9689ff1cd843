"""State resolution v2 (room versions 6-11) and v2.1 (MSC4297, room version 12).

Follows the spec's steps: split into unconflicted and conflicted state; build the full conflicted
set (conflicted events, the auth difference, and for v2.1 the conflicted state subgraph); order the
power events by reverse topological power ordering and run iterative auth checks on them (v2 from the
unconflicted state, v2.1 from an empty state); order the rest by mainline and auth-check them on top;
finally overlay the unconflicted state. Everything is iterative: rooms have long auth chains.
"""

from __future__ import annotations

import heapq
from typing import Any, Iterable, Mapping, Sequence

from homeserver.events.auth import AuthError, auth_types_for_event, check_auth, sender_power_level
from homeserver.events.hashes import create_event_id_for_room
from homeserver.events.room_versions import RoomVersion, StateResAlgorithm, get_room_version

Event = Mapping[str, Any]
StateKey = tuple[str, str]
StateMap = Mapping[StateKey, str]


def _auth_ids(event: Event, rv: RoomVersion) -> list[str]:
    ids = list(event.get("auth_events") or [])
    if rv.room_id_from_create_event and event.get("type") != "m.room.create" and isinstance(event.get("room_id"), str):
        ids.append(create_event_id_for_room(event["room_id"]))
    return ids


class AuthChains:
    """Auth chains over an event map, memoised: each event's full set of auth ancestors."""

    def __init__(self, event_map: Mapping[str, Event], rv: RoomVersion) -> None:
        self.event_map = event_map
        self.rv = rv
        self._memo: dict[str, frozenset[str]] = {}

    def chain(self, event_id: str) -> frozenset[str]:
        if event_id in self._memo:
            return self._memo[event_id]
        # Post-order DFS without recursion.
        stack: list[tuple[str, bool]] = [(event_id, False)]
        while stack:
            eid, expanded = stack.pop()
            if eid in self._memo:
                continue
            ev = self.event_map.get(eid)
            parents = [p for p in _auth_ids(ev, self.rv)] if ev is not None else []
            if not expanded:
                stack.append((eid, True))
                stack.extend((p, False) for p in parents if p not in self._memo and p in self.event_map)
                continue
            acc: set[str] = set()
            for p in parents:
                acc.add(p)
                if p in self._memo:
                    acc |= self._memo[p]
            self._memo[eid] = frozenset(acc)
        return self._memo[event_id]


def auth_chain(event_ids: Iterable[str], event_map: Mapping[str, Event], room_version: str | RoomVersion) -> set[str]:
    """The union of the auth chains of ``event_ids`` (federation's /event_auth and state answers)."""
    chains = AuthChains(event_map, get_room_version(room_version))
    out: set[str] = set()
    for eid in event_ids:
        out |= chains.chain(eid)
    return out


def _split(state_sets: Sequence[StateMap]) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    keys: set[StateKey] = set()
    for s in state_sets:
        keys |= set(s)
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    for k in keys:
        values = {s.get(k) for s in state_sets}
        if len(values) == 1 and None not in values:
            unconflicted[k] = next(iter(values))  # type: ignore[assignment]
        else:
            conflicted[k] = {v for v in values if v is not None}
    return unconflicted, conflicted


def _is_power_event(ev: Event) -> bool:
    etype = ev.get("type")
    if etype in ("m.room.power_levels", "m.room.join_rules", "m.room.create") and ev.get("state_key") == "":
        return True
    if etype == "m.room.member":
        membership = (ev.get("content") or {}).get("membership")
        return membership in ("leave", "ban") and ev.get("sender") != ev.get("state_key")
    return False


def _conflicted_subgraph(conflicted_ids: set[str], chains: AuthChains) -> set[str]:
    """v2.1: events on an auth path between two conflicted events (both ancestor and descendant)."""
    ancestors: set[str] = set()
    for eid in conflicted_ids:
        ancestors |= chains.chain(eid)
    out = set()
    for eid in ancestors | conflicted_ids:
        if eid in conflicted_ids:
            continue
        if chains.chain(eid) & conflicted_ids:
            out.add(eid)
    return out


def _auth_map_for(ev: Event, rv: RoomVersion, event_map: Mapping[str, Event]) -> dict[StateKey, Event]:
    out: dict[StateKey, Event] = {}
    for aid in _auth_ids(ev, rv):
        a = event_map.get(aid)
        if a is not None and "state_key" in a:
            out[(a["type"], a["state_key"])] = a
    return out


def _power_of(eid: str, event_map: Mapping[str, Event], rv: RoomVersion, memo: dict[str, float]) -> float:
    if eid not in memo:
        ev = event_map[eid]
        memo[eid] = sender_power_level(ev, _auth_map_for(ev, rv, event_map), rv)
    return memo[eid]


def _reverse_topological_power_sort(
    ids: set[str], event_map: Mapping[str, Event], rv: RoomVersion, chains: AuthChains,
) -> list[str]:
    """Kahn's algorithm over the auth graph restricted to ``ids``; ties broken by (highest sender power,
    earliest origin_server_ts, smallest event ID)."""
    graph: dict[str, set[str]] = {eid: {p for p in _auth_ids(event_map[eid], rv) if p in ids} for eid in ids}
    children: dict[str, set[str]] = {eid: set() for eid in ids}
    for eid, parents in graph.items():
        for p in parents:
            children[p].add(eid)
    power_memo: dict[str, float] = {}

    def sort_key(eid: str) -> tuple[float, int, str]:
        ev = event_map[eid]
        return (-_power_of(eid, event_map, rv, power_memo), int(ev.get("origin_server_ts", 0)), eid)

    indegree = {eid: len(parents) for eid, parents in graph.items()}
    heap = [(sort_key(eid), eid) for eid, d in indegree.items() if d == 0]
    heapq.heapify(heap)
    out = []
    while heap:
        _, eid = heapq.heappop(heap)
        out.append(eid)
        for child in children[eid]:
            indegree[child] -= 1
            if indegree[child] == 0:
                heapq.heappush(heap, (sort_key(child), child))
    return out


def _iterative_auth_checks(
    ordered: Iterable[str], base: Mapping[StateKey, str], event_map: Mapping[str, Event], rv: RoomVersion,
) -> dict[StateKey, str]:
    state = dict(base)
    for eid in ordered:
        ev = event_map[eid]
        if ev.get("rejected"):
            continue
        auth: dict[StateKey, Event] = _auth_map_for(ev, rv, event_map)
        for key in auth_types_for_event(ev, rv) | ({("m.room.create", "")} if rv.room_id_from_create_event else set()):
            if key in state and state[key] in event_map:
                auth[key] = event_map[state[key]]
        try:
            check_auth(ev, auth, rv)
        except AuthError:
            continue
        if "state_key" in ev:
            state[(ev["type"], ev["state_key"])] = eid
    return state


def _mainline_sort(
    ids: list[str], resolved_power: str | None, event_map: Mapping[str, Event], rv: RoomVersion,
) -> list[str]:
    mainline: list[str] = []
    current = resolved_power
    while current is not None and current in event_map:
        mainline.append(current)
        current = _power_levels_parent(event_map[current], event_map, rv)
    position = {eid: len(mainline) - i for i, eid in enumerate(mainline)}  # oldest gets 1

    def depth_of(eid: str) -> int:
        current: str | None = eid
        seen = set()
        while current is not None and current not in seen:
            if current in position:
                return position[current]
            seen.add(current)
            current = _power_levels_parent(event_map[current], event_map, rv) if current in event_map else None
        return 0

    return sorted(ids, key=lambda e: (depth_of(e), int(event_map[e].get("origin_server_ts", 0)), e))


def _power_levels_parent(ev: Event, event_map: Mapping[str, Event], rv: RoomVersion) -> str | None:
    for aid in _auth_ids(ev, rv):
        a = event_map.get(aid)
        if a is not None and a.get("type") == "m.room.power_levels" and a.get("state_key") == "":
            return aid
    return None


def resolve_state(
    room_version: str | RoomVersion, state_sets: Sequence[StateMap], event_map: Mapping[str, Event],
) -> dict[StateKey, str]:
    """Resolve several state maps of one room into one, as every server must."""
    rv = get_room_version(room_version)
    if not state_sets:
        return {}
    unconflicted, conflicted = _split(state_sets)
    if not conflicted:
        return dict(unconflicted)
    chains = AuthChains(event_map, rv)
    set_chains = []
    for s in state_sets:
        acc: set[str] = set()
        for eid in s.values():
            if eid in event_map:
                acc |= chains.chain(eid) | {eid}
        set_chains.append(acc)
    union = set().union(*set_chains)
    intersection = set.intersection(*set_chains) if set_chains else set()
    auth_difference = union - intersection
    conflicted_ids = {eid for ids in conflicted.values() for eid in ids}
    full = (conflicted_ids | auth_difference)
    if rv.state_res is StateResAlgorithm.V2_1:
        full |= _conflicted_subgraph({e for e in conflicted_ids if e in event_map}, chains)
    full = {e for e in full if e in event_map}

    power_ids = {e for e in full if _is_power_event(event_map[e])}
    # Power events plus those of their auth ancestors that are in the full conflicted set.
    with_ancestors = set(power_ids)
    for e in power_ids:
        with_ancestors |= chains.chain(e) & full
    sorted_power = _reverse_topological_power_sort(with_ancestors, event_map, rv, chains)
    base: Mapping[StateKey, str] = {} if rv.state_res is StateResAlgorithm.V2_1 else unconflicted
    partial = _iterative_auth_checks(sorted_power, base, event_map, rv)

    others = [e for e in full if e not in with_ancestors]
    resolved_power = partial.get(("m.room.power_levels", ""))
    ordered_rest = _mainline_sort(others, resolved_power, event_map, rv)
    partial = _iterative_auth_checks(ordered_rest, partial, event_map, rv)
    partial.update(unconflicted)
    return partial
