"""Other servers' users' device lists and cross-signing keys, cached here and kept current by their
servers' m.device_list_update and m.signing_key_update EDUs, as Synapse does.

Why: without a cache every /keys/query for a user on another ministry's server is a federation round
trip, and fails outright while that server is unreachable. A server only sends us EDUs about users who
share a room with one of our users, so only those users ("tracked") are cached; whether a user is
tracked is read from current room state at query time, so no subscription bookkeeping can drift.

A cached list is answered from as long as it is fresh. It becomes stale when an EDU shows a gap in the
sender's stream_id/prev_id chain (an update was lost), when an EDU cannot be applied (no device ID,
malformed keys), or when the user starts sharing a room with us again (their server told us nothing
meanwhile). A stale or missing list is fetched whole (GET /_matrix/federation/v1/user/devices) at the
next query; if that fails, a stale list is still answered (better than nothing while the server is
down) and only a user we hold nothing for is reported under ``failures``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Iterable, Mapping

from canonicaljson import encode_canonical_json
from nacl.signing import VerifyKey
from unpaddedbase64 import decode_base64

from homeserver.clock import Clock
from homeserver.events.signing import server_of, verify_json_signature
from homeserver.storage import Storage
from homeserver.storage.remote_devices import RemoteDeviceList

logger = logging.getLogger(__name__)

# Fetches of whole device lists at once (each is one request to the user's server).
MAX_CONCURRENT_RESYNCS = 8
# What one user's server may make us store: enough for any real account, bounded against a hostile one.
MAX_DEVICES_PER_USER = 1000
MAX_KEY_JSON_BYTES = 16 * 1024
MAX_DEVICE_ID_LEN = 255
MAX_DISPLAY_NAME_LEN = 512
MAX_STREAM_ID = 2**63 - 1


class ResyncFailed(Exception):
    """A user's server could not give us their device list; ``status`` as /keys/query reports it."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _stream_id(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_STREAM_ID else None


def _small(obj: Any) -> bool:
    try:
        return len(encode_canonical_json(obj)) <= MAX_KEY_JSON_BYTES
    except Exception:  # noqa: BLE001 - what cannot be encoded canonically is not a key
        return False


def valid_device_keys(user_id: str, device_id: str, keys: Any) -> bool:
    """A signed device_keys object of exactly this user's device, self-signed by its ed25519 key: the
    only thing we store for a device, so junk (or another user's device) never reaches our clients."""
    if not isinstance(keys, dict) or keys.get("user_id") != user_id or keys.get("device_id") != device_id:
        return False
    algorithms, key_map = keys.get("algorithms"), keys.get("keys")
    if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
        return False
    if not isinstance(key_map, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in key_map.items()):
        return False
    ed = key_map.get(f"ed25519:{device_id}")
    if not isinstance(ed, str) or not _small(keys):
        return False
    try:
        raw = decode_base64(ed)
    except Exception:  # noqa: BLE001 - undecodable: not a key
        return False
    return len(raw) == 32 and verify_json_signature(keys, user_id, f"ed25519:{device_id}", VerifyKey(raw))


def valid_cross_signing_key(user_id: str, usage: str, key: Any) -> bool:
    """A cross-signing key of this user, for this usage, holding exactly one ed25519 key."""
    if not isinstance(key, dict) or key.get("user_id") != user_id:
        return False
    usages, key_map = key.get("usage"), key.get("keys")
    if not isinstance(usages, list) or usage not in usages or not isinstance(key_map, dict) or len(key_map) != 1:
        return False
    (kid, pub), = key_map.items()
    return isinstance(kid, str) and kid.startswith("ed25519:") and isinstance(pub, str) and kid[8:] == pub and _small(key)


def _display_name(value: Any) -> str | None:
    return value if isinstance(value, str) and len(value) <= MAX_DISPLAY_NAME_LEN else None


