"""No event is lost when a peer is down: the outbox keeps what was not delivered, also across a
restart of the sending server, and catches up when the peer is back."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from federation.sender import FederationSender
from tests.federation.conftest import free_port
from tests.support.databases import fresh_database
from tests.support.servers import RunningServer, make_config, running_server

C = "/_matrix/client/v3"


async def test_events_sent_while_a_peer_is_down_arrive_after_a_restart(federation: Any, test_ca: Any, tmp_path: Path) -> None:
    hs1: RunningServer = await federation("127.0.0.1")
    alice, ta, _ = await hs1.login_user("alice")
    name1 = hs1.config.server_name
    room = (await hs1.http.post(f"{C}/createRoom", {"preset": "public_chat", "room_alias_name": "outage"}, token=ta)).body["room_id"]

    ip, port = "127.0.0.2", free_port("127.0.0.2")
    crt, key = test_ca.issue("peer", ips=[ip])
    (tmp_path / "peerdb").mkdir()
    async with fresh_database("sqlite", tmp_path / "peerdb") as db_url:
        config = make_config(db_url, tmp_path / "peer", server_name=f"{ip}:{port}", federation={"tls_ca_file": str(test_ca.ca_file)})
        client_tls = ssl.create_default_context(cafile=str(test_ca.ca_file))

        def peer() -> Any:
            return running_server(config, host=ip, port=port, tls=test_ca.server_context(crt, key), client_tls=client_tls)

        async with peer() as hs2:
            bob, tb, _ = await hs2.login_user("bob")
            assert (await hs2.http.post(f"{C}/join/%23outage:{name1}", {}, token=tb)).status == 200
        # The peer is down now: these wait in hs1's outbox.
        sent = [(await hs1.http.put(f"{C}/rooms/{room}/send/m.room.message/o{i}", {"msgtype": "m.text", "body": f"while down {i}"},
                                    token=ta)).body["event_id"] for i in range(3)]
        pending = await hs1.hs.storage.federation_outbox.pending()
        assert [row[3]["content"]["body"] for row in pending if row[2] == "pdu"] == [f"while down {i}" for i in range(3)]
        # hs1 "restarts" its sender: a fresh one knows only what the outbox table holds.
        await hs1.hs.federation.sender.close()
        fresh = FederationSender(name1, hs1.hs.federation.client, hs1.hs.clock, hs1.hs.storage.federation_outbox)
        hs1.hs.federation.sender = fresh
        async with peer() as hs2:
            await fresh.resume()
            login = await hs2.http.login("bob", "password123")
            token = login.body["access_token"]
            for _ in range(100):
                chunk = (await hs2.http.get(f"{C}/rooms/{room}/messages", token=token, params={"dir": "b", "limit": "10"})).body["chunk"]
                if {e["event_id"] for e in chunk} >= set(sent):
                    break
                await asyncio.sleep(0.1)
            assert {e["event_id"] for e in chunk} >= set(sent)
            for _ in range(50):
                if not await hs1.hs.storage.federation_outbox.pending():
                    break
                await asyncio.sleep(0.05)
            assert await hs1.hs.storage.federation_outbox.pending() == []
