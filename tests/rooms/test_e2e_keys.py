"""Key APIs over HTTP: device keys, one-time and fallback keys, cross-signing, signatures, device lists."""

from __future__ import annotations

from typing import Any

from nacl.signing import SigningKey
from unpaddedbase64 import encode_base64

from homeserver.events.signing import sign_json
from tests.rooms.helpers import C, create_room, join, sync
from tests.support.servers import RunningServer


def _key(version: str) -> SigningKey:
    k = SigningKey.generate()
    k.version = version  # type: ignore[attr-defined]
    return k


def _pub(k: SigningKey) -> str:
    return encode_base64(bytes(k.verify_key))


def device_keys(user_id: str, device_id: str, k: SigningKey) -> dict[str, Any]:
    body = {
        "user_id": user_id, "device_id": device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {f"curve25519:{device_id}": encode_base64(b"c" * 32), f"ed25519:{device_id}": _pub(k)},
    }
    return sign_json(body, user_id, k)


def cross_key(user_id: str, usage: str, k: SigningKey, signer: SigningKey | None = None) -> dict[str, Any]:
    body = {"user_id": user_id, "usage": [usage], "keys": {f"ed25519:{_pub(k)}": _pub(k)}}
    if signer is not None:
        signer_copy = SigningKey(bytes(signer))
        signer_copy.version = _pub(signer)  # type: ignore[attr-defined]
        body = sign_json(body, user_id, signer_copy)
    return body


async def upload(server: RunningServer, token: str, body: dict[str, Any]) -> Any:
    return await server.http.post(f"{C}/keys/upload", body, token=token)


async def test_device_keys_upload_query_and_otk_counts(server: RunningServer) -> None:
    alice, ta, da = await server.login_user("alice", device_id="ADEV", initial_device_display_name="Alice's phone")
    bob, tb, _ = await server.login_user("bob")
    k = _key(da)
    r = await upload(server, ta, {
        "device_keys": device_keys(alice, da, k),
        "one_time_keys": {f"signed_curve25519:AAA{i}": sign_json({"key": f"otk{i}"}, alice, k) for i in range(3)},
        "fallback_keys": {"signed_curve25519:FB1": sign_json({"key": "fb", "fallback": True}, alice, k)},
    })
    assert r.status == 200, r.body
    assert r.body == {"one_time_key_counts": {"signed_curve25519": 3}}
    # Uploading the same key again is fine; a different key under an existing ID is refused.
    same = {"one_time_keys": {"signed_curve25519:AAA0": sign_json({"key": "otk0"}, alice, k)}}
    assert (await upload(server, ta, same)).status == 200
    clash = {"one_time_keys": {"signed_curve25519:AAA0": sign_json({"key": "other"}, alice, k)}}
    r = await upload(server, ta, clash)
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"

    r = await server.http.post(f"{C}/keys/query", {"device_keys": {alice: []}}, token=tb)
    assert r.status == 200, r.body
    got = r.body["device_keys"][alice][da]
    assert got["keys"] == device_keys(alice, da, k)["keys"]
    assert got["unsigned"]["device_display_name"] == "Alice's phone"
    r = await server.http.post(f"{C}/keys/query", {"device_keys": {alice: ["NOPE"]}}, token=tb)
    assert r.body["device_keys"] == {alice: {}}

    # Sync reports the counts, and the fallback key as unused.
    body = await sync(server, ta)
    assert body["device_one_time_keys_count"] == {"signed_curve25519": 3}
    assert body["device_unused_fallback_key_types"] == ["signed_curve25519"]

    # Claims take one-time keys first, then fall back to the fallback key (marked used, not removed).
    claimed = set()
    for _ in range(3):
        r = await server.http.post(f"{C}/keys/claim", {"one_time_keys": {alice: {da: "signed_curve25519"}}}, token=tb)
        assert r.status == 200, r.body
        (kid, key), = r.body["one_time_keys"][alice][da].items()
        assert kid.startswith("signed_curve25519:AAA")
        claimed.add(kid)
    assert len(claimed) == 3
    for _ in range(2):
        r = await server.http.post(f"{C}/keys/claim", {"one_time_keys": {alice: {da: "signed_curve25519"}}}, token=tb)
        assert r.body["one_time_keys"][alice][da] == {"signed_curve25519:FB1": sign_json({"key": "fb", "fallback": True}, alice, k)}
    body = await sync(server, ta)
    assert body["device_one_time_keys_count"] == {"signed_curve25519": 0}
    assert body["device_unused_fallback_key_types"] == []
    r = await server.http.post(f"{C}/keys/claim", {"one_time_keys": {bob: {"X": "signed_curve25519"}}}, token=tb)
    assert r.body["one_time_keys"] == {}


