"""Creating local events: build, hash, sign, auth-check against current state, persist atomically, notify.

Local events in one room are created one at a time (a per-room lock), so each references the room's
current forward extremities and is checked against exactly the state it will be applied to.

Concurrent sends to one room are committed together (group commit): the requests queue per room and one
task builds, checks and stores each in turn, on top of the one before, inside a single transaction. Each
event still gets its own auth check and its own refusal; what the batch shares is the COMMIT and the
database pages its rows touch (a message to 20 members dirties about 50 pages, mostly the same index
pages as the next message's), which was most of the cost of a busy room.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import string
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

import orjson
from nacl.signing import SigningKey

from homeserver.clock import Clock
from homeserver.errors import MatrixError, forbidden
from homeserver.events import AuthError, check_auth, event_id as compute_event_id, get_room_version, sign_event
from homeserver.events.auth import auth_types_for_event
from homeserver.events.canonical import encode_canonical_json
from homeserver.events.hashes import compute_room_id
from homeserver.events.room_versions import RoomVersion
from homeserver.services.notifier import Notifier
from homeserver.services.state_resolution import StateResolver
from homeserver.storage import Storage
from homeserver.storage.events import StoredEvent
from homeserver.storage.sequences import next_id
from homeserver.storage.state import StateKey, StateMap, StateStore

logger = logging.getLogger(__name__)

MAX_EVENT_BYTES = 65536
MAX_PREV_EVENTS = 10
MAX_DEPTH = 2**63 - 1
# Events committed together at most: bounds how long one room's batch holds the database's writer.
MAX_BATCH = 50
# Create events a /createRoom tries before giving up on a free room ID (see create_room_event).
MAX_CREATE_ATTEMPTS = 20


@dataclass(frozen=True)
class NewEvent:
    event_id: str
    stream_ordering: int
    room_id: str
    pdu: dict[str, Any]
    # The room's current state once this event is applied (listeners read members and power levels
    # from it instead of asking the database again). Callers must not modify it.
    state: StateMap | None = None


@dataclass(frozen=True)
class _RoomHead:
    """What the next local event in a room builds on: kept in memory between events under the room lock."""
    snapshot: int | None
    state: StateMap
    extremities: list[str]
    depth: int


@dataclass
class _SendRequest:
    """One queued local event, waiting for its room's batch."""
    sender: str
    event_type: str
    content: dict[str, Any]
    state_key: str | None
    device_id: str | None
    txn_id: str | None
    extra: Mapping[str, Any] | None
    future: "asyncio.Future[NewEvent]"


@dataclass(frozen=True)
class _Persisted:
    event: NewEvent
    snapshot: int | None
    new_state: StateMap | None


