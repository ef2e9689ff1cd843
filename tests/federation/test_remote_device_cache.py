"""Remote users' device lists and cross-signing keys, cached by the server of the user who asks and
kept current by the remote server's m.device_list_update / m.signing_key_update EDUs — between real
Qasid servers over TLS on loopback. The caching server (hs1) runs on each engine; the remote one (hs2)
is started and stopped by the test, so its outages and restarts are real."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
from nacl.signing import SigningKey

from homeserver.events.signing import sign_json
from tests.federation.conftest import free_port
from tests.rooms.test_e2e_keys import _key, _pub, cross_key, device_keys
from tests.support.servers import RunningServer, make_config, running_server
from tests.support.tls import LocalCA

C = "/_matrix/client/v3"


class Peer:
    """A federating Qasid this test can stop and start again: same name, port, keys and database."""

    def __init__(self, test_ca: LocalCA, tmp_path: Path, ip: str) -> None:
        self.ip, self.port = ip, free_port(ip)
        self.name = f"{ip}:{self.port}"
        self.crt, self.key = test_ca.issue(f"peer-{ip}", ips=[ip])
        self.test_ca = test_ca
        (tmp_path / f"peer-{ip}-db").mkdir()
        db_url = f"sqlite:///{tmp_path / f'peer-{ip}-db' / 'homeserver.db'}"
        self.config = make_config(db_url, tmp_path / f"peer-{ip}-data", server_name=self.name,
                                  federation={"tls_ca_file": str(test_ca.ca_file)})
        self._cm: Any = None
        self.srv: RunningServer | None = None
        self.calls: dict[str, int] = {}

    async def start(self) -> RunningServer:
        client_tls = ssl.create_default_context(cafile=str(self.test_ca.ca_file))
        self._cm = running_server(self.config, host=self.ip, port=self.port,
                                  tls=self.test_ca.server_context(self.crt, self.key), client_tls=client_tls)
        self.srv = await self._cm.__aenter__()
        # Count what other servers ask this one about its users' keys.
        fed = self.srv.hs.federation
        assert fed is not None
        for name in ("user_devices", "keys_query"):
            self.calls[name] = 0
            setattr(fed, name, self._counting(name, getattr(fed, name)))
        return self.srv

    def _counting(self, name: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        async def counted(*args: Any) -> Any:
            self.calls[name] += 1
            return await inner(*args)
        return counted

    async def stop(self) -> None:
        if self._cm is not None:
            cm, self._cm, self.srv = self._cm, None, None
            await cm.__aexit__(None, None, None)


@pytest.fixture
async def peer(test_ca: LocalCA, tmp_path: Path) -> AsyncIterator[Peer]:
    p = Peer(test_ca, tmp_path, "127.0.0.2")
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def _shared_room(hs1: RunningServer, hs2: RunningServer, ta: str, tb: str) -> str:
    room = (await hs1.http.post(f"{C}/createRoom", {"preset": "public_chat", "room_alias_name": "keys"}, token=ta)).body["room_id"]
    r = await hs2.http.post(f"{C}/join/%23keys:{hs1.config.server_name}", {}, token=tb)
    assert r.status == 200, r.body
    return room


async def _query(hs1: RunningServer, token: str, user: str) -> dict[str, Any]:
    r = await hs1.http.post(f"{C}/keys/query", {"device_keys": {user: []}}, token=token)
    assert r.status == 200, r.body
    return r.body


async def _query_until(hs1: RunningServer, token: str, user: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    for _ in range(100):
        body = await _query(hs1, token, user)
        if done(body):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened; last answer: {body}")


async def _poll(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait up to 5 s for ``check``; the test's own assertions say what must hold afterwards."""
    for _ in range(100):
        if await check():
            return
        await asyncio.sleep(0.05)


async def _gone_from(hs1: RunningServer, token: str, room: str, user: str) -> bool:
    return user not in (await hs1.http.get(f"{C}/rooms/{room}/joined_members", token=token)).body["joined"]


async def _stale(hs1: RunningServer, user: str) -> bool:
    return (await hs1.hs.storage.remote_devices.get([user]))[user].stale