async def test_device_keys_must_be_the_callers_and_self_signed(server: RunningServer) -> None:
    alice, ta, da = await server.login_user("alice")
    bob, _, _ = await server.login_user("bob")
    k = _key(da)
    r = await upload(server, ta, {"device_keys": device_keys(bob, da, k)})
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"
    r = await upload(server, ta, {"device_keys": device_keys(alice, "OTHER", k)})
    assert r.status == 400
    forged = device_keys(alice, da, k)
    forged["keys"][f"curve25519:{da}"] = encode_base64(b"x" * 32)  # changed after signing
    r = await upload(server, ta, {"device_keys": forged})
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_SIGNATURE"
    r = await upload(server, ta, {"one_time_keys": {"nocolon": "k"}})
    assert r.status == 400
    r = await upload(server, ta, {"one_time_keys": []})
    assert r.status == 400 and r.body["errcode"] == "M_BAD_JSON"
    r = await server.http.post(f"{C}/keys/query", {"device_keys": {alice: "all"}}, token=ta)
    assert r.status == 400
    r = await server.http.post(f"{C}/keys/claim", {}, token=ta)
    assert r.status == 400
    assert (await server.http.post(f"{C}/keys/query", {"device_keys": {}})).status == 401
    # Nothing half-written by the refused uploads.
    r = await server.http.post(f"{C}/keys/query", {"device_keys": {alice: []}}, token=ta)
    assert r.body["device_keys"][alice] == {}


async def test_device_list_changes_reach_room_members(server: RunningServer) -> None:
    alice, ta, da = await server.login_user("alice")
    bob, tb, _ = await server.login_user("bob")
    carol, tc, _ = await server.login_user("carol")
    room = await create_room(server, ta, preset="public_chat")
    await join(server, tb, room)
    since_b = (await sync(server, tb))["next_batch"]
    since_c = (await sync(server, tc))["next_batch"]
    assert (await upload(server, ta, {"device_keys": device_keys(alice, da, _key(da))})).status == 200
    body = await sync(server, tb, since=since_b, timeout=5000)
    assert alice in body["device_lists"]["changed"]
    body_c = await sync(server, tc, since=since_c)
    assert alice not in body_c["device_lists"]["changed"]  # carol shares no room with alice
    r = await server.http.get(f"{C}/keys/changes", token=tb, params={"from": since_b, "to": body["next_batch"]})
    assert r.status == 200 and alice in r.body["changed"]
    assert (await server.http.get(f"{C}/keys/changes", token=tb, params={"from": "bogus", "to": body["next_batch"]})).status == 400
    assert (await server.http.get(f"{C}/keys/changes", token=tb)).status == 400

    # Carol joining makes her and alice "changed" for each other; bob leaving makes alice "left" for him.
    since_a = (await sync(server, ta))["next_batch"]
    since_c = (await sync(server, tc))["next_batch"]
    await join(server, tc, room)
    assert carol in (await sync(server, ta, since=since_a))["device_lists"]["changed"]
    assert alice in (await sync(server, tc, since=since_c))["device_lists"]["changed"]
    since_b = (await sync(server, tb))["next_batch"]
    assert (await server.http.post(f"{C}/rooms/{room}/leave", {}, token=tb)).status == 200
    body = await sync(server, tb, since=since_b)
    assert set(body["device_lists"]["left"]) == {alice, carol}

    # Deleting a device is a device-list change too.
    since_c = (await sync(server, tc))["next_batch"]
    r = await server.http.post(f"{C}/logout", {}, token=ta)
    assert r.status == 200
    assert alice in (await sync(server, tc, since=since_c, timeout=5000))["device_lists"]["changed"]


