"""Auditing rooms that span two ministries: export a room's signed log from a server (admin API and
`qasid audit export`), verify it offline with `qasid audit verify` — clean — then tamper with copies
in each of the ways an insider might and see verification fail, naming the check that caught it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from signedjson.key import generate_signing_key

from homeserver.events import event_id, sign_event
from homeserver.events.signing import encode_base64, sign_json
from tests.support.servers import RunningServer

C = "/_matrix/client/v3"
ROOT = Path(__file__).resolve().parents[2]


def verify(path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    r = subprocess.run([sys.executable, "-m", "homeserver", "audit", "verify", str(path), "--json", *extra],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


async def _wait(srv: RunningServer, token: str, room: str, event_ids: set[str]) -> None:
    for _ in range(100):
        chunk = (await srv.http.get(f"{C}/rooms/{room}/messages", token=token, params={"dir": "b", "limit": "100"})).body["chunk"]
        if {e["event_id"] for e in chunk} >= event_ids:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("events did not arrive")


async def _build_room(hs1: RunningServer, hs2: RunningServer) -> dict[str, Any]:
    alice, ta, _ = await hs1.login_user("alice")
    carol, tc, _ = await hs1.login_user("carol")
    bob, tb, _ = await hs2.login_user("bob")
    room = (await hs1.http.post(f"{C}/createRoom", {"preset": "public_chat", "room_alias_name": "cabinet", "name": "Cabinet"},
                                token=ta)).body["room_id"]
    assert (await hs2.http.post(f"{C}/join/%23cabinet:{hs1.config.server_name}", {}, token=tb)).status == 200
    sent = []
    for i in range(3):
        sent.append((await hs1.http.put(f"{C}/rooms/{room}/send/m.room.message/a{i}", {"msgtype": "m.text", "body": f"alice {i}"}, token=ta)).body["event_id"])
        sent.append((await hs2.http.put(f"{C}/rooms/{room}/send/m.room.message/b{i}", {"msgtype": "m.text", "body": f"bob {i}"}, token=tb)).body["event_id"])
    await _wait(hs1, ta, room, set(sent))
    # Power: bob may now change the topic, and does so from his own server.
    levels = (await hs1.http.get(f"{C}/rooms/{room}/state/m.room.power_levels/", token=ta)).body
    levels["users"][bob] = 50
    assert (await hs1.http.put(f"{C}/rooms/{room}/state/m.room.power_levels/", levels, token=ta)).status == 200
    for _ in range(100):
        r = await hs2.http.put(f"{C}/rooms/{room}/state/m.room.topic/", {"topic": "Budget"}, token=tb)
        if r.status == 200:
            break
        await asyncio.sleep(0.05)
    assert r.status == 200
    topic = r.body["event_id"]
    # Membership: carol joins and leaves; a redaction by its author.
    assert (await hs1.http.post(f"{C}/join/{room}", {}, token=tc)).status == 200
    assert (await hs1.http.post(f"{C}/rooms/{room}/leave", {}, token=tc)).status == 200
    redacted = sent[1]
    assert (await hs2.http.put(f"{C}/rooms/{room}/redact/{redacted}/r1", {"reason": "typo"}, token=tb)).status == 200
    # An encrypted exchange (the servers see only ciphertext; the log proves who sent which ciphertext when).
    await hs1.http.put(f"{C}/rooms/{room}/state/m.room.encryption/", {"algorithm": "m.megolm.v1.aes-sha2"}, token=ta)
    enc = []
    for srv, tok, name in ((hs1, ta, "A"), (hs2, tb, "B")):
        body = {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": f"AwgAEn{name}ciphertext", "sender_key": f"key{name}",
                "session_id": f"session{name}", "device_id": f"DEV{name}"}
        enc.append((await srv.http.put(f"{C}/rooms/{room}/send/m.room.encrypted/e{name}", body, token=tok)).body["event_id"])
    await _wait(hs1, ta, room, {topic, *enc})
    await asyncio.sleep(0.2)  # let hs1's own last events settle into hs2 as well
    return {"room": room, "alice": alice, "bob": bob, "admin_token": ta, "redacted": redacted, "messages": sent, "encrypted": enc}


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return path


async def test_export_verifies_clean_and_every_tampering_is_caught(federation: Any, tmp_path: Path) -> None:
    hs1: RunningServer = await federation("127.0.0.1")
    hs2: RunningServer = await federation("127.0.0.2")
    built = await _build_room(hs1, hs2)
    room = built["room"]
    _, admin, _ = await hs1.login_user("auditor", admin=True)
    r = await hs1.http.session.get(f"{hs1.base_url}/_qasid/admin/v1/rooms/{room}/audit_export",
                                   headers={"Authorization": f"Bearer {admin}"})
    assert r.status == 200 and r.headers["Content-Type"].startswith("application/jsonl")
    export = tmp_path / "room.audit.jsonl"
    export.write_bytes(await r.read())
    forbidden = await hs1.http.get(f"/_qasid/admin/v1/rooms/{room}/audit_export", token=built["admin_token"])
    assert forbidden.status == 403

    code, report = verify(export)
    assert code == 0, report["failures"]
    assert report["ok"] and report["room_id"] == room
    assert report["by_server"][hs2.config.server_name] >= 6  # bob's join, messages, topic, redaction, ciphertext
    assert report["by_sender"][built["bob"]] >= 6
    assert report["redacted"] == [built["redacted"]]  # reported as redacted, not as a failure
    final = {(s["type"], s["state_key"]): s["event_id"] for s in report["final_state"]}
    assert ("m.room.topic", "") in final and ("m.room.encryption", "") in final
    items = _lines(export)
    events = [i for i in items if i["kind"] == "event"]

    def event_of(eid: str) -> dict[str, Any]:
        return next(i for i in events if i["event_id"] == eid)

    # 1. A message body changed after the fact.
    changed = [dict(i) for i in items]
    target = next(i for i in changed if i.get("event_id") == built["messages"][2])
    target["pdu"] = {**target["pdu"], "content": {"msgtype": "m.text", "body": "alice never said this"}}
    code, rep = verify(_write(tmp_path / "changed.jsonl", changed))
    assert code == 1 and [(f["event_id"], f["check"]) for f in rep["failures"]] == [(built["messages"][2], "hash")]

    # 2. An event dropped from the middle of the graph.
    dropped_id = built["messages"][3]
    dropped = [i for i in items if i.get("event_id") != dropped_id]
    code, rep = verify(_write(tmp_path / "dropped.jsonl", dropped))
    assert code == 1 and dropped_id in rep["missing_events"]
    assert any(f["check"] == "missing" for f in rep["failures"])

    # 3. An event of hs2 re-signed with a foreign key under hs2's key ID.
    hs2_key = hs2.hs.federation.local_keys.signing_key
    foreign = generate_signing_key(hs2_key.version)
    resigned = [dict(i) for i in items]
    victim = next(i for i in resigned if i.get("event_id") == built["messages"][1 + 2])
    pdu = {k: v for k, v in victim["pdu"].items() if k != "signatures"}
    victim["pdu"] = sign_event(pdu, hs2.config.server_name, foreign, built_version(items))
    assert event_id(victim["pdu"], built_version(items)) == victim["event_id"]  # the ID does not cover signatures
    code, rep = verify(_write(tmp_path / "resigned.jsonl", resigned))
    assert code == 1 and [(f["event_id"], f["check"]) for f in rep["failures"]] == [(victim["event_id"], "signature")]

    # 4. An event inserted, correctly signed by hs2's real key, that the room's rules refuse: bob (power
    #    50) tries to make himself an administrator (100).
    version = built_version(items)
    levels_event = next(i for i in events if i["pdu"]["type"] == "m.room.power_levels" and built["bob"] in i["pdu"]["content"].get("users", {}))
    bob_member = [i for i in events if i["pdu"]["type"] == "m.room.member" and i["pdu"].get("state_key") == built["bob"]][-1]
    last = events[-1]
    grab = {"room_id": room, "type": "m.room.power_levels", "state_key": "", "sender": built["bob"],
            "content": {**levels_event["pdu"]["content"], "users": {**levels_event["pdu"]["content"]["users"], built["bob"]: 100}},
            "prev_events": [last["event_id"]], "auth_events": sorted([levels_event["event_id"], bob_member["event_id"]]),
            "depth": last["pdu"]["depth"] + 1, "origin_server_ts": last["pdu"]["origin_server_ts"] + 1}
    grab = sign_event(grab, hs2.config.server_name, hs2_key, version)
    grab_id = event_id(grab, version)
    inserted = [i for i in items if i["kind"] != "end"] + [{"kind": "event", "event_id": grab_id, "status": "accepted",
                                                             "in_range": True, "pdu": grab},
                                                            {**items[-1], "events": items[-1]["events"] + 1}]
    code, rep = verify(_write(tmp_path / "inserted.jsonl", inserted))
    assert code == 1
    assert (grab_id, "auth_events") in [(f["event_id"], f["check"]) for f in rep["failures"]]

    # 5. hs2's key replaced in the export by one the forger controls (self-signed, so it looks right).
    keyed = [dict(i) for i in items]
    doc = next(i for i in keyed if i["kind"] == "server_keys" and i["server_name"] == hs2.config.server_name)
    forged = {"server_name": hs2.config.server_name, "valid_until_ts": doc["response"]["valid_until_ts"],
              "verify_keys": {f"ed25519:{foreign.version}": {"key": encode_base64(bytes(foreign.verify_key))}},
              "old_verify_keys": {}}
    doc["response"] = sign_json(forged, hs2.config.server_name, foreign)
    code, rep = verify(_write(tmp_path / "rekeyed.jsonl", keyed))
    assert code == 1
    # Every event of hs2 fails its signature check (what follows from losing them, e.g. a different
    # final state, is reported as well).
    assert {f["event_id"] for f in rep["failures"] if f["check"] == "signature"} == {
        i["event_id"] for i in events if i["pdu"]["sender"].endswith(hs2.config.server_name)}

    # With the keys the auditor holds independently (the federation directory's), the clean export is
    # anchored, and even a wholly consistent forgery (key and events re-signed together) is caught.
    trusted = tmp_path / "trusted.json"
    trusted.write_text(json.dumps({
        hs1.config.server_name: {hs1.hs.federation.local_keys.key_id: hs1.hs.federation.local_keys.public_key},
        hs2.config.server_name: {hs2.hs.federation.local_keys.key_id: hs2.hs.federation.local_keys.public_key}}))
    code, rep = verify(export, "--trusted-keys", str(trusted))
    assert code == 0 and rep["unanchored_servers"] == []
    consistent = [dict(i) for i in keyed]
    for i in consistent:
        if i["kind"] == "event" and i["pdu"]["sender"].endswith(hs2.config.server_name):
            i["pdu"] = sign_event({k: v for k, v in i["pdu"].items() if k != "signatures"}, hs2.config.server_name, foreign, version)
    code, rep = verify(_write(tmp_path / "consistent.jsonl", consistent))
    assert code == 0  # without an anchor a complete forgery of one server's part cannot be told apart...
    code, rep = verify(tmp_path / "consistent.jsonl", "--trusted-keys", str(trusted))
    assert code == 1 and any(f["check"] == "key" for f in rep["failures"])  # ...with one it can


def built_version(items: list[dict[str, Any]]) -> str:
    return items[0]["room_version"]


async def test_cli_export_with_a_period_and_the_human_report(make_server: Any, tmp_path: Path) -> None:
    server = await make_server()
    _, token, _ = await server.login_user("alice")
    room = (await server.http.post(f"{C}/createRoom", {"preset": "private_chat", "name": "Files"}, token=token)).body["room_id"]
    early = (await server.http.put(f"{C}/rooms/{room}/send/m.room.message/1", {"msgtype": "m.text", "body": "before"}, token=token)).body["event_id"]
    await asyncio.sleep(0.02)
    cut = server.hs.clock.time_ms()
    await asyncio.sleep(0.02)
    late = (await server.http.put(f"{C}/rooms/{room}/send/m.room.message/2", {"msgtype": "m.text", "body": "after"}, token=token)).body["event_id"]
    cfg = tmp_path / "homeserver.yaml"
    db = server.config.database_url
    cfg.write_text(yaml.safe_dump({"server_name": server.config.server_name, "database": db,
                                   "signing_key_path": str(server.config.resolve_path(server.config.signing_key_path)),
                                   "media_store_path": str(tmp_path / "media")}))
    out = tmp_path / "files.audit.jsonl"
    r = subprocess.run([sys.executable, "-m", "homeserver", "audit", "export", "-c", str(cfg), "--room", room,
                        "--from", str(cut), "-o", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    items = {i.get("event_id"): i for i in _lines(out) if i["kind"] == "event"}
    assert items[early]["in_range"] is False and items[early]["pdu"]["content"] == {}  # outside the period: content withheld
    assert items[late]["in_range"] is True and items[late]["pdu"]["content"]["body"] == "after"
    r = subprocess.run([sys.executable, "-m", "homeserver", "audit", "verify", str(out)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "RESULT: CLEAN" in r.stdout and server.config.server_name in r.stdout
    bad = subprocess.run([sys.executable, "-m", "homeserver", "audit", "export", "-c", str(cfg), "--room", "!nope:x",
                          "-o", str(tmp_path / "x.jsonl")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Unknown room" in bad.stderr
    notexport = tmp_path / "not.jsonl"
    notexport.write_text("{}\n")
    r = subprocess.run([sys.executable, "-m", "homeserver", "audit", "verify", str(notexport)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "not a qasid.audit.v1 export" in r.stderr


async def test_one_forged_event_in_a_linear_log_is_the_only_failure(make_server: Any, tmp_path: Path) -> None:
    """In a log with no forks every later event descends from the forged one: the room's state must still
    flow through it, or each of them would be reported as refused by an empty state."""
    server = await make_server()
    _, token, _ = await server.login_user("alice", admin=True)
    room = (await server.http.post(f"{C}/createRoom", {"preset": "private_chat"}, token=token)).body["room_id"]
    sent = [(await server.http.put(f"{C}/rooms/{room}/send/m.room.message/{i}", {"msgtype": "m.text", "body": f"m{i}"},
                                   token=token)).body["event_id"] for i in range(4)]
    await server.http.put(f"{C}/rooms/{room}/state/m.room.topic/", {"topic": "after the forgery"}, token=token)
    r = await server.http.session.get(f"{server.base_url}/_qasid/admin/v1/rooms/{room}/audit_export",
                                      headers={"Authorization": f"Bearer {token}"})
    items = [json.loads(line) for line in (await r.read()).decode().splitlines() if line.strip()]
    by_id = {i["event_id"]: i for i in items if i["kind"] == "event"}
    assert by_id[sent[2]]["pdu"]["prev_events"] == [sent[1]]  # linear: each message follows the one before
    target = by_id[sent[1]]
    target["pdu"] = {**target["pdu"], "content": {"msgtype": "m.text", "body": "never said"}}
    code, rep = verify(_write(tmp_path / "forged.jsonl", items))
    assert code == 1
    assert [(f["event_id"], f["check"]) for f in rep["failures"]] == [(sent[1], "hash")]
    final = {(s["type"], s["state_key"]): s["event_id"] for s in rep["final_state"]}
    assert ("m.room.topic", "") in final
