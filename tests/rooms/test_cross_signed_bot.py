"""A bot (our e2ee library, as the e-Office bridge uses it) cross-signs its own device on a real server:
the server accepts the chain, and another user's /keys/query sees a device verified by its owner."""

from __future__ import annotations

import os
from pathlib import Path

from e2ee import CryptoStore, OlmMachine
from e2ee.signing import verify_signature
from tests.rooms.helpers import C
from tests.support.servers import RunningServer


async def test_bot_device_is_verified_by_its_own_user(server: RunningServer, tmp_path: Path) -> None:
    bot, tb, dev = await server.login_user("bot")
    _, ta, _ = await server.login_user("alice")
    machine = OlmMachine(bot, dev, CryptoStore(tmp_path / "bot.db"), os.urandom(32))
    assert (await server.http.post(f"{C}/keys/upload", machine.keys_for_upload({}, []), token=tb)).status == 200
    upload, signatures = machine.cross_signing_requests()
    r = await server.http.post(f"{C}/keys/device_signing/upload", upload, token=tb)
    assert r.status == 200, r.body
    machine.mark_cross_signing_published()
    r = await server.http.post(f"{C}/keys/signatures/upload", signatures, token=tb)
    assert r.status == 200 and r.body.get("failures", {}) == {}, r.body
    seen = (await server.http.post(f"{C}/keys/query", {"device_keys": {bot: []}}, token=ta)).body
    ssk = seen["self_signing_keys"][bot]
    (ssk_pub,) = ssk["keys"].values()
    (master_pub,) = seen["master_keys"][bot]["keys"].values()
    verify_signature(ssk, bot, f"ed25519:{master_pub}", master_pub)
    device = seen["device_keys"][bot][dev]
    verify_signature(device, bot, f"ed25519:{ssk_pub}", ssk_pub)  # the device is cross-signed
    # A restart of the bot (same store) does not try to publish new keys, and signing again is harmless.
    again, signatures = machine.cross_signing_requests()
    assert again is None
    assert (await server.http.post(f"{C}/keys/signatures/upload", signatures, token=tb)).status == 200
