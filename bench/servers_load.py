"""The client load for `python -m bench servers`: the same requests, in the same order, for each server.

Only the Matrix client-server API and Synapse's shared-secret registration are used, so one code path
drives both servers. Every non-2xx answer is kept with its request so failures can be reported precisely.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import math
import statistics
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import quote

import aiohttp

PASSWORD = "bench-Password-1234"
CLIENT = "/_matrix/client/v3"


@dataclass(frozen=True)
class Params:
    users: int = 50            # 1. register + login
    rooms: int = 100           # 2. createRoom
    senders: int = 20          # 3. concurrent senders ...
    messages_each: int = 100   #    ... each sending this many messages
    latency_samples: int = 50  # 4. send -> sync delivery
    sync_rooms: int = 50       # 5. initial sync over this many rooms ...
    sync_room_messages: int = 10  # ... each holding this many messages
    sync_samples: int = 5
    joiners: int = 200         # 6. users joining one public room ...
    join_concurrency: int = 10  #   ... this many at a time
    setup_concurrency: int = 10  # registrations while preparing a scenario (not timed)
    sliding_rooms: int = 50     # 8. sliding sync: a user in this many rooms ...
    sliding_room_messages: int = 3   # ... each holding this many messages
    sliding_latency_samples: int = 30

    @classmethod
    def quick(cls) -> "Params":
        return cls(users=10, rooms=20, senders=5, messages_each=20, latency_samples=10, sync_rooms=10,
                   sync_room_messages=5, sync_samples=3, joiners=30, sliding_rooms=25, sliding_latency_samples=10)


class HTTPFailure(Exception):
    """A request the server answered with an error (or did not answer)."""

    def __init__(self, method: str, path: str, body: Any, status: int | None, text: str) -> None:
        self.method, self.path, self.body, self.status, self.text = method, path, body, status, text
        super().__init__(str(self))

    def __str__(self) -> str:
        body = "" if self.body is None else " " + _clip(json.dumps(self.body), 300)
        status = "no response" if self.status is None else f"HTTP {self.status}"
        return f"{self.method} {self.path}{body} -> {status} {_clip(self.text, 600)}"

    def as_dict(self) -> dict[str, Any]:
        return {"request": f"{self.method} {self.path}", "request_body": self.body, "status": self.status,
                "response": _clip(self.text, 2000)}


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n] + f"... ({len(text)} chars)"


@dataclass
class User:
    localpart: str
    user_id: str
    token: str
    device_id: str


class Api:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, secret: str) -> None:
        self.session = session
        self.base = base_url
        self.secret = secret
        self._txn = itertools.count()
        self._names = itertools.count()
        self.requests = 0

    async def call(self, method: str, path: str, token: str | None = None, body: Any = None,
                   params: dict[str, str] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.requests += 1
        try:
            async with self.session.request(method, self.base + path, json=body, params=params,
                                            headers=headers) as resp:
                text = await resp.text()
                if resp.status // 100 != 2:
                    raise HTTPFailure(method, path, body, resp.status, text)
                try:
                    return json.loads(text) if text else {}
                except ValueError:
                    raise HTTPFailure(method, path, body, resp.status, "response is not JSON: " + text) from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise HTTPFailure(method, path, body, None, f"{type(e).__name__}: {e}") from None

    def txn(self) -> str:
        return f"bench{time.time_ns()}.{next(self._txn)}"

    def new_localpart(self, prefix: str) -> str:
        return f"{prefix}{next(self._names)}"

    # --- account helpers -----------------------------------------------------------------------

    async def admin_register(self, localpart: str, password: str = PASSWORD) -> User:
        path = "/_synapse/admin/v1/register"
        nonce = (await self.call("GET", path))["nonce"]
        mac = hmac.new(self.secret.encode(), digestmod=hashlib.sha1)
        for part in (nonce, localpart, password):
            mac.update(part.encode() + b"\x00")
        mac.update(b"notadmin")
        r = await self.call("POST", path, body={"nonce": nonce, "username": localpart, "password": password,
                                                "admin": False, "mac": mac.hexdigest()})
        return User(localpart, r["user_id"], r["access_token"], r.get("device_id", ""))

    async def login(self, localpart: str, password: str = PASSWORD) -> User:
        r = await self.call("POST", CLIENT + "/login", body={
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart},
            "password": password, "initial_device_display_name": "bench"})
        return User(localpart, r["user_id"], r["access_token"], r["device_id"])

    # --- room helpers --------------------------------------------------------------------------

    async def create_room(self, user: User, preset: str, name: str | None = None) -> str:
        body: dict[str, Any] = {"preset": preset}
        if name:
            body["name"] = name
        return (await self.call("POST", CLIENT + "/createRoom", user.token, body))["room_id"]

    async def join(self, user: User, room_id: str) -> None:
        await self.call("POST", f"{CLIENT}/join/{quote(room_id, safe='')}", user.token, {})

    async def send_text(self, user: User, room_id: str, text: str) -> str:
        path = f"{CLIENT}/rooms/{quote(room_id, safe='')}/send/m.room.message/{self.txn()}"
        return (await self.call("PUT", path, user.token, {"msgtype": "m.text", "body": text}))["event_id"]

    async def sync(self, user: User, since: str | None = None, timeout_ms: int | None = None) -> dict[str, Any]:
        params = {}
        if since:
            params["since"] = since
        if timeout_ms is not None:
            params["timeout"] = str(timeout_ms)
        return await self.call("GET", CLIENT + "/sync", user.token, params=params or None)


class Pool:
    """Users handed out to scenarios; each scenario gets users no earlier scenario has used."""

    def __init__(self, api: Api, concurrency: int) -> None:
        self.api = api
        self.concurrency = concurrency
        self.spare: list[User] = []

    async def take(self, n: int) -> list[User]:
        missing = n - len(self.spare)
        if missing > 0:
            self.spare += await run_limited(
                [lambda: self.api.admin_register(self.api.new_localpart("pool")) for _ in range(missing)],
                self.concurrency)
        out, self.spare = self.spare[:n], self.spare[n:]
        return out


async def run_limited(jobs: list[Callable[[], Awaitable[Any]]], concurrency: int) -> list[Any]:
    """Run ``jobs`` with at most ``concurrency`` in flight; results in job order; the first failure is raised
    after every job has finished (the others' failures are attached as ``.others``)."""
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(jobs)):
        queue.put_nowait(i)

    async def worker() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            try:
                results[i] = await jobs[i]()
            except Exception as e:  # keep going: count every failure
                errors.append(e)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(jobs))))))
    if errors:
        first = errors[0]
        first.others = errors[1:]  # type: ignore[attr-defined]
        raise first
    return results


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# --- scenarios -------------------------------------------------------------------------------------
# Each returns {"value": number, ...details}. The timed section never includes set-up.

