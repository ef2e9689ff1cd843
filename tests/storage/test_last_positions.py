"""The batched "newest event per room" query sliding sync sorts with, on SQLite and PostgreSQL: the same
answers as asking room by room, with the type filter, the upper bound, and outliers/rejected skipped."""

from __future__ import annotations

from typing import AsyncIterator

import pytest

from homeserver.storage import Storage
from homeserver.storage.sequences import next_id


@pytest.fixture
async def storage(db_url: str) -> AsyncIterator[Storage]:
    s = await Storage.open(db_url)
    yield s
    await s.close()


async def _event(storage: Storage, room: str, etype: str, *, outlier: bool = False) -> int:
    async with storage.db.transaction() as conn:
        pos = await next_id(conn, "events_stream")
        eid = f"${room}-{pos}"
        pdu = {"type": etype, "room_id": room, "sender": "@a:hs1.test", "content": {}, "origin_server_ts": pos,
               "depth": pos, "prev_events": [], "auth_events": []}
        await storage.events.persist_event(conn, eid, pdu, stream_ordering=pos if not outlier else -pos,
                                           state_after=None, room_id=room, outlier=outlier)
    return pos


async def test_batched_positions_match_one_by_one(storage: Storage) -> None:
    rooms = [f"!r{i}:hs1.test" for i in range(5)]
    for room in rooms:
        async with storage.db.transaction() as conn:
            await storage.events.create_room(conn, room, "12", "@a:hs1.test", 0)
    await _event(storage, rooms[0], "m.room.message")
    await _event(storage, rooms[0], "m.room.member")
    await _event(storage, rooms[1], "m.room.encrypted")
    cut = await _event(storage, rooms[2], "m.room.message")
    await _event(storage, rooms[2], "m.room.message")   # after the bound
    await _event(storage, rooms[3], "m.room.topic", outlier=True)  # outliers are not timeline
    # rooms[4] has no events at all
    for upto in (cut, 10_000):
        for types in (None, ("m.room.message", "m.room.encrypted")):
            batched = await storage.events.last_positions(rooms, upto, types)
            single = {}
            for room in rooms:
                pos = await storage.events.last_position(room, upto, types)
                if pos is not None:
                    single[room] = pos
            assert batched == single, (upto, types)
    everything = await storage.events.last_positions(rooms, 10_000)
    assert set(everything) == set(rooms[:3])
    assert (await storage.events.last_positions(rooms, 10_000, ("m.room.message",)))[rooms[0]] < everything[rooms[0]]
    assert await storage.events.last_positions([], 10_000) == {}
