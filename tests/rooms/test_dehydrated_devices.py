"""MSC3814 dehydrated devices: upload with keys, replace, fetch to-device messages in batches, delete."""

from __future__ import annotations

from typing import Any

from homeserver.events.signing import sign_json
from tests.rooms.helpers import C
from tests.rooms.test_e2e_keys import _key, device_keys
from tests.support.servers import RunningServer

D = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"


def body(user_id: str, device_id: str, **extra: Any) -> dict[str, Any]:
    k = _key(device_id)
    return {"device_id": device_id, "device_data": {"algorithm": "org.matrix.msc3814.v1.olm", "device_pickle": "p"},
            "initial_device_display_name": "Dehydrated", "device_keys": device_keys(user_id, device_id, k),
            "one_time_keys": {"signed_curve25519:A": sign_json({"key": "otk"}, user_id, k)}, **extra}


async def test_dehydrated_device_lifecycle(server: RunningServer) -> None:
    alice, ta, da = await server.login_user("alice")
    bob, tb, _ = await server.login_user("bob")
    assert (await server.http.get("/_matrix/client/versions")).body["unstable_features"]["org.matrix.msc3814"] is True
    r = await server.http.get(D, token=ta)
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    r = await server.http.put(D, body(alice, "DEHYD1"), token=ta)
    assert r.status == 200 and r.body == {"device_id": "DEHYD1"}, r.body
    r = await server.http.get(D, token=ta)
    assert r.body == {"device_id": "DEHYD1", "device_data": {"algorithm": "org.matrix.msc3814.v1.olm", "device_pickle": "p"}}
    # Others see its keys and can claim its one-time key, so they can send it room keys.
    r = await server.http.post(f"{C}/keys/query", {"device_keys": {alice: ["DEHYD1"]}}, token=tb)
    assert r.body["device_keys"][alice]["DEHYD1"]["unsigned"]["device_display_name"] == "Dehydrated"
    r = await server.http.post(f"{C}/keys/claim", {"one_time_keys": {alice: {"DEHYD1": "signed_curve25519"}}}, token=tb)
    assert "signed_curve25519:A" in r.body["one_time_keys"][alice]["DEHYD1"]

    for i in range(150):
        r = await server.http.put(f"{C}/sendToDevice/m.room.encrypted/t{i}", {"messages": {alice: {"DEHYD1": {"i": i}}}}, token=tb)
        assert r.status == 200
    got: list[int] = []
    token = None
    for _ in range(4):
        r = await server.http.post(f"{D}/DEHYD1/events", {"next_batch": token} if token else {}, token=ta)
        assert r.status == 200, r.body
        got += [e["content"]["i"] for e in r.body["events"]]
        token = r.body["next_batch"]
        if not r.body["events"]:
            break
    assert got == list(range(150))
    # Nothing was deleted: a restarted rehydration sees everything again.
    r = await server.http.post(f"{D}/DEHYD1/events", {}, token=ta)
    assert len(r.body["events"]) == 100
    r = await server.http.post(f"{D}/{da}/events", {}, token=ta)
    assert r.status == 403 and r.body["errcode"] == "M_FORBIDDEN"
    assert (await server.http.post(f"{D}/DEHYD1/events", {}, token=tb)).status == 403
    assert (await server.http.post(f"{D}/DEHYD1/events", {"next_batch": "x"}, token=ta)).status == 400

    # A new dehydrated device replaces the old one, which is deleted with its keys and messages.
    assert (await server.http.put(D, body(alice, "DEHYD2"), token=ta)).status == 200
    r = await server.http.post(f"{C}/keys/query", {"device_keys": {alice: []}}, token=tb)
    assert set(r.body["device_keys"][alice]) == {"DEHYD2"}
    assert (await server.http.get(D, token=ta)).body["device_id"] == "DEHYD2"
    r = await server.http.delete(D, token=ta)
    assert r.status == 200 and r.body == {"device_id": "DEHYD2"}
    assert (await server.http.get(D, token=ta)).status == 404
    assert (await server.http.delete(D, token=ta)).status == 404


async def test_dehydrated_device_bad_input(server: RunningServer) -> None:
    alice, ta, da = await server.login_user("alice")
    bob, _, _ = await server.login_user("bob")
    r = await server.http.put(D, {**body(alice, "X1"), "device_keys": None}, token=ta)
    assert r.status == 400
    r = await server.http.put(D, {**body(alice, "X1"), "device_data": "x"}, token=ta)
    assert r.status == 400 and r.body["errcode"] == "M_BAD_JSON"
    r = await server.http.put(D, body(bob, "X1"), token=ta)  # keys of someone else
    assert r.status == 400
    r = await server.http.put(D, body(alice, da), token=ta)  # an existing, ordinary device
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"
    # Nothing half-written: no device X1, no dehydrated device.
    assert (await server.http.get(D, token=ta)).status == 404
    devices = (await server.http.get(f"{C}/devices", token=ta)).body["devices"]
    assert [d["device_id"] for d in devices] == [da]