async def s_register_login(api: Api, pool: Pool, p: Params) -> dict[str, Any]:
    names = [api.new_localpart("reg") for _ in range(p.users)]

    async def one(name: str) -> User:
        await api.admin_register(name)
        return await api.login(name)

    t0 = time.perf_counter()
    users = await run_limited([lambda n=n: one(n) for n in names], p.setup_concurrency)
    elapsed = time.perf_counter() - t0
    pool.spare += users  # later scenarios reuse these accounts (with their login tokens)
    return {"value": p.users / elapsed, "elapsed_s": elapsed, "users": p.users, "concurrency": p.setup_concurrency}


async def s_create_room(api: Api, pool: Pool, p: Params) -> dict[str, Any]:
    (user,) = await pool.take(1)
    times = []
    t0 = time.perf_counter()
    for i in range(p.rooms):
        t = time.perf_counter()
        await api.create_room(user, "private_chat", f"room {i}")
        times.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - t0
    return {"value": p.rooms / elapsed, "elapsed_s": elapsed, "rooms": p.rooms,
            "p50_ms": percentile(times, 0.5) * 1000, "p95_ms": percentile(times, 0.95) * 1000}


async def s_send_throughput(api: Api, pool: Pool, p: Params) -> dict[str, Any]:
    users = await pool.take(p.senders)
    room = await api.create_room(users[0], "public_chat", "throughput")
    for u in users[1:]:
        await api.join(u, room)
    sent = 0

    async def sender(u: User) -> None:
        nonlocal sent
        for i in range(p.messages_each):
            await api.send_text(u, room, f"message {i} from {u.localpart}")
            sent += 1

    t0 = time.perf_counter()
    await run_limited([lambda u=u: sender(u) for u in users], len(users))
    elapsed = time.perf_counter() - t0
    return {"value": sent / elapsed, "elapsed_s": elapsed, "events": sent, "senders": len(users)}


