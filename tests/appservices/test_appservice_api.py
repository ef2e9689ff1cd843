"""The application service API against a small appservice of our own on a real socket: registration
files, as_token identity and masquerading, exclusive namespaces, transactions (ordered, retried with
the same ID, persisted across a restart), ephemeral and to-device extensions, user and alias
queries, and ping."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import quote

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from homeserver.app import start_homeserver
from homeserver.config import ConfigError
from tests.support.servers import RunningServer, make_config, running_server

C = "/_matrix/client/v3"
AS_TOKEN, HS_TOKEN = "as-secret-token-1", "hs-secret-token-1"


class FakeAppService:
    """Records transactions; can refuse the first ones; creates users and aliases when asked."""

    def __init__(self) -> None:
        self.transactions: list[tuple[str, dict[str, Any]]] = []
        self.refuse = 0
        self.bad_auth: list[str] = []
        self.hs_url = ""
        self.pings: list[Any] = []
        app = web.Application()
        app.router.add_put("/_matrix/app/v1/transactions/{txn}", self.txn)
        app.router.add_get("/_matrix/app/v1/users/{user_id}", self.user)
        app.router.add_get("/_matrix/app/v1/rooms/{alias}", self.alias)
        app.router.add_post("/_matrix/app/v1/ping", self.ping)
        self.server = TestServer(app, host="127.0.0.1")

    def _authorised(self, request: web.Request) -> bool:
        if request.headers.get("Authorization") != f"Bearer {HS_TOKEN}":
            self.bad_auth.append(request.path)
            return False
        return True

    async def txn(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        if self.refuse > 0:
            self.refuse -= 1
            return web.json_response({"errcode": "M_UNKNOWN"}, status=500)
        self.transactions.append((request.match_info["txn"], await request.json()))
        return web.json_response({})

    async def user(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({}, status=403)
        localpart = request.match_info["user_id"][1:].split(":")[0]
        import aiohttp

        async with aiohttp.ClientSession() as s:
            async with s.post(f"{self.hs_url}{C}/register", json={"type": "m.login.application_service", "username": localpart,
                                                                   "inhibit_login": True},
                              headers={"Authorization": f"Bearer {AS_TOKEN}"}) as r:
                return web.json_response({}, status=200 if r.status == 200 else 404)

    async def alias(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({}, status=403)
        import aiohttp

        alias = request.match_info["alias"]
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {AS_TOKEN}"}) as s:
            async with s.post(f"{self.hs_url}{C}/createRoom", json={"preset": "public_chat"}) as r:
                room = (await r.json())["room_id"]
            async with s.put(f"{self.hs_url}{C}/directory/room/{quote(alias)}", json={"room_id": room}) as r:
                return web.json_response({}, status=200 if r.status == 200 else 404)

    async def ping(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({}, status=403)
        self.pings.append(await request.json())
        return web.json_response({})

    def events(self) -> list[dict[str, Any]]:
        return [e for _, body in self.transactions for e in body.get("events", [])]


def registration(tmp_path: Path, url: str, **extra: Any) -> Path:
    reg = {"id": "eoffice", "url": url, "as_token": AS_TOKEN, "hs_token": HS_TOKEN, "sender_localpart": "eofficebot",
           "rate_limited": False, "receive_ephemeral": True, "org.matrix.msc3202": True,
           "namespaces": {"users": [{"exclusive": True, "regex": "@eoffice_.*:.*"}],
                          "aliases": [{"exclusive": True, "regex": "#eoffice_.*:.*"}], "rooms": []}, **extra}
    path = tmp_path / "eoffice.yaml"
    path.write_text(yaml.safe_dump(reg))
    return path


@pytest.fixture
async def fake_as() -> AsyncIterator[FakeAppService]:
    fake = FakeAppService()
    await fake.server.start_server()
    yield fake
    await fake.server.close()


async def _until(check: Any, what: str, timeout: float = 15) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = check()
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_malformed_registration_stops_start_up_naming_file_and_key(db_url: str, tmp_path: Path) -> None:
    for bad, key in [({"id": "x", "as_token": "a", "hs_token": "b", "url": None, "sender_localpart": "bot",
                       "namespaces": {"users": [{"exclusive": "yes", "regex": "@x_.*"}]}}, "namespaces.users[0].exclusive"),
                     ({"id": "x", "hs_token": "b", "sender_localpart": "bot"}, "as_token"),
                     ({"id": "x", "as_token": "a", "hs_token": "b", "sender_localpart": "bot",
                       "namespaces": {"users": [{"exclusive": True, "regex": "@x_(.*"}]}}, "namespaces.users[0].regex")]:
        path = tmp_path / "broken.yaml"
        path.write_text(yaml.safe_dump(bad))
        config = make_config(db_url, tmp_path / "data", app_service_config_files=[str(path)])
        with pytest.raises(ConfigError) as e:
            await start_homeserver(config)
        assert str(path) in str(e.value) and key in str(e.value), str(e.value)


async def test_identity_masquerading_and_exclusive_namespaces(make_server: Any, fake_as: FakeAppService, tmp_path: Path) -> None:
    reg = registration(tmp_path, str(fake_as.server.make_url("")).rstrip("/"))
    server: RunningServer = await make_server(app_service_config_files=[str(reg)])
    fake_as.hs_url = server.base_url
    as_auth = {"Authorization": f"Bearer {AS_TOKEN}"}
    me = await server.http.get(f"{C}/account/whoami", headers=as_auth)
    assert me.status == 200 and me.body["user_id"] == f"@eofficebot:{server.config.server_name}"
    wrong = await server.http.get(f"{C}/account/whoami", headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status == 401 and wrong.errcode == "M_UNKNOWN_TOKEN"
    puppet = f"@eoffice_emp42:{server.config.server_name}"
    # Not registered yet: the appservice may not act as it.
    r = await server.http.get(f"{C}/account/whoami", headers=as_auth, params={"user_id": puppet})
    assert r.status == 403
    r = await server.http.post(f"{C}/register", {"type": "m.login.application_service", "username": "eoffice_emp42"}, headers=as_auth)
    assert r.status == 200 and r.body["user_id"] == puppet and r.body["access_token"]
    r = await server.http.get(f"{C}/account/whoami", headers=as_auth, params={"user_id": puppet})
    assert r.status == 200 and r.body["user_id"] == puppet
    # Outside its namespace: refused, both ways.
    _, alice_token, _ = await server.login_user("alice")
    r = await server.http.get(f"{C}/account/whoami", headers=as_auth, params={"user_id": f"@alice:{server.config.server_name}"})
    assert r.status == 403
    r = await server.http.post(f"{C}/register", {"type": "m.login.application_service", "username": "notmine"}, headers=as_auth)
    assert r.status == 400 and r.errcode == "M_EXCLUSIVE"
    r = await server.http.post(f"{C}/register", {"type": "m.login.application_service", "username": "eoffice_x"})
    assert r.status == 401
    # Ordinary users cannot take names or aliases in the exclusive namespaces.
    r = await server.http.get(f"{C}/register/available", params={"username": "eoffice_someone"})
    assert r.status == 400 and r.errcode == "M_EXCLUSIVE"
    r = await server.http.post(f"{C}/register", {"username": "eoffice_someone", "password": "long-enough-pw", "auth": {"type": "m.login.dummy"}})
    assert r.status == 400 and r.errcode == "M_EXCLUSIVE"
    room = (await server.http.post(f"{C}/createRoom", {}, token=alice_token)).body["room_id"]
    r = await server.http.put(f"{C}/directory/room/{quote('#eoffice_file1:' + server.config.server_name)}", {"room_id": room}, token=alice_token)
    assert r.status == 400 and r.errcode == "M_EXCLUSIVE"
    r = await server.http.put(f"{C}/directory/room/{quote('#eoffice_file1:' + server.config.server_name)}", {"room_id": room}, headers=as_auth)
    assert r.status == 200
    # m.login.application_service logs a puppet in (a device for the bridge's E2EE).
    login = await server.http.post(f"{C}/login", {"type": "m.login.application_service",
                                                  "identifier": {"type": "m.id.user", "user": "eoffice_emp42"}}, headers=as_auth)
    assert login.status == 200 and login.body["user_id"] == puppet
    # Device masquerading (MSC3202) only for a device the user has.
    r = await server.http.get(f"{C}/account/whoami", headers=as_auth, params={"user_id": puppet, "device_id": login.body["device_id"]})
    assert r.status == 200 and r.body["device_id"] == login.body["device_id"]
    r = await server.http.get(f"{C}/account/whoami", headers=as_auth, params={"user_id": puppet, "device_id": "NOPE"})
    assert r.status == 400
    # Queries: a profile of a not-yet-existing user in the namespace, an alias in the namespace.
    ghost = f"@eoffice_emp77:{server.config.server_name}"
    r = await server.http.get(f"{C}/profile/{quote(ghost)}", token=alice_token)
    assert r.status == 200 and await server.hs.storage.users.exists(ghost)
    r = await server.http.get(f"{C}/directory/room/{quote('#eoffice_new:' + server.config.server_name)}", token=alice_token)
    assert r.status == 200 and r.body["room_id"].startswith("!")
    assert fake_as.bad_auth == []  # every call to the appservice carried its hs_token
    # Ping round trip, only by the appservice itself.
    r = await server.http.post("/_matrix/client/v1/appservice/eoffice/ping", {"transaction_id": "t1"}, headers=as_auth)
    assert r.status == 200 and r.body["duration_ms"] >= 0 and fake_as.pings == [{"transaction_id": "t1"}]
    r = await server.http.post("/_matrix/client/v1/appservice/eoffice/ping", {}, token=alice_token)
    assert r.status == 403


async def test_transactions_in_order_retried_and_kept_across_a_restart(db_url: str, fake_as: FakeAppService, tmp_path: Path) -> None:
    reg = registration(tmp_path, str(fake_as.server.make_url("")).rstrip("/"))
    config = make_config(db_url, tmp_path / "data", app_service_config_files=[str(reg)])
    async with running_server(config) as server:
        fake_as.hs_url = server.base_url
        as_auth = {"Authorization": f"Bearer {AS_TOKEN}"}
        alice, token, _ = await server.login_user("alice")
        room = (await server.http.post(f"{C}/createRoom", {"preset": "public_chat"}, token=token)).body["room_id"]
        # Not interested yet: no appservice user in the room.
        await server.http.put(f"{C}/rooms/{room}/send/m.room.message/before", {"msgtype": "m.text", "body": "private"}, token=token)
        assert (await server.http.post(f"{C}/join/{room}", {}, headers=as_auth)).status == 200
        fake_as.refuse = 2  # the appservice is down for a moment
        sent = []
        for i in range(5):
            r = await server.http.put(f"{C}/rooms/{room}/send/m.room.message/m{i}", {"msgtype": "m.text", "body": f"note {i}"}, token=token)
            sent.append(r.body["event_id"])
        await _until(lambda: set(sent) <= {e["event_id"] for e in fake_as.events()}, "the messages")
        bodies = [e["content"].get("body") for e in fake_as.events() if e["type"] == "m.room.message"]
        assert bodies == [f"note {i}" for i in range(5)] and "private" not in bodies  # in order, once each
        txn_ids = [int(t) for t, _ in fake_as.transactions]
        assert txn_ids == sorted(set(txn_ids))
        # Ephemeral: typing and a read receipt.
        await server.http.put(f"{C}/rooms/{room}/typing/{quote(alice)}", {"typing": True, "timeout": 10000}, token=token)
        await server.http.post(f"{C}/rooms/{room}/receipt/m.read/{sent[-1]}", {}, token=token)

        def ephemeral() -> list[dict[str, Any]]:
            return [e for _, b in fake_as.transactions for e in b.get("ephemeral", [])]

        await _until(lambda: {e["type"] for e in ephemeral()} >= {"m.typing", "m.receipt"}, "typing and receipt")
        assert any(alice in e["content"].get("user_ids", []) for e in ephemeral() if e["type"] == "m.typing")
        # MSC3202: to-device messages for the bridge's devices, and its one-time-key counts.
        bot_login = await server.http.post(f"{C}/login", {"type": "m.login.application_service",
                                                          "identifier": {"type": "m.id.user", "user": "eofficebot"}}, headers=as_auth)
        bot, bot_device = bot_login.body["user_id"], bot_login.body["device_id"]
        r = await server.http.put(f"{C}/sendToDevice/m.room_key_request/td1", {"messages": {bot: {bot_device: {"hello": 1}}}}, token=token)
        assert r.status == 200

        def to_device() -> list[dict[str, Any]]:
            return [m for _, b in fake_as.transactions for m in b.get("de.sorunome.msc2409.to_device", [])]

        await _until(to_device, "the to-device message")
        assert to_device()[0]["to_device_id"] == bot_device and to_device()[0]["content"] == {"hello": 1}
        assert bot in fake_as.transactions[-1][1]["org.matrix.msc3202.device_one_time_keys_count"]
        # MSC3202 device lists: the bot joining made alice's devices of interest; a device of hers
        # going, "changed" again; carol sharing the room then leaving it, "left".

        def device_lists(kind: str, since: int = 0) -> list[str]:
            return [u for _, b in fake_as.transactions[since:] for u in b.get("org.matrix.msc3202.device_lists", {}).get(kind, [])]

        await _until(lambda: alice in device_lists("changed"), "alice in device_lists.changed")
        mark = len(fake_as.transactions)
        second = await server.http.login("alice", "password123")  # a second device of hers
        assert second.status == 200
        assert (await server.http.post(f"{C}/logout", {}, token=second.body["access_token"])).status == 200
        await _until(lambda: alice in device_lists("changed", mark), "alice's device change")
        carol, carol_token, _ = await server.login_user("carol")
        assert (await server.http.post(f"{C}/join/{room}", {}, token=carol_token)).status == 200
        await _until(lambda: carol in device_lists("changed", mark), "carol joining")
        assert carol not in device_lists("left", mark)
        assert (await server.http.post(f"{C}/rooms/{room}/leave", {}, token=carol_token)).status == 200
        await _until(lambda: carol in device_lists("left", mark), "carol leaving")
        assert alice not in device_lists("left")
        # The appservice goes away; events keep coming; the homeserver restarts.
        fake_as.refuse = 10**6
        queued = [(await server.http.put(f"{C}/rooms/{room}/send/m.room.message/q{i}", {"msgtype": "m.text", "body": f"queued {i}"},
                                         token=token)).body["event_id"] for i in range(3)]
    fake_as.refuse = 0
    async with running_server(config) as server:
        fake_as.hs_url = server.base_url
        await _until(lambda: set(queued) <= {e["event_id"] for e in fake_as.events()}, "the queued events after the restart")
        ids = [e["event_id"] for e in fake_as.events()]
        assert len(ids) == len(set(ids))  # nothing delivered twice


def test_check_config_names_the_broken_registration(tmp_path: Path) -> None:
    import subprocess
    import sys

    from homeserver.signing_key import write_new_signing_key

    write_new_signing_key(tmp_path / "signing.key")
    (tmp_path / "bridge.yaml").write_text(yaml.safe_dump({"id": "b", "as_token": "a", "hs_token": "a", "sender_localpart": "bot"}))
    (tmp_path / "homeserver.yaml").write_text(yaml.safe_dump({"server_name": "hs.test", "app_service_config_files": ["bridge.yaml"]}))
    r = subprocess.run([sys.executable, "-m", "homeserver", "check-config", "-c", str(tmp_path / "homeserver.yaml")],
                       capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 2 and "bridge.yaml" in r.stderr and "hs_token" in r.stderr, r.stderr