class EventCreator:
    def __init__(
        self, storage: Storage, state: StateStore, clock: Clock, server_name: str, signing_key: SigningKey,
        notifier: Notifier,
    ) -> None:
        self.storage = storage
        self.state = state
        self.clock = clock
        self.server_name = server_name
        self.signing_key = signing_key
        self.notifier = notifier
        self.resolver = StateResolver(storage, state)
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Only this class moves a room's head (its snapshot and forward extremities), always under the
        # room lock, so a cached head stays exact; it is dropped whenever a write fails.
        self._heads: dict[str, _RoomHead] = {}
        # Called inside each local event's transaction (push actions, so counts commit with the event).
        self.in_transaction: list[Callable[[Any, NewEvent], Awaitable[None]]] = []
        # Called after each local event commits (later: federation and appservice senders).
        self.listeners: list[Callable[[NewEvent], Awaitable[None]]] = []
        # Group commit: sends waiting per room, and the task draining each room's queue.
        self._queues: dict[str, list[_SendRequest]] = {}
        self._drainers: dict[str, asyncio.Task[None]] = {}

    def room_lock(self, room_id: str) -> asyncio.Lock:
        return self._locks[room_id]

    # --- room creation ------------------------------------------------------------------------

    async def create_room_event(self, creator: str, room_version: RoomVersion, content: dict[str, Any]) -> NewEvent:
        """Create and persist a room's m.room.create event, and with it the room.

        From room version 12 the room ID is the create event's hash, and the only thing telling two
        create events of one user with the same settings apart is origin_server_ts, in milliseconds:
        concurrent /createRoom calls can compute the same room ID. Under that room's lock the second
        sees the room exists and tries again a millisecond later."""
        ts = self.clock.time_ms()
        for _ in range(MAX_CREATE_ATTEMPTS):
            event: dict[str, Any] = {
                "type": "m.room.create", "state_key": "", "sender": creator, "content": content,
                "prev_events": [], "auth_events": [], "depth": 1, "origin_server_ts": ts,
            }
            if room_version.room_id_from_create_event:
                signed = self._sign(event, room_version)
                room_id = compute_room_id(signed)
            else:
                room_id = "!" + "".join(secrets.choice(string.ascii_letters) for _ in range(18)) + ":" + self.server_name
                event["room_id"] = room_id
                signed = self._sign(event, room_version)
            eid = compute_event_id(signed, room_version)
            self._check_size(signed)
            try:
                check_auth(signed, {}, room_version)
            except AuthError as e:
                raise MatrixError(400, "M_INVALID_PARAM", f"Invalid creation content: {e.message}") from None
            async with self.room_lock(room_id):
                if await self.storage.events.get_room_version(room_id) is not None:
                    ts += 1
                    continue
                try:
                    async with self.storage.db.transaction() as conn:
                        await self.storage.events.create_room(conn, room_id, room_version.identifier, creator, ts)
                        done = await self._persist(conn, room_id, eid, signed, {}, None, None, None)
                except BaseException:
                    self._heads.pop(room_id, None)
                    raise
                return await self._after_commit(room_id, done)
        raise MatrixError(503, "M_UNKNOWN", "Too many rooms created at once; try again")

    # --- ordinary events ----------------------------------------------------------------------

    async def send(
        self, room_id: str, sender: str, event_type: str, content: dict[str, Any], state_key: str | None = None,
        *, device_id: str | None = None, txn_id: str | None = None, extra: Mapping[str, Any] | None = None,
        before_persist: Callable[[str, dict[str, Any], str], Awaitable[dict[str, Any]]] | None = None,
    ) -> NewEvent:
        """Build, sign, auth-check and persist one local event. Raises 403 M_FORBIDDEN if the rules refuse it."""
        version = await self.storage.events.get_room_version(room_id)
        if version is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        rv = get_room_version(version)
        req = _SendRequest(sender, event_type, content, state_key, device_id, txn_id, extra,
                           asyncio.get_running_loop().create_future())
        if before_persist is not None:
            # Waits on another server (an invite it must countersign): never holds up a batch.
            async with self.room_lock(room_id):
                return await self._send_one(room_id, rv, req, before_persist)
        self._queues.setdefault(room_id, []).append(req)
        if room_id not in self._drainers:
            self._drainers[room_id] = asyncio.get_running_loop().create_task(self._drain(room_id, rv))
        return await req.future

    async def _drain(self, room_id: str, rv: RoomVersion) -> None:
        """Commit a room's queued sends, a batch at a time, until none are left."""
        queue = self._queues[room_id]
        try:
            while queue:
                async with self.room_lock(room_id):
                    batch = queue[:MAX_BATCH]
                    del queue[:MAX_BATCH]
                    try:
                        await self._send_batch(room_id, rv, batch)
                    except Exception as e:  # after the commit (listeners guard themselves): never leave a caller waiting
                        logger.exception("finishing a batch of events in %s failed", room_id)
                        for req in batch:
                            _settle(req.future, error=e)
                await asyncio.sleep(0)  # requests that arrived meanwhile join the next batch
        finally:
            del self._drainers[room_id]
            for req in queue:  # only if this task itself was cancelled (shutdown)
                _settle(req.future, error=MatrixError(503, "M_UNKNOWN", "Server is shutting down"))
            if not queue:
                self._queues.pop(room_id, None)

    async def _send_batch(self, room_id: str, rv: RoomVersion, batch: list[_SendRequest]) -> None:
        """Each request built on the one before and all stored in one transaction. A refused event fails
        alone; if the transaction itself fails, the batch is rolled back and every request still waiting
        is retried in a transaction of its own, so one bad row cannot fail its neighbours."""
        stored: list[tuple[_SendRequest, _Persisted]] = []
        same_txn: list[tuple[_SendRequest, _SendRequest]] = []
        by_txn: dict[tuple[str, str, str], _SendRequest] = {}
        batch_pdus: dict[str, dict[str, Any]] = {}
        try:
            head = await self._head(room_id)
            async with self.storage.db.transaction() as conn:
                for req in batch:
                    if req.future.done():  # its caller went away before its turn
                        continue
                    if req.txn_id is not None and req.device_id is not None:
                        key = (req.sender, req.device_id, req.txn_id)
                        if key in by_txn:  # the same request twice in one batch: one event, as the spec asks
                            same_txn.append((req, by_txn[key]))
                            continue
                        earlier = await self._txn_event(req)
                        if earlier is not None:  # a retry that raced the first attempt past the API's check
                            _settle(req.future, earlier)
                            continue
                    try:
                        eid, signed = await self._build(room_id, rv, head, req, batch_pdus)
                    except MatrixError as e:
                        _settle(req.future, error=e)
                        continue
                    done = await self._persist(conn, room_id, eid, signed, head.state, head.snapshot,
                                               req.device_id, req.txn_id)
                    if req.txn_id is not None and req.device_id is not None:
                        by_txn[(req.sender, req.device_id, req.txn_id)] = req
                    batch_pdus[eid] = signed
                    head = _RoomHead(done.snapshot, done.event.state or {}, [eid], int(signed["depth"]))
                    stored.append((req, done))
        except BaseException as e:
            self._heads.pop(room_id, None)
            if any(done.new_state is not None for _, done in stored):
                # Snapshots read back inside the rolled-back transaction may be cached under IDs that
                # will be handed out again.
                self.state.forget()
            if not isinstance(e, Exception):  # cancelled: nothing more may run
                for req in batch:
                    _settle(req.future, error=MatrixError(503, "M_UNKNOWN", "Server is shutting down"))
                raise
            logger.warning("a batch of %d events in %s failed; storing them one by one", len(batch), room_id)
            for req in batch:
                if req.future.done():
                    continue
                try:
                    _settle(req.future, await self._send_one(room_id, rv, req))
                except Exception as one:
                    _settle(req.future, error=one)
            return
        for req, done in stored:
            _settle(req.future, await self._after_commit(room_id, done))
        for req, first in same_txn:
            if first.future.done() and not first.future.cancelled() and first.future.exception() is None:
                _settle(req.future, first.future.result())
            else:
                _settle(req.future, error=MatrixError(500, "M_UNKNOWN", "The same transaction failed"))

    async def _send_one(
        self, room_id: str, rv: RoomVersion, req: _SendRequest,
        before_persist: Callable[[str, dict[str, Any], str], Awaitable[dict[str, Any]]] | None = None,
    ) -> NewEvent:
        """One event in its own transaction; the caller holds the room lock."""
        earlier = await self._txn_event(req)
        if earlier is not None:
            return earlier
        head = await self._head(room_id)
        eid, signed = await self._build(room_id, rv, head, req, {})
        if before_persist is not None:
            # e.g. an invite to another server's user, which that server must countersign first;
            # only signatures may change, so the event ID stays the same.
            signed = await before_persist(eid, signed, rv.identifier)
        try:
            async with self.storage.db.transaction() as conn:
                done = await self._persist(conn, room_id, eid, signed, head.state, head.snapshot, req.device_id, req.txn_id)
        except BaseException:
            self._heads.pop(room_id, None)
            raise
        return await self._after_commit(room_id, done)

    async def _txn_event(self, req: _SendRequest) -> NewEvent | None:
        """The event already stored for this request's transaction ID, if any. The API checks first, but
        concurrent retries can all pass that check; under the room lock the answer is final."""
        if req.txn_id is None or req.device_id is None:
            return None
        eid = await self.storage.events.get_txn_event(req.sender, req.device_id, req.txn_id)
        if eid is None:
            return None
        ev = (await self.storage.events.get_events([eid])).get(eid)
        return NewEvent(eid, ev.stream_ordering, ev.room_id, ev.pdu) if ev is not None else None

    async def _build(
        self, room_id: str, rv: RoomVersion, head: "_RoomHead", req: _SendRequest,
        uncommitted: Mapping[str, dict[str, Any]],
    ) -> tuple[str, dict[str, Any]]:
        """The signed event on top of ``head``, checked against its state. ``uncommitted``: events
        stored earlier in the same transaction, which the auth check may need but the database's
        readers cannot see yet."""
        event: dict[str, Any] = {
            "room_id": room_id, "type": req.event_type, "sender": req.sender, "content": req.content,
            "prev_events": head.extremities[:MAX_PREV_EVENTS], "depth": min(head.depth + 1, MAX_DEPTH),
            "origin_server_ts": self.clock.time_ms(),
        }
        if req.state_key is not None:
            event["state_key"] = req.state_key
        if req.extra:
            event.update(req.extra)
        auth_ids = self._select_auth_ids(event, head.state, rv)
        event["auth_events"] = [eid for key, eid in sorted(auth_ids.items()) if not _is_implicit_create(key, rv)]
        signed = self._sign(event, rv)
        self._check_size(signed)
        eid = compute_event_id(signed, rv)
        auth_pdus = await self._pdus_by_key(auth_ids, uncommitted)
        try:
            check_auth(signed, auth_pdus, rv)
        except AuthError as e:
            raise forbidden(e.message) from None
        return eid, signed

    async def _head(self, room_id: str) -> _RoomHead:
        head = self._heads.get(room_id)
        if head is None:
            snapshot = await self.storage.events.get_current_snapshot(room_id)
            state = await self.state.get_state(snapshot) if snapshot is not None else {}
            prev = await self.storage.events.get_forward_extremities(room_id)
            head = _RoomHead(snapshot, state, prev, await self.storage.events.max_depth(prev))
            self._heads[room_id] = head
        return head

    def invalidate_head(self, room_id: str) -> None:
        """For any other writer of a room's extremities or current state (e.g. events from federation)."""
        self._heads.pop(room_id, None)

    def _select_auth_ids(self, event: dict[str, Any], state: StateMap, rv: RoomVersion) -> dict[StateKey, str]:
        wanted = auth_types_for_event(event, rv)
        wanted.add(("m.room.create", ""))  # always needed to check the event, listed or not
        return {k: state[k] for k in wanted if k in state}

    async def _pdus_by_key(
        self, ids: Mapping[StateKey, str], uncommitted: Mapping[str, dict[str, Any]] | None = None,
    ) -> dict[StateKey, dict[str, Any]]:
        held = uncommitted or {}
        events = await self.storage.events.get_events([eid for eid in ids.values() if eid not in held])
        pdus = {eid: ev.pdu for eid, ev in events.items()}
        pdus.update({eid: held[eid] for eid in ids.values() if eid in held})
        # Carrying the ID spares the auth rules recomputing the create event's reference hash each time.
        return {k: {**pdus[eid], "event_id": eid} for k, eid in ids.items() if eid in pdus}

    def _sign(self, event: dict[str, Any], rv: RoomVersion) -> dict[str, Any]:
        return sign_event(event, self.server_name, self.signing_key, rv)

    @staticmethod
    def _check_size(pdu: Mapping[str, Any]) -> None:
        # orjson's compact form is within a few bytes of the canonical one; only near the limit is
        # the exact (slower) canonical length needed.
        if len(orjson.dumps(pdu)) < MAX_EVENT_BYTES - 4096:
            return
        if len(encode_canonical_json(pdu)) > MAX_EVENT_BYTES:
            raise MatrixError(413, "M_TOO_LARGE", "Event is too large (over 64 KiB)")

    # --- events from other servers ----------------------------------------------------------

    async def persist_remote(
        self, room_id: str, eid: str, pdu: dict[str, Any], state_before: StateMap | None = None,
        before_snapshot: int | None = None,
    ) -> NewEvent | None:
        """An event from another server that passed its checks (signatures, hashes, auth against its auth
        events, against the state before it and against current state). Its prev_events stop being
        forward extremities. ``state_before`` is the state its prev events resolve to (None: the room's
        current state, i.e. it was built on exactly our extremities); when it differs, the room's
        current state becomes the resolution of every forward extremity's state. Returns None if the
        event is already stored."""
        async with self.room_lock(room_id):
            if await self.storage.events.have_events([eid]):
                return None
            head = await self._head(room_id)
            prev = set(pdu.get("prev_events") or [])
            extremities = [e for e in head.extremities if e not in prev] + [eid]
            linear = state_before is None or (prev == set(head.extremities) and state_before == head.state)
            try:
                if linear:
                    async with self.storage.db.transaction() as conn:
                        done = await self._persist(conn, room_id, eid, pdu, head.state, head.snapshot, None, None,
                                                   extremities=extremities)
                else:
                    assert state_before is not None
                    done = await self._persist_fork(room_id, eid, pdu, head, state_before, before_snapshot, extremities)
            except BaseException:
                self._heads.pop(room_id, None)
                raise
            return await self._after_commit(room_id, done, extremities)

    async def _persist_fork(
        self, room_id: str, eid: str, pdu: dict[str, Any], head: "_RoomHead", state_before: StateMap,
        before_snapshot: int | None, extremities: list[str],
    ) -> "_Persisted":
        """An event on another branch of the room's graph: it gets the state its own prev events give
        it; the room's current state is then resolved across all forward extremities."""
        version = await self.storage.events.get_room_version(room_id)
        assert version is not None
        state_key = pdu.get("state_key")
        own = {**state_before, (pdu["type"], state_key): eid} if state_key is not None else state_before
        others = await self.storage.events.get_events([e for e in extremities if e != eid])
        sets: list[StateMap] = [own]
        for ev in others.values():
            st = await self.resolver.state_after(ev)
            if st is not None:
                sets.append(st)
        current = await self.resolver.resolve(version, sets, {eid: pdu})
        async with self.storage.db.transaction() as conn:
            if before_snapshot is None:
                before_snapshot = await self.state.create_snapshot(conn, room_id, state_before, head.snapshot)
            done = await self._persist(conn, room_id, eid, pdu, state_before, before_snapshot, None, None,
                                       extremities=extremities, current=current)
            changes = {k: current.get(k) for k in set(head.state) | set(current) if head.state.get(k) != current.get(k)}
            member_ids = [v for k, v in changes.items() if k[0] == "m.room.member" and v is not None]
            members = await self.storage.events.get_events(member_ids, conn)
            memberships = {m: ev.pdu["content"].get("membership") for m, ev in members.items()}
            await self.storage.events.update_current_state(conn, room_id, changes, memberships)
            snapshot = done.snapshot if current == own else await self.state.create_snapshot(conn, room_id, current, head.snapshot)
            await self.storage.events.set_current_snapshot(conn, room_id, snapshot)
        if done.new_state is not None and done.snapshot is not None:
            self.state.cache_snapshot(done.snapshot, done.new_state)
        return _Persisted(done.event, snapshot, current)

    async def persist_backfilled(self, room_id: str, events: list[tuple[str, dict[str, Any], StateMap]]) -> None:
        """Older history fetched from another server, oldest first, each with the state before it:
        placed before everything the room's timeline holds (negative stream positions, so no sync
        token ever covers them and /messages pages on into them). Current state, forward extremities
        and notifications are untouched: this is the past."""
        if not events:
            return
        redactions = await self.storage.events.redactions_in_room(room_id)
        async with self.storage.db.transaction() as conn:
            last = await next_id(conn, "backfill_stream", len(events))
            held = await self.storage.events.get_events([e for e, _, _ in events], conn)
            parent: int | None = None
            for i, (eid, pdu, before) in enumerate(events):
                position = -(last - i)  # the oldest gets the lowest position
                state_key = pdu.get("state_key")
                after = {**before, (pdu["type"], state_key): eid} if state_key is not None else before
                parent = await self.state.create_snapshot(conn, room_id, after, parent)
                old = held.get(eid)
                if old is not None:
                    if not old.outlier or old.soft_failed:
                        continue
                    await self.storage.events.promote_outlier(conn, eid, position, parent)
                else:
                    replaces = before.get((pdu["type"], state_key)) if state_key is not None else None
                    await self.storage.events.persist_event(conn, eid, pdu, stream_ordering=position, state_after=parent,
                                                            room_id=room_id, replaces_state=replaces)
                await self.storage.relations.add(conn, eid, room_id, pdu, position)
                await self.storage.search.index(conn, eid, room_id, pdu, position)
                redacts = _redacts(pdu)
                if redacts is not None:
                    target = (await self.storage.events.get_events([redacts], conn)).get(redacts)
                    if target is not None and target.room_id == room_id:
                        await self.storage.events.mark_redacted(conn, redacts, eid)
                        await self.storage.relations.remove(conn, redacts)
                        await self.storage.search.remove(conn, redacts)
                if eid in redactions:  # removed before we ever held it
                    await self.storage.events.mark_redacted(conn, eid, redactions[eid])
                    await self.storage.relations.remove(conn, eid)
                    await self.storage.search.remove(conn, eid)
        for eid, _, _ in events:
            self.storage.events.invalidate(eid)

    async def persist_outliers(self, room_id: str, pdus: Mapping[str, dict[str, Any]], conn: Any = None) -> None:
        """Events held for their signatures and auth chains (state fetched from another server), outside
        every timeline and without state of their own. Already-held events are left as they are."""
        if not pdus:
            return
        if conn is None:
            async with self.storage.db.transaction() as c:
                await self.persist_outliers(room_id, pdus, c)
            return
        held = await self.storage.events.get_events(list(pdus), conn)
        for eid, pdu in pdus.items():
            if eid in held:
                continue
            position = -await next_id(conn, "backfill_stream")
            await self.storage.events.persist_event(conn, eid, pdu, stream_ordering=position, state_after=None,
                                                    outlier=True, room_id=room_id)

    async def persist_soft_failed(self, room_id: str, eid: str, pdu: dict[str, Any]) -> None:
        """Keep a soft-failed event so later events may reference it, out of every timeline and of the
        state (stored like an outlier, marked soft-failed)."""
        async with self.storage.db.transaction() as conn:
            if (await self.storage.events.get_events([eid], conn)).get(eid) is not None:
                return
            position = -await next_id(conn, "backfill_stream")
            await self.storage.events.persist_event(conn, eid, pdu, stream_ordering=position, state_after=None,
                                                    soft_failed=True, outlier=True, room_id=room_id)

    async def create_remote_room(
        self, room_id: str, room_version: str, state: Mapping[str, dict[str, Any]], auth_chain: Mapping[str, dict[str, Any]],
        join_id: str, join_pdu: dict[str, Any],
    ) -> NewEvent:
        """Take in a room another server holds, as send_join returned it: the state before our join and
        its auth chain are stored as outliers (not timeline), then our join goes on top."""
        async with self.room_lock(room_id):
            try:
                async with self.storage.db.transaction() as conn:
                    await self.storage.events.create_room(conn, room_id, room_version, None, self.clock.time_ms())
                    await self.persist_outliers(room_id, {k: v for k, v in {**auth_chain, **state}.items() if k != join_id}, conn)
                    state_map = {(p["type"], p["state_key"]): eid for eid, p in state.items() if isinstance(p.get("state_key"), str)}
                    memberships = {eid: p["content"].get("membership") for eid, p in state.items() if p["type"] == "m.room.member"}
                    snapshot = await self.state.create_snapshot(conn, room_id, state_map, None)
                    await self.storage.events.update_current_state(conn, room_id, state_map, memberships)
                    await self.storage.events.set_current_snapshot(conn, room_id, snapshot)
                    done = await self._persist(conn, room_id, join_id, join_pdu, state_map, snapshot, None, None,
                                               extremities=[join_id])
            except BaseException:
                self._heads.pop(room_id, None)
                raise
            return await self._after_commit(room_id, done, [join_id])

    async def _persist(
        self, conn: Any, room_id: str, eid: str, pdu: dict[str, Any], state_before: StateMap,
        snapshot_before: int | None, device_id: str | None, txn_id: str | None,
        extremities: list[str] | None = None, current: StateMap | None = None,
    ) -> "_Persisted":
        """``current``: the room's current state after this event when it is not simply this event's
        own state (a fork); the caller then writes the current state itself."""
        stream = await next_id(conn, "events_stream")
        state_key = pdu.get("state_key")
        new_state: StateMap | None = None
        snapshot = snapshot_before
        if state_key is not None:
            key = (pdu["type"], state_key)
            new_state = {**state_before, key: eid}
            snapshot = await self.state.create_snapshot(conn, room_id, new_state, snapshot_before)
            if current is None:
                membership = pdu["content"].get("membership") if pdu["type"] == "m.room.member" else None
                await self.storage.events.update_current_state(conn, room_id, {key: eid}, {eid: membership} if membership else {})
                await self.storage.events.set_current_snapshot(conn, room_id, snapshot)
        replaces = state_before.get((pdu["type"], state_key)) if state_key is not None else None
        await self.storage.events.persist_event(
            conn, eid, pdu, stream_ordering=stream, state_after=snapshot, device_id=device_id, txn_id=txn_id,
            room_id=room_id, replaces_state=replaces,
        )
        await self.storage.relations.add(conn, eid, room_id, pdu, stream)
        await self.storage.search.index(conn, eid, room_id, pdu, stream)
        await self.storage.events.set_forward_extremities(conn, room_id, extremities or [eid])
        if txn_id is not None and device_id is not None:
            await self.storage.events.add_txn_event(conn, pdu["sender"], device_id, txn_id, eid, self.clock.time_ms())
        redacts = _redacts(pdu)
        if redacts is not None:
            target = (await self.storage.events.get_events([redacts], conn)).get(redacts)
            if target is not None and target.room_id == room_id:
                await self.storage.events.mark_redacted(conn, redacts, eid)
                await self.storage.relations.remove(conn, redacts)
                await self.storage.search.remove(conn, redacts)
        state_now = current if current is not None else new_state if new_state is not None else state_before
        new = NewEvent(eid, stream, room_id, pdu, state_now)
        for hook in self.in_transaction:
            await hook(conn, new)
        return _Persisted(new, snapshot, new_state)

    async def _after_commit(self, room_id: str, done: "_Persisted", extremities: list[str] | None = None) -> NewEvent:
        """Only once the transaction committed: warm the state cache, run listeners, wake sync waiters."""
        if done.snapshot is not None and done.new_state is not None:
            self.state.cache_snapshot(done.snapshot, done.new_state)
        new = done.event
        old = self._heads.get(room_id)
        depth = max(int(new.pdu["depth"]), old.depth if old is not None and extremities else 0)
        self._heads[room_id] = _RoomHead(done.snapshot, new.state or {}, extremities or [new.event_id], depth)
        for listener in self.listeners:
            try:
                await listener(done.event)
            except Exception:  # a listener's failure must not fail an event that is already committed
                logger.exception("event listener failed for %s", done.event.event_id)
        pdu = done.event.pdu
        users = [pdu["state_key"]] if pdu["type"] == "m.room.member" else []
        self.notifier.notify(rooms=[room_id], users=users)
        return done.event


def _settle(future: "asyncio.Future[NewEvent]", result: NewEvent | None = None, *, error: BaseException | None = None) -> None:
    """Resolve a waiting send unless its caller has already gone."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]


def _is_implicit_create(key: StateKey, rv: RoomVersion) -> bool:
    return rv.room_id_from_create_event and key == ("m.room.create", "")


def _redacts(pdu: Mapping[str, Any]) -> str | None:
    if pdu.get("type") != "m.room.redaction":
        return None
    target = pdu.get("content", {}).get("redacts") or pdu.get("redacts")
    return target if isinstance(target, str) else None
