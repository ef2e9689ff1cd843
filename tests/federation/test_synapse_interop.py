"""Federation with Synapse itself (from PyPI), over TLS on loopback: each server fetches and checks the
other's signing keys, signs its requests with X-Matrix, and answers the other's queries."""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest

from tests.federation.conftest import free_port
from tests.support.servers import RunningServer
from tests.support.synapse import SynapseServer, start_synapse, stop_synapse
from tests.support.tls import LocalCA


@pytest.fixture
async def synapse(test_ca: LocalCA, tmp_path: Path) -> AsyncIterator[SynapseServer]:
    ip = "127.0.0.3"
    server = await start_synapse(test_ca, tmp_path / "synapse", ip, free_port(ip), free_port(ip))
    try:
        yield server
    finally:
        stop_synapse(server)


async def test_qasid_and_synapse_query_each_other(federation: Any, synapse: SynapseServer) -> None:
    hs1: RunningServer = await federation("127.0.0.1")
    name1 = hs1.config.server_name
    alice = await hs1.create_user("alice")
    await hs1.hs.profiles.set_field(alice, alice, "displayname", "Alice (Qasid)")
    async with aiohttp.ClientSession() as s:
        bob, bob_token = await synapse.register(s, "bob")
        async with s.put(f"{synapse.client_url}/_matrix/client/v3/profile/{bob}/displayname",
                         json={"displayname": "Bob (Synapse)"}, headers={"Authorization": f"Bearer {bob_token}"}) as r:
            assert r.status == 200

        # Qasid → Synapse: Synapse checks our X-Matrix signature against the key it fetches from us.
        profile = await hs1.hs.federation.client.get_json(synapse.server_name, "/_matrix/federation/v1/query/profile",
                                                          {"user_id": bob})
        assert profile.get("displayname") == "Bob (Synapse)", synapse.log_tail()
        # Qasid fetches and checks Synapse's signing key.
        keys = await hs1.hs.federation.client.get_json(synapse.server_name, "/_matrix/key/v2/server", signed=False)
        (kid,) = keys["verify_keys"]
        info = await hs1.hs.federation.keyring.get_key(synapse.server_name, kid)
        assert info.verify_key is not None

        # Synapse → Qasid: Synapse's client asks for our user's profile and keys; we check its signature.
        headers = {"Authorization": f"Bearer {bob_token}"}
        async with s.get(f"{synapse.client_url}/_matrix/client/v3/profile/{alice}", headers=headers) as r:
            body = await r.json()
            assert r.status == 200 and body.get("displayname") == "Alice (Qasid)", (body, synapse.log_tail())
        async with s.post(f"{synapse.client_url}/_matrix/client/v3/keys/query", json={"device_keys": {alice: []}},
                          headers=headers) as r:
            body = await r.json()
            assert r.status == 200 and body["failures"] == {} and body["device_keys"] == {alice: {}}, body
    # A Qasid client sees the Synapse user's profile and device list through its own server.
    login = await hs1.http.login("alice", "password123")
    token = login.body["access_token"]
    r = await hs1.http.get(f"/_matrix/client/v3/profile/{bob}", token=token)
    assert r.status == 200 and r.body.get("displayname") == "Bob (Synapse)", r.body
    r = await hs1.http.post("/_matrix/client/v3/keys/query", {"device_keys": {bob: []}}, token=token)
    assert r.status == 200 and r.body["failures"] == {} and bob in r.body["device_keys"], r.body
    stored = await hs1.hs.storage.server_keys.for_server(synapse.server_name)
    assert stored and stored[0].source == "direct"
    assert name1


async def _synapse_sees(s: aiohttp.ClientSession, synapse: SynapseServer, token: str, room: str, text: str) -> None:
    import asyncio

    since = None
    for _ in range(60):
        params = {"timeout": "500", **({"since": since} if since else {})}
        async with s.get(f"{synapse.client_url}/_matrix/client/v3/sync", params=params,
                         headers={"Authorization": f"Bearer {token}"}) as r:
            body = await r.json()
        joined = body.get("rooms", {}).get("join", {}).get(room)
        if joined and any(e.get("content", {}).get("body") == text for e in joined["timeline"]["events"]):
            return
        since = body.get("next_batch")
        await asyncio.sleep(0.1)
    raise AssertionError(f"Synapse never showed {text!r}:\n{synapse.log_tail()}")