async def _login_with_keys(hs2: RunningServer, user: str, device_id: str, name: str) -> tuple[str, SigningKey]:
    """Log in a new device of ``user`` and upload its keys; returns (access token, device signing key)."""
    r = await hs2.http.login(user.split(":")[0][1:], "password123", device_id=device_id, initial_device_display_name=name)
    assert r.status == 200, r.body
    token, k = r.body["access_token"], _key(device_id)
    r = await hs2.http.post(f"{C}/keys/upload", {"device_keys": device_keys(user, device_id, k)}, token=token)
    assert r.status == 200, r.body
    return token, k


async def test_keys_of_a_room_member_are_cached_and_served_while_their_server_is_down(federation: Any, peer: Peer, engine: str) -> None:
    hs1: RunningServer = await federation("127.0.0.1", engine=engine)
    hs2 = peer.srv
    assert hs2 is not None
    alice, ta, _ = await hs1.login_user("alice")
    bob, tb, db = await hs2.login_user("bob", initial_device_display_name="Bob's phone")
    k = _key(db)
    assert (await hs2.http.post(f"{C}/keys/upload", {"device_keys": device_keys(bob, db, k)}, token=tb)).status == 200
    master, ssk = _key("m"), _key("s")
    r = await hs2.http.post(f"{C}/keys/device_signing/upload", {
        "master_key": cross_key(bob, "master", master), "self_signing_key": cross_key(bob, "self_signing", ssk, signer=master)}, token=tb)
    assert r.status == 200, r.body
    await _shared_room(hs1, hs2, ta, tb)

    # The first query fetches bob's whole list from hs2 (one GET /user/devices) and caches it.
    first = await _query(hs1, ta, bob)
    assert first["failures"] == {}
    assert first["device_keys"][bob][db]["keys"] == device_keys(bob, db, k)["keys"]
    assert first["device_keys"][bob][db]["unsigned"] == {"device_display_name": "Bob's phone"}
    assert first["master_keys"][bob]["keys"] == {f"ed25519:{_pub(master)}": _pub(master)}
    assert first["self_signing_keys"][bob]["keys"] == {f"ed25519:{_pub(ssk)}": _pub(ssk)}
    assert peer.calls == {"user_devices": 1, "keys_query": 0}
    cached = (await hs1.hs.storage.remote_devices.get([bob]))[bob]
    assert not cached.stale and set(cached.devices) == {db} and cached.fetched_ts > 0

    # The second is answered here: hs2 is not asked again...
    assert await _query(hs1, ta, bob) == first
    assert peer.calls == {"user_devices": 1, "keys_query": 0}
    # ...and so is a query while hs2 is down.
    await peer.stop()
    assert await _query(hs1, ta, bob) == first