async def test_cross_signing_and_signature_upload(server: RunningServer) -> None:
    alice, ta, da = await server.login_user("alice")
    bob, tb, db = await server.login_user("bob")
    dk = _key(da)
    assert (await upload(server, ta, {"device_keys": device_keys(alice, da, dk)})).status == 200
    master, ssk, usk = _key("m"), _key("s"), _key("u")
    keys = {
        "master_key": cross_key(alice, "master", master),
        "self_signing_key": cross_key(alice, "self_signing", ssk, signer=master),
        "user_signing_key": cross_key(alice, "user_signing", usk, signer=master),
    }
    # First upload needs no password (as in Synapse); the self-signing key must be signed by the master.
    bad = {**keys, "self_signing_key": cross_key(alice, "self_signing", ssk)}
    r = await server.http.post(f"{C}/keys/device_signing/upload", bad, token=ta)
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_SIGNATURE"
    r = await server.http.post(f"{C}/keys/device_signing/upload", keys, token=ta)
    assert r.status == 200, r.body
    # Replacing them needs the password again.
    new_master = _key("m2")
    replace = {"master_key": cross_key(alice, "master", new_master)}
    r = await server.http.post(f"{C}/keys/device_signing/upload", replace, token=ta)
    assert r.status == 401 and "flows" in r.body
    auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice}, "password": "password123",
            "session": r.body["session"]}
    # Re-uploading the same keys is not a change and needs nothing.
    assert (await server.http.post(f"{C}/keys/device_signing/upload", keys, token=ta)).status == 200

    # Alice signs her device with her self-signing key; bob sees the signature.
    ssk_named = SigningKey(bytes(ssk))
    ssk_named.version = _pub(ssk)  # type: ignore[attr-defined]
    signed_device = sign_json(device_keys(alice, da, dk), alice, ssk_named)
    r = await server.http.post(f"{C}/keys/signatures/upload", {alice: {da: signed_device}}, token=ta)
    assert r.status == 200 and r.body["failures"] == {}, r.body
    r = await server.http.post(f"{C}/keys/query", {"device_keys": {alice: []}}, token=tb)
    assert f"ed25519:{_pub(ssk)}" in r.body["device_keys"][alice][da]["signatures"][alice]
    assert r.body["master_keys"][alice]["keys"] == keys["master_key"]["keys"]
    assert r.body["self_signing_keys"][alice]["keys"] == keys["self_signing_key"]["keys"]
    assert alice not in r.body["user_signing_keys"]  # only ever shown to its owner
    r = await server.http.post(f"{C}/keys/query", {"device_keys": {alice: []}}, token=ta)
    assert r.body["user_signing_keys"][alice]["keys"] == keys["user_signing_key"]["keys"]

    # A signature by the wrong key is reported as a failure and not stored.
    wrong = sign_json(device_keys(alice, da, dk), alice, _key(_pub(ssk)))
    r = await server.http.post(f"{C}/keys/signatures/upload", {alice: {da: wrong}}, token=ta)
    assert r.body["failures"][alice][da]["errcode"] == "M_INVALID_SIGNATURE"
    r = await server.http.post(f"{C}/keys/signatures/upload", {alice: {"NODEVICE": signed_device}}, token=ta)
    assert r.body["failures"][alice]["NODEVICE"]["errcode"] == "M_NOT_FOUND"

    # Alice verifies bob: signs his master key with her user-signing key; bob sees it only as alice's signature.
    bob_master = _key("bm")
    r = await server.http.post(f"{C}/keys/device_signing/upload", {"master_key": cross_key(bob, "master", bob_master)}, token=tb)
    assert r.status == 200
    usk_named = SigningKey(bytes(usk))
    usk_named.version = _pub(usk)  # type: ignore[attr-defined]
    signed_bob = sign_json(cross_key(bob, "master", bob_master), alice, usk_named)
    r = await server.http.post(f"{C}/keys/signatures/upload", {bob: {_pub(bob_master): signed_bob}}, token=ta)
    assert r.body["failures"] == {}, r.body
    r = await server.http.post(f"{C}/keys/query", {"device_keys": {bob: []}}, token=ta)
    assert f"ed25519:{_pub(usk)}" in r.body["master_keys"][bob]["signatures"][alice]

    # With the password, the master key is replaced and old signatures by it go.
    r = await server.http.post(f"{C}/keys/device_signing/upload", {**replace, "auth": auth}, token=ta)
    assert r.status == 200, r.body
    r = await server.http.post(f"{C}/keys/query", {"device_keys": {alice: []}}, token=tb)
    assert r.body["master_keys"][alice]["keys"] == replace["master_key"]["keys"]


