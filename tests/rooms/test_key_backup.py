"""Server-side key backup over HTTP: versions, keys at every level, the keep-the-better-key rules, etags."""

from __future__ import annotations

from typing import Any

from tests.rooms.helpers import C
from tests.support.servers import RunningServer

ALG = "m.megolm_backup.v1.curve25519-aes-sha2"
ROOM = "!room:hs1.test"


def key(fmi: int = 0, fwd: int = 0, verified: bool = False, tag: str = "x") -> dict[str, Any]:
    return {"first_message_index": fmi, "forwarded_count": fwd, "is_verified": verified,
            "session_data": {"ephemeral": "e", "ciphertext": tag, "mac": "m"}}


async def new_version(server: RunningServer, token: str, public_key: str = "pk1") -> str:
    r = await server.http.post(f"{C}/room_keys/version", {"algorithm": ALG, "auth_data": {"public_key": public_key}}, token=token)
    assert r.status == 200, r.body
    return r.body["version"]


async def test_versions_lifecycle(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    r = await server.http.get(f"{C}/room_keys/version", token=ta)
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    v1 = await new_version(server, ta)
    v2 = await new_version(server, ta, "pk2")
    assert int(v2) > int(v1)
    r = await server.http.get(f"{C}/room_keys/version", token=ta)
    assert r.body == {"algorithm": ALG, "auth_data": {"public_key": "pk2"}, "version": v2, "etag": "0", "count": 0}
    r = await server.http.get(f"{C}/room_keys/version/{v1}", token=ta)
    assert r.status == 200 and r.body["auth_data"] == {"public_key": "pk1"}
    # auth_data may change (e.g. new signatures); the algorithm and version may not.
    signed = {"public_key": "pk2", "signatures": {"@alice:hs1.test": {"ed25519:D": "sig"}}}
    r = await server.http.put(f"{C}/room_keys/version/{v2}", {"algorithm": ALG, "auth_data": signed, "version": v2}, token=ta)
    assert r.status == 200, r.body
    assert (await server.http.get(f"{C}/room_keys/version/{v2}", token=ta)).body["auth_data"] == signed
    r = await server.http.put(f"{C}/room_keys/version/{v2}", {"algorithm": ALG, "auth_data": signed, "version": v1}, token=ta)
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"
    r = await server.http.delete(f"{C}/room_keys/version/{v2}", token=ta)
    assert r.status == 200
    assert (await server.http.get(f"{C}/room_keys/version/{v2}", token=ta)).status == 404
    assert (await server.http.get(f"{C}/room_keys/version", token=ta)).body["version"] == v1
    assert (await server.http.delete(f"{C}/room_keys/version/{v2}", token=ta)).status == 404
    for bad in ("abc", "99999"):
        assert (await server.http.get(f"{C}/room_keys/version/{bad}", token=ta)).status == 404
    r = await server.http.post(f"{C}/room_keys/version", {"algorithm": "m.other", "auth_data": {"public_key": "k"}}, token=ta)
    assert r.status == 400 and r.body["errcode"] == "M_INVALID_PARAM"
    r = await server.http.post(f"{C}/room_keys/version", {"algorithm": ALG}, token=ta)
    assert r.status == 400 and r.body["errcode"] == "M_BAD_JSON"
    assert (await server.http.get(f"{C}/room_keys/version")).status == 401


async def test_keys_at_every_level_and_the_better_key_wins(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    v = await new_version(server, ta)
    q = {"version": v}
    r = await server.http.put(f"{C}/room_keys/keys", {"rooms": {ROOM: {"sessions": {"s1": key(5, tag="a"), "s2": key()}}}},
                              token=ta, params=q)
    assert r.status == 200 and r.body == {"etag": "1", "count": 2}, r.body
    # A worse copy (higher first index) is ignored and the etag stays; a better one replaces it.
    r = await server.http.put(f"{C}/room_keys/keys/{ROOM}/s1", key(9, tag="worse"), token=ta, params=q)
    assert r.body == {"etag": "1", "count": 2}
    r = await server.http.put(f"{C}/room_keys/keys/{ROOM}/s1", key(2, tag="better"), token=ta, params=q)
    assert r.body == {"etag": "2", "count": 2}
    # Verified beats unverified even with a higher index; then fewer forwards wins a tie.
    await server.http.put(f"{C}/room_keys/keys/{ROOM}/s1", key(4, verified=True, tag="verified"), token=ta, params=q)
    await server.http.put(f"{C}/room_keys/keys/{ROOM}/s1", key(1, tag="unverified"), token=ta, params=q)
    await server.http.put(f"{C}/room_keys/keys/{ROOM}", {"sessions": {"s2": key(0, fwd=0, tag="s2b")}}, token=ta, params=q)
    r = await server.http.get(f"{C}/room_keys/keys/{ROOM}/s1", token=ta, params=q)
    assert r.status == 200 and r.body["session_data"]["ciphertext"] == "verified"
    r = await server.http.get(f"{C}/room_keys/keys/{ROOM}", token=ta, params=q)
    assert set(r.body["sessions"]) == {"s1", "s2"} and r.body["sessions"]["s2"]["session_data"]["ciphertext"] == "x"
    r = await server.http.get(f"{C}/room_keys/keys", token=ta, params=q)
    assert set(r.body["rooms"][ROOM]["sessions"]) == {"s1", "s2"}
    assert (await server.http.get(f"{C}/room_keys/keys/!other:hs1.test", token=ta, params=q)).body == {"sessions": {}}
    r = await server.http.get(f"{C}/room_keys/keys/{ROOM}/nope", token=ta, params=q)
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    assert (await server.http.get(f"{C}/room_keys/version", token=ta)).body["count"] == 2

    # Deleting at each level.
    r = await server.http.delete(f"{C}/room_keys/keys/{ROOM}/s2", token=ta, params=q)
    assert r.status == 200 and r.body["count"] == 1
    r = await server.http.delete(f"{C}/room_keys/keys", token=ta, params=q)
    assert r.body["count"] == 0
    assert (await server.http.get(f"{C}/room_keys/keys", token=ta, params=q)).body == {"rooms": {}}


async def test_wrong_version_bad_input_and_other_users(server: RunningServer) -> None:
    _, ta, _ = await server.login_user("alice")
    _, tb, _ = await server.login_user("bob")
    body = {"rooms": {ROOM: {"sessions": {"s1": key()}}}}
    r = await server.http.put(f"{C}/room_keys/keys", body, token=ta, params={"version": "1"})
    assert r.status == 404  # no backup at all
    old = await new_version(server, ta)
    new = await new_version(server, ta)
    r = await server.http.put(f"{C}/room_keys/keys", body, token=ta, params={"version": old})
    assert r.status == 403 and r.body["errcode"] == "M_WRONG_ROOM_KEYS_VERSION" and r.body["current_version"] == new
    r = await server.http.put(f"{C}/room_keys/keys", body, token=ta)
    assert r.status == 400 and r.body["errcode"] == "M_MISSING_PARAM"
    for bad in ({"rooms": []}, {"rooms": {ROOM: {"sessions": {"s1": {**key(), "first_message_index": -1}}}}},
                {"rooms": {ROOM: {"sessions": {"s1": {**key(), "is_verified": "yes"}}}}},
                {"rooms": {ROOM: {"sessions": {"s1": {**key(), "session_data": "x"}}}}}):
        r = await server.http.put(f"{C}/room_keys/keys", bad, token=ta, params={"version": new})
        assert r.status == 400 and r.body["errcode"] == "M_BAD_JSON", bad
    assert (await server.http.get(f"{C}/room_keys/version", token=ta)).body["count"] == 0  # nothing half-written
    assert (await server.http.put(f"{C}/room_keys/keys", body, token=ta, params={"version": new})).status == 200
    # Bob sees none of it and cannot touch it.
    assert (await server.http.get(f"{C}/room_keys/version", token=tb)).status == 404
    assert (await server.http.get(f"{C}/room_keys/keys", token=tb, params={"version": new})).status == 404
    assert (await server.http.delete(f"{C}/room_keys/version/{new}", token=tb)).status == 404
    assert (await server.http.get(f"{C}/room_keys/version", token=ta)).body["count"] == 1
