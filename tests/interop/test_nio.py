"""matrix-nio (PyPI) against a running Qasid: login, whoami, devices, rename, logout; chat in a room."""

from __future__ import annotations

import nio

from tests.support.servers import RunningServer


async def test_nio_login_whoami_devices_logout(server: RunningServer, tmp_path) -> None:
    user = await server.create_user("clerk", "long-enough-pw")
    client = nio.AsyncClient(server.base_url, user, store_path=str(tmp_path))
    try:
        login = await client.login("long-enough-pw", device_name="nio interop")
        assert isinstance(login, nio.LoginResponse), login
        assert login.user_id == user and login.device_id
        who = await client.whoami()
        assert isinstance(who, nio.WhoamiResponse), who
        assert who.user_id == user and who.device_id == login.device_id
        devices = await client.devices()
        assert isinstance(devices, nio.DevicesResponse), devices
        assert [(d.id, d.display_name) for d in devices.devices] == [(login.device_id, "nio interop")]
        renamed = await client.update_device(login.device_id, {"display_name": "renamed by nio"})
        assert isinstance(renamed, nio.UpdateDeviceResponse), renamed
        devices = await client.devices()
        assert devices.devices[0].display_name == "renamed by nio"
        token = client.access_token
        logout = await client.logout()
        assert isinstance(logout, nio.LogoutResponse), logout
    finally:
        await client.close()
    r = await server.http.get("/_matrix/client/v3/account/whoami", token=token)
    assert r.status == 401 and r.errcode == "M_UNKNOWN_TOKEN"


async def test_nio_wrong_password_is_an_error_response(server: RunningServer, tmp_path) -> None:
    await server.create_user("clerk", "long-enough-pw")
    client = nio.AsyncClient(server.base_url, "@clerk:hs1.test", store_path=str(tmp_path))
    try:
        resp = await client.login("wrong-password")
        assert isinstance(resp, nio.LoginError) and resp.status_code == "M_FORBIDDEN"
    finally:
        await client.close()


async def test_nio_room_chat(server: RunningServer, tmp_path) -> None:
    await server.create_user("alice", "long-enough-pw")
    bob = await server.create_user("bob", "long-enough-pw")
    a = nio.AsyncClient(server.base_url, "@alice:hs1.test", store_path=str(tmp_path / "a"))
    b = nio.AsyncClient(server.base_url, bob, store_path=str(tmp_path / "b"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        assert isinstance(await a.login("long-enough-pw"), nio.LoginResponse)
        assert isinstance(await b.login("long-enough-pw"), nio.LoginResponse)
        created = await a.room_create(name="Correspondence", invite=[bob])
        assert isinstance(created, nio.RoomCreateResponse), created
        await b.sync(timeout=0)
        assert created.room_id in b.invited_rooms
        assert isinstance(await b.join(created.room_id), nio.JoinResponse)
        await a.sync(timeout=0)
        sent = await a.room_send(created.room_id, "m.room.message", {"msgtype": "m.text", "body": "file 42 approved"})
        assert isinstance(sent, nio.RoomSendResponse), sent
        resp = await b.sync(timeout=5000)
        assert isinstance(resp, nio.SyncResponse)
        room = b.rooms[created.room_id]
        assert room.display_name == "Correspondence"
        bodies = [getattr(e, "body", None) for e in resp.rooms.join[created.room_id].timeline.events]
        assert "file 42 approved" in bodies
        msgs = await b.room_messages(created.room_id, start=resp.next_batch, limit=50)
        assert isinstance(msgs, nio.RoomMessagesResponse)
        assert "file 42 approved" in [getattr(e, "body", None) for e in msgs.chunk]
        # Full-text search through nio's raw request path (nio has no search helper).
        found = await b.send("POST", "/_matrix/client/v3/search?access_token=" + b.access_token, nio.Api.to_json(
            {"search_categories": {"room_events": {"search_term": "approved"}}}))
        results = (await found.json())["search_categories"]["room_events"]["results"]
        assert [r["result"]["content"]["body"] for r in results] == ["file 42 approved"]
        # Room upgrade: nio follows the tombstone and joins the replacement.
        up = await a.send("POST", f"/_matrix/client/v3/rooms/{created.room_id}/upgrade?access_token={a.access_token}",
                          nio.Api.to_json({"new_version": "12"}))
        new_room = (await up.json())["replacement_room"]
        await b.sync(timeout=0)
        tomb = await b.room_get_state_event(created.room_id, "m.room.tombstone")
        assert isinstance(tomb, nio.RoomGetStateEventResponse) and tomb.content["replacement_room"] == new_room
        # The room was invite-only, so the replacement is too: members are invited across, as Element does.
        assert isinstance(await b.join(new_room), nio.JoinError)
        assert isinstance(await a.room_invite(new_room, bob), nio.RoomInviteResponse)
        assert isinstance(await b.join(new_room), nio.JoinResponse)
        await b.sync(timeout=0)
        sent = await b.room_send(new_room, "m.room.message", {"msgtype": "m.text", "body": "continuing here"})
        assert isinstance(sent, nio.RoomSendResponse), sent
    finally:
        await a.close()
        await b.close()