async def test_send_to_device(server: RunningServer) -> None:
    alice, ta, da = await server.login_user("alice")
    bob, tb1, db1 = await server.login_user("bob", device_id="B1")
    r = await server.http.login("bob", "password123", device_id="B2")
    tb2 = r.body["access_token"]
    s1 = (await sync(server, tb1))["next_batch"]
    s2 = (await sync(server, tb2))["next_batch"]
    body = {"messages": {bob: {"*": {"hello": "all"}, "B2": {"hello": "two"}}}}
    r = await server.http.put(f"{C}/sendToDevice/m.test/txn1", body, token=ta)
    assert r.status == 200, r.body
    # The same transaction again is not delivered twice.
    assert (await server.http.put(f"{C}/sendToDevice/m.test/txn1", body, token=ta)).status == 200
    got1 = await sync(server, tb1, since=s1)
    assert got1["to_device"]["events"] == [{"type": "m.test", "sender": alice, "content": {"hello": "all"}}]
    got2 = await sync(server, tb2, since=s2)
    assert got2["to_device"]["events"] == [{"type": "m.test", "sender": alice, "content": {"hello": "two"}}]
    # Until acknowledged by the next token, a message is delivered again; afterwards it's gone.
    again = await sync(server, tb1, since=s1)
    assert len(again["to_device"]["events"]) == 1
    after = await sync(server, tb1, since=got1["next_batch"])
    assert after["to_device"]["events"] == []

    # A long-polling sync wakes for a to-device message.
    import asyncio
    waiting = asyncio.create_task(sync(server, tb1, since=after["next_batch"], timeout=10000))
    await asyncio.sleep(0.2)
    assert (await server.http.put(f"{C}/sendToDevice/m.test/txn2", {"messages": {bob: {"B1": {"n": 2}}}}, token=ta)).status == 200
    woke = await asyncio.wait_for(waiting, 5)
    assert woke["to_device"]["events"][0]["content"] == {"n": 2}

    # A queue longer than one batch comes in order across syncs.
    for i in range(150):
        assert (await server.http.put(f"{C}/sendToDevice/m.test/q{i}", {"messages": {bob: {"B2": {"i": i}}}}, token=ta)).status == 200
    seen: list[int] = []
    since = got2["next_batch"]
    for _ in range(5):
        b = await sync(server, tb2, since=since)
        seen += [e["content"]["i"] for e in b["to_device"]["events"]]
        since = b["next_batch"]
    assert seen == list(range(150))

    assert (await server.http.put(f"{C}/sendToDevice/m.test/bad", {"messages": []}, token=ta)).status == 400
    assert (await server.http.put(f"{C}/sendToDevice/m.test/bad2", {"messages": {bob: {"B1": "x"}}}, token=ta)).status == 400
    big = {"messages": {bob: {"B1": {"x": "y" * 70000}}}}
    r = await server.http.put(f"{C}/sendToDevice/m.test/big", big, token=ta)
    assert r.status == 413 and r.body["errcode"] == "M_TOO_LARGE"


