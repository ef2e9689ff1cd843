"""Every response of a broad client session, validated against the spec's OpenAPI schemas."""

from __future__ import annotations

from typing import Any

import pytest

from tests.rooms.helpers import C
from tests.support.client import MatrixHttp, Response
from tests.support.servers import RunningServer
from tests.support.spec_schemas import SPEC_DIR, validate

V1 = "/_matrix/client/v1"


class Recorder(MatrixHttp):
    def __init__(self, inner: MatrixHttp) -> None:
        super().__init__(inner.base_url, inner.session)
        self.seen: list[tuple[str, str, Response]] = []

    async def request(self, method: str, path: str, body: Any = None, **kw: Any) -> Response:
        r = await super().request(method, path, body, **kw)
        self.seen.append((method, path, r))
        return r


@pytest.mark.skipif(not SPEC_DIR.is_dir(), reason="the spec's OpenAPI files are not beside this checkout")
async def test_responses_match_the_spec(server: RunningServer) -> None:
    h = Recorder(server.http)
    alice = await server.create_user("alice", "password123")
    bob = await server.create_user("bob", "password123")
    ta = (await h.login("alice", "password123")).body["access_token"]
    tb = (await h.login("bob", "password123")).body["access_token"]
    await h.get("/_matrix/client/versions")
    await h.get(f"{C}/capabilities", token=ta)
    await h.get(f"{C}/account/whoami", token=ta)
    await h.get(f"{C}/login")
    await h.get(f"{C}/devices", token=ta)
    await h.get(f"{C}/profile/{alice}", token=ta)
    await h.get(f"{C}/profile/{alice}/displayname", token=ta)
    await h.put(f"{C}/profile/{alice}/displayname", {"displayname": "Alice"}, token=ta)
    room = (await h.post(f"{C}/createRoom", {"name": "Spec room", "topic": "t", "preset": "public_chat",
                                             "room_alias_name": "spec"}, token=ta)).body["room_id"]
    await h.post(f"{C}/rooms/{room}/invite", {"user_id": bob}, token=ta)
    await h.post(f"{C}/join/{room}", {}, token=tb)
    msg = (await h.put(f"{C}/rooms/{room}/send/m.room.message/s1", {"msgtype": "m.text", "body": "hello spec"}, token=ta)).body["event_id"]
    await h.put(f"{C}/rooms/{room}/send/m.room.message/s2", {"msgtype": "m.text", "body": "in thread",
                "m.relates_to": {"rel_type": "m.thread", "event_id": msg}}, token=tb)
    await h.put(f"{C}/rooms/{room}/send/m.reaction/s3", {"m.relates_to": {"rel_type": "m.annotation", "event_id": msg, "key": "+1"}}, token=tb)
    await h.get(f"{C}/rooms/{room}/state", token=ta)
    await h.get(f"{C}/rooms/{room}/state/m.room.name/", token=ta)
    await h.put(f"{C}/rooms/{room}/state/m.room.topic/", {"topic": "new"}, token=ta)
    await h.get(f"{C}/rooms/{room}/members", token=ta)
    await h.get(f"{C}/rooms/{room}/joined_members", token=ta)
    await h.get(f"{C}/joined_rooms", token=ta)
    await h.get(f"{C}/rooms/{room}/event/{msg}", token=tb)
    await h.get(f"{C}/rooms/{room}/messages", token=tb, params={"dir": "b", "limit": "5"})
    await h.get(f"{C}/rooms/{room}/context/{msg}", token=tb, params={"limit": "4"})
    await h.get(f"{V1}/rooms/{room}/relations/{msg}", token=tb)
    await h.get(f"{V1}/rooms/{room}/threads", token=tb)
    await h.get(f"{V1}/rooms/{room}/timestamp_to_event", token=tb, params={"ts": "0", "dir": "f"})
    await h.post(f"{C}/rooms/{room}/receipt/m.read/{msg}", {}, token=tb)
    await h.post(f"{C}/rooms/{room}/read_markers", {"m.fully_read": msg}, token=tb)
    await h.put(f"{C}/rooms/{room}/typing/{bob}", {"typing": True, "timeout": 1000}, token=tb)
    await h.put(f"{C}/user/{bob}/account_data/org.example", {"a": 1}, token=tb)
    await h.get(f"{C}/user/{bob}/account_data/org.example", token=tb)
    await h.put(f"{C}/user/{bob}/rooms/{room}/tags/u.work", {"order": 0.2}, token=tb)
    await h.get(f"{C}/user/{bob}/rooms/{room}/tags", token=tb)
    fid = (await h.post(f"{C}/user/{bob}/filter", {"room": {"timeline": {"limit": 5}}}, token=tb)).body["filter_id"]
    await h.get(f"{C}/user/{bob}/filter/{fid}", token=tb)
    first = (await h.get(f"{C}/sync", token=tb, params={"filter": fid})).body
    await h.put(f"{C}/rooms/{room}/send/m.room.message/s4", {"msgtype": "m.text", "body": "more", "m.mentions": {"user_ids": [bob]}}, token=ta)
    await h.get(f"{C}/sync", token=tb, params={"since": first["next_batch"]})
    await h.get(f"{C}/pushrules/", token=tb)
    await h.get(f"{C}/pushrules/global/override/.m.rule.master", token=tb)
    await h.put(f"{C}/pushrules/global/room/{room}", {"actions": []}, token=tb)
    await h.get(f"{C}/notifications", token=tb)
    await h.get(f"{C}/publicRooms", token=tb)
    await h.post(f"{C}/publicRooms", {"limit": 5}, token=tb)
    await h.get(f"{C}/directory/room/%23spec:hs1.test", token=tb)
    await h.get(f"{C}/directory/list/room/{room}", token=tb)
    await h.get(f"{C}/rooms/{room}/aliases", token=ta)
    await h.post(f"{C}/search", {"search_categories": {"room_events": {"search_term": "hello"}}}, token=tb)
    await h.post(f"{C}/user_directory/search", {"search_term": "ali"}, token=tb)
    await h.get(f"{V1}/rooms/{room}/hierarchy", token=tb)
    await h.put(f"{C}/presence/{bob}/status", {"presence": "online"}, token=tb)
    await h.get(f"{C}/presence/{bob}/status", token=tb)
    await h.post(f"{C}/rooms/{room}/report/{msg}", {"reason": "test"}, token=tb)
    await h.put(f"{C}/rooms/{room}/redact/{msg}/r1", {"reason": "spec"}, token=ta)
    await h.post(f"{C}/rooms/{room}/upgrade", {"new_version": "12"}, token=ta)
    await h.post(f"{C}/rooms/{room}/leave", {}, token=tb)
    await h.post(f"{C}/rooms/{room}/forget", {}, token=tb)
    # Errors too.
    await h.get(f"{C}/rooms/{room}/event/$missing", token=ta)
    await h.post(f"{C}/login", {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "x"})
    await h.post(f"{C}/register", {"username": "carol", "password": "password123"})

    validated, unspecified = 0, []
    for method, path, r in h.seen:
        assert r.status < 500, (method, path, r.body)
        if validate(method, path, r.status, r.body):
            validated += 1
        else:
            unspecified.append(f"{method} {path} {r.status}")
    assert not unspecified and validated == len(h.seen), unspecified
