"""Server keys, the notary, X-Matrix request auth, the allowlist and the federation queries, between
two Qasid servers over real TLS on loopback."""

from __future__ import annotations

import pytest
from nacl.signing import SigningKey
from unpaddedbase64 import encode_base64

from federation.client import FederationError
from federation.keyring import KeyNotFound
from homeserver.events.signing import verify_json_signature
from homeserver.events.xmatrix import sign_request
from tests.support.servers import RunningServer


async def test_key_server_and_direct_fetch(federation) -> None:
    hs1: RunningServer = await federation("127.0.0.1")
    hs2: RunningServer = await federation("127.0.0.2")
    r = await hs1.http.get("/_matrix/key/v2/server")
    assert r.status == 200
    keys = r.body
    assert keys["server_name"] == hs1.config.server_name
    (kid, entry), = keys["verify_keys"].items()
    assert keys["valid_until_ts"] > hs1.hs.clock.time_ms() and keys["old_verify_keys"] == {}
    fed1 = hs1.hs.federation
    assert kid == fed1.local_keys.key_id and entry["key"] == fed1.local_keys.public_key
    # hs2 fetches hs1's key over TLS (checked against the test CA), checks it, and keeps it.
    info = await hs2.hs.federation.keyring.get_key(hs1.config.server_name, kid)
    assert encode_base64(bytes(info.verify_key)) == entry["key"]
    stored = await hs2.hs.storage.server_keys.get(hs1.config.server_name, kid)
    assert stored is not None and stored.source == "direct" and stored.response["signatures"] == keys["signatures"]
    with pytest.raises(KeyNotFound):
        await hs2.hs.federation.keyring.get_key(hs1.config.server_name, "ed25519:nope")


async def test_notary_countersigns(federation) -> None:
    hs1 = await federation("127.0.0.1")
    hs2 = await federation("127.0.0.2")
    name1, name2 = hs1.config.server_name, hs2.config.server_name
    r = await hs2.http.post("/_matrix/key/v2/query", {"server_keys": {name1: {}}})
    assert r.status == 200, r.body
    (resp,), notary_key = r.body["server_keys"], hs2.hs.federation.local_keys
    assert resp["server_name"] == name1
    assert verify_json_signature(resp, name2, notary_key.key_id, notary_key.signing_key.verify_key)
    assert verify_json_signature(resp, name1, hs1.hs.federation.local_keys.key_id, hs1.hs.federation.local_keys.signing_key.verify_key)
    r = await hs2.http.get(f"/_matrix/key/v2/query/{name2}")
    assert r.body["server_keys"][0]["server_name"] == name2


async def test_signed_queries_profile_directory_devices_keys(federation) -> None:
    hs1 = await federation("127.0.0.1")
    hs2 = await federation("127.0.0.2")
    alice = await hs1.create_user("alice")
    await hs1.hs.profiles.set_field(alice, alice, "displayname", "Alice of MoFA")
    client2 = hs2.hs.federation.client
    name1 = hs1.config.server_name
    profile = await client2.get_json(name1, "/_matrix/federation/v1/query/profile", {"user_id": alice})
    assert profile == {"displayname": "Alice of MoFA"}
    assert await client2.get_json(name1, "/_matrix/federation/v1/query/profile",
                                  {"user_id": alice, "field": "displayname"}) == {"displayname": "Alice of MoFA"}
    with pytest.raises(FederationError) as e:
        await client2.get_json(name1, "/_matrix/federation/v1/query/profile", {"user_id": f"@nobody:{name1}"})
    assert e.value.status == 404 and e.value.errcode == "M_NOT_FOUND"
    with pytest.raises(FederationError) as e:
        await client2.get_json(name1, "/_matrix/federation/v1/query/directory", {"room_alias": f"#none:{name1}"})
    assert e.value.status == 404
    devices = await client2.get_json(name1, f"/_matrix/federation/v1/user/devices/{alice}")
    assert devices["user_id"] == alice and devices["devices"] == []
    assert await client2.post_json(name1, "/_matrix/federation/v1/user/keys/query", {"device_keys": {alice: []}}) == {
        "device_keys": {alice: {}}, "master_keys": {}, "self_signing_keys": {}}
    version = await client2.get_json(name1, "/_matrix/federation/v1/version", signed=False)
    assert version["server"]["name"] == "Qasid"


