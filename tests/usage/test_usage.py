"""Usage metering for billing, over real HTTP on SQLite and PostgreSQL: daily visits recorded once per
user per UTC day (the server's clock is a FakeClock the test moves across days), staff told apart from
appservice users, every figure of the report checked exactly, the signature checked against the key
the server publishes (and refused after tampering), the CSV, the admin API's errors, events received
over federation per origin, and the ``qasid usage`` commands."""

from __future__ import annotations

import asyncio
import copy
import csv
import datetime
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from homeserver.clock import FakeClock
from homeserver.services.usage import NotVerified, keys_from_document, verify_report
from tests.federation.conftest import federation, test_ca  # noqa: F401  (fixtures for the federation test)
from tests.support.servers import RunningServer

C = "/_matrix/client/v3"
U = "/_qasid/admin/v1/usage"
AS_TOKEN, HS_TOKEN = "usage-as-token", "usage-hs-token"
DAY_MS = 86_400_000
START = datetime.datetime(2024, 3, 1, 10, 0, tzinfo=datetime.timezone.utc)  # a Friday, mid-morning UTC
ROOT = Path(__file__).resolve().parents[2]


def _registration(tmp_path: Path) -> Path:
    """An appservice that receives nothing (url null). Beside its exclusive namespace it declares a
    non-exclusive interest in every user, which must not make staff count as appservice users."""
    reg = {"id": "bridge", "url": None, "as_token": AS_TOKEN, "hs_token": HS_TOKEN, "sender_localpart": "bridgebot",
           "rate_limited": False,
           "namespaces": {"users": [{"exclusive": True, "regex": "@bridge_.*:hs1\\.test"},
                                    {"exclusive": False, "regex": "@.*:hs1\\.test"}]}}
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(reg))
    return path


async def _send(srv: RunningServer, token: str, room: str, etype: str, content: dict[str, Any], txn: str) -> str:
    r = await srv.http.put(f"{C}/rooms/{room}/send/{etype}/{txn}", content, token=token)
    assert r.status == 200, r.body
    return r.body["event_id"]


