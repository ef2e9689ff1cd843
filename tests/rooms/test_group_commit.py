"""Group commit: concurrent sends to one room share a transaction, yet each event is built on the one
before it, checked on its own and refused on its own — over HTTP and through the event creator, both
engines."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from homeserver.errors import MatrixError
from tests.rooms.helpers import C, create_room, join
from tests.support.servers import RunningServer


def _count_transactions(server: RunningServer) -> list[int]:
    """Wrap the database's transaction() so the test can see how many were opened."""
    db = server.hs.storage.db
    real = db.transaction
    opened = [0]

    @asynccontextmanager
    async def counting() -> AsyncIterator[Any]:
        opened[0] += 1
        async with real() as conn:
            yield conn

    db.transaction = counting  # type: ignore[method-assign]
    return opened


async def _timeline(server: RunningServer, token: str, room: str) -> list[dict[str, Any]]:
    r = await server.http.get(f"{C}/rooms/{room}/messages", token=token, params={"dir": "f", "limit": "1000"})
    assert r.status == 200
    return r.body["chunk"]


async def test_concurrent_sends_are_one_chain_in_fewer_transactions(server: RunningServer) -> None:
    tokens = []
    _, owner, _ = await server.login_user("owner")
    room = await create_room(server, owner, preset="public_chat")
    for i in range(8):
        _, t, _ = await server.login_user(f"u{i}")
        await join(server, t, room)
        tokens.append(t)
    opened = _count_transactions(server)

    async def sender(i: int, t: str) -> list[str]:
        ids = []
        for n in range(6):
            r = await server.http.put(f"{C}/rooms/{room}/send/m.room.message/g{n}", {"msgtype": "m.text", "body": f"{i}-{n}"}, token=t)
            assert r.status == 200, r.body
            ids.append(r.body["event_id"])
        return ids

    sent = [e for ids in await asyncio.gather(*(sender(i, t) for i, t in enumerate(tokens))) for e in ids]
    assert len(set(sent)) == 48
    assert opened[0] < 48  # shared commits (each sender waits for its own reply, so batches are up to 8)
    events = [e for e in await _timeline(server, owner, room) if e["event_id"] in set(sent)]
    assert sorted(e["event_id"] for e in events) == sorted(sent)
    # One linear chain: each message's only prev event is the message stored before it, depth one more.
    stored = {e["event_id"]: e for e in events}
    for before, after in zip(events, events[1:]):
        pdu = (await server.hs.storage.events.get_events([after["event_id"]]))[after["event_id"]].pdu
        assert pdu["prev_events"] == [before["event_id"]]
        prev_pdu = (await server.hs.storage.events.get_events([before["event_id"]]))[before["event_id"]].pdu
        assert pdu["depth"] == prev_pdu["depth"] + 1
    # Each sender's messages are in the order it sent them.
    for i in range(8):
        mine = [e["content"]["body"] for e in events if e["content"]["body"].startswith(f"{i}-")]
        assert mine == [f"{i}-{n}" for n in range(6)]
    assert len(stored) == 48


async def test_a_refused_event_fails_alone_and_state_applies_within_a_batch(server: RunningServer) -> None:
    alice, ta, _ = await server.login_user("alice")
    bob, tb, _ = await server.login_user("bob")
    room = await create_room(server, ta, preset="public_chat")
    await join(server, tb, room)
    creator = server.hs.event_creator
    levels = (await server.http.get(f"{C}/rooms/{room}/state/m.room.power_levels/", token=ta)).body
    raised = {**levels, "users": {**levels["users"], bob: 50}}
    opened = _count_transactions(server)
    # Queued together, in this order: bob's topic is refused (he has no power yet), alice's messages
    # are stored, the power levels raise bob, and his second topic — checked against the power levels
    # stored earlier in the same, not yet committed, transaction — is allowed.
    results = await asyncio.gather(
        creator.send(room, bob, "m.room.topic", {"topic": "too early"}, ""),
        creator.send(room, alice, "m.room.message", {"msgtype": "m.text", "body": "one"}),
        creator.send(room, alice, "m.room.power_levels", raised, ""),
        creator.send(room, bob, "m.room.topic", {"topic": "allowed now"}, ""),
        creator.send(room, alice, "m.room.message", {"msgtype": "m.text", "body": "two"}),
        return_exceptions=True,
    )
    assert isinstance(results[0], MatrixError) and results[0].status == 403
    assert all(not isinstance(r, BaseException) for r in results[1:]), results
    assert opened[0] <= 2
    topic = await server.http.get(f"{C}/rooms/{room}/state/m.room.topic/", token=ta)
    assert topic.body == {"topic": "allowed now"}
    bodies = [e["content"].get("body") or e["content"].get("topic") for e in await _timeline(server, ta, room)
              if e["type"] in ("m.room.message", "m.room.topic")]
    assert bodies == ["one", "allowed now", "two"]
    # The room goes on normally afterwards.
    r = await server.http.put(f"{C}/rooms/{room}/send/m.room.message/after", {"msgtype": "m.text", "body": "three"}, token=tb)
    assert r.status == 200


async def test_the_same_transaction_twice_at_once_is_one_event(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    room = await create_room(server, ta)
    path = f"{C}/rooms/{room}/send/m.room.message/dup"
    replies = await asyncio.gather(*(server.http.put(path, {"msgtype": "m.text", "body": "once"}, token=ta) for _ in range(5)))
    assert {r.status for r in replies} == {200}
    assert len({r.body["event_id"] for r in replies}) == 1
    assert [e["content"]["body"] for e in await _timeline(server, ta, room) if e["type"] == "m.room.message"] == ["once"]


async def test_a_failed_batch_is_retried_one_by_one(server: RunningServer) -> None:
    """A write failing inside the shared transaction rolls back the whole batch; every other event is then
    stored in a transaction of its own, and only the one whose write fails is refused."""
    alice, ta, _ = await server.login_user("alice")
    room = await create_room(server, ta)
    creator = server.hs.event_creator

    async def broken_write(conn: Any, new: Any) -> None:
        if new.pdu.get("content", {}).get("body") == "poison":
            raise RuntimeError("disk trouble")

    creator.in_transaction.append(broken_write)
    try:
        opened = _count_transactions(server)
        bodies = ["a", "b", "poison", "c", "d"]
        results = await asyncio.gather(
            *(creator.send(room, alice, "m.room.message", {"msgtype": "m.text", "body": b}) for b in bodies),
            return_exceptions=True,
        )
    finally:
        creator.in_transaction.remove(broken_write)
    assert isinstance(results[2], RuntimeError)
    assert all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 2)
    assert opened[0] == 1 + len(bodies)  # the batch, then each event alone
    stored = [e["content"]["body"] for e in await _timeline(server, ta, room) if e["type"] == "m.room.message"]
    assert stored == ["a", "b", "c", "d"]
    assert (await server.hs.storage.events.get_events([r.event_id for r in results if not isinstance(r, BaseException)])).keys() \
        == {r.event_id for r in results if not isinstance(r, BaseException)}
    r = await server.http.put(f"{C}/rooms/{room}/send/m.room.message/later", {"msgtype": "m.text", "body": "e"}, token=ta)
    assert r.status == 200