async def test_synapse_user_joins_a_qasid_room_and_they_talk(federation: Any, synapse: SynapseServer) -> None:
    hs1: RunningServer = await federation("127.0.0.1")
    name1 = hs1.config.server_name
    alice, ta, _ = await hs1.login_user("alice")
    C = "/_matrix/client/v3"
    room = (await hs1.http.post(f"{C}/createRoom", {"preset": "public_chat", "room_alias_name": "ministries"},
                                token=ta)).body["room_id"]
    async with aiohttp.ClientSession() as s:
        bob, bob_token = await synapse.register(s, "bob")
        headers = {"Authorization": f"Bearer {bob_token}"}
        async with s.post(f"{synapse.client_url}/_matrix/client/v3/join/%23ministries:{name1}", json={}, headers=headers) as r:
            body = await r.json()
            assert r.status == 200 and body["room_id"] == room, (body, synapse.log_tail())
        members = (await hs1.http.get(f"{C}/rooms/{room}/joined_members", token=ta)).body["joined"]
        assert set(members) == {alice, bob}
        # Qasid -> Synapse.
        r = await hs1.http.put(f"{C}/rooms/{room}/send/m.room.message/q1", {"msgtype": "m.text", "body": "from Qasid"}, token=ta)
        assert r.status == 200
        await _synapse_sees(s, synapse, bob_token, room, "from Qasid")
        # Synapse -> Qasid.
        async with s.put(f"{synapse.client_url}/_matrix/client/v3/rooms/{room}/send/m.room.message/s1",
                         json={"msgtype": "m.text", "body": "from Synapse"}, headers=headers) as r:
            assert r.status == 200
        import asyncio
        for _ in range(100):
            chunk = (await hs1.http.get(f"{C}/rooms/{room}/messages", token=ta, params={"dir": "b", "limit": "5"})).body["chunk"]
            if any(e["content"].get("body") == "from Synapse" for e in chunk):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"Qasid never received Synapse's message:\n{synapse.log_tail()}")


async def test_qasid_user_joins_a_synapse_room_and_they_talk(federation: Any, synapse: SynapseServer) -> None:
    import asyncio

    hs1: RunningServer = await federation("127.0.0.1")
    alice, ta, _ = await hs1.login_user("alice")
    C = "/_matrix/client/v3"
    async with aiohttp.ClientSession() as s:
        bob, bob_token = await synapse.register(s, "bob")
        headers = {"Authorization": f"Bearer {bob_token}"}
        async with s.post(f"{synapse.client_url}/_matrix/client/v3/createRoom",
                          json={"preset": "public_chat", "room_alias_name": "synroom", "name": "Synapse room"}, headers=headers) as r:
            room = (await r.json())["room_id"]
        r = await hs1.http.post(f"{C}/join/%23synroom:{synapse.server_name}", {}, token=ta)
        assert r.status == 200 and r.body["room_id"] == room, (r.body, synapse.log_tail())
        state = (await hs1.http.get(f"{C}/rooms/{room}/state/m.room.name/", token=ta)).body
        assert state == {"name": "Synapse room"}
        # Synapse -> Qasid.
        async with s.put(f"{synapse.client_url}/_matrix/client/v3/rooms/{room}/send/m.room.message/s1",
                         json={"msgtype": "m.text", "body": "from Synapse"}, headers=headers) as r:
            assert r.status == 200
        for _ in range(100):
            chunk = (await hs1.http.get(f"{C}/rooms/{room}/messages", token=ta, params={"dir": "b", "limit": "5"})).body["chunk"]
            if any(e["content"].get("body") == "from Synapse" for e in chunk):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"Qasid never received Synapse's message:\n{synapse.log_tail()}")
        # Qasid -> Synapse.
        r = await hs1.http.put(f"{C}/rooms/{room}/send/m.room.message/q1", {"msgtype": "m.text", "body": "from Qasid"}, token=ta)
        assert r.status == 200, r.body
        await _synapse_sees(s, synapse, bob_token, room, "from Qasid")