def parse_user_devices(user_id: str, body: Any) -> RemoteDeviceList:
    """A GET /user/devices answer as a cache entry: devices without valid keys are left out (they are
    never shown by /keys/query), as are cross-signing keys that are not this user's."""
    if not isinstance(body, dict) or body.get("user_id") != user_id or not isinstance(body.get("devices"), list):
        raise ResyncFailed("malformed device list", 502)
    stream_id = _stream_id(body.get("stream_id"))
    if stream_id is None:
        raise ResyncFailed("malformed device list (stream_id)", 502)
    out = RemoteDeviceList(user_id, stream_id, False, 0)
    for entry in body["devices"][:MAX_DEVICES_PER_USER]:
        if not isinstance(entry, dict):
            continue
        did = entry.get("device_id")
        if isinstance(did, str) and 0 < len(did) <= MAX_DEVICE_ID_LEN and valid_device_keys(user_id, did, entry.get("keys")):
            out.devices[did] = (entry["keys"], _display_name(entry.get("device_display_name")))
    if valid_cross_signing_key(user_id, "master", body.get("master_key")):
        out.master_key = body["master_key"]
    if valid_cross_signing_key(user_id, "self_signing", body.get("self_signing_key")):
        out.self_signing_key = body["self_signing_key"]
    return out