async def test_unsigned_forged_and_misdirected_requests_are_refused(federation) -> None:
    hs1 = await federation("127.0.0.1")
    hs2 = await federation("127.0.0.2")
    alice = await hs1.create_user("alice")
    path = f"/_matrix/federation/v1/query/profile?user_id={alice}"  # '@' and ':' need no escaping in a query
    r = await hs1.http.get(path)
    assert r.status == 401 and r.body["errcode"] == "M_UNAUTHORIZED"
    name1, name2 = hs1.config.server_name, hs2.config.server_name
    # Signed by a key that is not hs2's.
    stranger = SigningKey.generate()
    stranger.version = hs2.hs.federation.local_keys.signing_key.version  # type: ignore[attr-defined]
    forged = sign_request(name2, name1, "GET", path, None, stranger)
    r = await hs1.http.get(path, headers={"Authorization": forged})
    assert r.status == 401 and r.body["errcode"] == "M_UNAUTHORIZED"
    # Properly signed, but for another destination.
    wrong_dest = sign_request(name2, "elsewhere.example", "GET", path, None, hs2.hs.federation.local_keys.signing_key)
    r = await hs1.http.get(path, headers={"Authorization": wrong_dest})
    assert r.status == 401
    # Properly signed for hs1: accepted.
    good = sign_request(name2, name1, "GET", path, None, hs2.hs.federation.local_keys.signing_key)
    r = await hs1.http.get(path, headers={"Authorization": good})
    assert r.status == 200, r.body
    r = await hs1.http.get(path, headers={"Authorization": "X-Matrix garbage"})
    assert r.status == 401


async def test_allowlist_closes_federation_both_ways(federation) -> None:
    hs1 = await federation("127.0.0.1", federation_domain_whitelist=["allowed.example"])
    hs2 = await federation("127.0.0.2")
    alice = await hs1.create_user("alice")
    name1, name2 = hs1.config.server_name, hs2.config.server_name
    with pytest.raises(FederationError) as e:
        await hs2.hs.federation.client.get_json(name1, "/_matrix/federation/v1/query/profile", {"user_id": alice})
    assert e.value.status == 403 and e.value.errcode == "M_FORBIDDEN"
    with pytest.raises(FederationError) as e:
        await hs1.hs.federation.client.get_json(name2, "/_matrix/federation/v1/version")
    assert "allowlist" in str(e.value)


async def test_pinned_keys_are_trusted_without_fetching_and_exclusively(federation, tmp_path) -> None:
    hs1 = await federation("127.0.0.1")
    local1 = hs1.hs.federation.local_keys
    other = SigningKey.generate()
    # hs2 pins a key for hs1 that is not hs1's: hs1's real signatures must then be refused.
    hs2 = await federation("127.0.0.2", federation={"directory": {hs1.config.server_name: {
        "verify_keys": {local1.key_id: encode_base64(bytes(other.verify_key))}}}})
    alice = await hs2.create_user("alice")
    with pytest.raises(FederationError) as e:
        await hs1.hs.federation.client.get_json(hs2.config.server_name, "/_matrix/federation/v1/query/profile",
                                                {"user_id": alice})
    assert e.value.status == 401
    assert await hs2.hs.storage.server_keys.for_server(hs1.config.server_name) == []  # nothing fetched


async def test_tls_is_checked_against_the_configured_ca(federation, tmp_path) -> None:
    from tests.support.tls import LocalCA

    hs1 = await federation("127.0.0.1")
    other_ca = LocalCA(tmp_path / "other-ca")
    hs2 = await federation("127.0.0.2", federation={"tls_ca_file": str(other_ca.ca_file)})
    with pytest.raises(FederationError) as e:
        await hs2.hs.federation.client.get_json(hs1.config.server_name, "/_matrix/federation/v1/version", signed=False)
    assert "request failed" in str(e.value)


