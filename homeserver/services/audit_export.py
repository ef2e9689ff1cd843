"""The room audit export (``qasid audit export`` and the admin API): a self-contained JSON Lines file an
auditor verifies offline with ``qasid audit verify``, trusting the protocol's rules rather than this
server. It holds every event of the room in federation form (hashes, signatures, prev and auth
events) as this server received or created it, and the key documents of every server that signed
them, each as that server signed it (with notary countersignatures where the key came through one).

A redacted event is exported redacted (its signatures still verify; the verifier reports it as
redacted). With ``from_ts``, messages before it are exported redacted too: they are needed to prove
the graph and the state is unbroken, not their content. Events after ``to_ts`` are left out.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

from homeserver.audit.verify import FORMAT
from homeserver.errors import MatrixError
from homeserver.events import get_room_version, redact
from homeserver.events.signing import required_signers
from homeserver.storage import Storage

PAGE = 1000


class AuditExporter:
    def __init__(self, storage: Storage, server_name: str, local_key_response: Any, clock: Any) -> None:
        self.storage = storage
        self.server_name = server_name
        self.local_key_response = local_key_response  # () -> this server's signed key document
        self.clock = clock

    async def lines(self, room_id: str, from_ts: int | None = None, to_ts: int | None = None) -> AsyncIterator[str]:
        room = await self.storage.events.get_room(room_id)
        if room is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        rv = get_room_version(room.room_version)
        yield _line({"kind": "header", "format": FORMAT, "room_id": room_id, "room_version": room.room_version,
                     "exported_by": self.server_name, "exported_at": self.clock.time_ms(),
                     "from_ts": from_ts, "to_ts": to_ts})
        # Keys first: the signers are known only after a pass over the events, so that pass is made
        # twice (pages from the database) rather than holding the room in memory.
        signers: set[str] = set()
        async for ev in self._events(room_id):
            if to_ts is None or int(ev.pdu.get("origin_server_ts", 0)) <= to_ts:
                signers |= required_signers(ev.pdu, rv)
        for server in sorted(signers):
            for source, response in await self._key_documents(server):
                yield _line({"kind": "server_keys", "server_name": server, "source": source, "response": response})
        count = 0
        async for ev in self._events(room_id):
            ts = int(ev.pdu.get("origin_server_ts", 0))
            if to_ts is not None and ts > to_ts:
                continue
            in_range = from_ts is None or ts >= from_ts
            pdu = ev.pdu
            if ev.redacted_by or (not in_range and pdu.get("state_key") is None):
                pdu = redact(dict(pdu), rv)
            status = "soft_failed" if ev.soft_failed else "outlier" if ev.outlier else "accepted"
            yield _line({"kind": "event", "event_id": ev.event_id, "status": status, "in_range": in_range,
                         "redacted_by": ev.redacted_by, "pdu": pdu})
            count += 1
        end: dict[str, Any] = {"kind": "end", "events": count}
        if to_ts is None:
            state = await self.storage.events.get_current_state_ids(room_id)
            end["current_state"] = [{"type": t, "state_key": k, "event_id": v} for (t, k), v in sorted(state.items())]
        yield _line(end)

    async def _events(self, room_id: str) -> AsyncIterator[Any]:
        after: int | None = None
        while True:
            page = await self.storage.events.every_event(room_id, after, PAGE)
            for ev in page:
                yield ev
            if len(page) < PAGE:
                return
            after = page[-1].stream_ordering

    async def _key_documents(self, server: str) -> list[tuple[str, dict[str, Any]]]:
        if server == self.server_name:
            return [("self", self.local_key_response())]
        seen: dict[str, tuple[str, dict[str, Any]]] = {}
        for k in await self.storage.server_keys.for_server(server):
            if not isinstance(k.response, dict):
                continue
            raw = json.dumps(k.response, sort_keys=True)
            seen.setdefault(raw, (k.source, k.response))
        return list(seen.values())


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"
