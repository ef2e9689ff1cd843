"""Federation under load, Qasid beside Synapse on one machine: `python -m bench federation`.

Three servers on loopback, each its own process with TLS from a throwaway CA: a Qasid receiver
(127.0.0.1), a Qasid origin (127.0.0.2) and Synapse (127.0.0.3). Two measurements:

* **/send receipt**: the bench signs PDUs with the origin server's own key (as a real server would: a
  chain of messages from a user of the origin who has joined the room) and pushes them to the receiver
  in transactions of 50, one transaction in flight, as a federation sender does. Each receiver checks
  every PDU (signatures, hashes, auth) before it answers, so events/s is receipt throughput. The same
  chain shape is pushed to Qasid and to Synapse, each into a room it hosts.
* **Join into a 1,000-member room**: a room on the Qasid receiver gets N local members; then a user of
  the Qasid origin and a user of Synapse join it over federation (make_join, send_join with the full
  state, checking every state event's signatures and auth). Wall time of the client's /join.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from federation.client import FederationClient
from federation.policy import FederationPolicy
from homeserver.events import event_id, sign_event
from homeserver.signing_key import read_signing_keys
from tests.support.processes import QasidProcess, free_port, shared_secret_register
from tests.support.synapse import SynapseServer, start_synapse, stop_synapse
from tests.support.tls import LocalCA

C = "/_matrix/client/v3"


class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str, token: str) -> None:
        self.session, self.base, self.token = session, base, token

    async def call(self, method: str, path: str, body: Any = None, params: Any = None) -> Any:
        async with self.session.request(method, self.base + C + path, json=body, params=params,
                                        headers={"Authorization": f"Bearer {self.token}"}) as r:
            out = await r.json()
            if r.status != 200:
                raise RuntimeError(f"{method} {path}: {r.status} {out}")
            return out


async def _room_head(client: Client, room: str, user: str) -> tuple[str, list[str], str, int]:
    """(room version, auth event IDs for a message from ``user``, latest event ID, its depth guess)."""
    state = await client.call("GET", f"/rooms/{room}/state")
    by_key = {(e["type"], e["state_key"]): e for e in state}
    version = by_key[("m.room.create", "")]["content"].get("room_version", "1")
    auth = [by_key[("m.room.power_levels", "")]["event_id"], by_key[("m.room.member", user)]["event_id"]]
    if version not in ("12",):
        auth.append(by_key[("m.room.create", "")]["event_id"])
    latest = (await client.call("GET", f"/rooms/{room}/messages", params={"dir": "b", "limit": "1"}))["chunk"][0]
    return version, sorted(auth), latest["event_id"], 100


def _chain(room: str, sender: str, origin: str, key: Any, version: str, auth: list[str], prev: str, depth: int,
           count: int) -> list[dict[str, Any]]:
    out = []
    now = int(time.time() * 1000)
    for i in range(count):
        ev = {"room_id": room, "type": "m.room.message", "sender": sender, "origin": origin,
              "content": {"msgtype": "m.text", "body": f"federated message {i}"},
              "prev_events": [prev], "auth_events": auth, "depth": depth + i, "origin_server_ts": now + i}
        signed = sign_event(ev, origin, key, version)
        out.append(signed)
        prev = event_id(signed, version)
    return out


async def _push(fed: FederationClient, dest: str, pdus: list[dict[str, Any]], origin: str, version: str,
                host: "Client", room: str) -> tuple[float, int]:
    """Send in transactions of 50, one at a time, each only once the receiver holds the previous one's
    last event (Synapse answers /send before it has processed a transaction and drops what overflows
    its per-room queue; the origin here cannot answer get_missing_events for it, so the bench paces
    itself as the receiver goes). Returns (seconds, PDUs the receiver reported as errors)."""
    errors = 0
    t0 = time.perf_counter()
    for n, start in enumerate(range(0, len(pdus), 50)):
        batch = pdus[start:start + 50]
        resp = await fed.put_json(dest, f"/_matrix/federation/v1/send/bench{n}-{int(t0)}",
                                  {"origin": origin, "origin_server_ts": int(time.time() * 1000), "pdus": batch, "edus": []})
        errors += sum(1 for r in (resp.get("pdus") or {}).values() if r.get("error"))
        last = event_id(batch[-1], version)

        async def held(last: str = last) -> bool:
            try:
                await host.call("GET", f"/rooms/{room}/event/{quote(last)}")
                return True
            except RuntimeError:
                return False

        await _wait_for(held, 120, poll=0.005)
    return time.perf_counter() - t0, errors


async def _wait_for(check: Any, timeout: float = 60.0, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        await asyncio.sleep(poll)


async def run(events: int, members: int, work: Path) -> dict[str, Any]:
    ca = LocalCA(work / "ca")
    tls = ssl.create_default_context(cafile=str(ca.ca_file))
    p1, p2 = free_port("127.0.0.1"), free_port("127.0.0.2")
    receiver = QasidProcess(f"127.0.0.1:{p1}", "127.0.0.1", p1, work / "qasid-receiver")
    origin = QasidProcess(f"127.0.0.2:{p2}", "127.0.0.2", p2, work / "qasid-origin")
    for s in (receiver, origin):
        s.write_config(ca, [receiver, origin], {"federation_domain_whitelist": None, "log_level": "WARNING"})
    synapse: SynapseServer | None = None
    results: dict[str, Any] = {"events": events, "members": members}
    try:
        await asyncio.gather(receiver.start(tls), origin.start(tls))
        synapse = await start_synapse(ca, work / "synapse", "127.0.0.3", free_port("127.0.0.3"), free_port("127.0.0.3"))
        key = read_signing_keys(origin.data / "signing.key")[0]
        fed = FederationClient(origin.server_name, key, FederationPolicy(), ca_bundle=str(ca.ca_file))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls, limit=64)) as session:
            alice_id, alice_tok = await receiver.register(session, "alice")
            bob_id, bob_tok = await origin.register(session, "bob")
            syn_id, syn_tok = await synapse.register(session, "carol")
            alice = Client(session, receiver.base_url, alice_tok)
            bob = Client(session, origin.base_url, bob_tok)
            carol = Client(session, synapse.client_url, syn_tok)

            # --- /send receipt -------------------------------------------------------------------
            for name, host, dest in (("qasid", alice, receiver.server_name), ("synapse", carol, synapse.server_name)):
                room = (await host.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
                await bob.call("POST", f"/join/{quote(room)}", {}, params={"server_name": dest})
                version, auth, prev, _ = await _room_head(bob, room, bob_id)
                depth = 50
                pdus = _chain(room, bob_id, origin.server_name, key, version, auth, prev, depth, events)
                seconds, errors = await _push(fed, dest, pdus, origin.server_name, version, host, room)
                results[f"send_{name}_eps"] = round(events / seconds, 1)
                results[f"send_{name}_errors"] = errors

            # --- joining a large room ------------------------------------------------------------
            room = (await alice.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
            gate = asyncio.Semaphore(16)

            async def member(i: int) -> None:
                async with gate:
                    _, tok = await shared_secret_register(session, receiver.base_url, receiver.secret, f"m{i}")
                    await Client(session, receiver.base_url, tok).call("POST", f"/join/{quote(room)}", {})

            t0 = time.perf_counter()
            await asyncio.gather(*(member(i) for i in range(members - 1)))
            results["members_setup_s"] = round(time.perf_counter() - t0, 1)
            for name, joiner in (("qasid", bob), ("synapse", carol)):
                t0 = time.perf_counter()
                await joiner.call("POST", f"/join/{quote(room)}", {}, params={"server_name": receiver.server_name})
                results[f"join_{name}_s"] = round(time.perf_counter() - t0, 2)
        await fed.close()
    finally:
        if synapse is not None:
            stop_synapse(synapse)
        receiver.stop()
        origin.stop()
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench federation")
    ap.add_argument("--events", type=int, default=2000, help="PDUs pushed through /send to each receiver")
    ap.add_argument("--members", type=int, default=1000, help="members of the room joined over federation")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qasid-fed-bench-") as tmp:
        r = asyncio.run(run(args.events, args.members, Path(tmp)))
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"\nFederation ({r['events']} PDUs through /send; a room of {r['members']} members joined over federation)")
    print(f"{'':32}{'Qasid':>12}{'Synapse':>12}{'ratio':>10}")
    q, s = r["send_qasid_eps"], r["send_synapse_eps"]
    print(f"{'/send receipt (events/s)':32}{q:>12}{s:>12}{q / s:>9.1f}x")
    q, s = r["join_qasid_s"], r["join_synapse_s"]
    print(f"{'join, 1,000-member room (s)':32}{q:>12}{s:>12}{q / s:>10.2f}")
    if r["send_qasid_errors"] or r["send_synapse_errors"]:
        print(f"refused PDUs: Qasid {r['send_qasid_errors']}, Synapse {r['send_synapse_errors']}")