async def test_clients_see_remote_profiles_aliases_and_device_keys(federation) -> None:
    from tests.rooms.test_e2e_keys import _key, device_keys
    from homeserver.events.signing import sign_json

    hs1 = await federation("127.0.0.1")
    hs2 = await federation("127.0.0.2")
    alice, ta, da = await hs1.login_user("alice")
    bob, tb, _ = await hs2.login_user("bob")
    C = "/_matrix/client/v3"
    assert (await hs1.http.put(f"{C}/profile/{alice}/displayname", {"displayname": "Alice, MoFA"}, token=ta)).status == 200
    room = (await hs1.http.post(f"{C}/createRoom", {"room_alias_name": "cabinet"}, token=ta)).body["room_id"]
    k = _key(da)
    await hs1.http.post(f"{C}/keys/upload", {"device_keys": device_keys(alice, da, k),
                                            "one_time_keys": {"signed_curve25519:A": sign_json({"key": "o"}, alice, k)}}, token=ta)

    # Bob, on hs2, sees Alice's profile, her room alias and her device keys, all fetched from hs1.
    r = await hs2.http.get(f"{C}/profile/{alice}", token=tb)
    assert r.status == 200 and r.body["displayname"] == "Alice, MoFA", r.body
    r = await hs2.http.get(f"{C}/profile/{alice}/displayname", token=tb)
    assert r.body == {"displayname": "Alice, MoFA"}
    r = await hs2.http.get(f"{C}/directory/room/%23cabinet:{hs1.config.server_name}", token=tb)
    assert r.status == 200 and r.body == {"room_id": room, "servers": [hs1.config.server_name]}, r.body
    r = await hs2.http.get(f"{C}/directory/room/%23nothing:{hs1.config.server_name}", token=tb)
    assert r.status == 404 and r.body["errcode"] == "M_NOT_FOUND"
    r = await hs2.http.get(f"{C}/profile/@ghost:{hs1.config.server_name}", token=tb)
    assert r.status == 404
    r = await hs2.http.post(f"{C}/keys/query", {"device_keys": {alice: [], bob: []}}, token=tb)
    assert r.status == 200 and r.body["failures"] == {}
    assert r.body["device_keys"][alice][da]["keys"] == device_keys(alice, da, k)["keys"]
    r = await hs2.http.post(f"{C}/keys/claim", {"one_time_keys": {alice: {da: "signed_curve25519"}}}, token=tb)
    assert list(r.body["one_time_keys"][alice][da]) == ["signed_curve25519:A"]
    # An unreachable server is a failure entry, not an error.
    r = await hs2.http.post(f"{C}/keys/query", {"device_keys": {"@x:127.0.0.9:1": []}}, token=tb)
    assert r.status == 200 and "127.0.0.9:1" in r.body["failures"]


async def test_remote_room_directory_and_openid(federation) -> None:
    hs1 = await federation("127.0.0.1")
    hs2 = await federation("127.0.0.2")
    alice, ta, _ = await hs1.login_user("alice")
    bob, tb, _ = await hs2.login_user("bob")
    C = "/_matrix/client/v3"
    name1 = hs1.config.server_name
    room = (await hs1.http.post(f"{C}/createRoom", {"preset": "public_chat", "visibility": "public",
                                                    "name": "Treaty drafts"}, token=ta)).body["room_id"]
    await hs1.http.post(f"{C}/createRoom", {"preset": "public_chat", "visibility": "public", "name": "Canteen"}, token=ta)
    r = await hs2.http.get(f"{C}/publicRooms", token=tb, params={"server": name1})
    assert r.status == 200 and {c["name"] for c in r.body["chunk"]} == {"Treaty drafts", "Canteen"}, r.body
    r = await hs2.http.post(f"{C}/publicRooms", {"filter": {"generic_search_term": "treaty"}}, token=tb, params={"server": name1})
    assert r.status == 200 and [c["room_id"] for c in r.body["chunk"]] == [room]
    r = await hs2.http.get(f"{C}/publicRooms", token=tb, params={"server": "127.0.0.9:1"})
    assert r.status == 502

    # OpenID: alice's token lets a third party learn her user ID from her server, and nothing more.
    r = await hs1.http.post(f"{C}/user/{alice}/openid/request_token", {}, token=ta)
    assert r.status == 200 and r.body["matrix_server_name"] == name1 and r.body["expires_in"] > 0
    token = r.body["access_token"]
    r = await hs2.hs.federation.client.get_json(name1, "/_matrix/federation/v1/openid/userinfo", {"access_token": token}, signed=False)
    assert r == {"sub": alice}
    r = await hs1.http.get("/_matrix/federation/v1/openid/userinfo", params={"access_token": "wrong"})
    assert r.status == 401 and r.body["errcode"] == "M_UNKNOWN_TOKEN"
    r = await hs1.http.post(f"{C}/user/{bob}/openid/request_token", {}, token=ta)
    assert r.status == 403
