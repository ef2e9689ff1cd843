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
