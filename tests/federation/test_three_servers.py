"""Three ministries' servers — hs1.test, hs2.test, hs3.test, each its own `qasid run` process — found
through the static federation directory, with TLS from a national-CA stand-in and an allowlist naming
only the three. A room created on hs1 is joined from hs2 and hs3; everything that happens in it reaches
all three; hs3 is killed, the room goes on without it, and after it comes back it has everything."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import quote

import aiohttp
import nio
import pytest

from tests.interop.test_nio_e2ee import PASSWORD, Device
from tests.support.client import MatrixHttp
from tests.support.processes import QasidProcess, free_port
from tests.support.tls import LocalCA

C = "/_matrix/client/v3"
NAMES = ["hs1.test", "hs2.test", "hs3.test"]


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy (federation is asynchronous by nature)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def trio(tmp_path: Path) -> AsyncIterator[tuple[list[QasidProcess], ssl.SSLContext]]:
    ca = LocalCA(tmp_path / "ca")
    servers = [QasidProcess(name, "127.0.0.1", free_port(), tmp_path / name) for name in NAMES]
    for s in servers:
        s.write_config(ca, servers)
    tls = ssl.create_default_context(cafile=str(ca.ca_file))
    try:
        await asyncio.gather(*(s.start(tls) for s in servers))
        yield servers, tls
    finally:
        for s in servers:
            s.stop()


class Member:
    """One user on one server, speaking the client-server API over HTTPS."""

    def __init__(self, http: MatrixHttp, user_id: str, token: str) -> None:
        self.http, self.user_id, self.token = http, user_id, token
        self.since: str | None = None
        self.seen_ephemeral: list[dict[str, Any]] = []

    async def get(self, path: str, **params: str) -> Any:
        r = await self.http.get(path, token=self.token, params=params or None)
        assert r.status == 200, (path, r.body)
        return r.body

    async def send(self, room: str, body: str, txn: str) -> str:
        r = await self.http.put(f"{C}/rooms/{room}/send/m.room.message/{txn}", {"msgtype": "m.text", "body": body}, token=self.token)
        assert r.status == 200, r.body
        return r.body["event_id"]

    async def state(self, room: str, event_type: str, state_key: str = "", content: dict[str, Any] | None = None) -> Any:
        path = f"{C}/rooms/{room}/state/{event_type}/{quote(state_key, safe='')}"
        if content is None:
            r = await self.http.get(path, token=self.token)
            return r.body if r.status == 200 else None
        r = await self.http.put(path, content, token=self.token)
        assert r.status == 200, r.body
        return r.body["event_id"]

    async def history(self, room: str) -> dict[str, dict[str, Any]]:
        chunk = (await self.get(f"{C}/rooms/{room}/messages", dir="b", limit="200"))["chunk"]
        return {e["event_id"]: e for e in chunk}

    async def sees(self, room: str, event_ids: set[str]) -> bool:
        return set(await self.history(room)) >= event_ids

    async def ephemeral(self, room: str) -> list[dict[str, Any]]:
        """Every ephemeral event /sync has given so far in ``room`` (each sync only gives what is new)."""
        params = {"timeout": "0", **({"since": self.since} if self.since else {})}
        body = await self.get(f"{C}/sync", **params)
        self.since = body["next_batch"]
        self.seen_ephemeral += body.get("rooms", {}).get("join", {}).get(room, {}).get("ephemeral", {}).get("events", [])
        return self.seen_ephemeral


async def test_a_room_spans_three_servers_and_survives_an_outage(trio: Any) -> None:
    servers, tls = trio
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as session:
        https = [MatrixHttp(s.base_url, session) for s in servers]
        people = []
        for s, h, name in zip(servers, https, ["alice", "bob", "carol"]):
            user_id, token = await s.register(session, name)
            people.append(Member(h, user_id, token))
        alice, bob, carol = people
        room = (await alice.http.post(f"{C}/createRoom", {"preset": "public_chat", "room_alias_name": "cabinet", "name": "Cabinet"},
                                      token=alice.token)).body["room_id"]
        for m in (bob, carol):
            r = await m.http.post(f"{C}/join/{quote('#cabinet:hs1.test')}", {}, token=m.token)
            assert r.status == 200 and r.body["room_id"] == room, r.body
        everyone = {p.user_id for p in people}

        async def all_joined(m: Member) -> bool:
            return set((await m.get(f"{C}/rooms/{room}/joined_members"))["joined"]) == everyone

        for m in people:
            await until(lambda m=m: all_joined(m), f"{m.user_id} to see all three joined")

        # Messages from each server reach the other two.
        said = {await m.send(room, f"hello from {m.user_id}", "hello") for m in people}
        for m in people:
            await until(lambda m=m: m.sees(room, said), f"{m.user_id} to see every greeting")

        # State changes: a power-level change lets bob (hs2) rename the room; alice sets the topic.
        levels = await alice.state(room, "m.room.power_levels")
        levels["users"][bob.user_id] = 50
        await alice.state(room, "m.room.power_levels", content=levels)
        await until(lambda: bob.state(room, "m.room.power_levels"), "the new power levels on hs2")
        renamed = await until(lambda: _try_rename(bob, room), "bob's rename to be accepted")
        await alice.state(room, "m.room.topic", content={"topic": "Budget 2027"})
        for m in people:
            await until(lambda m=m: _state_is(m, room, "m.room.name", {"name": "Cabinet (budget)"}), f"{m.user_id} to see the new name")
            await until(lambda m=m: _state_is(m, room, "m.room.topic", {"topic": "Budget 2027"}), f"{m.user_id} to see the topic")
        assert renamed

        # A redaction on hs3 strips the message everywhere.
        mistake = await carol.send(room, "the password is hunter2", "oops")
        for m in people:
            await until(lambda m=m: m.sees(room, {mistake}), f"{m.user_id} to get carol's message")
        r = await carol.http.put(f"{C}/rooms/{room}/redact/{mistake}/r1", {"reason": "typo"}, token=carol.token)
        assert r.status == 200, r.body

        async def redacted(m: Member) -> bool:
            event = (await m.history(room)).get(mistake, {})
            return event.get("content") == {} and "redacted_because" in event.get("unsigned", {})

        for m in people:
            await until(lambda m=m: redacted(m), f"{m.user_id} to see the redaction")

        # Typing (hs2) and a read receipt (hs3) reach the others' /sync.
        for m in people:
            await m.ephemeral(room)
        r = await bob.http.put(f"{C}/rooms/{room}/typing/{quote(bob.user_id)}", {"typing": True, "timeout": 30000}, token=bob.token)
        assert r.status == 200
        r = await carol.http.post(f"{C}/rooms/{room}/receipt/m.read/{mistake}", {}, token=carol.token)
        assert r.status == 200
        for m in (alice, carol):
            await until(lambda m=m: _typing(m, room, bob.user_id), f"{m.user_id} to see bob typing")
        for m in (alice, bob):
            await until(lambda m=m: _receipt(m, room, mistake, carol.user_id), f"{m.user_id} to see carol's receipt")

        # A profile change on hs3 updates carol's membership everywhere.
        r = await carol.http.put(f"{C}/profile/{quote(carol.user_id)}/displayname", {"displayname": "Carol (MoF)"}, token=carol.token)
        assert r.status == 200
        for m in people:
            await until(lambda m=m: _member_name(m, room, carol.user_id, "Carol (MoF)"), f"{m.user_id} to see carol's new name")

        # hs3 crashes; the room goes on; hs3 comes back and has all of it.
        servers[2].stop(kill=True)
        missed = {await alice.send(room, f"while hs3 was down {i}", f"down{i}") for i in range(3)}
        missed |= {await bob.send(room, f"bob while hs3 was down {i}", f"bdown{i}") for i in range(2)}
        missed.add(await alice.state(room, "m.room.topic", content={"topic": "Budget 2027, second reading"}))
        await asyncio.sleep(1.5)  # long enough for hs1 and hs2 to fail a delivery and back off
        await servers[2].start(tls)
        await carol.get(f"{C}/sync", timeout="0")  # carol comes online: hs3 talks to its peers again
        await until(lambda: carol.sees(room, missed), "hs3 to catch up on what it missed", timeout=60)
        assert await _state_is(carol, room, "m.room.topic", {"topic": "Budget 2027, second reading"})
        after = await carol.send(room, "back again", "back")
        for m in (alice, bob):
            await until(lambda m=m: m.sees(room, {after}), f"{m.user_id} to hear from hs3 again")

        # All three servers agree on the room's state and on its history.
        states = [sorted((e["type"], e["state_key"], e["event_id"]) for e in await m.get(f"{C}/rooms/{room}/state")) for m in people]
        assert states[0] == states[1] == states[2]
        histories = [set(await m.history(room)) for m in people]
        assert histories[0] == histories[1] == histories[2]
        for s in servers:
            assert "Traceback" not in s.log_tail(2000), s.log_tail()


async def _try_rename(m: Member, room: str) -> str | None:
    r = await m.http.put(f"{C}/rooms/{room}/state/m.room.name/", {"name": "Cabinet (budget)"}, token=m.token)
    return r.body["event_id"] if r.status == 200 else None


async def _state_is(m: Member, room: str, event_type: str, content: dict[str, Any]) -> bool:
    return await m.state(room, event_type) == content


async def _typing(m: Member, room: str, user_id: str) -> bool:
    return any(e["type"] == "m.typing" and user_id in e["content"]["user_ids"] for e in await m.ephemeral(room))


async def _receipt(m: Member, room: str, event_id: str, user_id: str) -> bool:
    return any(e["type"] == "m.receipt" and user_id in e["content"].get(event_id, {}).get("m.read", {})
               for e in await m.ephemeral(room))


async def _member_name(m: Member, room: str, user_id: str, name: str) -> bool:
    member = await m.state(room, "m.room.member", user_id)
    return bool(member) and member.get("displayname") == name


async def test_encrypted_room_across_three_servers_with_nio(trio: Any, tmp_path: Path) -> None:
    """Device lists, one-time-key claims and room keys (to-device) all cross servers: three nio clients
    on three servers each decrypt the other two."""
    servers, tls = trio
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as session:
        ids = [(await s.register(session, name, PASSWORD))[0] for s, name in zip(servers, ["alice", "bob", "carol"])]
    devices = [Device(s, uid, tmp_path / uid.split(":")[0][1:], ssl=tls) for s, uid in zip(servers, ids)]
    a, b, c = devices
    try:
        for d in devices:
            await d.login(f"{d.client.user_id}'s laptop")
        created = await a.client.room_create(invite=ids[1:], initial_state=[
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
        assert isinstance(created, nio.RoomCreateResponse), created
        room = created.room_id
        for d in (b, c):
            async def invited(d: Device = d) -> bool:
                await d.sync()
                return room in d.client.invited_rooms
            await until(invited, f"{d.client.user_id}'s invite")
            assert isinstance(await d.client.join(room), nio.JoinResponse)

        async def everyone_joined() -> bool:
            for d in devices:
                await d.sync()
            return all(len(d.client.rooms.get(room).users if d.client.rooms.get(room) else []) == 3 for d in devices)

        await until(everyone_joined, "all three to know all three members")
        sent = {}
        for d in devices:
            sent[await d.send(room, f"secret from {d.client.user_id}")] = d
        for d in devices:
            expected = {eid for eid, sender in sent.items() if sender is not d}

            async def decrypted(d: Device = d, expected: set[str] = expected) -> bool:
                await d.sync()
                return expected <= set(d.decrypted)

            await until(decrypted, f"{d.client.user_id} to decrypt the others' messages", timeout=45)
            for eid in expected:
                assert d.decrypted[eid] == f"secret from {sent[eid].client.user_id}"
    finally:
        for d in devices:
            await d.close()