async def test_key_api_responses_match_the_spec(server: RunningServer) -> None:
    from tests.rooms.test_openapi import Recorder
    from tests.support.spec_schemas import validate

    h = Recorder(server.http)
    alice, ta, da = await server.login_user("alice")
    bob, tb, db = await server.login_user("bob")
    k = _key(da)
    await h.post(f"{C}/keys/upload", {"device_keys": device_keys(alice, da, k),
                                      "one_time_keys": {"signed_curve25519:A": sign_json({"key": "o"}, alice, k)},
                                      "fallback_keys": {"signed_curve25519:F": sign_json({"key": "f", "fallback": True}, alice, k)}},
                 token=ta)
    master, ssk = _key("m"), _key("s")
    await h.post(f"{C}/keys/device_signing/upload", {"master_key": cross_key(alice, "master", master),
                                                     "self_signing_key": cross_key(alice, "self_signing", ssk, signer=master)},
                 token=ta)
    await h.post(f"{C}/keys/query", {"device_keys": {alice: [], bob: []}}, token=tb)
    await h.post(f"{C}/keys/claim", {"one_time_keys": {alice: {da: "signed_curve25519"}}}, token=tb)
    first = (await h.get(f"{C}/sync", token=ta)).body
    ssk_named = SigningKey(bytes(ssk))
    ssk_named.version = _pub(ssk)  # type: ignore[attr-defined]
    await h.post(f"{C}/keys/signatures/upload", {alice: {da: sign_json(device_keys(alice, da, k), alice, ssk_named)}}, token=ta)
    await h.put(f"{C}/sendToDevice/m.test/t1", {"messages": {alice: {da: {"x": 1}}}}, token=tb)
    second = (await h.get(f"{C}/sync", token=ta, params={"since": first["next_batch"]})).body
    await h.get(f"{C}/keys/changes", token=ta, params={"from": first["next_batch"], "to": second["next_batch"]})
    alg = "m.megolm_backup.v1.curve25519-aes-sha2"
    await h.get(f"{C}/room_keys/version", token=ta)
    version = (await h.post(f"{C}/room_keys/version", {"algorithm": alg, "auth_data": {"public_key": "pk"}}, token=ta)).body["version"]
    await h.get(f"{C}/room_keys/version", token=ta)
    await h.put(f"{C}/room_keys/version/{version}", {"algorithm": alg, "auth_data": {"public_key": "pk"}}, token=ta)
    session = {"first_message_index": 0, "forwarded_count": 0, "is_verified": False, "session_data": {"ciphertext": "c"}}
    q = {"version": version}
    await h.put(f"{C}/room_keys/keys", {"rooms": {"!r:hs1.test": {"sessions": {"s": session}}}}, token=ta, params=q)
    await h.put(f"{C}/room_keys/keys/!r:hs1.test/s2", session, token=ta, params=q)
    await h.get(f"{C}/room_keys/keys", token=ta, params=q)
    await h.get(f"{C}/room_keys/keys/!r:hs1.test", token=ta, params=q)
    await h.get(f"{C}/room_keys/keys/!r:hs1.test/s", token=ta, params=q)
    await h.put(f"{C}/room_keys/keys", {"rooms": {}}, token=ta, params={"version": "0"})
    await h.delete(f"{C}/room_keys/keys/!r:hs1.test/s", token=ta, params=q)
    await h.delete(f"{C}/room_keys/version/{version}", token=ta)
    await h.post(f"{C}/keys/upload", {"one_time_keys": []}, token=ta)
    await h.put(f"{C}/sendToDevice/m.test/t2", {"messages": 5}, token=tb)
    unchecked = []
    for method, path, r in h.seen:
        assert r.status < 500, (method, path, r.body)
        if validate(method, path, r.status, r.body):
            continue
        if r.status >= 400 and isinstance(r.body.get("errcode"), str) and isinstance(r.body.get("error"), str):
            continue  # an error status the spec does not list for this endpoint, in the standard error shape
        unchecked.append(f"{method} {path} {r.status}")
    assert not unchecked, unchecked