class RemoteDeviceLists:
    def __init__(self, storage: Storage, clock: Clock, server_name: str) -> None:
        self.storage = storage
        self.store = storage.remote_devices
        self.clock = clock
        self.server_name = server_name
        # Set by the composition root when federation is on: user ID -> GET /user/devices body.
        self.fetch: Callable[[str], Awaitable[Any]] | None = None
        self._limit = asyncio.Semaphore(MAX_CONCURRENT_RESYNCS)
        self._inflight: dict[str, asyncio.Future[RemoteDeviceList]] = {}
        # Users an EDU arrived for while their list was being fetched: the fetched snapshot may predate
        # it (a signing-key update carries no stream_id to tell), so the stored copy stays stale.
        self._raced: set[str] = set()

    def _local(self, user_id: str) -> bool:
        return user_id.endswith(":" + self.server_name)

    # --- /keys/query ------------------------------------------------------------------------------

    async def lookup(self, user_ids: Iterable[str], failures: dict[str, Any]) -> tuple[dict[str, RemoteDeviceList], list[str]]:
        """Device lists of remote users: (answers for tracked users, untracked users left for the caller
        to ask their servers about). A tracked user we could not answer for adds their server to
        ``failures``."""
        users = [u for u in dict.fromkeys(user_ids) if not self._local(u)]
        if not users:
            return {}, []
        tracked = await self.store.tracked(users, self.server_name)
        cached = await self.store.get(users)
        untracked = [u for u in users if u not in tracked]
        gone = [u for u in untracked if u in cached]
        if gone:
            await self.store.forget(gone)  # their server stopped telling us of changes: not to be trusted later
        answers = {u: cached[u] for u in users if u in tracked and u in cached and not cached[u].stale}
        need = [u for u in users if u in tracked and u not in answers]
        results = await asyncio.gather(*(self.resync(u) for u in need), return_exceptions=True)
        for uid, got in zip(need, results):
            if isinstance(got, RemoteDeviceList):
                answers[uid] = got
                continue
            if not isinstance(got, ResyncFailed):
                logger.warning("fetching the device list of %s failed: %r", uid, got)
            if uid in cached:
                answers[uid] = cached[uid]  # stale, but its server is unreachable: the best there is
            else:
                status = getattr(got, "status", None)
                failures[server_of(uid) or uid] = {"status": status if isinstance(status, int) else 503, "message": str(got)}
        return answers, untracked

    async def resync(self, user_id: str) -> RemoteDeviceList:
        """Fetch a user's whole device list from their server and cache it; concurrent callers for the
        same user share one request."""
        running = self._inflight.get(user_id)
        if running is None:
            running = asyncio.ensure_future(self._resync(user_id))
            self._inflight[user_id] = running
            running.add_done_callback(lambda _: self._inflight.pop(user_id, None))
        return await asyncio.shield(running)

    async def _resync(self, user_id: str) -> RemoteDeviceList:
        if self.fetch is None:
            raise ResyncFailed("Federation is not available", 503)
        self._raced.discard(user_id)
        async with self._limit:
            try:
                body = await self.fetch(user_id)
            except Exception as e:  # noqa: BLE001 - an unreachable server becomes a failure entry
                raise ResyncFailed(str(e), getattr(e, "status", None) or 503) from None
        fetched = parse_user_devices(user_id, body)
        fetched.fetched_ts = self.clock.time_ms()
        # Only users sharing a room with ours are cached: for others no EDU would keep it current.
        if await self.store.tracked([user_id], self.server_name):
            fresh = await self.store.replace(user_id, fetched.stream_id, fetched.devices, fetched.master_key,
                                             fetched.self_signing_key, fetched.fetched_ts)
            if user_id in self._raced:
                self._raced.discard(user_id)
                await self.store.mark_stale(user_id)
                fresh = False
            fetched.stale = not fresh
        return fetched

    # --- EDUs from the user's server --------------------------------------------------------------

    async def device_list_update(self, origin: str, content: Mapping[str, Any]) -> None:
        """Apply an m.device_list_update to the cache when it follows on from what we hold (every
        prev_id is our stream_id); otherwise mark the cache stale. Never raises on bad input."""
        user_id = content.get("user_id")
        if not isinstance(user_id, str) or server_of(user_id) != origin or self._local(user_id):
            return
        if user_id in self._inflight:
            self._raced.add(user_id)
        held = await self.store.position(user_id)
        if held is None:
            return  # nothing cached: the first query fetches the whole list
        if not await self.store.tracked([user_id], self.server_name):
            await self.store.forget([user_id])
            return
        current, _ = held
        stream_id = _stream_id(content.get("stream_id"))
        device_id = content.get("device_id")
        prev = content.get("prev_id")
        prev = [] if prev is None else prev
        if stream_id is None or not isinstance(device_id, str) or len(device_id) > MAX_DEVICE_ID_LEN \
                or not isinstance(prev, list):
            await self.store.mark_stale(user_id)
            return
        if stream_id <= current:
            return  # already reflected (an EDU from before our last fetch, or a repeat)
        deleted = content.get("deleted") is True
        keys = content.get("keys")
        # As Synapse: apply only when the EDU follows on from our position; no prev_id, an unknown
        # one, or no device ID ("something changed, ask") means we missed something.
        follows = bool(prev) and all(_stream_id(p) == current for p in prev) and device_id != ""
        if not follows or (not deleted and keys is not None and not valid_device_keys(user_id, device_id, keys)):
            await self.store.mark_stale(user_id, stream_id)
            return
        async with self.storage.db.transaction() as conn:
            applied = await self.store.advance(conn, user_id, current, stream_id)
            if applied:
                if deleted:
                    await self.store.delete_device(conn, user_id, device_id)
                elif keys is not None:
                    await self.store.put_device(conn, user_id, device_id, keys, _display_name(content.get("device_display_name")))
                else:
                    # A device without identity keys is never shown; a known one keeps its keys.
                    await self.store.rename_device(conn, user_id, device_id, _display_name(content.get("device_display_name")))
        if not applied:
            await self.store.mark_stale(user_id, stream_id)  # another update moved the cache meanwhile

    async def signing_key_update(self, origin: str, content: Mapping[str, Any]) -> None:
        """Replace the cached master and/or self-signing key from an m.signing_key_update."""
        user_id = content.get("user_id")
        if not isinstance(user_id, str) or server_of(user_id) != origin or self._local(user_id):
            return
        if user_id in self._inflight:
            self._raced.add(user_id)
        if await self.store.position(user_id) is None:
            return
        master, ssk = content.get("master_key"), content.get("self_signing_key")
        good_master = valid_cross_signing_key(user_id, "master", master)
        good_ssk = valid_cross_signing_key(user_id, "self_signing", ssk)
        if (master is not None and not good_master) or (ssk is not None and not good_ssk):
            await self.store.mark_stale(user_id)  # unusable: fetch the truth next time
            return
        await self.store.set_cross_signing(user_id, master if good_master else None, ssk if good_ssk else None)

    # --- joins ------------------------------------------------------------------------------------

    async def on_event(self, new: Any) -> None:
        """An event was stored. A join that makes a remote user share a room with one of ours again
        (theirs, or one of our users joining a room they are in) makes their cache stale: while we
        shared no room their server sent us no updates."""
        pdu = new.pdu
        if pdu.get("type") != "m.room.member" or (pdu.get("content") or {}).get("membership") != "join":
            return
        target = pdu.get("state_key")
        if not isinstance(target, str):
            return
        stored = await self.storage.events.get_event(new.event_id)
        if stored is not None and stored.replaces_state:
            before = await self.storage.events.get_event(stored.replaces_state)
            if before is not None and (before.pdu.get("content") or {}).get("membership") == "join":
                return  # a profile change, not a join
        if self._local(target):
            await self.store.mark_stale_after_local_join(new.room_id, target, self.server_name)
        else:
            await self.store.mark_stale_after_remote_join(target, new.room_id, self.server_name)