async def test_invites_between_qasid_and_synapse(federation: Any, synapse: SynapseServer) -> None:
    import asyncio

    hs1: RunningServer = await federation("127.0.0.1")
    alice, ta, _ = await hs1.login_user("alice")
    C = "/_matrix/client/v3"
    async with aiohttp.ClientSession() as s:
        bob, bob_token = await synapse.register(s, "bob")
        headers = {"Authorization": f"Bearer {bob_token}"}
        # Qasid invites a Synapse user, who accepts.
        room = (await hs1.http.post(f"{C}/createRoom", {"preset": "private_chat", "name": "Q room"}, token=ta)).body["room_id"]
        r = await hs1.http.post(f"{C}/rooms/{room}/invite", {"user_id": bob}, token=ta)
        assert r.status == 200, (r.body, synapse.log_tail())
        async with s.post(f"{synapse.client_url}/_matrix/client/v3/join/{room}", json={}, headers=headers) as r:
            assert r.status == 200, (await r.json(), synapse.log_tail())
        joined = (await hs1.http.get(f"{C}/rooms/{room}/joined_members", token=ta)).body["joined"]
        assert set(joined) == {alice, bob}
        # Synapse invites a Qasid user, who accepts.
        async with s.post(f"{synapse.client_url}/_matrix/client/v3/createRoom",
                          json={"preset": "private_chat", "name": "S room", "invite": [alice]}, headers=headers) as r:
            body = await r.json()
            assert r.status == 200, (body, synapse.log_tail())
            sroom = body["room_id"]
        for _ in range(50):
            invites = (await hs1.http.get(f"{C}/sync", token=ta)).body["rooms"]["invite"]
            if sroom in invites:
                break
            await asyncio.sleep(0.1)
        assert sroom in invites
        r = await hs1.http.post(f"{C}/join/{sroom}", {}, token=ta)
        assert r.status == 200, (r.body, synapse.log_tail())
        assert (await hs1.http.get(f"{C}/rooms/{sroom}/state/m.room.name/", token=ta)).body == {"name": "S room"}