async def test_edus_keep_the_cache_current_without_refetching(federation: Any, peer: Peer, engine: str) -> None:
    hs1: RunningServer = await federation("127.0.0.1", engine=engine)
    hs2 = peer.srv
    assert hs2 is not None
    alice, ta, _ = await hs1.login_user("alice")
    bob, tb, db = await hs2.login_user("bob")
    assert (await hs2.http.post(f"{C}/keys/upload", {"device_keys": device_keys(bob, db, _key(db))}, token=tb)).status == 200
    await _shared_room(hs1, hs2, ta, tb)
    await _query(hs1, ta, bob)
    assert peer.calls["user_devices"] == 1

    # (b) A new device: its keys arrive in the m.device_list_update and are served without a refetch.
    t2, k2 = await _login_with_keys(hs2, bob, "LAPTOP", "Bob's laptop")
    body = await _query_until(hs1, ta, bob, lambda b: "LAPTOP" in b["device_keys"][bob])
    assert body["device_keys"][bob]["LAPTOP"]["keys"] == device_keys(bob, "LAPTOP", k2)["keys"]
    assert body["device_keys"][bob]["LAPTOP"]["unsigned"] == {"device_display_name": "Bob's laptop"}
    assert peer.calls == {"user_devices": 1, "keys_query": 0}

    # Cross-signing keys come by m.signing_key_update; bob's self-signing signature on his device by
    # an m.device_list_update carrying the signed keys. Neither breaks the stream_id chain.
    master, ssk = _key("m"), _key("s")
    r = await hs2.http.post(f"{C}/keys/device_signing/upload", {
        "master_key": cross_key(bob, "master", master), "self_signing_key": cross_key(bob, "self_signing", ssk, signer=master)}, token=tb)
    assert r.status == 200, r.body
    await _query_until(hs1, ta, bob, lambda b: bob in b["master_keys"] and bob in b["self_signing_keys"])
    ssk_named = SigningKey(bytes(ssk))
    ssk_named.version = _pub(ssk)  # type: ignore[attr-defined]
    r = await hs2.http.post(f"{C}/keys/signatures/upload", {bob: {"LAPTOP": sign_json(device_keys(bob, "LAPTOP", k2), bob, ssk_named)}}, token=t2)
    assert r.status == 200 and r.body["failures"] == {}, r.body
    await _query_until(hs1, ta, bob, lambda b: f"ed25519:{_pub(ssk)}" in b["device_keys"][bob]["LAPTOP"]["signatures"][bob])
    assert peer.calls == {"user_devices": 1, "keys_query": 0}

    # (c) The device is deleted (its session logs out): it disappears, again without a refetch.
    assert (await hs2.http.post(f"{C}/logout", {}, token=t2)).status == 200
    await _query_until(hs1, ta, bob, lambda b: "LAPTOP" not in b["device_keys"][bob])
    assert peer.calls == {"user_devices": 1, "keys_query": 0}

    # hs2 restarts: its stream_id/prev_id chain is read from its database, so the next update still
    # follows on from what hs1 holds and is applied as it comes.
    await peer.stop()
    hs2 = await peer.start()
    _, k3 = await _login_with_keys(hs2, bob, "TABLET", "Bob's tablet")
    await _query_until(hs1, ta, bob, lambda b: "TABLET" in b["device_keys"][bob])
    assert peer.calls == {"user_devices": 0, "keys_query": 0}
    cached = (await hs1.hs.storage.remote_devices.get([bob]))[bob]
    assert not cached.stale and set(cached.devices) == {db, "TABLET"}


async def test_a_lost_update_marks_the_cache_stale_and_the_next_query_refetches(federation: Any, peer: Peer, engine: str) -> None:
    hs1: RunningServer = await federation("127.0.0.1", engine=engine)
    hs2 = peer.srv
    assert hs2 is not None and hs2.hs.federation is not None
    alice, ta, _ = await hs1.login_user("alice")
    bob, tb, db = await hs2.login_user("bob")
    await _shared_room(hs1, hs2, ta, tb)
    await _query(hs1, ta, bob)
    assert peer.calls["user_devices"] == 1

    # hs2's update about the first new device is lost on the way...
    sender = hs2.hs.federation.sender
    real = sender.enqueue_edu
    lost: list[dict[str, Any]] = []

    async def lose_one(destinations: set[str], edu_type: str, content: dict[str, Any]) -> None:
        if edu_type == "m.device_list_update" and not lost:
            lost.append(content)
            return
        await real(destinations, edu_type, content)

    sender.enqueue_edu = lose_one  # type: ignore[method-assign]
    await _login_with_keys(hs2, bob, "LOST", "lost")
    assert lost and lost[0]["device_id"] == "LOST"
    # ...so the next one names a prev_id hs1 never saw: hs1 marks bob's list stale instead of applying it.
    await _login_with_keys(hs2, bob, "NEXT", "next")
    await _poll(lambda: _stale(hs1, bob))
    cached = (await hs1.hs.storage.remote_devices.get([bob]))[bob]
    assert cached.stale and "NEXT" not in cached.devices
    # The next query fetches the whole list again, and the cache is fresh and complete.
    body = await _query(hs1, ta, bob)
    assert set(body["device_keys"][bob]) == {"LOST", "NEXT"}
    assert peer.calls["user_devices"] == 2
    cached = (await hs1.hs.storage.remote_devices.get([bob]))[bob]
    assert not cached.stale and set(cached.devices) == {"LOST", "NEXT"}
    await _query(hs1, ta, bob)
    assert peer.calls["user_devices"] == 2