async def s_sync_latency(api: Api, pool: Pool, p: Params) -> dict[str, Any]:
    a, b = await pool.take(2)
    room = await api.create_room(a, "public_chat", "latency")
    await api.join(b, room)
    first = await api.sync(b)
    seen: dict[str, float] = {}
    changed = asyncio.Condition()
    polls = 0
    poll_error: list[Exception] = []

    async def poll_forever(since: str) -> None:
        nonlocal polls
        try:
            while True:
                r = await api.sync(b, since, 30000)
                now = time.perf_counter()
                polls += 1
                since = r["next_batch"]
                for joined in r.get("rooms", {}).get("join", {}).values():
                    for ev in joined.get("timeline", {}).get("events", []):
                        if "event_id" in ev:
                            seen.setdefault(ev["event_id"], now)
                async with changed:
                    changed.notify_all()
        except Exception as e:
            poll_error.append(e)
            async with changed:  # wake the sender so it sees the failure
                changed.notify_all()
            raise

    poller = asyncio.create_task(poll_forever(first["next_batch"]))
    samples = []
    try:
        await asyncio.sleep(0.3)
        for i in range(p.latency_samples):
            t0 = time.perf_counter()
            event_id = await api.send_text(a, room, f"ping {i}")

            async def arrived() -> None:
                async with changed:
                    await changed.wait_for(lambda: event_id in seen or bool(poll_error))

            try:
                await asyncio.wait_for(arrived(), 40)
            except asyncio.TimeoutError:
                raise RuntimeError(f"{event_id} sent by {a.user_id} did not reach {b.user_id}'s /sync "
                                   "within 40 s") from None
            if event_id not in seen:
                raise poll_error[0]
            samples.append((seen[event_id] - t0) * 1000)
            await asyncio.sleep(0.1)  # let B's next long-poll reach the server
    finally:
        poller.cancel()
        try:
            await poller
        except (asyncio.CancelledError, Exception):
            pass
    return {"p50_ms": percentile(samples, 0.5), "p95_ms": percentile(samples, 0.95), "samples": len(samples),
            "max_ms": max(samples), "syncs": polls}


async def s_initial_sync(api: Api, pool: Pool, p: Params) -> dict[str, Any]:
    (user,) = await pool.take(1)

    async def fill(i: int) -> None:
        room = await api.create_room(user, "private_chat", f"sync room {i}")
        for j in range(p.sync_room_messages):
            await api.send_text(user, room, f"history {j} in room {i}")

    await run_limited([lambda i=i: fill(i) for i in range(p.sync_rooms)], 5)
    times, sizes, rooms_seen = [], [], []
    for _ in range(p.sync_samples):
        device = await api.login(user.localpart)  # a fresh device: no per-device sync cache
        t0 = time.perf_counter()
        headers = {"Authorization": f"Bearer {device.token}"}
        async with api.session.get(api.base + CLIENT + "/sync", headers=headers) as resp:
            raw = await resp.read()
            elapsed = time.perf_counter() - t0
            if resp.status != 200:
                raise HTTPFailure("GET", CLIENT + "/sync", None, resp.status, raw.decode(errors="replace"))
        body = json.loads(raw)
        times.append(elapsed * 1000)
        sizes.append(len(raw))
        rooms_seen.append(len(body.get("rooms", {}).get("join", {})))
    if min(rooms_seen) < p.sync_rooms:
        raise RuntimeError(f"initial sync listed {min(rooms_seen)} joined rooms, expected {p.sync_rooms}")
    return {"value": statistics.median(times), "samples_ms": times, "response_bytes": statistics.median(sizes),
            "rooms": p.sync_rooms, "messages_per_room": p.sync_room_messages}


async def s_join(api: Api, pool: Pool, p: Params) -> dict[str, Any]:
    creator, *joiners = await pool.take(p.joiners + 1)
    room = await api.create_room(creator, "public_chat", "join storm")
    t0 = time.perf_counter()
    await run_limited([lambda u=u: api.join(u, room) for u in joiners], p.join_concurrency)
    elapsed = time.perf_counter() - t0
    return {"value": len(joiners) / elapsed, "elapsed_s": elapsed, "joins": len(joiners),
            "concurrency": p.join_concurrency}


SLIDING = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
# What Element X asks for in its room list (matrix-rust-sdk's defaults), so both servers do that work.
ELEMENT_X_STATE = [["m.room.name", ""], ["m.room.encryption", ""], ["m.room.member", "$LAZY"], ["m.room.member", "$ME"],
                   ["m.room.topic", ""], ["m.room.avatar", ""], ["m.room.canonical_alias", ""], ["m.room.power_levels", ""],
                   ["m.room.join_rules", ""], ["m.room.tombstone", ""], ["m.room.create", ""], ["m.room.history_visibility", ""]]