async def test_encrypted_conversation_between_nio_clients_on_qasid_and_synapse(
        federation: Any, synapse: SynapseServer, test_ca: LocalCA, tmp_path: Path) -> None:
    """Olm sessions across the two implementations need Synapse to fetch Qasid's device keys and claim
    its one-time keys over federation and the other way round, and room keys travel as to-device EDUs."""
    import asyncio
    import ssl
    from types import SimpleNamespace

    import nio

    from tests.interop.test_nio_e2ee import PASSWORD, Device

    hs1: RunningServer = await federation("127.0.0.1")
    alice = await hs1.create_user("alice", PASSWORD)
    async with aiohttp.ClientSession() as s:
        bob, _ = await synapse.register(s, "bob", PASSWORD)
    ctx = ssl.create_default_context(cafile=str(test_ca.ca_file))
    a = Device(hs1, alice, tmp_path / "a", ssl=ctx)  # type: ignore[arg-type]
    b = Device(SimpleNamespace(base_url=synapse.client_url), bob, tmp_path / "b")  # type: ignore[arg-type]
    try:
        await a.login("alice on Qasid")
        await b.login("bob on Synapse")
        created = await a.client.room_create(invite=[bob], initial_state=[
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
        assert isinstance(created, nio.RoomCreateResponse), created
        room = created.room_id
        for _ in range(100):
            await b.sync()
            if room in b.client.invited_rooms:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the invite never reached Synapse:\n{synapse.log_tail()}")
        assert isinstance(await b.client.join(room), nio.JoinResponse)
        for _ in range(100):
            await a.sync()
            await b.sync()
            if all(d.client.rooms.get(room) and len(d.client.rooms[room].users) == 2 for d in (a, b)):
                break
            await asyncio.sleep(0.1)
        first = await a.send(room, "encrypted from Qasid")
        reply = None
        for _ in range(150):
            await b.sync()
            if first in b.decrypted:
                if reply is None:
                    reply = await b.send(room, "encrypted from Synapse")
                await a.sync()
                if reply in a.decrypted:
                    break
            await asyncio.sleep(0.1)
        assert b.decrypted.get(first) == "encrypted from Qasid", (b.undecryptable, synapse.log_tail())
        assert reply is not None and a.decrypted.get(reply) == "encrypted from Synapse", a.undecryptable
        # Qasid keeps bob's device list (fetched from Synapse's /user/devices, then kept current by its
        # m.device_list_update EDUs) and answers from it what Synapse itself answers.
        held = (await hs1.hs.storage.remote_devices.get([bob]))[bob]
        assert b.client.device_id in held.devices
        r = await hs1.http.post("/_matrix/client/v3/keys/query", {"device_keys": {bob: []}}, token=a.client.access_token)
        assert r.status == 200 and r.body["failures"] == {}, r.body
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{synapse.client_url}/_matrix/client/v3/keys/query", json={"device_keys": {bob: []}},
                              headers={"Authorization": f"Bearer {b.client.access_token}"}) as resp:
                own = await resp.json()

        def signed_part(devices: dict[str, Any]) -> dict[str, Any]:
            return {d: {k: v for k, v in keys.items() if k != "unsigned"} for d, keys in devices.items()}
        assert signed_part(r.body["device_keys"][bob]) == signed_part(own["device_keys"][bob]), (r.body, own)
    finally:
        await a.close()
        await b.close()


async def test_history_from_before_a_join_is_backfilled_both_ways(federation: Any, synapse: SynapseServer) -> None:
    """Each server pages back through the other's older history with /backfill, down to the room's
    creation, and gets the messages in order."""
    hs1: RunningServer = await federation("127.0.0.1")
    alice, ta, _ = await hs1.login_user("alice")
    C = "/_matrix/client/v3"
    async with aiohttp.ClientSession() as s:
        bob, bob_token = await synapse.register(s, "bob")
        headers = {"Authorization": f"Bearer {bob_token}"}

        async def synapse_call(method: str, path: str, body: Any = None, params: Any = None) -> Any:
            async with s.request(method, f"{synapse.client_url}{C}{path}", json=body, params=params, headers=headers) as r:
                out = await r.json()
                assert r.status == 200, (out, synapse.log_tail())
                return out

        # Qasid pages back through a Synapse room.
        syn_room = (await synapse_call("POST", "/createRoom", {"preset": "public_chat", "room_alias_name": "old_syn"}))["room_id"]
        for i in range(15):
            await synapse_call("PUT", f"/rooms/{syn_room}/send/m.room.message/h{i}", {"msgtype": "m.text", "body": f"syn {i}"})
        r = await hs1.http.post(f"{C}/join/%23old_syn:{synapse.server_name}", {}, token=ta)
        assert r.status == 200, r.body
        seen: list[dict[str, Any]] = []
        params = {"dir": "b", "limit": "6"}
        for _ in range(20):
            body = (await hs1.http.get(f"{C}/rooms/{syn_room}/messages", token=ta, params=params)).body
            seen += body["chunk"]
            if "end" not in body:
                break
            params = {"dir": "b", "limit": "6", "from": body["end"]}
        assert seen[-1]["type"] == "m.room.create"
        assert [e["content"]["body"] for e in reversed(seen) if e["type"] == "m.room.message"] == [f"syn {i}" for i in range(15)]

        # Synapse pages back through a Qasid room.
        q_room = (await hs1.http.post(f"{C}/createRoom", {"preset": "public_chat", "room_alias_name": "old_q"}, token=ta)).body["room_id"]
        for i in range(15):
            await hs1.http.put(f"{C}/rooms/{q_room}/send/m.room.message/h{i}", {"msgtype": "m.text", "body": f"q {i}"}, token=ta)
        await synapse_call("POST", f"/join/%23old_q:{hs1.config.server_name}", {})
        texts: list[str] = []
        params = {"dir": "b", "limit": "6"}
        for _ in range(20):
            body = await synapse_call("GET", f"/rooms/{q_room}/messages", params=params)
            texts += [e["content"]["body"] for e in body["chunk"] if e["type"] == "m.room.message"]
            if "end" not in body or not body["chunk"]:
                break
            params = {"dir": "b", "limit": "6", "from": body["end"]}
        assert list(reversed(texts)) == [f"q {i}" for i in range(15)], synapse.log_tail()
