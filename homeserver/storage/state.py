"""Room state snapshots: deltas against a parent, with a bounded chain, and an in-memory cache.

Synapse's state_groups_state grows with members × state changes when deltas chain badly; here a
snapshot stores only the keys that differ from its parent, a chain is cut (a full snapshot written)
once it reaches ``MAX_CHAIN`` or once the delta stops being small, and resolved snapshots are cached
by ID so hot rooms never touch the database to read state.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable, Mapping

from homeserver.storage.database import Connection, Database
from homeserver.storage.sequences import next_id

StateKey = tuple[str, str]
StateMap = dict[StateKey, str]

MAX_CHAIN = 64
CACHE_SIZE = 2048


class StateStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: OrderedDict[int, StateMap] = OrderedDict()
        self._chain: dict[int, int] = {}

    def _remember(self, snapshot_id: int, state: StateMap) -> None:
        self._cache[snapshot_id] = state
        self._cache.move_to_end(snapshot_id)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    async def create_snapshot(
        self, conn: Connection, room_id: str, state: Mapping[StateKey, str], parent_id: int | None = None,
    ) -> int:
        """Store ``state`` (the full state map) as a new snapshot, as a delta against ``parent_id`` if worthwhile."""
        full = dict(state)
        delta: dict[StateKey, str | None] | None = None
        chain = 0
        if parent_id is not None:
            parent_state = await self.get_state(parent_id, conn)
            parent_chain = await self._chain_length(parent_id, conn)
            if parent_chain + 1 < MAX_CHAIN:
                delta = {k: v for k, v in full.items() if parent_state.get(k) != v}
                delta.update({k: None for k in parent_state if k not in full})
                if len(delta) * 2 > max(len(full), 1) and len(full) > 8:
                    delta = None  # mostly new: a full snapshot is cheaper to read later
                else:
                    chain = parent_chain + 1
        snapshot_id = await next_id(conn, "state_snapshot")
        await conn.execute(
            "INSERT INTO state_snapshots (snapshot_id, room_id, parent_id, chain_length) VALUES ($1, $2, $3, $4)",
            snapshot_id, room_id, parent_id if delta is not None else None, chain,
        )
        entries: Iterable[tuple[StateKey, str | None]] = (delta if delta is not None else full).items()
        await conn.executemany(
            "INSERT INTO state_snapshot_entries (snapshot_id, type, state_key, event_id) VALUES ($1, $2, $3, $4)",
            [(snapshot_id, k[0], k[1], v) for k, v in entries],
        )
        # Not cached here: the caller's transaction may still roll back and the ID be reused.
        return snapshot_id

    def cache_snapshot(self, snapshot_id: int, state: Mapping[StateKey, str]) -> None:
        """Call after the transaction that created ``snapshot_id`` committed, so the next read is free."""
        self._remember(snapshot_id, dict(state))

    async def _chain_length(self, snapshot_id: int, conn: Connection | Database) -> int:
        if snapshot_id in self._chain:
            return self._chain[snapshot_id]
        value = await conn.fetchval("SELECT chain_length FROM state_snapshots WHERE snapshot_id = $1", snapshot_id)
        if value is None:
            raise KeyError(f"unknown state snapshot {snapshot_id}")
        self._chain[snapshot_id] = int(value)
        return int(value)

    async def get_state(self, snapshot_id: int, conn: Connection | Database | None = None) -> StateMap:
        """The full state of a snapshot. Returns a copy callers may change."""
        cached = self._cache.get(snapshot_id)
        if cached is not None:
            self._cache.move_to_end(snapshot_id)
            return dict(cached)
        db = conn or self.db
        # Walk up to the first full snapshot (or a cached one), then apply deltas downwards.
        chain: list[int] = []
        base: StateMap = {}
        current: int | None = snapshot_id
        while current is not None:
            if current in self._cache:
                base = dict(self._cache[current])
                break
            row = await db.fetchrow("SELECT parent_id FROM state_snapshots WHERE snapshot_id = $1", current)
            if row is None:
                raise KeyError(f"unknown state snapshot {current}")
            chain.append(current)
            current = row[0]
        for sid in reversed(chain):
            for row in await db.fetch(
                "SELECT type, state_key, event_id FROM state_snapshot_entries WHERE snapshot_id = $1", sid
            ):
                if row[2] is None:
                    base.pop((row[0], row[1]), None)
                else:
                    base[(row[0], row[1])] = row[2]
            self._remember(sid, dict(base))
        return dict(base)

    async def state_before(self, ev: Any) -> StateMap:
        """State just before a stored event: its state_after with its own entry undone (exact, also for
        forks). ``ev`` is a StoredEvent."""
        state = await self.get_state(ev.state_after) if ev.state_after is not None else {}
        if ev.state_key is not None:
            key = (ev.type, ev.state_key)
            if ev.replaces_state:
                state[key] = ev.replaces_state
            else:
                state.pop(key, None)
        return state

    def forget(self) -> None:
        """Drop cached snapshots (tests use this to prove reads work from the database alone)."""
        self._cache.clear()
        self._chain.clear()
