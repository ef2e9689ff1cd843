"""State snapshots: deltas with bounded chains, read back identically with or without the cache."""

from __future__ import annotations

import random

import pytest

from homeserver.storage import Storage
from homeserver.storage.state import MAX_CHAIN, StateStore


@pytest.fixture
async def state(db_url: str):
    s = await Storage.open(db_url)
    yield StateStore(s.db)
    await s.close()


async def test_delta_chain_round_trips(state: StateStore) -> None:
    rng = random.Random(7)
    expected: dict[int, dict] = {}
    current = {("m.room.create", ""): "$create", ("m.room.power_levels", ""): "$pl"}
    parent = None
    for i in range(MAX_CHAIN * 2 + 5):
        current = dict(current)
        current[("m.room.member", f"@u{rng.randrange(40)}:hs1.test")] = f"$m{i}"
        if i % 17 == 0 and len(current) > 3:
            current.pop(sorted(k for k in current if k[0] == "m.room.member")[0])
        async with state.db.transaction() as conn:
            parent = await state.create_snapshot(conn, "!r:hs1.test", current, parent)
        expected[parent] = current
    state.forget()
    for sid, want in expected.items():
        assert await state.get_state(sid) == want
    # Chains are bounded, and most snapshots are small deltas.
    rows = await state.db.fetch("SELECT MAX(chain_length), COUNT(*) FROM state_snapshots")
    assert rows[0][0] < MAX_CHAIN
    entries = await state.db.fetchval("SELECT COUNT(*) FROM state_snapshot_entries")
    full_cost = sum(len(v) for v in expected.values())
    assert entries < full_cost / 5


async def test_removal_recorded(state: StateStore) -> None:
    base = {(f"t{i}", ""): f"$e{i}" for i in range(3)}
    async with state.db.transaction() as conn:
        a = await state.create_snapshot(conn, "!r:x", base)
        smaller = {k: v for k, v in base.items() if k != ("t1", "")}
        b = await state.create_snapshot(conn, "!r:x", smaller, a)
    state.forget()
    assert await state.get_state(b) == smaller
    assert await state.get_state(a) == base


async def test_unknown_snapshot(state: StateStore) -> None:
    with pytest.raises(KeyError):
        await state.get_state(12345)


async def test_returned_state_is_a_copy(state: StateStore) -> None:
    async with state.db.transaction() as conn:
        a = await state.create_snapshot(conn, "!r:x", {("a", ""): "$a"})
    got = await state.get_state(a)
    got[("b", "")] = "$b"
    assert await state.get_state(a) == {("a", ""): "$a"}