async def test_users_sharing_no_room_are_asked_each_time_and_not_cached(federation: Any, peer: Peer, engine: str) -> None:
    hs1: RunningServer = await federation("127.0.0.1", engine=engine)
    hs2 = peer.srv
    assert hs2 is not None
    alice, ta, _ = await hs1.login_user("alice")
    carol, tc, dc = await hs2.login_user("carol")
    bob, tb, _ = await hs2.login_user("bob")
    assert (await hs2.http.post(f"{C}/keys/upload", {"device_keys": device_keys(carol, dc, _key(dc))}, token=tc)).status == 200
    await _shared_room(hs1, hs2, ta, tb)

    # (e) carol shares no room with anyone on hs1: her keys are asked of hs2 (as before) and not kept.
    for n in (1, 2):
        body = await _query(hs1, ta, carol)
        assert body["failures"] == {} and list(body["device_keys"][carol]) == [dc]
        assert peer.calls == {"user_devices": 0, "keys_query": n}
    assert await hs1.hs.storage.remote_devices.get([carol]) == {}
    # With hs2 down she cannot be answered; neither can bob, who shares a room but was never fetched.
    await peer.stop()
    r = await hs1.http.post(f"{C}/keys/query", {"device_keys": {carol: [], bob: []}}, token=ta)
    assert r.status == 200 and peer.name in r.body["failures"], r.body
    assert carol not in r.body["device_keys"] and bob not in r.body["device_keys"]


async def test_rejoining_after_sharing_no_room_makes_the_cache_stale(federation: Any, peer: Peer, engine: str) -> None:
    hs1: RunningServer = await federation("127.0.0.1", engine=engine)
    hs2 = peer.srv
    assert hs2 is not None
    alice, ta, _ = await hs1.login_user("alice")
    bob, tb, db = await hs2.login_user("bob")
    room = await _shared_room(hs1, hs2, ta, tb)
    await _query(hs1, ta, bob)
    assert peer.calls["user_devices"] == 1

    # While bob shares no room with hs1's users, hs2 tells hs1 nothing of his new device...
    assert (await hs2.http.post(f"{C}/rooms/{room}/leave", {}, token=tb)).status == 200
    await _poll(lambda: _gone_from(hs1, ta, room, bob))
    await _login_with_keys(hs2, bob, "QUIET", "quiet")
    await asyncio.sleep(0.3)
    assert "QUIET" not in (await hs1.hs.storage.remote_devices.get([bob]))[bob].devices
    # ...so his join makes hs1's copy stale, and the next query fetches the list again.
    assert (await hs2.http.post(f"{C}/join/%23keys:{hs1.config.server_name}", {}, token=tb)).status == 200
    await _poll(lambda: _stale(hs1, bob))
    assert (await hs1.hs.storage.remote_devices.get([bob]))[bob].stale
    assert "QUIET" in (await _query(hs1, ta, bob))["device_keys"][bob]
    assert peer.calls["user_devices"] == 2

    # Once he leaves for good, a query goes to hs2 each time and the cached copy is dropped.
    assert (await hs2.http.post(f"{C}/rooms/{room}/leave", {}, token=tb)).status == 200
    await _poll(lambda: _gone_from(hs1, ta, room, bob))
    assert "QUIET" in (await _query(hs1, ta, bob))["device_keys"][bob]
    assert peer.calls == {"user_devices": 2, "keys_query": 1}
    assert await hs1.hs.storage.remote_devices.get([bob]) == {}


