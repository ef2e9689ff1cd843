"""OlmMachine: the whole client-side encryption state machine for one device, without HTTP.

A bot or bridge drives it with whatever HTTP client it has: the machine returns request bodies
(for /keys/upload, /keys/query, /keys/claim, /sendToDevice) and consumes response bodies and sync
sections. Keeping I/O out makes it testable by passing bodies between two machines, and usable
from any event loop.

Typical use for sending to an encrypted room::

    body = machine.keys_for_upload(sync["device_one_time_keys_count"])   # POST /keys/upload, then
    machine.mark_keys_as_published()
    machine.update_tracked_users(members)
    if (query := machine.keys_query_request()):                          # POST /keys/query
        machine.receive_keys_query(response)
    if (claim := machine.claim_request({u: None for u in members})):     # POST /keys/claim
        result = machine.create_olm_sessions(response)                   # send result.unwedge too
    request = machine.share_room_key(room_id, {u: None for u in members})  # PUT /sendToDevice
    content = machine.encrypt_room_event(room_id, "m.room.message", {...})  # PUT /send
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable, Mapping

from .cross_signing import CrossSigningKeys
from .account import Account
from .devices import MEGOLM_ALGORITHM, OLM_ALGORITHM, SIGNED_CURVE25519, verify_device_keys, verify_one_time_key
from .errors import (
    DeviceKeysError,
    E2EEError,
    MegolmDecryptionError,
    MissingSessionError,
    OlmDecryptionError,
    OlmSessionError,
    ReplayError,
    RoomKeyNotSharedError,
    SignatureError,
    StoreMismatchError,
)
from .export import DEFAULT_ROUNDS, export_sessions, import_sessions
from .megolm import (
    DEFAULT_ROTATION_PERIOD_MS,
    DEFAULT_ROTATION_PERIOD_MSGS,
    InboundGroupSession,
    OutboundGroupSession,
    parse_room_plaintext,
)
from .olm import OlmSessions, build_payload, parse_and_check_payload
from .results import ClaimResult, DecryptedRoomEvent, DecryptedToDevice, KeysQueryResult, ToDeviceRequest
from .store import CryptoStore, StoredAccount, StoredDevice

logger = logging.getLogger(__name__)

ENCRYPTED_EVENT = "m.room.encrypted"
# The spec asks clients not to start a new session with the same device more than once an hour,
# so that two devices that keep failing do not flood each other with new sessions.
UNWEDGE_INTERVAL_MS = 60 * 60 * 1000

UserDevices = Mapping[str, "Iterable[str] | None"]


def _wall_clock_ms() -> int:
    return int(time.time() * 1000)


class OlmMachine:
    """End-to-end encryption for one device of one user (see the module docstring for the flow)."""

    def __init__(
        self,
        user_id: str,
        device_id: str,
        store: CryptoStore,
        pickle_key: bytes,
        *,
        clock: Callable[[], int] | None = None,
    ) -> None:
        """Open the device's state in ``store``, creating a new account if the store is empty.

        ``pickle_key`` (32 bytes) encrypts every secret in the store; the same key must be given
        every time. A wrong key raises PickleKeyError; a store made for another user or device
        raises StoreMismatchError. ``clock`` returns milliseconds since the epoch (tests control it).
        """
        if not isinstance(pickle_key, (bytes, bytearray)) or len(pickle_key) != 32:
            raise ValueError("pickle_key must be 32 bytes")
        self.user_id = user_id
        self.device_id = device_id
        self.store = store
        self._pickle_key = bytes(pickle_key)
        self._clock = clock or _wall_clock_ms

        stored = store.load_account()
        if stored is None:
            self._account = Account(user_id, device_id)
            self._shared = False
            self._save_account()
        else:
            if (stored.user_id, stored.device_id) != (user_id, device_id):
                raise StoreMismatchError(
                    f"store belongs to {stored.user_id} {stored.device_id}, not {user_id} {device_id}"
                )
            self._account = Account.from_pickle(user_id, device_id, stored.pickle, self._pickle_key)
            self._shared = stored.shared
        self._olm = OlmSessions(store, self._account, self._pickle_key, self._clock, self._save_account)

    def _save_account(self) -> None:
        self.store.save_account(
            StoredAccount(self.user_id, self.device_id, self._account.pickle(self._pickle_key), self._shared)
        )

    # --- identity and key upload ---------------------------------------------------------------

    @property
    def identity_keys(self) -> dict[str, str]:
        """This device's public ``curve25519`` and ``ed25519`` keys."""
        return {"curve25519": self._account.curve25519, "ed25519": self._account.ed25519}

    def device_keys(self) -> dict[str, Any]:
        """Signed device keys, the ``device_keys`` member of /keys/upload."""
        return self._account.device_keys()

    def sign_json(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Sign any JSON object with this device's Ed25519 key (e.g. for cross-signing uploads)."""
        return self._account.sign_json(obj)

    def keys_for_upload(
        self,
        one_time_key_counts: Mapping[str, int] | None = None,
        unused_fallback_key_types: Iterable[str] | None = None,
    ) -> dict[str, Any] | None:
        """Body for POST /keys/upload, or None if there is nothing to upload.

        ``one_time_key_counts`` is sync's ``device_one_time_keys_count`` (or the upload response's
        ``one_time_key_counts``): the stock is refilled to half of what the account can hold, so a
        burst of claims never finds it empty while the other half absorbs keys still in flight.
        ``unused_fallback_key_types`` is sync's ``device_unused_fallback_key_types``: a new fallback
        key is made once the server reports ours used. Device keys are included until
        ``mark_keys_as_published`` confirms an upload. Call that after a successful upload.
        """
        body: dict[str, Any] = {}
        if not self._shared:
            body["device_keys"] = self.device_keys()

        on_server: int | None
        if one_time_key_counts is not None:
            on_server = int(one_time_key_counts.get(SIGNED_CURVE25519, 0))
        else:
            on_server = None if self._shared else 0
        changed = False
        if on_server is not None:
            wanted = self._account.max_one_time_keys // 2 - on_server - self._account.unpublished_one_time_key_count()
            if wanted > 0:
                self._account.generate_one_time_keys(wanted)
                changed = True

        pending_fallback = bool(self._account.fallback_keys_for_upload())
        if not pending_fallback:
            if unused_fallback_key_types is not None:
                needs_fallback = SIGNED_CURVE25519 not in set(unused_fallback_key_types)
            else:
                needs_fallback = not self._shared
            if needs_fallback:
                self._account.generate_fallback_key()
                changed = True
        if changed:
            self._save_account()

        one_time_keys = self._account.one_time_keys_for_upload()
        if one_time_keys:
            body["one_time_keys"] = one_time_keys
        fallback_keys = self._account.fallback_keys_for_upload()
        if fallback_keys:
            body["fallback_keys"] = fallback_keys
        return body or None

    # --- cross-signing of this user's own device ---

    def cross_signing_keys(self) -> tuple[CrossSigningKeys, bool]:
        """This user's cross-signing keys (created and stored on first use) and whether they are published."""
        stored = self.store.load_cross_signing(self.user_id)
        if stored is not None:
            return CrossSigningKeys.unseal(self.user_id, stored[0], self._pickle_key), stored[1]
        keys = CrossSigningKeys.generate(self.user_id)
        self.store.save_cross_signing(self.user_id, keys.seal(self._pickle_key), False)
        return keys, False

    def cross_signing_requests(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """What to send so this device is verified by its own user: the device_signing/upload body (None
        once published) and the signatures/upload body (the self-signing key's signature on this device).
        Call ``mark_cross_signing_published`` after the first succeeded."""
        keys, published = self.cross_signing_keys()
        signed = keys.sign_device(self.device_keys())
        return (None if published else keys.upload_body()), {self.user_id: {self.device_id: signed}}

    def mark_cross_signing_published(self) -> None:
        keys, _ = self.cross_signing_keys()
        self.store.save_cross_signing(self.user_id, keys.seal(self._pickle_key), True)

    def mark_keys_as_published(self) -> None:
        """Record that the last keys_for_upload body was accepted by the server."""
        self._account.mark_keys_as_published()
        self._shared = True
        self._save_account()

    # --- other devices -------------------------------------------------------------------------

    def update_tracked_users(self, user_ids: Iterable[str]) -> None:
        """Track these users' devices (e.g. members of encrypted rooms); new ones need a query."""
        self.store.track_users(list(user_ids))

    def receive_device_list_changes(self, changed: Iterable[str] = (), left: Iterable[str] = ()) -> None:
        """Apply sync's ``device_lists``: changed users need a new query, left users are untracked."""
        tracked = set(self.store.tracked_users())
        self.store.set_users_outdated([u for u in changed if u in tracked], True)
        self.store.untrack_users(list(left))

    def keys_query_request(self, user_ids: Iterable[str] | None = None, timeout_ms: int = 10_000) -> dict[str, Any] | None:
        """Body for POST /keys/query: the given users, or every tracked user whose list is outdated."""
        users = sorted(set(user_ids)) if user_ids is not None else self.store.outdated_users()
        if not users:
            return None
        return {"device_keys": {user: [] for user in users}, "timeout": timeout_ms}

    def receive_keys_query(self, response: Mapping[str, Any]) -> KeysQueryResult:
        """Store verified device keys from a /keys/query response.

        Each device must be self-signed and must not have changed keys since we first saw it (a
        device's keys are fixed for its lifetime; a change means someone is substituting keys).
        Devices missing from a user's full list are marked deleted so room keys stop going to them.
        """
        result = KeysQueryResult()
        device_keys = response.get("device_keys") or {}
        if not isinstance(device_keys, dict):
            raise DeviceKeysError("device_keys in /keys/query response is not an object")
        for user_id, devices in device_keys.items():
            if not isinstance(devices, dict):
                continue
            present: set[str] = set()
            for device_id, keys in devices.items():
                present.add(device_id)
                if user_id == self.user_id and device_id == self.device_id:
                    continue  # our own keys: we hold the private halves, nothing to learn
                try:
                    device = verify_device_keys(user_id, device_id, keys)
                except DeviceKeysError as exc:
                    result.rejected_devices.append((user_id, device_id, str(exc)))
                    continue
                existing = self.store.get_device(user_id, device_id)
                if existing is not None and (existing.ed25519, existing.curve25519) != (
                    device.ed25519,
                    device.curve25519,
                ):
                    result.rejected_devices.append((user_id, device_id, "device keys changed"))
                    continue
                self.store.save_device(device)
                if existing is None or existing.deleted:
                    result.new_devices.append((user_id, device_id))
            for known in self.store.devices_of(user_id):
                if known.device_id not in present:
                    self.store.mark_device_deleted(user_id, known.device_id)
                    result.deleted_devices.append((user_id, known.device_id))
            self.store.set_users_outdated([user_id], False)
        return result

    def get_device(self, user_id: str, device_id: str) -> StoredDevice | None:
        """A known device's keys (None if never seen)."""
        return self.store.get_device(user_id, device_id)

    def _resolve_devices(self, user_devices: UserDevices) -> list[StoredDevice]:
        """Known, current devices named by a user → device-ids map (None = all of that user's devices)."""
        devices: list[StoredDevice] = []
        for user_id, device_ids in user_devices.items():
            if device_ids is None:
                candidates = self.store.devices_of(user_id)
            else:
                candidates = [d for d in (self.store.get_device(user_id, i) for i in device_ids) if d is not None]
            for device in candidates:
                if device.deleted or (device.user_id, device.device_id) == (self.user_id, self.device_id):
                    continue
                devices.append(device)
        return devices

    # --- Olm sessions and unwedging ------------------------------------------------------------

    def _pending_wedges(self) -> dict[str, str]:
        """sender_key → user_id for devices still waiting for a fresh session."""
        return {
            sender_key: user_id
            for user_id, sender_key, marked_ms, unwedged_ms in self.store.wedged()
            if unwedged_ms is None or unwedged_ms < marked_ms
        }

    def sessions_to_unwedge(self) -> dict[str, list[str]]:
        """Devices (user → device ids) whose Olm session broke and must be replaced.

        claim_request includes them automatically; create_olm_sessions then makes the new session
        and returns the ``m.dummy`` that tells the peer to use it. A broken sender we have no device
        keys for cannot be claimed yet; its user is marked for a /keys/query instead.
        """
        wanted: dict[str, list[str]] = {}
        for sender_key, user_id in self._pending_wedges().items():
            device = self.store.get_device_by_curve25519(sender_key)
            if device is None or device.user_id != user_id:
                self.store.track_users([user_id])
                self.store.set_users_outdated([user_id], True)
                continue
            wanted.setdefault(user_id, []).append(device.device_id)
        return wanted

    def _mark_wedged(self, user_id: str, sender_key: str) -> None:
        now = self._clock()
        for wedged_user, wedged_key, _marked, unwedged_ms in self.store.wedged():
            if (wedged_user, wedged_key) == (user_id, sender_key) and unwedged_ms is not None:
                if now - unwedged_ms < UNWEDGE_INTERVAL_MS:
                    logger.info("not unwedging %s again within the hour", user_id)
                    return
        self.store.mark_wedged(user_id, sender_key, now)

    def claim_request(self, user_devices: UserDevices | None = None, timeout_ms: int = 10_000) -> dict[str, Any] | None:
        """Body for POST /keys/claim for devices we have no Olm session with, or None.

        Devices waiting to be unwedged are always included, even if a session exists.
        """
        wanted: dict[str, set[str]] = {}
        for device in self._resolve_devices(user_devices or {}):
            if not self._olm.has_session(device.curve25519):
                wanted.setdefault(device.user_id, set()).add(device.device_id)
        for user_id, device_ids in self.sessions_to_unwedge().items():
            wanted.setdefault(user_id, set()).update(device_ids)
        if not wanted:
            return None
        return {
            "one_time_keys": {
                user_id: {device_id: SIGNED_CURVE25519 for device_id in sorted(device_ids)}
                for user_id, device_ids in wanted.items()
            },
            "timeout": timeout_ms,
        }

    def create_olm_sessions(self, response: Mapping[str, Any]) -> ClaimResult:
        """Create Olm sessions from a /keys/claim response, checking each key's signature."""
        result = ClaimResult()
        unwedge = ToDeviceRequest(ENCRYPTED_EVENT)
        pending = self._pending_wedges()
        one_time_keys = response.get("one_time_keys") or {}
        for user_id, devices in one_time_keys.items():
            if not isinstance(devices, dict):
                continue
            for device_id, keys in devices.items():
                device = self.store.get_device(user_id, device_id)
                if device is None:
                    result.failed.append((user_id, device_id, "unknown device: query its keys first"))
                    continue
                one_time_key = None
                reason = "no one-time key in response"
                for key_id, key_object in (keys or {}).items():
                    try:
                        one_time_key = verify_one_time_key(device, key_id, key_object)
                        break
                    except SignatureError as exc:
                        reason = str(exc)
                if one_time_key is None:
                    result.failed.append((user_id, device_id, reason))
                    continue
                try:
                    self._olm.create_outbound(device.curve25519, one_time_key)
                except OlmSessionError as exc:
                    result.failed.append((user_id, device_id, str(exc)))
                    continue
                result.created.append((user_id, device_id))
                if pending.get(device.curve25519) == user_id:
                    unwedge.add(user_id, device_id, self.encrypt_to_device(user_id, device_id, "m.dummy", {}))
                    self.store.mark_unwedged(user_id, device.curve25519, self._clock())
        result.unwedge = unwedge if len(unwedge) else None
        return result

    # --- to-device -----------------------------------------------------------------------------

    def encrypt_to_device(self, user_id: str, device_id: str, event_type: str, content: dict[str, Any]) -> dict[str, Any]:
        """Olm-encrypt a to-device event; returns m.room.encrypted content for that one device."""
        device = self.store.get_device(user_id, device_id)
        if device is None:
            raise OlmSessionError(f"unknown device {user_id} {device_id}: query its keys first")
        plaintext = build_payload(
            sender=self.user_id,
            sender_device=self.device_id,
            sender_ed25519=self._account.ed25519,
            recipient=user_id,
            recipient_ed25519=device.ed25519,
            event_type=event_type,
            content=content,
        )
        return {
            "algorithm": OLM_ALGORITHM,
            "sender_key": self._account.curve25519,
            "ciphertext": {device.curve25519: self._olm.encrypt(device.curve25519, plaintext)},
        }

    def decrypt_to_device(self, event: Mapping[str, Any]) -> DecryptedToDevice:
        """Decrypt one Olm-encrypted to-device event from sync.

        Room keys (m.room_key, and m.forwarded_room_key from our own other devices) are stored as a
        side effect. A message that fails to decrypt marks the sending device for unwedging and
        raises OlmDecryptionError.
        """
        content = event.get("content")
        sender = event.get("sender")
        if not isinstance(content, dict) or not isinstance(sender, str):
            raise OlmDecryptionError("to-device event lacks content or sender")
        if event.get("type") != ENCRYPTED_EVENT or content.get("algorithm") != OLM_ALGORITHM:
            raise OlmDecryptionError("not an Olm-encrypted to-device event")
        sender_key = content.get("sender_key")
        ciphertexts = content.get("ciphertext")
        if not isinstance(sender_key, str) or not isinstance(ciphertexts, dict):
            raise OlmDecryptionError("Olm event lacks sender_key or ciphertext")
        mine = ciphertexts.get(self._account.curve25519)
        if not isinstance(mine, dict) or not isinstance(mine.get("body"), str) or mine.get("type") not in (0, 1):
            raise OlmDecryptionError("Olm event has no ciphertext for this device")

        try:
            plaintext = self._olm.decrypt(sender_key, mine["type"], mine["body"])
        except OlmDecryptionError:
            self._mark_wedged(sender, sender_key)
            raise

        device = self.store.get_device_by_curve25519(sender_key)
        if device is not None and device.user_id != sender:
            raise OlmDecryptionError("Olm sender key belongs to a device of another user")
        payload = parse_and_check_payload(
            plaintext,
            event_sender=sender,
            our_user_id=self.user_id,
            our_ed25519=self._account.ed25519,
            sender_device_ed25519=device.ed25519 if device is not None else None,
        )
        sender_ed25519 = payload["keys"]["ed25519"]
        decrypted = DecryptedToDevice(
            event={"type": payload["type"], "content": payload["content"], "sender": sender},
            sender_key=sender_key,
            sender_ed25519=sender_ed25519,
            sender_device=device.device_id if device is not None else None,
        )
        try:
            if payload["type"] == "m.room_key":
                self._receive_room_key(payload["content"], sender_key, sender_ed25519)
            elif payload["type"] == "m.forwarded_room_key":
                self._receive_forwarded_room_key(payload["content"], sender, sender_key)
        except E2EEError as exc:
            logger.warning("ignoring %s from %s: %s", payload["type"], sender, exc)
        return decrypted

    def _receive_room_key(self, content: Mapping[str, Any], sender_key: str, signing_key: str) -> None:
        if content.get("algorithm") != MEGOLM_ALGORITHM:
            raise MegolmDecryptionError(f"unsupported room key algorithm {content.get('algorithm')!r}")
        room_id, session_id, session_key = (content.get(k) for k in ("room_id", "session_id", "session_key"))
        if not all(isinstance(v, str) for v in (room_id, session_id, session_key)):
            raise MegolmDecryptionError("m.room_key lacks room_id, session_id or session_key")
        session = InboundGroupSession.from_room_key(room_id, sender_key, signing_key, session_key)  # type: ignore[arg-type]
        if session.session_id != session_id:
            raise MegolmDecryptionError("m.room_key session_key does not match its session_id")
        self._save_inbound(session)

    def _receive_forwarded_room_key(self, content: Mapping[str, Any], sender: str, olm_sender_key: str) -> None:
        # Without a key-request protocol, only our own devices have any business forwarding keys
        # to us; accepting them from anyone would let any user inject sessions.
        if sender != self.user_id:
            raise MegolmDecryptionError("forwarded room keys are accepted only from our own devices")
        if content.get("algorithm") != MEGOLM_ALGORITHM:
            raise MegolmDecryptionError(f"unsupported room key algorithm {content.get('algorithm')!r}")
        names = ("room_id", "session_id", "session_key", "sender_key", "sender_claimed_ed25519_key")
        values = [content.get(k) for k in names]
        chain = content.get("forwarding_curve25519_key_chain", [])
        if not all(isinstance(v, str) for v in values) or not isinstance(chain, list):
            raise MegolmDecryptionError("m.forwarded_room_key is missing fields")
        room_id, session_id, session_key, original_sender_key, claimed_ed25519 = values
        session = InboundGroupSession.from_export(
            room_id, original_sender_key, claimed_ed25519, session_key, [*chain, olm_sender_key]  # type: ignore[arg-type]
        )
        if session.session_id != session_id:
            raise MegolmDecryptionError("forwarded session_key does not match its session_id")
        self._save_inbound(session)

    def _save_inbound(self, session: InboundGroupSession) -> bool:
        """Store a room key unless we already hold an equal or better copy; True if stored.

        "Better" means it decrypts from an earlier index, or the same index with direct rather than
        forwarded provenance. A key reusing a known session id must be the same ratchet.
        """
        stored = self.store.load_inbound_group_session(session.room_id, session.session_id)
        if stored is not None:
            existing = InboundGroupSession.from_stored(stored, self._pickle_key)
            if not existing.is_same_session(session):
                raise MegolmDecryptionError(f"a different key claims session id {session.session_id}")
            earlier = session.first_known_index < existing.first_known_index
            better_source = session.first_known_index == existing.first_known_index and existing.imported and not session.imported
            if not (earlier or better_source):
                return False
        self.store.save_inbound_group_session(session.to_stored(self._pickle_key))
        return True

    # --- Megolm --------------------------------------------------------------------------------

    def share_room_key(
        self,
        room_id: str,
        members_devices: UserDevices,
        *,
        rotation_period_ms: int = DEFAULT_ROTATION_PERIOD_MS,
        rotation_period_msgs: int = DEFAULT_ROTATION_PERIOD_MSGS,
    ) -> ToDeviceRequest:
        """m.room_key messages for every listed device that lacks the room's current session.

        ``members_devices`` maps each member to device ids (None = all its known devices). The
        session is replaced first if it is expired, invalidated, or was given to a device that is no
        longer listed (so a leaver cannot read what follows). Devices we have no Olm session with
        are skipped: use claim_request/create_olm_sessions first. Devices are recorded as having the
        key as soon as the request is built; call invalidate_room_session if sending it fails.
        The rotation periods come from the room's m.room.encryption event.
        """
        now = self._clock()
        targets = self._resolve_devices(members_devices)
        target_ids = {(d.user_id, d.device_id) for d in targets}
        outbound = self._load_outbound(room_id)
        if outbound is not None:
            outbound.rotation_period_ms = rotation_period_ms
            outbound.rotation_period_msgs = rotation_period_msgs
            shares = self.store.outbound_shares(room_id, outbound.session_id)
            if outbound.expired(now) or any(device not in target_ids for device in shares):
                outbound = None
        if outbound is None:
            outbound = self._new_outbound(room_id, now, rotation_period_ms, rotation_period_msgs)
            shares = {}
        else:
            self.store.save_outbound_group_session(outbound.to_stored(self._pickle_key))

        request = ToDeviceRequest(ENCRYPTED_EVENT)
        room_key = {
            "algorithm": MEGOLM_ALGORITHM,
            "room_id": room_id,
            "session_id": outbound.session_id,
            "session_key": outbound.session_key,
        }
        for device in targets:
            if (device.user_id, device.device_id) in shares or not self._olm.has_session(device.curve25519):
                continue
            request.add(
                device.user_id,
                device.device_id,
                self.encrypt_to_device(device.user_id, device.device_id, "m.room_key", room_key),
            )
        if len(request):
            self.store.add_outbound_shares(room_id, outbound.session_id, request.devices(), outbound.message_index)
        return request

    def _new_outbound(self, room_id: str, now: int, period_ms: int, period_msgs: int) -> OutboundGroupSession:
        outbound = OutboundGroupSession.create(room_id, now, period_ms, period_msgs)
        # Keep the inbound half too, so we can read our own messages (and export them).
        own = InboundGroupSession.from_room_key(
            room_id, self._account.curve25519, self._account.ed25519, outbound.session_key
        )
        with self.store.transaction():
            self.store.save_outbound_group_session(outbound.to_stored(self._pickle_key))
            self._save_inbound(own)
        return outbound

    def _load_outbound(self, room_id: str) -> OutboundGroupSession | None:
        stored = self.store.load_outbound_group_session(room_id)
        return None if stored is None else OutboundGroupSession.from_stored(stored, self._pickle_key)

    def invalidate_room_session(self, room_id: str) -> None:
        """Stop using the room's session (a member or device left, or sharing failed)."""
        self.store.invalidate_outbound_group_session(room_id)

    def room_session_id(self, room_id: str) -> str | None:
        """Id of the room's current outbound session, usable or not (for diagnostics and tests)."""
        stored = self.store.load_outbound_group_session(room_id)
        return None if stored is None else stored.session_id

    def encrypt_room_event(self, room_id: str, event_type: str, content: dict[str, Any]) -> dict[str, Any]:
        """m.room.encrypted content for a room event, using the room's current shared session.

        Raises RoomKeyNotSharedError if share_room_key has not set up a current session (or the
        session has expired since): an event must never go out under a key its readers lack, or a
        key that should have been rotated.
        """
        outbound = self._load_outbound(room_id)
        if outbound is None or outbound.expired(self._clock()):
            raise RoomKeyNotSharedError(f"no current room key for {room_id}: call share_room_key first")
        ciphertext = outbound.encrypt(room_id, event_type, content)
        self.store.save_outbound_group_session(outbound.to_stored(self._pickle_key))
        encrypted: dict[str, Any] = {
            "algorithm": MEGOLM_ALGORITHM,
            "sender_key": self._account.curve25519,
            "ciphertext": ciphertext,
            "session_id": outbound.session_id,
            "device_id": self.device_id,
        }
        # The spec keeps relations in the clear so the server can aggregate edits and threads.
        if isinstance(content.get("m.relates_to"), dict):
            encrypted["m.relates_to"] = content["m.relates_to"]
        return encrypted

    def decrypt_room_event(self, event: Mapping[str, Any]) -> DecryptedRoomEvent:
        """Decrypt an m.room.encrypted room event.

        Raises MissingSessionError if we lack the key, MegolmDecryptionError if the ciphertext is
        bad or was made for another room, and ReplayError if its message index was already used
        by a different event (same event id and timestamp is the same event seen again: fine).
        """
        content = event.get("content")
        room_id = event.get("room_id")
        if not isinstance(content, dict) or not isinstance(room_id, str):
            raise MegolmDecryptionError("event lacks content or room_id")
        if content.get("algorithm") != MEGOLM_ALGORITHM:
            raise MegolmDecryptionError(f"unsupported algorithm {content.get('algorithm')!r}")
        session_id = content.get("session_id")
        ciphertext = content.get("ciphertext")
        if not isinstance(session_id, str) or not isinstance(ciphertext, str):
            raise MegolmDecryptionError("Megolm event lacks session_id or ciphertext")
        stored = self.store.load_inbound_group_session(room_id, session_id)
        if stored is None:
            raise MissingSessionError(room_id, session_id)
        session = InboundGroupSession.from_stored(stored, self._pickle_key)
        plaintext, message_index = session.decrypt(ciphertext)
        payload = parse_room_plaintext(plaintext, room_id)

        event_id = event.get("event_id")
        timestamp = event.get("origin_server_ts")
        earlier = self.store.record_message_index(room_id, session_id, message_index, event_id, timestamp)
        if earlier is not None and earlier != (event_id, timestamp):
            raise ReplayError(
                f"message index {message_index} of session {session_id} was already used by event {earlier[0]}"
            )

        sender = event.get("sender")
        device = self.store.get_device_by_curve25519(session.sender_key)
        if session.sender_key == self._account.curve25519:
            authentic = sender == self.user_id and session.signing_key == self._account.ed25519
        else:
            authentic = device is not None and device.user_id == sender and device.ed25519 == session.signing_key
        authentic = authentic and not session.imported

        plain_content = dict(payload["content"])
        if "m.relates_to" not in plain_content and isinstance(content.get("m.relates_to"), dict):
            plain_content["m.relates_to"] = content["m.relates_to"]
        decrypted_event = dict(event)
        decrypted_event["type"] = payload["type"]
        decrypted_event["content"] = plain_content
        return DecryptedRoomEvent(
            event=decrypted_event,
            session_id=session_id,
            message_index=message_index,
            sender_key=session.sender_key,
            sender_claimed_ed25519=session.signing_key,
            forwarding_chain=list(session.forwarding_chain),
            authentic=authentic,
        )

    # --- key export ----------------------------------------------------------------------------

    def export_room_keys(self, passphrase: str, rounds: int = DEFAULT_ROUNDS, room_id: str | None = None) -> str:
        """All room keys (or one room's) as a passphrase-protected export file's text."""
        sessions = [
            InboundGroupSession.from_stored(stored, self._pickle_key)
            for stored in self.store.inbound_group_sessions(room_id)
        ]
        return export_sessions(sessions, passphrase, rounds)

    def import_room_keys(self, exported: str | bytes, passphrase: str) -> int:
        """Import an export file; return how many sessions were new or better than ours.

        Raises KeyExportError on a wrong passphrase or a malformed file. Imported keys are marked
        imported, so events they decrypt are never reported as authentic.
        """
        sessions, skipped = import_sessions(exported, passphrase)
        for reason in skipped:
            logger.warning("skipping exported session: %s", reason)
        imported = 0
        with self.store.transaction():
            for session in sessions:
                try:
                    if self._save_inbound(session):
                        imported += 1
                except MegolmDecryptionError as exc:
                    logger.warning("skipping exported session: %s", exc)
        return imported