async def _upload(srv: RunningServer, token: str, size: int) -> None:
    r = await srv.http.request("POST", "/_matrix/media/v3/upload", raw=b"x" * size, token=token,
                               headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200, r.body


def _split(staff: int, appservice: int) -> dict[str, int]:
    return {"staff": staff, "appservice": appservice, "total": staff + appservice}


async def _published_keys(srv: RunningServer) -> dict[str, Any]:
    r = await srv.http.get("/_matrix/key/v2/server")
    assert r.status == 200
    return r.body


async def test_report_counts_every_figure_exactly_and_is_signed(make_server: Any, tmp_path: Path) -> None:
    clock = FakeClock(int(START.timestamp() * 1000))
    srv: RunningServer = await make_server(clock=clock, app_service_config_files=[str(_registration(tmp_path))])
    name = srv.config.server_name
    as_auth = {"Authorization": f"Bearer {AS_TOKEN}"}
    writes: list[tuple[str, str]] = []
    record = srv.hs.storage.usage.record_visit

    async def counting(user_id: str, day: str) -> None:
        writes.append((user_id, day))
        await record(user_id, day)

    srv.hs.storage.usage.record_visit = counting  # type: ignore[method-assign]

    # --- day 1, 2024-03-01: accounts, a room, two uploads -----------------------------------------
    admin, admin_token, _ = await srv.login_user("admin", admin=True)
    alice, ta, _ = await srv.login_user("alice")
    bob, tb, _ = await srv.login_user("bob")
    r = await srv.http.post(f"{C}/register", {"type": "m.login.application_service", "username": "bridge_1",
                                               "inhibit_login": True}, headers=as_auth)
    assert r.status == 200, r.body
    puppet = r.body["user_id"]
    room = (await srv.http.post(f"{C}/createRoom", {"preset": "public_chat"}, token=ta)).body["room_id"]
    creation_state = (await srv.http.get(f"{C}/rooms/{room}/state", token=ta)).body
    await _upload(srv, ta, 100)
    await _upload(srv, ta, 250)
    for _ in range(3):  # the rest of the day costs no SQL for alice
        assert (await srv.http.get(f"{C}/account/whoami", token=ta)).status == 200
    # The appservice masquerading as its user: the user is active, as an appservice user.
    r = await srv.http.get(f"{C}/account/whoami", headers=as_auth, params={"user_id": puppet})
    assert r.status == 200 and r.body["user_id"] == puppet
    assert sorted(writes) == sorted([(alice, "2024-03-01"), (puppet, "2024-03-01")])

    # --- day 2: people join and talk; one account is made and deactivated -----------------------------
    clock.advance(DAY_MS)
    assert (await srv.http.post(f"{C}/join/{quote(room)}", {}, token=tb)).status == 200
    assert (await srv.http.post(f"{C}/join/{quote(room)}", {}, headers=as_auth, params={"user_id": puppet})).status == 200
    messages = [await _send(srv, ta, room, "m.room.message", {"msgtype": "m.text", "body": f"hello {i}"}, f"m{i}")
                for i in range(3)]
    for i in range(2):
        await _send(srv, tb, room, "m.room.encrypted", {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": f"AwgA{i}",
                                                         "sender_key": "k", "session_id": "s", "device_id": "D"}, f"e{i}")
    await _send(srv, ta, room, "m.call.invite", {"call_id": "c1", "lifetime": 60000, "version": 1,
                                                 "offer": {"type": "offer", "sdp": "v=0"}}, "c1")
    await _send(srv, ta, room, "m.reaction", {"m.relates_to": {"rel_type": "m.annotation", "event_id": messages[0], "key": "+1"}}, "r1")
    assert (await srv.http.put(f"{C}/rooms/{room}/state/m.room.topic/", {"topic": "Budget"}, token=ta)).status == 200
    await _upload(srv, tb, 1000)
    dave = await srv.create_user("dave")
    await srv.hs.accounts.deactivate(dave, erase=False)

    # --- day 3: nothing at all.  Day 4: alice looks in; the admin asks for the report ---------------
    clock.advance(2 * DAY_MS)
    assert (await srv.http.get(f"{C}/account/whoami", token=ta)).status == 200
    r = await srv.http.get(U, token=admin_token, params={"from": "2024-03-01", "to": "2024-03-04"})
    assert r.status == 200, r.body
    report = r.body

    assert report["schema"] == "qasid.usage.v1" and report["server_name"] == name
    assert report["generated_ts"] == clock.time_ms()
    assert report["period"] == {"from": "2024-03-01", "to": "2024-03-04", "days": 4, "complete": False}
    days = {d["day"]: d for d in report["daily"]}
    assert list(days) == ["2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04"]
    d1, d2, d3, d4 = (days[k] for k in days)
    # Daily active users: the appservice's sender made no request; the admin only on day 4.
    assert [d["active_users"] for d in (d1, d2, d3, d4)] == [_split(1, 1), _split(2, 1), _split(0, 0), _split(2, 0)]
    # Registrations: the sender (created at start-up) and the registered puppet are appservice users.
    assert d1["new_registrations"] == _split(3, 2) and d2["new_registrations"] == _split(1, 0)
    assert d1["events_sent"] == {"messages": 0, "calls": 0, "state": len(creation_state), "other": 0,
                                 "total": len(creation_state)}
    # Day 2: 3 messages + 2 encrypted; 1 call invite; 2 joins + the topic; the reaction.
    assert d2["events_sent"] == {"messages": 5, "calls": 1, "state": 3, "other": 1, "total": 10}
    assert d1["rooms_created"] == 1 and d2["rooms_created"] == 0
    assert d1["media_uploaded"] == {"count": 2, "bytes": 350} and d2["media_uploaded"] == {"count": 1, "bytes": 1000}
    empty = {"day": "2024-03-03", "active_users": _split(0, 0), "new_registrations": _split(0, 0),
             "events_sent": {"messages": 0, "calls": 0, "state": 0, "other": 0, "total": 0}, "rooms_created": 0,
             "media_uploaded": {"count": 0, "bytes": 0}, "federation_events_received": {"total": 0, "by_origin": {}}}
    assert d3 == empty
    t = report["totals"]
    assert t["active_users"] == _split(3, 1)  # alice, bob, admin; the puppet
    assert t["registered_users_at_end"] == _split(3, 2)  # dave is deactivated; admins are staff
    assert t["new_registrations"] == _split(4, 2)
    assert t["events_sent"] == {"messages": 5, "calls": 1, "state": len(creation_state) + 3, "other": 1,
                                "total": len(creation_state) + 10}
    assert t["rooms_created"] == 1
    assert t["media_uploaded"] == {"count": 3, "bytes": 1350}
    assert t["media_stored_at_end"] == {"bytes": 1350, "remote_cache_bytes": 0}
    assert t["federation_events_received"] == {"total": 0, "by_origin": {}}
    # One write per user per day, however many requests.
    assert len(writes) == 2 + 3 + 2
    assert await srv.hs.storage.db.fetchval("SELECT COUNT(*) FROM user_daily_visits") == 7

    # A narrower period sees only its own days, and a finished period says so.
    r = await srv.http.get(U, token=admin_token, params={"from": "2024-03-02", "to": "2024-03-03"})
    assert [d["day"] for d in r.body["daily"]] == ["2024-03-02", "2024-03-03"]
    assert r.body["period"]["complete"] is True
    assert r.body["totals"]["active_users"] == _split(2, 1) and r.body["totals"]["rooms_created"] == 0
    assert r.body["totals"]["media_stored_at_end"]["bytes"] == 1350
    r = await srv.http.get(U, token=admin_token, params={"from": "2024-03-01", "to": "2024-03-01"})
    assert r.body["totals"]["registered_users_at_end"] == _split(3, 2)
    assert r.body["totals"]["media_stored_at_end"]["bytes"] == 350
    # No parameters: the current UTC month so far.
    r = await srv.http.get(U, token=admin_token)
    assert r.body["period"] == {"from": "2024-03-01", "to": "2024-03-04", "days": 4, "complete": False}

    # --- the signature: verifies with the published key; any change breaks it -----------------------
    keys = keys_from_document(await _published_keys(srv), name)
    assert verify_report(report, keys) == srv.hs.federation.local_keys.key_id
    for tamper in (lambda x: x["totals"]["active_users"].__setitem__("staff", 2),
                   lambda x: x["daily"][1]["events_sent"].__setitem__("messages", 4),
                   lambda x: x["period"].__setitem__("to", "2024-03-31"),
                   lambda x: x.__setitem__("generated_ts", x["generated_ts"] + 1)):
        changed = copy.deepcopy(report)
        tamper(changed)
        with pytest.raises(NotVerified, match="does not match"):
            verify_report(changed, keys)
    other = copy.deepcopy(report)
    other["server_name"] = "hs2.test"
    with pytest.raises(NotVerified):
        keys_from_document(await _published_keys(srv), other["server_name"])

    # --- CSV: one row per day, the same figures, unsigned --------------------------------------------
    r = await srv.http.session.get(f"{srv.base_url}{U}", params={"from": "2024-03-01", "to": "2024-03-04", "format": "csv"},
                                   headers={"Authorization": f"Bearer {admin_token}"})
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/csv")
    assert r.headers["Content-Disposition"] == 'attachment; filename="usage-hs1.test-2024-03-01-2024-03-04.csv"'
    rows = list(csv.DictReader(io.StringIO(await r.text())))
    assert [row["day"] for row in rows] == ["2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04"]
    assert rows[1] == {"day": "2024-03-02", "active_users_staff": "2", "active_users_appservice": "1",
                       "active_users_total": "3", "new_registrations_staff": "1", "new_registrations_appservice": "0",
                       "new_registrations_total": "1", "events_messages": "5", "events_calls": "1", "events_state": "3",
                       "events_other": "1", "events_total": "10", "rooms_created": "0", "media_uploaded_count": "1",
                       "media_uploaded_bytes": "1000", "federation_events_received": "0"}
    assert all(v == "0" for k, v in rows[2].items() if k != "day")


async def test_bad_parameters_and_non_admins_get_matrix_errors(make_server: Any) -> None:
    clock = FakeClock(int(START.timestamp() * 1000))
    srv: RunningServer = await make_server(clock=clock)
    _, admin, _ = await srv.login_user("admin", admin=True)
    _, alice, _ = await srv.login_user("alice")
    for params, param in [({"from": "2024-13-01"}, "from"), ({"from": "20240301"}, "from"), ({"from": ""}, "from"),
                          ({"to": "2024-02-30"}, "to"), ({"from": "2024-03-01", "to": "2024-02-29"}, "from"),
                          ({"to": "2024-03-02"}, "to"),  # tomorrow
                          ({"from": "2023-02-28", "to": "2024-02-29"}, "to"),  # 367 days
                          ({"format": "xml"}, "format")]:
        r = await srv.http.get(U, token=admin, params=params)
        assert r.status == 400 and r.errcode == "M_INVALID_PARAM", (params, r.body)
        assert f"parameter {param}:" in r.body["error"], (params, r.body)
    r = await srv.http.get(U, token=admin, params={"from": "2023-03-02", "to": "2024-03-01"})  # 366 days: allowed
    assert r.status == 200 and len(r.body["daily"]) == 366 and r.body["period"]["days"] == 366
    r = await srv.http.get(U, token=alice)
    assert r.status == 403 and r.errcode == "M_FORBIDDEN"
    r = await srv.http.get(U, token=alice, params={"from": "nonsense"})  # refused as non-admin before anything else
    assert r.status == 403 and r.errcode == "M_FORBIDDEN"
    r = await srv.http.get(U)
    assert r.status == 401 and r.errcode == "M_MISSING_TOKEN"


async def test_events_received_over_federation_are_counted_per_origin(federation: Any, engine: str) -> None:  # noqa: F811
    hs1: RunningServer = await federation("127.0.0.1", engine=engine)
    hs2: RunningServer = await federation("127.0.0.2", engine=engine)
    _, ta, _ = await hs1.login_user("alice")
    _, admin, _ = await hs1.login_user("admin", admin=True)
    _, tb, _ = await hs2.login_user("bob")
    room = (await hs1.http.post(f"{C}/createRoom", {"preset": "public_chat", "room_alias_name": "fin"}, token=ta)).body["room_id"]
    assert (await hs2.http.post(f"{C}/join/{quote('#fin:' + hs1.config.server_name)}", {}, token=tb)).status == 200
    sent = {await _send(hs2, tb, room, "m.room.message", {"msgtype": "m.text", "body": f"b{i}"}, f"b{i}") for i in range(3)}
    for _ in range(200):
        chunk = (await hs1.http.get(f"{C}/rooms/{room}/messages", token=ta, params={"dir": "b", "limit": "50"})).body["chunk"]
        if sent <= {e["event_id"] for e in chunk}:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("bob's messages did not reach hs1")
    today = datetime.datetime.now(datetime.timezone.utc).date()
    params = {"from": (today - datetime.timedelta(days=1)).isoformat(), "to": today.isoformat()}  # safe across midnight
    r = await hs1.http.get(U, token=admin, params=params)
    assert r.status == 200, r.body
    # bob's join and his three messages; hs1's own events are not "received".
    assert r.body["totals"]["federation_events_received"] == {"total": 4, "by_origin": {hs2.config.server_name: 4}}
    assert r.body["totals"]["events_sent"]["messages"] == 0
    assert sum(d["federation_events_received"]["total"] for d in r.body["daily"]) == 4


# --- the qasid usage commands -------------------------------------------------------------------------

def qasid(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "homeserver", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ))


