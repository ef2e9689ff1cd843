"""The remote device-list cache's store on SQLite and PostgreSQL: who is tracked (from current state),
the stale rules for fetches racing EDUs, the compare-and-set that applies an EDU, and the joins that
make a cached list stale."""

from __future__ import annotations

from typing import AsyncIterator

import pytest

from homeserver.storage import Storage

LOCAL = "hs1.test"
ALICE, CAROL = f"@alice:{LOCAL}", f"@carol:{LOCAL}"
BOB, DAN = "@bob:hs2.test", "@dan:hs2.test"
# Would pass a LIKE '%:hs1.test' on SQLite (case-insensitive) but is not local.
LOOKALIKE = "@eve:HS1.TEST"


@pytest.fixture
async def storage(db_url: str) -> AsyncIterator[Storage]:
    s = await Storage.open(db_url)
    yield s
    await s.close()


async def _member(storage: Storage, room: str, user: str, membership: str) -> None:
    eid = f"${room}-{user}-{membership}"
    async with storage.db.transaction() as conn:
        await storage.events.update_current_state(conn, room, {("m.room.member", user): eid}, {eid: membership})


async def _cache(storage: Storage, user: str, stream_id: int = 5) -> None:
    await storage.remote_devices.replace(user, stream_id, {"D1": ({"device_id": "D1"}, "phone")},
                                         {"usage": ["master"]}, None, now=1000)


async def test_tracked_means_sharing_a_joined_room_with_a_local_user(storage: Storage) -> None:
    await _member(storage, "!a", ALICE, "join")
    await _member(storage, "!a", BOB, "join")
    await _member(storage, "!b", CAROL, "invite")
    await _member(storage, "!b", DAN, "join")
    await _member(storage, "!c", LOOKALIKE, "join")
    await _member(storage, "!c", "@frank:hs3.test", "join")
    tracked = await storage.remote_devices.tracked([BOB, DAN, "@frank:hs3.test", "@nobody:hs2.test"], LOCAL)
    assert tracked == {BOB}
    await _member(storage, "!a", ALICE, "leave")
    assert await storage.remote_devices.tracked([BOB], LOCAL) == set()


async def test_a_fetch_stays_stale_if_an_update_newer_than_it_arrived(storage: Storage) -> None:
    store = storage.remote_devices
    await _cache(storage, BOB, 5)
    held = (await store.get([BOB]))[BOB]
    assert (held.stream_id, held.stale, held.fetched_ts) == (5, False, 1000)
    assert held.devices == {"D1": ({"device_id": "D1"}, "phone")} and held.master_key == {"usage": ["master"]}
    # An EDU at 9 shows a gap: stale, and 9 remembered.
    await store.mark_stale(BOB, 9)
    assert await store.position(BOB) == (9, True)
    await store.mark_stale(BOB, 7)  # an older one does not lower it
    assert await store.position(BOB) == (9, True)
    # A fetch answering at 8 began before the update at 9: stored, but still stale, at its own position.
    assert await store.replace(BOB, 8, {}, None, None, now=2000) is False
    assert await store.position(BOB) == (8, True)
    assert (await store.get([BOB]))[BOB].devices == {}
    # The next fetch, at 9, is fresh.
    assert await store.replace(BOB, 9, {"D2": ({"device_id": "D2"}, None)}, None, None, now=3000) is True
    held = (await store.get([BOB]))[BOB]
    assert (held.stream_id, held.stale, held.fetched_ts, list(held.devices)) == (9, False, 3000, ["D2"])


async def test_an_update_applies_only_from_the_position_it_follows(storage: Storage) -> None:
    store = storage.remote_devices
    await _cache(storage, BOB, 5)
    async with storage.db.transaction() as conn:
        assert await store.advance(conn, BOB, 4, 6) is False  # someone else moved it
        assert await store.advance(conn, BOB, 5, 6) is True
        await store.put_device(conn, BOB, "D2", {"device_id": "D2"}, "laptop")
        await store.delete_device(conn, BOB, "D1")
        await store.rename_device(conn, BOB, "D2", None)
    held = (await store.get([BOB]))[BOB]
    assert (held.stream_id, held.stale) == (6, False) and held.devices == {"D2": ({"device_id": "D2"}, None)}
    await store.set_cross_signing(BOB, None, {"usage": ["self_signing"]})
    held = (await store.get([BOB]))[BOB]
    assert held.master_key == {"usage": ["master"]} and held.self_signing_key == {"usage": ["self_signing"]}
    await store.forget([BOB, DAN])
    assert await store.get([BOB]) == {} and await store.position(BOB) is None


async def test_joins_that_start_sharing_a_room_make_the_cache_stale(storage: Storage) -> None:
    store = storage.remote_devices
    await _member(storage, "!a", ALICE, "join")
    await _member(storage, "!a", BOB, "join")
    await _member(storage, "!b", ALICE, "join")
    await _cache(storage, BOB)
    await _cache(storage, DAN)
    # bob joins !b while already sharing !a with alice: his server kept us informed, nothing is stale.
    await _member(storage, "!b", BOB, "join")
    await store.mark_stale_after_remote_join(BOB, "!b", LOCAL)
    assert await store.position(BOB) == (5, False)
    # dan shared nothing, then joins !b: stale.
    await _member(storage, "!b", DAN, "join")
    await store.mark_stale_after_remote_join(DAN, "!b", LOCAL)
    assert await store.position(DAN) == (5, True)

    # carol joins !c, where bob and dan are: bob still shares !a with alice, dan only !b, which alice is in.
    await _cache(storage, DAN)
    await _member(storage, "!c", BOB, "join")
    await _member(storage, "!c", DAN, "join")
    await _member(storage, "!c", CAROL, "join")
    await store.mark_stale_after_local_join("!c", CAROL, LOCAL)
    assert await store.position(BOB) == (5, False) and await store.position(DAN) == (5, False)
    # After alice leaves !a and !b, carol joining !d with bob means bob started sharing again.
    await _member(storage, "!a", ALICE, "leave")
    await _member(storage, "!b", ALICE, "leave")
    await _member(storage, "!c", CAROL, "leave")
    await _member(storage, "!d", BOB, "join")
    await _member(storage, "!d", CAROL, "join")
    await store.mark_stale_after_local_join("!d", CAROL, LOCAL)
    assert await store.position(BOB) == (5, True) and await store.position(DAN) == (5, False)
