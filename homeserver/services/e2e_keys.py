"""End-to-end encryption keys: what devices publish (device, one-time, fallback and cross-signing keys,
signatures) and what other devices fetch, plus who must be told that a device list changed.

The server checks what it can (ownership, self-signatures, cross-signing chains) so a client is never
handed a key that its owner did not sign; it never sees a private key.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Mapping, Sequence

import orjson
from nacl.signing import VerifyKey
from unpaddedbase64 import decode_base64

from homeserver.errors import MatrixError
from homeserver.events.signing import verify_json_signature
from homeserver.services.notifier import Notifier
from homeserver.services.tokens_stream import SyncToken
from homeserver.storage import Storage
from homeserver.storage.e2e_keys import DeviceChange
from homeserver.storage.remote_devices import RemoteDeviceList

if TYPE_CHECKING:
    from homeserver.services.remote_devices import RemoteDeviceLists

logger = logging.getLogger(__name__)

CROSS_SIGNING_TYPES = ("master", "self_signing", "user_signing")
MAX_ONE_TIME_KEYS_PER_UPLOAD = 1000


def _bad(message: str, errcode: str = "M_INVALID_PARAM") -> MatrixError:
    return MatrixError(400, errcode, message)


def _verify_key(public_b64: str) -> VerifyKey | None:
    try:
        raw = decode_base64(public_b64)
    except Exception:  # noqa: BLE001 - any undecodable key is simply not a key
        return None
    return VerifyKey(raw) if len(raw) == 32 else None


def _single_key(key: Mapping[str, Any], where: str) -> tuple[str, str]:
    """The (key ID, public key) of a cross-signing key, which carries exactly one ed25519 key."""
    keys = key.get("keys")
    if not isinstance(keys, dict) or len(keys) != 1:
        raise _bad(f"{where}.keys must hold exactly one key")
    (kid, pub), = keys.items()
    if not isinstance(kid, str) or not kid.startswith("ed25519:") or not isinstance(pub, str) or kid[8:] != pub:
        raise _bad(f"{where}.keys must be {{\"ed25519:<public key>\": \"<public key>\"}}")
    return kid, pub


def _strip(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}


class E2eKeyService:
    def __init__(self, storage: Storage, notifier: Notifier, server_name: str) -> None:
        self.storage = storage
        self.notifier = notifier
        self.server_name = server_name
        # Set by the composition root when federation is on: (server, request part) -> response body.
        self.remote_query: Callable[[str, dict[str, Any]], Awaitable[Any]] | None = None
        self.remote_claim: Callable[[str, dict[str, Any]], Awaitable[Any]] | None = None
        # Told of each change of a local user's devices (federation sends the EDUs): see wake_for_device_change.
        self.on_device_change: Callable[[str, Sequence[DeviceChange] | None, bool], Awaitable[None]] | None = None
        # The cache of remote users' device lists (set by the composition root).
        self.remote_devices: "RemoteDeviceLists | None" = None
        # Told of every device-list change, local or remote, with the user's joined rooms (appservices).
        self.device_change_listeners: list[Callable[[str, list[str]], Awaitable[None]]] = []

    def is_local(self, user_id: str) -> bool:
        return user_id.endswith(":" + self.server_name)

    # --- /keys/upload ------------------------------------------------------------------------

    async def upload(self, user_id: str, device_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        device_keys = body.get("device_keys")
        one_time = body.get("one_time_keys")
        one_time = {} if one_time is None else one_time
        fallback = body.get("fallback_keys", body.get("org.matrix.msc2732.fallback_keys"))
        fallback = {} if fallback is None else fallback
        if device_keys is not None and not isinstance(device_keys, dict):
            raise _bad("device_keys must be an object", "M_BAD_JSON")
        if not isinstance(one_time, dict) or not isinstance(fallback, dict):
            raise _bad("one_time_keys and fallback_keys must be objects", "M_BAD_JSON")
        if len(one_time) > MAX_ONE_TIME_KEYS_PER_UPLOAD:
            raise _bad(f"At most {MAX_ONE_TIME_KEYS_PER_UPLOAD} one-time keys per upload")
        changed = False
        if device_keys:
            self._check_device_keys(user_id, device_id, device_keys)
            existing = await self.storage.e2e_keys.get_device_keys_json(user_id, device_id)
            changed = existing is None or _strip(existing) != _strip(device_keys) or existing.get("signatures") != device_keys.get("signatures")
        otks = [self._parse_key(kid, key, "one_time_keys") for kid, key in one_time.items()]
        fbks = [self._parse_key(kid, key, "fallback_keys") for kid, key in fallback.items()]
        if otks:
            stored = await self.storage.e2e_keys.get_one_time_keys(user_id, device_id, [(a, k) for a, k, _ in otks])
            for alg, kid, key in otks:
                old = stored.get((alg, kid))
                if old is not None and _json_equal(old, key) is False:
                    raise _bad(f"One time key {alg}:{kid} already exists with different content")
        position = None
        async with self.storage.db.transaction() as conn:
            if device_keys and changed:
                await self.storage.e2e_keys.set_device_keys(conn, user_id, device_id, device_keys)
                position = await self.storage.e2e_keys.mark_device_list_changed(conn, [user_id])
            await self.storage.e2e_keys.add_one_time_keys(conn, user_id, device_id, otks)
            for alg, kid, key in fbks:
                await self.storage.e2e_keys.set_fallback_key(conn, user_id, device_id, alg, kid, key)
        if position is not None:
            await self.wake_for_device_change(user_id, [DeviceChange(device_id, position)])
        return {"one_time_key_counts": await self.one_time_key_counts(user_id, device_id)}

    def _check_device_keys(self, user_id: str, device_id: str, keys: Mapping[str, Any]) -> None:
        if keys.get("user_id") != user_id or keys.get("device_id") != device_id:
            raise _bad("device_keys.user_id and device_id must be yours")
        algorithms = keys.get("algorithms")
        if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
            raise _bad("device_keys.algorithms must be a list of strings", "M_BAD_JSON")
        key_map = keys.get("keys")
        if not isinstance(key_map, dict) or not all(isinstance(v, str) for v in key_map.values()):
            raise _bad("device_keys.keys must map key IDs to keys", "M_BAD_JSON")
        ed = key_map.get(f"ed25519:{device_id}")
        verify_key = _verify_key(ed) if isinstance(ed, str) else None
        if verify_key is None:
            raise _bad(f"device_keys.keys must hold the device's key ed25519:{device_id}")
        if not verify_json_signature(keys, user_id, f"ed25519:{device_id}", verify_key):
            raise _bad("device_keys are not signed by the device's ed25519 key", "M_INVALID_SIGNATURE")

    @staticmethod
    def _parse_key(key_id: Any, key: Any, where: str) -> tuple[str, str, Any]:
        if not isinstance(key_id, str) or key_id.count(":") < 1:
            raise _bad(f"{where}: key IDs look like <algorithm>:<key id>")
        alg, kid = key_id.split(":", 1)
        if not alg or not kid:
            raise _bad(f"{where}: key IDs look like <algorithm>:<key id>")
        if not isinstance(key, (str, dict)):
            raise _bad(f"{where}.{key_id} must be a string or a signed key object", "M_BAD_JSON")
        if isinstance(key, dict) and not isinstance(key.get("key"), str):
            raise _bad(f"{where}.{key_id}.key must be a string", "M_BAD_JSON")
        return alg, kid, key

    async def one_time_key_counts(self, user_id: str, device_id: str) -> dict[str, int]:
        counts = await self.storage.e2e_keys.one_time_key_counts(user_id, device_id)
        # Clients read this key to decide when to upload more; Synapse always sends it.
        counts.setdefault("signed_curve25519", 0)
        return counts

    async def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        return await self.storage.e2e_keys.unused_fallback_key_types(user_id, device_id)

    # --- /keys/query -------------------------------------------------------------------------

    async def query(self, requester: str, body: Mapping[str, Any]) -> dict[str, Any]:
        wanted = body.get("device_keys")
        if not isinstance(wanted, dict):
            raise _bad("device_keys must be an object mapping user IDs to device lists", "M_BAD_JSON")
        for uid, devices in wanted.items():
            if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
                raise _bad(f"device_keys.{uid} must be a list of device IDs", "M_BAD_JSON")
        local = [u for u in wanted if self.is_local(u)]
        failures: dict[str, Any] = {}
        remote = {u: d for u, d in wanted.items() if not self.is_local(u)}
        cached: dict[str, RemoteDeviceList] = {}
        if self.remote_devices is not None and remote:
            # Users sharing a room with ours come from the cache (fetched whole when stale); the rest
            # are asked of their servers each time, as nothing would keep a cache of them current.
            cached, untracked = await self.remote_devices.lookup(remote, failures)
            remote = {u: remote[u] for u in untracked}
        remote_found = await self._query_remote(remote, failures)
        found = await self.storage.e2e_keys.devices_with_keys(local)
        out_devices: dict[str, Any] = {}
        master_keys: dict[str, Any] = {}
        self_signing: dict[str, Any] = {}
        user_signing: dict[str, Any] = {}
        for uid in local:
            only = set(wanted[uid])
            signatures = await self.storage.e2e_keys.signatures_for(uid)
            devices: dict[str, Any] = {}
            for did, (keys, display_name) in found.get(uid, {}).items():
                if only and did not in only:
                    continue
                keys = _merge_signatures(keys, signatures.get(did, []), allowed_signers={uid})
                if display_name:
                    keys = {**keys, "unsigned": {**keys.get("unsigned", {}), "device_display_name": display_name}}
                devices[did] = keys
            out_devices[uid] = devices
            cross = await self.storage.e2e_keys.cross_signing_keys(uid)
            if "master" in cross:
                _, pub = _single_key(cross["master"], "master_key")
                master_keys[uid] = _merge_signatures(cross["master"], signatures.get(pub, []), allowed_signers={uid, requester})
            if "self_signing" in cross:
                self_signing[uid] = cross["self_signing"]
            if uid == requester and "user_signing" in cross:
                user_signing[uid] = cross["user_signing"]
        for uid, held in cached.items():
            only = set(wanted[uid])
            devices = {}
            for did, (keys, display_name) in held.devices.items():
                if only and did not in only:
                    continue
                if display_name:
                    unsigned = keys.get("unsigned") if isinstance(keys.get("unsigned"), dict) else {}
                    keys = {**keys, "unsigned": {**unsigned, "device_display_name": display_name}}
                devices[did] = keys
            out_devices[uid] = devices
            if held.master_key is not None:
                master_keys[uid] = held.master_key
            if held.self_signing_key is not None:
                self_signing[uid] = held.self_signing_key
        for uid, devices in remote_found.get("device_keys", {}).items():
            out_devices[uid] = devices
        master_keys.update(remote_found.get("master_keys", {}))
        self_signing.update(remote_found.get("self_signing_keys", {}))
        return {
            "device_keys": out_devices, "failures": failures, "master_keys": master_keys,
            "self_signing_keys": self_signing, "user_signing_keys": user_signing,
        }

    async def _query_remote(self, wanted: Mapping[str, list[str]], failures: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Ask each remote server for its own users' keys; keep only what belongs to the users asked
        about, and what a server could not answer becomes its entry in ``failures``."""
        by_server: dict[str, dict[str, list[str]]] = {}
        for uid, devices in wanted.items():
            server = uid.split(":", 1)[1] if ":" in uid else uid
            by_server.setdefault(server, {})[uid] = list(devices)
        out: dict[str, dict[str, Any]] = {"device_keys": {}, "master_keys": {}, "self_signing_keys": {}}
        for server, users in by_server.items():
            if self.remote_query is None:
                failures[server] = {"status": 503, "message": "Federation is not available"}
                continue
            try:
                body = await self.remote_query(server, users)
            except Exception as e:  # noqa: BLE001 - an unreachable server is reported, not raised
                failures[server] = {"status": getattr(e, "status", None) or 503, "message": str(e)}
                continue
            if not isinstance(body, dict):
                failures[server] = {"status": 502, "message": "malformed response"}
                continue
            for uid in users:
                devices = (body.get("device_keys") or {}).get(uid)
                if isinstance(devices, dict):
                    out["device_keys"][uid] = {
                        did: keys for did, keys in devices.items()
                        if isinstance(keys, dict) and keys.get("user_id") == uid and keys.get("device_id") == did
                        and (not users[uid] or did in users[uid])
                    }
                for section in ("master_keys", "self_signing_keys"):
                    key = (body.get(section) or {}).get(uid)
                    if isinstance(key, dict) and key.get("user_id") == uid:
                        out[section][uid] = key
        return out

    # --- /keys/claim -------------------------------------------------------------------------

    async def claim(self, body: Mapping[str, Any]) -> dict[str, Any]:
        wanted = body.get("one_time_keys")
        if not isinstance(wanted, dict):
            raise _bad("one_time_keys must be an object", "M_BAD_JSON")
        out: dict[str, Any] = {}
        failures: dict[str, Any] = {}
        remote: dict[str, dict[str, dict[str, str]]] = {}
        for uid, devices in wanted.items():
            if not isinstance(devices, dict) or not all(isinstance(a, str) for a in devices.values()):
                raise _bad(f"one_time_keys.{uid} must map device IDs to algorithms", "M_BAD_JSON")
            if not self.is_local(uid):
                server = uid.split(":", 1)[1] if ":" in uid else uid
                remote.setdefault(server, {})[uid] = dict(devices)
                continue
            for did, alg in devices.items():
                got = await self.storage.e2e_keys.claim_one_time_key(uid, did, alg)
                if got is None:
                    got = await self.storage.e2e_keys.claim_fallback_key(uid, did, alg)
                if got is not None:
                    out.setdefault(uid, {})[did] = {f"{alg}:{got[0]}": got[1]}
        for server, users in remote.items():
            if self.remote_claim is None:
                failures[server] = {"status": 503, "message": "Federation is not available"}
                continue
            try:
                body = await self.remote_claim(server, users)
            except Exception as e:  # noqa: BLE001
                failures[server] = {"status": getattr(e, "status", None) or 503, "message": str(e)}
                continue
            claimed = body.get("one_time_keys") if isinstance(body, dict) else None
            for uid in users:
                got = (claimed or {}).get(uid)
                if isinstance(got, dict):
                    out[uid] = {did: k for did, k in got.items() if did in users[uid] and isinstance(k, dict)}
        return {"one_time_keys": out, "failures": failures}

    # --- device lists ------------------------------------------------------------------------

    async def wake_for_device_change(
        self, user_id: str, devices: Sequence[DeviceChange] | None = None, cross_signing: bool = False,
    ) -> None:
        """Wake the syncs of everyone who shares a room with ``user_id`` (and the user's own devices),
        and tell other servers sharing a room with a local user what changed: ``devices`` lists the
        devices whose keys changed or that were deleted (None: we cannot say which, so other servers
        are asked to fetch the whole list), ``cross_signing`` that the master or self-signing key did."""
        rooms = await self.storage.events.rooms_for_user(user_id, ("join",))
        self.notifier.notify(rooms=list(rooms), users=[user_id])
        if self.on_device_change is not None and self.is_local(user_id):
            await self.on_device_change(user_id, devices, cross_signing)
        for listener in self.device_change_listeners:
            await listener(user_id, list(rooms))

    async def _served_keys(self, user_id: str) -> tuple[dict[str, tuple[dict[str, Any], str | None]], dict[str, dict[str, Any]]]:
        """A local user's device keys (with the signatures the user made on them) and display names, and
        public cross-signing keys (the master key with the user's own devices' signatures): what
        other servers are given, whoever asks."""
        found = (await self.storage.e2e_keys.devices_with_keys([user_id])).get(user_id, {})
        signatures = await self.storage.e2e_keys.signatures_for(user_id)
        devices = {did: (_merge_signatures(keys, signatures.get(did, []), allowed_signers={user_id}), name)
                   for did, (keys, name) in found.items()}
        cross = await self.storage.e2e_keys.cross_signing_keys(user_id)
        public: dict[str, dict[str, Any]] = {}
        if "master" in cross:
            _, pub = _single_key(cross["master"], "master_key")
            public["master"] = _merge_signatures(cross["master"], signatures.get(pub, []), allowed_signers={user_id})
        if "self_signing" in cross:
            public["self_signing"] = cross["self_signing"]
        return devices, public

    async def federation_device_list(self, user_id: str) -> dict[str, Any]:
        """GET /_matrix/federation/v1/user/devices/{userId}: a local user's whole device list. Its
        stream_id is the user's latest change announced by m.device_list_update, so the receiver can
        apply the next EDU (whose prev_id names it) without fetching again."""
        # The position first: the devices read after it are at least as new as it says.
        stream_id = await self.storage.e2e_keys.last_federated_change(user_id) or 0
        keyed, public = await self._served_keys(user_id)
        devices = []
        for d in await self.storage.devices.list_devices(user_id):
            entry: dict[str, Any] = {"device_id": d.device_id}
            if d.device_id in keyed:
                entry["keys"] = keyed[d.device_id][0]
            if d.display_name:
                entry["device_display_name"] = d.display_name
            devices.append(entry)
        out: dict[str, Any] = {"user_id": user_id, "stream_id": stream_id, "devices": devices}
        if "master" in public:
            out["master_key"] = public["master"]
        if "self_signing" in public:
            out["self_signing_key"] = public["self_signing"]
        return out

    async def outbound_device_edus(
        self, user_id: str, devices: Sequence[DeviceChange] | None, cross_signing: bool,
    ) -> list[tuple[str, dict[str, Any]]]:
        """The EDUs that tell other servers of a change of a local user's devices (see
        wake_for_device_change). Each m.device_list_update's stream_id is the change's position and its
        prev_id the user's previous announced change, both read from the database, so the chain holds
        across restarts and a receiver that missed nothing applies the update without a resync."""
        out: list[tuple[str, dict[str, Any]]] = []
        keyed, public = await self._served_keys(user_id)
        if cross_signing and public:
            content: dict[str, Any] = {"user_id": user_id}
            if "master" in public:
                content["master_key"] = public["master"]
            if "self_signing" in public:
                content["self_signing_key"] = public["self_signing"]
            out.append(("m.signing_key_update", content))
        if devices is None:
            # We cannot say which device changed: no device ID and no prev_id make every receiver (Qasid
            # or Synapse) fetch the whole list instead of applying this.
            position = await self.storage.e2e_keys.last_federated_change(user_id) or 0
            out.append(("m.device_list_update", {
                "user_id": user_id, "device_id": "", "stream_id": position, "prev_id": [], "deleted": False}))
            return out
        for change in sorted(devices, key=lambda c: c.stream_id):
            prev = await self.storage.e2e_keys.last_federated_change(user_id, before=change.stream_id)
            content = {"user_id": user_id, "device_id": change.device_id, "stream_id": change.stream_id,
                       "prev_id": [prev] if prev is not None else [], "deleted": change.deleted}
            if not change.deleted and change.device_id in keyed:
                keys, display_name = keyed[change.device_id]
                content["keys"] = keys
                if display_name:
                    content["device_display_name"] = display_name
            out.append(("m.device_list_update", content))
        return out

    async def device_list_changes(self, user_id: str, since: SyncToken, upto: SyncToken) -> tuple[list[str], list[str]]:
        """(changed, left) between two tokens: users whose devices changed and who share a room with
        ``user_id``, users who newly share one, and users who no longer share any."""
        sharing = await self.storage.events.users_sharing_rooms(user_id) | {user_id}
        changed: set[str] = set()
        if since.device_lists < upto.device_lists:
            changed = await self.storage.e2e_keys.users_changed_between(since.device_lists, upto.device_lists) & sharing
        candidates_left: set[str] = set()
        if since.events < upto.events:
            rooms = await self.storage.events.rooms_for_user(user_id, ("join", "leave", "ban"))
            for room_id, target, membership in await self.storage.events.membership_events_between(list(rooms), since.events, upto.events):
                if membership == "join":
                    if target == user_id:
                        changed |= set(await self.storage.events.members(room_id, ("join",)))
                    else:
                        changed.add(target)
                elif membership in ("leave", "ban"):
                    if target == user_id:
                        candidates_left |= set(await self.storage.events.members(room_id, ("join",)))
                    else:
                        candidates_left.add(target)
        left = {u for u in candidates_left if u not in sharing}
        return sorted(changed & sharing), sorted(left)

    async def changes(self, user_id: str, from_token: str | None, to_token: str | None) -> dict[str, Any]:
        if not from_token or not to_token:
            raise MatrixError(400, "M_MISSING_PARAM", "from and to are required")
        since, upto = SyncToken.parse(from_token), SyncToken.parse(to_token)
        changed, left = await self.device_list_changes(user_id, since, upto)
        return {"changed": changed, "left": left}

    # --- cross-signing -----------------------------------------------------------------------

    async def cross_signing_needs_auth(self, user_id: str, body: Mapping[str, Any]) -> bool:
        """As Synapse does: the first upload of a master key, or an upload that changes nothing, needs
        no re-authentication; replacing existing keys does."""
        existing = await self.storage.e2e_keys.cross_signing_keys(user_id)
        if "master" not in existing:
            return False
        for ktype in CROSS_SIGNING_TYPES:
            new = body.get(f"{ktype}_key")
            if new is not None and existing.get(ktype) != new:
                return True
        return False

    async def upload_cross_signing(self, user_id: str, body: Mapping[str, Any]) -> None:
        existing = await self.storage.e2e_keys.cross_signing_keys(user_id)
        new: dict[str, dict[str, Any]] = {}
        for ktype in CROSS_SIGNING_TYPES:
            key = body.get(f"{ktype}_key")
            if key is None:
                continue
            where = f"{ktype}_key"
            if not isinstance(key, dict):
                raise _bad(f"{where} must be an object", "M_BAD_JSON")
            if key.get("user_id") != user_id:
                raise _bad(f"{where}.user_id must be yours")
            usage = key.get("usage")
            if not isinstance(usage, list) or ktype not in usage:
                raise _bad(f"{where}.usage must include {ktype!r}")
            _single_key(key, where)
            new[ktype] = key
        if not new:
            raise _bad("No cross-signing keys given", "M_MISSING_PARAM")
        master = new.get("master") or existing.get("master")
        for ktype in ("self_signing", "user_signing"):
            if ktype not in new:
                continue
            if master is None:
                raise _bad(f"{ktype}_key needs a master key to be signed by", "M_INVALID_SIGNATURE")
            mkid, mpub = _single_key(master, "master_key")
            vk = _verify_key(mpub)
            if vk is None or not verify_json_signature(new[ktype], user_id, mkid, vk):
                raise _bad(f"{ktype}_key is not signed by the master key", "M_INVALID_SIGNATURE")
        # Other servers get a new master or self-signing key as an m.signing_key_update. A replaced
        # self-signing key takes its signatures on the devices with it, so they must refetch the devices.
        public_changed = any(k in new and existing.get(k) != new[k] for k in ("master", "self_signing"))
        ssk_replaced = "self_signing" in existing and "self_signing" in new and existing["self_signing"] != new["self_signing"]
        async with self.storage.db.transaction() as conn:
            for ktype, key in new.items():
                old = existing.get(ktype)
                if old is not None and old != key:
                    old_kid, _ = _single_key(old, ktype)
                    await self.storage.e2e_keys.delete_signatures_by(conn, user_id, old_kid)
                await self.storage.e2e_keys.set_cross_signing_key(conn, user_id, ktype, key)
            await self.storage.e2e_keys.mark_device_list_changed(conn, [user_id], federated=ssk_replaced)
        await self.wake_for_device_change(user_id, None if ssk_replaced else [], cross_signing=public_changed)

    async def upload_signatures(self, user_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        failures: dict[str, dict[str, Any]] = {}
        rows: list[tuple[str, str, str, str, str]] = []
        own = await self.storage.e2e_keys.cross_signing_keys(user_id)
        for target_user, keys in body.items():
            if not isinstance(keys, dict):
                raise _bad(f"{target_user} must map key IDs to signed keys", "M_BAD_JSON")
            for key_id, signed in keys.items():
                try:
                    if not isinstance(signed, dict):
                        raise _bad("the signed key must be an object", "M_BAD_JSON")
                    rows += await self._check_signature_upload(user_id, own, target_user, key_id, signed)
                except MatrixError as e:
                    failures.setdefault(target_user, {})[key_id] = {"errcode": e.errcode, "error": e.error}
        if rows:
            own_master = own.get("master")
            own_master_pub = _single_key(own_master, "master")[1] if own_master is not None else None
            own_rows = [r for r in rows if r[0] == user_id]
            devices_signed = sorted({r[1] for r in own_rows if r[1] != own_master_pub})
            master_signed = any(r[1] == own_master_pub for r in own_rows)
            others = {r[0] for r in rows} - {user_id}
            changes: list[DeviceChange] = []
            async with self.storage.db.transaction() as conn:
                await self.storage.e2e_keys.add_signatures(conn, rows)
                # Each of one's own devices newly signed is a change of its own (its keys as served now
                # carry the signature: other servers get them in an m.device_list_update). A signature
                # on one's master key goes out as m.signing_key_update; one on another user's master
                # key is only ever shown to the signer, so other servers are not told.
                for did in devices_signed:
                    changes.append(DeviceChange(did, await self.storage.e2e_keys.mark_device_list_changed(conn, [user_id])))
                if not devices_signed:
                    await self.storage.e2e_keys.mark_device_list_changed(conn, [user_id], federated=False)
                if others:
                    await self.storage.e2e_keys.mark_device_list_changed(conn, others, federated=False)
            await self.wake_for_device_change(user_id, changes, cross_signing=master_signed)
            for target in sorted(others):
                await self.wake_for_device_change(target, [])
        return {"failures": failures}

    async def _check_signature_upload(
        self, user_id: str, own: Mapping[str, dict[str, Any]], target_user: str, key_id: str, signed: dict[str, Any],
    ) -> list[tuple[str, str, str, str, str]]:
        if not self.is_local(target_user):
            raise MatrixError(400, "M_UNKNOWN", "Signing remote users' keys needs federation")
        if target_user == user_id:
            stored_device = await self.storage.e2e_keys.get_device_keys_json(user_id, key_id)
            if stored_device is not None:
                # A device of one's own, signed with one's self-signing key.
                if "self_signing" not in own:
                    raise MatrixError(400, "M_INVALID_SIGNATURE", "You have no self-signing key")
                return self._signature_rows(user_id, key_id, stored_device, signed, own["self_signing"], "self-signing")
            master = own.get("master")
            if master is not None and _single_key(master, "master")[1] == key_id:
                # One's master key, signed by one of one's devices.
                if _strip(signed) != _strip(master):
                    raise MatrixError(400, "M_INVALID_SIGNATURE", "The signed key does not match your master key")
                out = []
                for sig_kid, sig in (signed.get("signatures", {}).get(user_id) or {}).items():
                    if sig_kid == f"ed25519:{key_id}":
                        continue  # the master key's own signature is already part of it
                    device = await self.storage.e2e_keys.get_device_keys_json(user_id, sig_kid.split(":", 1)[-1])
                    dev_pub = (device or {}).get("keys", {}).get(sig_kid)
                    vk = _verify_key(dev_pub) if isinstance(dev_pub, str) else None
                    if vk is None or not verify_json_signature(signed, user_id, sig_kid, vk):
                        raise MatrixError(400, "M_INVALID_SIGNATURE", f"Signature {sig_kid} does not verify")
                    out.append((user_id, key_id, user_id, sig_kid, sig))
                if not out:
                    raise MatrixError(400, "M_INVALID_SIGNATURE", "No device signature found")
                return out
            raise MatrixError(404, "M_NOT_FOUND", "Unknown device or key")
        # Another user's master key, signed with one's user-signing key.
        theirs = await self.storage.e2e_keys.cross_signing_keys(target_user)
        master = theirs.get("master")
        if master is None or _single_key(master, "master")[1] != key_id:
            raise MatrixError(404, "M_NOT_FOUND", "That user has no such master key")
        if "user_signing" not in own:
            raise MatrixError(400, "M_INVALID_SIGNATURE", "You have no user-signing key")
        return self._signature_rows(target_user, key_id, master, signed, own["user_signing"], "user-signing", signer=user_id)

    @staticmethod
    def _signature_rows(
        target_user: str, target_key: str, stored: Mapping[str, Any], signed: Mapping[str, Any],
        signing_key: Mapping[str, Any], what: str, signer: str | None = None,
    ) -> list[tuple[str, str, str, str, str]]:
        signer = signer or target_user
        if _strip(signed) != _strip(stored):
            raise MatrixError(400, "M_INVALID_SIGNATURE", "The signed key does not match the stored key")
        kid, pub = _single_key(signing_key, what)
        vk = _verify_key(pub)
        sig = (signed.get("signatures", {}).get(signer) or {}).get(kid)
        if vk is None or not isinstance(sig, str) or not verify_json_signature(signed, signer, kid, vk):
            raise MatrixError(400, "M_INVALID_SIGNATURE", f"No valid signature by your {what} key")
        return [(target_user, target_key, signer, kid, sig)]


def _merge_signatures(key: Mapping[str, Any], extra: Iterable[tuple[str, str, str]], *, allowed_signers: set[str]) -> dict[str, Any]:
    extra = [e for e in extra if e[0] in allowed_signers]
    if not extra:
        return dict(key)
    signatures = {u: dict(s) for u, s in key.get("signatures", {}).items()}
    for signer, kid, sig in extra:
        signatures.setdefault(signer, {})[kid] = sig
    return {**key, "signatures": signatures}


def _json_equal(stored_json: str, key: Any) -> bool:
    return orjson.loads(stored_json) == key