def test_cli_report_and_offline_verify(db_url: str, tmp_path: Path) -> None:
    from homeserver.config import load_config
    from homeserver.signing_key import read_signing_keys
    from tests.support.servers import running_server

    data = tmp_path / "data"
    assert qasid("init", "--server-name", "mofa.gov.test", "--data-dir", str(data)).returncode == 0
    cfg = data / "homeserver.yaml"
    text = cfg.read_text().replace("memory_cost_kib: 65536", "memory_cost_kib: 64").replace("time_cost: 3", "time_cost: 1")
    lines = [f"database: {db_url}" if line.startswith("database:") else line for line in text.splitlines()]
    cfg.write_text("\n".join(lines) + "\n")
    for user in ("alice", "bob"):
        r = qasid("user", "add", user, "--password", "long-enough-pw", "-c", str(cfg))
        assert r.returncode == 0, r.stderr
    assert qasid("user", "deactivate", "bob", "-c", str(cfg)).returncode == 0

    today = datetime.datetime.now(datetime.timezone.utc).date()
    start = today - datetime.timedelta(days=2)
    out = tmp_path / "report.json"
    r = qasid("usage", "report", "-c", str(cfg), "--from", start.isoformat(), "-o", str(out))
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["server_name"] == "mofa.gov.test" and report["period"]["to"] == today.isoformat()
    assert [d["day"] for d in report["daily"]] == [(start + datetime.timedelta(days=i)).isoformat() for i in range(3)]
    assert report["totals"]["new_registrations"] == _split(2, 0)
    assert report["totals"]["registered_users_at_end"] == _split(1, 0)
    r = qasid("usage", "report", "-c", str(cfg), "--from", start.isoformat(), "--format", "csv")
    assert r.returncode == 0 and len(r.stdout.strip().splitlines()) == 1 + 3 and r.stdout.startswith("day,")

    # The key document as the server publishes it, saved by the billing office.
    async def published() -> dict[str, Any]:
        async with running_server(load_config(cfg)) as srv:
            return (await srv.http.get("/_matrix/key/v2/server")).body

    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps(asyncio.run(published())))
    key = read_signing_keys(data / "signing.key")[0]
    from unpaddedbase64 import encode_base64

    key_b64, key_id = encode_base64(bytes(key.verify_key)), f"ed25519:{key.version}"
    r = qasid("usage", "verify", str(out), "--server-keys", str(keys_file))
    assert r.returncode == 0 and r.stdout.startswith("verified: usage report of mofa.gov.test") and key_id in r.stdout, r
    r = qasid("usage", "verify", str(out), "--key", key_b64, "--key-id", key_id)
    assert r.returncode == 0, r

    tampered = json.loads(out.read_text())
    tampered["totals"]["registered_users_at_end"]["staff"] = 0
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(tampered))
    for args in (["--server-keys", str(keys_file)], ["--key", key_b64, "--key-id", key_id]):
        r = qasid("usage", "verify", str(bad), *args)
        assert r.returncode == 1 and r.stdout.startswith("NOT VERIFIED") and "does not match" in r.stdout, r
    from nacl.signing import SigningKey

    stranger = encode_base64(bytes(SigningKey.generate().verify_key))
    r = qasid("usage", "verify", str(out), "--key", stranger, "--key-id", key_id)
    assert r.returncode == 1 and "NOT VERIFIED" in r.stdout

    # Mistakes are one line and exit 2.
    for args, needle in [(["report", "-c", str(cfg), "--from", "2024-02-30"], "--from"),
                         (["report", "-c", str(cfg), "--to", (today + datetime.timedelta(days=1)).isoformat()], "--to"),
                         (["report", "-c", str(cfg), "--format", "xml"], "--format"),
                         (["verify", str(keys_file), "--server-keys", str(keys_file)], "not a usage report"),
                         (["verify", str(out), "--key", key_b64], "--key-id"),
                         (["verify", str(out), "--server-keys", str(out)], "not a server key document"),
                         (["verify", str(tmp_path / "missing.json"), "--key", key_b64, "--key-id", key_id], "cannot read")]:
        r = qasid("usage", *args)
        assert r.returncode == 2, (args, r)
        assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, (args, r.stderr)
