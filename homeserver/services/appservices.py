"""Application services: who may act as whom (as_token, namespaces, masquerading), what each one is
told (events of rooms it is interested in, and with MSC2409/MSC3202 typing, receipts, presence,
to-device messages, device-list changes and one-time-key counts), and how: transactions from a
persisted queue, in order, retried with the same ID until the appservice accepts them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterable
from urllib.parse import quote

import aiohttp

from homeserver.appservice.registration import AppService
from homeserver.clock import Clock
from homeserver.errors import MatrixError, forbidden
from homeserver.storage import Storage

logger = logging.getLogger(__name__)

MAX_EVENTS = 100
MAX_EPHEMERAL = 100
MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 300.0
TIMEOUT_S = 60.0


def client_form(pdu: dict[str, Any], event_id: str, room_id: str, now: int) -> dict[str, Any]:
    """An event as appservices receive it (the client-server format)."""
    out: dict[str, Any] = {"type": pdu["type"], "content": pdu.get("content", {}), "sender": pdu["sender"],
                           "room_id": room_id, "event_id": event_id, "origin_server_ts": pdu.get("origin_server_ts", 0),
                           "unsigned": {"age": max(0, now - int(pdu.get("origin_server_ts", now)))}}
    if "state_key" in pdu:
        out["state_key"] = pdu["state_key"]
    if "redacts" in pdu:
        out["redacts"] = pdu["redacts"]
    return out


class AppServices:
    def __init__(self, registrations: list[AppService], storage: Storage, clock: Clock, server_name: str) -> None:
        self.all = registrations
        self.storage = storage
        self.clock = clock
        self.server_name = server_name
        self._by_token = {a.as_token: a for a in registrations}
        self._by_id = {a.id: a for a in registrations}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._session: aiohttp.ClientSession | None = None

    # --- identity -------------------------------------------------------------------------------

    def by_token(self, token: str) -> AppService | None:
        return self._by_token.get(token)

    def by_id(self, as_id: str) -> AppService | None:
        return self._by_id.get(as_id)

    def exclusive_owner_of_user(self, user_id: str) -> AppService | None:
        return next((a for a in self.all if a.exclusive_user(user_id)), None)

    def exclusive_owner_of_alias(self, alias: str) -> AppService | None:
        return next((a for a in self.all if a.exclusive_alias(alias)), None)

    async def acting_user(self, service: AppService, user_id: str | None) -> str:
        """Whom an appservice request acts as: ``user_id`` if the appservice may (its namespace, and
        registered), else its own sender."""
        if user_id is None or user_id == service.sender:
            return service.sender
        if not service.owns_user(user_id):
            raise forbidden("Application service cannot masquerade as this user (not in its namespace)")
        if not await self.storage.users.exists(user_id):
            raise forbidden("Application service has not registered this user")
        return user_id

    async def ensure_senders(self) -> None:
        """Each appservice's own sender user exists (it is never registered through /register)."""
        for a in self.all:
            if not await self.storage.users.exists(a.sender):
                async with self.storage.db.transaction() as conn:
                    await self.storage.users.create(conn, a.sender, None, admin=False, creation_ts=self.clock.time_ms(),
                                                    appservice_id=a.id)

    # --- interest ---------------------------------------------------------------------------------

    async def interested(self, room_id: str, pdu: dict[str, Any]) -> list[AppService]:
        out = []
        members: list[str] | None = None
        aliases: list[str] | None = None
        for a in self.all:
            if a.url is None:
                continue
            if a.owns_user(str(pdu.get("sender", ""))) or (pdu.get("type") == "m.room.member" and a.owns_user(str(pdu.get("state_key", "")))) \
                    or a.owns_room(room_id):
                out.append(a)
                continue
            if a.aliases:
                if aliases is None:
                    aliases = await self.storage.aliases.for_room(room_id)
                if any(a.owns_alias(x) for x in aliases):
                    out.append(a)
                    continue
            if a.users:
                if members is None:
                    members = await self.storage.events.members(room_id, ("join", "invite"))
                if any(a.owns_user(m) for m in members):
                    out.append(a)
        return out

    async def rooms_of_interest(self, a: AppService, room_ids: Iterable[str]) -> list[str]:
        out = []
        for room_id in room_ids:
            if a.owns_room(room_id):
                out.append(room_id)
                continue
            members = await self.storage.events.members(room_id, ("join",))
            if any(a.owns_user(m) for m in members):
                out.append(room_id)
        return out

    # --- what is sent -------------------------------------------------------------------------------

    async def on_event(self, new: Any) -> None:
        if not self.all:
            return
        targets = await self.interested(new.room_id, new.pdu)
        if targets:
            body = client_form(new.pdu, new.event_id, new.room_id, self.clock.time_ms())
            rows: list[tuple[str, str, dict[str, Any]]] = [(a.id, "event", body) for a in targets]
            if new.pdu.get("type") == "m.room.member" and isinstance(new.pdu.get("state_key"), str):
                for a in targets:
                    if a.e2ee:
                        rows += [(a.id, "device_list", d) for d in await self._membership_device_lists(a, new.room_id, new.pdu)]
            await self.storage.appservices.enqueue(rows)
            for a in targets:
                self._kick(a)

    async def _membership_device_lists(self, a: AppService, room_id: str, pdu: dict[str, Any]) -> list[dict[str, Any]]:
        """MSC3202 device_lists entries a membership change means for an appservice, as /sync would
        give its users: someone newly sharing a room is "changed" (their devices must be fetched),
        someone who no longer shares any room with the appservice's users has "left"."""
        target, membership = str(pdu["state_key"]), (pdu.get("content") or {}).get("membership")
        if membership == "join":
            if a.owns_user(target):  # one of ours joined: every member is now of interest
                members = await self.storage.events.members(room_id, ("join",))
                return [{"changed": m} for m in members if not a.owns_user(m)]
            return [{"changed": target}]
        if membership in ("leave", "ban") and not a.owns_user(target):
            if not any(a.owns_user(u) for u in await self.storage.events.users_sharing_rooms(target)):
                return [{"left": target}]
        return []

    async def on_device_list_change(self, user_id: str, rooms: list[str]) -> None:
        """A user's devices changed: appservices doing E2EE whose users share a room with them (or who
        own them) get it in their next transaction's device_lists (MSC3202)."""
        rows = []
        for a in self.all:
            if a.e2ee and a.url and (a.owns_user(user_id) or await self.rooms_of_interest(a, rooms)):
                rows.append((a.id, "device_list", {"changed": user_id}))
        await self.storage.appservices.enqueue(rows)
        for as_id, _, _ in rows:
            self._kick(self._by_id[as_id])

    async def on_ephemeral(self, room_id: str | None, edu: dict[str, Any], users: Iterable[str] = ()) -> None:
        """Typing and receipts (room_id given) or presence (users given), for MSC2409 appservices."""
        wanted = [a for a in self.all if a.receive_ephemeral and a.url]
        if not wanted:
            return
        rows = []
        for a in wanted:
            if room_id is not None:
                if await self.rooms_of_interest(a, [room_id]):
                    rows.append((a.id, "ephemeral", {**edu, "room_id": room_id}))
            elif any(a.owns_user(u) for u in users):
                rows.append((a.id, "ephemeral", edu))
        await self.storage.appservices.enqueue(rows)
        for as_id, _, _ in rows:
            self._kick(self._by_id[as_id])

    async def on_to_device(self, rows: list[tuple[str, str, dict[str, Any]]]) -> None:
        """To-device messages stored for devices of users an appservice owns (MSC2409 to-device, which
        a bridge doing E2EE needs for room keys)."""
        out = []
        for a in self.all:
            if not (a.receive_ephemeral or a.e2ee) or not a.url:
                continue
            for user_id, device_id, msg in rows:
                if a.owns_user(user_id):
                    out.append((a.id, "to_device", {**msg, "to_user_id": user_id, "to_device_id": device_id}))
        await self.storage.appservices.enqueue(out)
        for as_id in {r[0] for r in out}:
            self._kick(self._by_id[as_id])

    async def _e2ee_extras(self, a: AppService, device_rows: list[dict[str, Any]]) -> dict[str, Any]:
        """MSC3202: device-list changes, one-time-key counts and unused fallback key types of the
        appservice's devices. ``device_rows`` are the queued changes, oldest first: the last word on
        a user wins."""
        latest: dict[str, str] = {}
        for row in device_rows:
            for kind in ("changed", "left"):
                if isinstance(row.get(kind), str):
                    latest[row[kind]] = kind
        counts: dict[str, dict[str, Any]] = {}
        fallback: dict[str, dict[str, Any]] = {}
        for user_id in await self.storage.users.appservice_users(a.id) + [a.sender]:
            for device in await self.storage.devices.list_devices(user_id):
                did = device.device_id
                counts.setdefault(user_id, {})[did] = await self.storage.e2e_keys.one_time_key_counts(user_id, did)
                fallback.setdefault(user_id, {})[did] = await self.storage.e2e_keys.unused_fallback_key_types(user_id, did)
        return {"org.matrix.msc3202.device_one_time_keys_count": counts,
                "org.matrix.msc3202.device_unused_fallback_key_types": fallback,
                "org.matrix.msc3202.device_lists": {"changed": sorted(u for u, k in latest.items() if k == "changed"),
                                                    "left": sorted(u for u, k in latest.items() if k == "left")}}

    # --- delivery --------------------------------------------------------------------------------

    def _kick(self, a: AppService) -> None:
        self._wake.setdefault(a.id, asyncio.Event()).set()
        task = self._tasks.get(a.id)
        if task is None or task.done():
            self._tasks[a.id] = asyncio.create_task(self._run(a))

    async def resume(self) -> None:
        for a in self.all:
            if a.url:
                self._kick(a)

    async def close(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        if self._session is not None:
            await self._session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        return self._session

    async def _run(self, a: AppService) -> None:
        backoff = MIN_BACKOFF_S
        wake = self._wake.setdefault(a.id, asyncio.Event())
        while True:
            wake.clear()
            last, pending_txn, pending_upto = await self.storage.appservices.txn_state(a.id)
            if pending_txn is not None and pending_upto is not None:
                txn_id, rows = pending_txn, await self.storage.appservices.pending(a.id, pending_upto, 0)
            else:
                rows = await self.storage.appservices.pending(a.id, None, MAX_EVENTS + MAX_EPHEMERAL)
                if not rows:
                    try:
                        await asyncio.wait_for(wake.wait(), 60)
                    except asyncio.TimeoutError:
                        pass
                    continue
                txn_id = last + 1
                await self.storage.appservices.start_txn(a.id, txn_id, rows[-1][0])
            body = await self._body(a, rows)
            if await self._send(a, txn_id, body):
                await self.storage.appservices.finish_txn(a.id, txn_id, rows[-1][0] if rows else pending_upto or 0)
                backoff = MIN_BACKOFF_S
                continue
            try:
                await asyncio.wait_for(wake.wait(), backoff)
            except asyncio.TimeoutError:
                pass
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _body(self, a: AppService, rows: list[tuple[int, str, dict[str, Any]]]) -> dict[str, Any]:
        events = [b for _, kind, b in rows if kind == "event"]
        ephemeral = [b for _, kind, b in rows if kind == "ephemeral"]
        to_device = [b for _, kind, b in rows if kind == "to_device"]
        body: dict[str, Any] = {"events": events}
        if a.receive_ephemeral:
            body["ephemeral"] = ephemeral
            body["de.sorunome.msc2409.ephemeral"] = ephemeral
        if to_device:
            body["de.sorunome.msc2409.to_device"] = to_device
            body["org.matrix.msc2409.to_device"] = to_device
        if a.e2ee:
            body.update(await self._e2ee_extras(a, [b for _, kind, b in rows if kind == "device_list"]))
        return body

    async def _send(self, a: AppService, txn_id: int, body: dict[str, Any]) -> bool:
        assert a.url is not None
        url = f"{a.url}/_matrix/app/v1/transactions/{txn_id}"
        try:
            async with self._client().put(url, json=body, headers={"Authorization": f"Bearer {a.hs_token}"}) as r:
                if 200 <= r.status < 300:
                    return True
                logger.info("appservice %s refused transaction %s: HTTP %s", a.id, txn_id, r.status)
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            logger.info("appservice %s unreachable (%s); will retry", a.id, type(e).__name__)
        return False

    # --- questions the server asks appservices ----------------------------------------------------

    async def _get(self, a: AppService, path: str) -> tuple[int, Any]:
        assert a.url is not None
        try:
            async with self._client().get(f"{a.url}{path}", headers={"Authorization": f"Bearer {a.hs_token}"},
                                          timeout=aiohttp.ClientTimeout(total=10)) as r:
                try:
                    return r.status, await r.json(content_type=None)
                except ValueError:
                    return r.status, None
        except (aiohttp.ClientError, OSError, TimeoutError):
            return 0, None

    async def query_user(self, user_id: str) -> bool:
        """Ask the appservice owning ``user_id`` to create it; True if it now exists."""
        for a in self.all:
            if a.url and a.owns_user(user_id):
                status, _ = await self._get(a, f"/_matrix/app/v1/users/{quote(user_id)}")
                if status == 200 and await self.storage.users.exists(user_id):
                    return True
        return False

    async def query_alias(self, alias: str) -> bool:
        for a in self.all:
            if a.url and a.owns_alias(alias):
                status, _ = await self._get(a, f"/_matrix/app/v1/rooms/{quote(alias)}")
                if status == 200 and await self.storage.aliases.get(alias) is not None:
                    return True
        return False

    async def ping(self, a: AppService, transaction_id: str | None) -> int:
        """POST /_matrix/app/v1/ping on behalf of the appservice; the round trip in milliseconds."""
        if a.url is None:
            raise MatrixError(400, "M_URL_NOT_SET", "This application service has no URL")
        start = self.clock.time_ms()
        body = {"transaction_id": transaction_id} if transaction_id is not None else {}
        try:
            async with self._client().post(f"{a.url}/_matrix/app/v1/ping", json=body,
                                           headers={"Authorization": f"Bearer {a.hs_token}"},
                                           timeout=aiohttp.ClientTimeout(total=15)) as r:
                text = await r.text()
                if r.status != 200:
                    raise MatrixError(502, "M_BAD_STATUS", f"The application service answered {r.status}", status=r.status, body=text[:1000])
        except (aiohttp.ClientError, OSError) as e:
            raise MatrixError(502, "M_CONNECTION_FAILED", f"Could not reach the application service: {type(e).__name__}") from None
        except TimeoutError:
            raise MatrixError(504, "M_CONNECTION_TIMEOUT", "The application service did not answer in time") from None
        return self.clock.time_ms() - start