async def s_sliding_sync(api: Api, pool: Pool, p: Params) -> dict[str, Any]:
    """Element X's room list over simplified sliding sync (MSC4186): the first request of a connection
    for a user in many rooms, then send -> delivery through its long-poll."""
    user, other = await pool.take(2)
    rooms: list[str] = []

    async def fill(i: int) -> None:
        room = await api.create_room(user, "public_chat", f"list room {i}")
        for j in range(p.sliding_room_messages):
            await api.send_text(user, room, f"history {j} in room {i}")
        rooms.append(room)

    await run_limited([lambda i=i: fill(i) for i in range(p.sliding_rooms)], 5)
    await api.join(other, rooms[0])
    body = {"lists": {"all_rooms": {"ranges": [[0, 19]], "timeline_limit": 1, "required_state": ELEMENT_X_STATE}},
            "extensions": {"account_data": {"enabled": True}, "receipts": {"enabled": True, "rooms": ["*"]},
                           "typing": {"enabled": True}}}
    firsts = []
    for n in range(p.sync_samples):
        t0 = time.perf_counter()
        first = await api.call("POST", SLIDING, user.token, {**body, "conn_id": f"bench-{n}"}, params={"timeout": "0"})
        firsts.append((time.perf_counter() - t0) * 1000)
        if len(first.get("rooms", {})) != min(20, p.sliding_rooms) or first.get("lists", {}).get("all_rooms", {}).get("count") != p.sliding_rooms:
            raise RuntimeError(f"sliding sync listed {first.get('lists')} with {len(first.get('rooms', {}))} rooms")
    pos = first["pos"]
    conn = {**body, "conn_id": f"bench-{p.sync_samples - 1}"}
    samples = []
    for i in range(p.sliding_latency_samples):
        poll = asyncio.create_task(api.call("POST", SLIDING, user.token, conn, params={"pos": pos, "timeout": "30000"}))
        await asyncio.sleep(0.1)  # the long-poll is waiting at the server
        t0 = time.perf_counter()
        event_id = await api.send_text(other, rooms[0], f"ping {i}")
        while True:
            r = await asyncio.wait_for(poll, 40)
            pos = r["pos"]
            timeline = r.get("rooms", {}).get(rooms[0], {}).get("timeline", [])
            if any(e.get("event_id") == event_id for e in timeline):
                samples.append((time.perf_counter() - t0) * 1000)
                break
            poll = asyncio.create_task(api.call("POST", SLIDING, user.token, conn, params={"pos": pos, "timeout": "30000"}))
    return {"first_ms": statistics.median(firsts), "p50_ms": percentile(samples, 0.5), "p95_ms": percentile(samples, 0.95),
            "rooms": p.sliding_rooms, "samples": len(samples)}


SCENARIOS: list[tuple[str, Callable[..., Awaitable[dict[str, Any]]]]] = [
    ("register_login", s_register_login),
    ("create_room", s_create_room),
    ("send_throughput", s_send_throughput),
    ("sync_latency", s_sync_latency),
    ("initial_sync", s_initial_sync),
    ("join", s_join),
    ("sliding_sync", s_sliding_sync),
]


@dataclass
class ServerRun:
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


async def run_all(base_url: str, secret: str, p: Params, only: set[str] | None = None,
                  log: Callable[[str], None] = print) -> ServerRun:
    out = ServerRun()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=100)) as session:
        api = Api(session, base_url, secret)
        pool = Pool(api, p.setup_concurrency)
        for key, fn in SCENARIOS:
            if only and key not in only:
                continue
            log(f"  {key} ...")
            t0 = time.perf_counter()
            try:
                out.results[key] = await fn(api, pool, p)
            except Exception as e:
                failures = [e, *getattr(e, "others", [])]
                out.errors[key] = [f.as_dict() if isinstance(f, HTTPFailure) else
                                   {"error": "".join(traceback.format_exception_only(type(f), f)).strip()}
                                   for f in failures]
                log(f"  {key} FAILED ({len(failures)} error(s)); first: {e}")
                continue
            log(f"  {key}: {_brief(out.results[key])} ({time.perf_counter() - t0:.1f} s with set-up)")
    return out


def _brief(r: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()
                     if not isinstance(v, list))