async def test_forged_and_malformed_edus_change_nothing(federation: Any, peer: Peer, engine: str) -> None:
    hs1: RunningServer = await federation("127.0.0.1", engine=engine)
    hs3: RunningServer = await federation("127.0.0.3")
    hs2 = peer.srv
    assert hs2 is not None and hs3.hs.federation is not None
    alice, ta, _ = await hs1.login_user("alice")
    bob, tb, db = await hs2.login_user("bob")
    k = _key(db)
    assert (await hs2.http.post(f"{C}/keys/upload", {"device_keys": device_keys(bob, db, k)}, token=tb)).status == 200
    await _shared_room(hs1, hs2, ta, tb)
    before = await _query(hs1, ta, bob)
    held = (await hs1.hs.storage.remote_devices.get([bob]))[bob]

    # (f) hs3 speaks for bob, who is hs2's: delete his device, add one, replace his master key.
    evil = _key("EVIL")
    stranger = _key("x")
    edus = [
        {"edu_type": "m.device_list_update", "content": {"user_id": bob, "device_id": db, "stream_id": held.stream_id + 1,
                                                         "prev_id": [held.stream_id], "deleted": True}},
        {"edu_type": "m.device_list_update", "content": {"user_id": bob, "device_id": "EVIL", "stream_id": held.stream_id + 2,
                                                         "prev_id": [held.stream_id], "keys": device_keys(bob, "EVIL", evil)}},
        {"edu_type": "m.signing_key_update", "content": {"user_id": bob, "master_key": cross_key(bob, "master", stranger)}},
    ]
    r = await hs3.hs.federation.client.put_json(hs1.config.server_name, "/_matrix/federation/v1/send/forged1", {
        "origin": hs3.config.server_name, "origin_server_ts": hs3.hs.clock.time_ms(), "pdus": [], "edus": edus})
    assert r == {"pdus": {}}
    assert (await hs1.hs.storage.remote_devices.get([bob]))[bob] == held
    assert await _query(hs1, ta, bob) == before

    # From bob's own server, but hostile shapes: none raises, none stores anything but a stale mark.
    cache = hs1.hs.e2e_keys.remote_devices
    assert cache is not None
    origin, next_id = peer.name, held.stream_id + 1
    good = device_keys(bob, "NEWDEV", _key("NEWDEV"))
    hostile: list[Any] = [
        {"user_id": bob, "device_id": "NEWDEV", "stream_id": str(next_id), "prev_id": [held.stream_id], "keys": good},
        {"user_id": bob, "device_id": "NEWDEV", "stream_id": True, "prev_id": [held.stream_id], "keys": good},
        {"user_id": bob, "device_id": "NEWDEV", "stream_id": next_id, "prev_id": "7", "keys": good},
        {"user_id": bob, "device_id": ["NEWDEV"], "stream_id": next_id, "prev_id": [held.stream_id], "keys": good},
        {"user_id": bob, "device_id": "NEWDEV", "stream_id": next_id, "prev_id": [held.stream_id], "keys": "not keys"},
        {"user_id": bob, "device_id": "NEWDEV", "stream_id": next_id, "prev_id": [held.stream_id],
         "keys": device_keys(alice, "NEWDEV", _key("NEWDEV"))},  # another user's device
        {"user_id": bob, "device_id": "OTHER", "stream_id": next_id, "prev_id": [held.stream_id], "keys": good},
        {"user_id": bob, "device_id": "NEWDEV", "stream_id": next_id, "prev_id": [held.stream_id],
         "keys": {**good, "signatures": {bob: {"ed25519:NEWDEV": "bad"}}}},
        {"user_id": bob, "device_id": "NEWDEV", "stream_id": 2**70, "prev_id": [held.stream_id], "keys": good},
        {"user_id": 5}, {}, {"user_id": bob, "stream_id": next_id, "prev_id": [None, {}], "device_id": "NEWDEV", "keys": good},
    ]
    for content in hostile:
        await cache.device_list_update(origin, content)
    for content in [{"user_id": bob, "master_key": "x"}, {"user_id": bob, "master_key": cross_key(alice, "master", stranger)},
                    {"user_id": bob, "self_signing_key": {"user_id": bob, "usage": ["master"], "keys": {}}}]:
        await cache.signing_key_update(origin, content)
    after = (await hs1.hs.storage.remote_devices.get([bob]))[bob]
    assert after.devices == held.devices and after.master_key == held.master_key and after.stale
    # The same junk in a real transaction is taken without an error.
    r = await hs2.hs.federation.client.put_json(hs1.config.server_name, "/_matrix/federation/v1/send/junk1", {
        "origin": peer.name, "origin_server_ts": 1, "pdus": [],
        "edus": [{"edu_type": "m.device_list_update", "content": c} for c in hostile if c.get("stream_id") != 2**70]})
    assert r == {"pdus": {}}
    # Stale means fetched again from hs2, whose truth wins. (The first fetch keeps the mark, as an
    # update claimed a position beyond what hs2 answered; the second, at hs2's position, clears it.)
    assert set((await _query(hs1, ta, bob))["device_keys"][bob]) == {db}
    assert set((await _query(hs1, ta, bob))["device_keys"][bob]) == {db}
    assert not (await hs1.hs.storage.remote_devices.get([bob]))[bob].stale
