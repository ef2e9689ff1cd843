"""Small helpers for room tests: everything still goes over HTTP."""

from __future__ import annotations

import itertools
from typing import Any

from tests.support.servers import RunningServer

_txn = itertools.count()
C = "/_matrix/client/v3"


async def create_room(srv: RunningServer, token: str, **body: Any) -> str:
    r = await srv.http.post(f"{C}/createRoom", body, token=token)
    assert r.status == 200, r.body
    return r.body["room_id"]


async def send_text(srv: RunningServer, token: str, room_id: str, text: str, **extra: Any) -> str:
    r = await srv.http.put(f"{C}/rooms/{room_id}/send/m.room.message/t{next(_txn)}",
                           {"msgtype": "m.text", "body": text, **extra}, token=token)
    assert r.status == 200, r.body
    return r.body["event_id"]


async def join(srv: RunningServer, token: str, room: str) -> None:
    r = await srv.http.post(f"{C}/join/{room}", {}, token=token)
    assert r.status == 200, r.body


async def invite(srv: RunningServer, token: str, room_id: str, user_id: str) -> None:
    r = await srv.http.post(f"{C}/rooms/{room_id}/invite", {"user_id": user_id}, token=token)
    assert r.status == 200, r.body


async def sync(srv: RunningServer, token: str, **params: Any) -> dict[str, Any]:
    r = await srv.http.get(f"{C}/sync", token=token, params={k: str(v) for k, v in params.items()})
    assert r.status == 200, r.body
    return r.body
