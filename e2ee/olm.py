"""Olm: pairwise encrypted channels between two devices, used for to-device messages.

Room keys travel over Olm, so this is where a device proves who it is to another. A device may hold
several sessions with the same peer (both sides can start one at the same time, or one side may
have started afresh after losing state); we try them newest-used first and always encrypt with the
one most recently used, which follows the peer onto whichever session it last used.

The Olm plaintext is a JSON payload that names sender, recipient and both sides' Ed25519 keys. The
spec requires checking those names, because the Olm layer only authenticates Curve25519 keys: a
message could otherwise be re-targeted at another recipient or claim another sender.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import vodozemac

from .account import Account
from .codec import compact_json, decode_b64, encode_b64
from .errors import OlmDecryptionError, OlmSessionError
from .store import CryptoStore, StoredOlmSession

PRE_KEY_MESSAGE = 0
NORMAL_MESSAGE = 1


class OlmSessions:
    """All Olm sessions of this device, persisted in the store after every use."""

    def __init__(
        self,
        store: CryptoStore,
        account: Account,
        pickle_key: bytes,
        clock: Callable[[], int],
        save_account: Callable[[], None],
    ) -> None:
        """``save_account`` persists the account; it is called when an inbound session consumes a one-time key."""
        self.store = store
        self.account = account
        self.pickle_key = pickle_key
        self.clock = clock
        self.save_account = save_account

    def has_session(self, their_curve25519: str) -> bool:
        """Whether we can encrypt to the device with this identity key without claiming a key."""
        return bool(self.store.olm_sessions(their_curve25519))

    def newest_session_created_ms(self, their_curve25519: str) -> int | None:
        """Creation time of the newest session with the device (to tell if an unwedge happened)."""
        sessions = self.store.olm_sessions(their_curve25519)
        return max((s.created_ms for s in sessions), default=None)

    def create_outbound(self, their_curve25519: str, their_one_time_key: str) -> str:
        """Start and persist a session from a claimed one-time key; return its session id."""
        try:
            session = self.account.create_outbound_session(their_curve25519, their_one_time_key)
        except ValueError as exc:
            raise OlmSessionError(f"cannot create an Olm session: {exc}") from exc
        self._save(their_curve25519, session)
        return session.session_id

    def encrypt(self, their_curve25519: str, plaintext: bytes) -> dict[str, Any]:
        """Encrypt with the most recently used session; return the spec's ``{"type", "body"}``."""
        sessions = self.store.olm_sessions(their_curve25519)
        if not sessions:
            raise OlmSessionError(f"no Olm session with {their_curve25519}: claim a one-time key first")
        stored = sessions[0]
        session = self._unpickle(stored)
        message_type, ciphertext = session.encrypt(plaintext).to_parts()
        stored.pickle = session.pickle(self.pickle_key)
        stored.last_used_ms = self.clock()
        self.store.save_olm_session(stored)
        return {"type": message_type, "body": encode_b64(ciphertext)}

    def decrypt(self, their_curve25519: str, message_type: int, body: str) -> bytes:
        """Decrypt one Olm message from the device with identity key ``their_curve25519``.

        A pre-key message for a session we do not know yet creates one (consuming our one-time key);
        a normal message must decrypt with an existing session. Raises OlmDecryptionError.
        """
        try:
            vodozemac.Curve25519PublicKey.from_base64(their_curve25519)
            message = vodozemac.AnyOlmMessage.from_parts(message_type, decode_b64(body))
        except (ValueError, TypeError) as exc:
            raise OlmDecryptionError(f"malformed Olm message: {exc}") from exc

        sessions = self.store.olm_sessions(their_curve25519)
        pre_key = message.to_pre_key() if message_type == PRE_KEY_MESSAGE else None

        for stored in sessions:
            session = self._unpickle(stored)
            if pre_key is not None and not session.session_matches(pre_key):
                continue
            try:
                plaintext = session.decrypt(message)
            except ValueError as exc:
                if pre_key is not None:
                    # The message belongs to this session but does not decrypt: a replay or corruption.
                    raise OlmDecryptionError(f"pre-key message for session {session.session_id} failed: {exc}") from exc
                continue
            stored.pickle = session.pickle(self.pickle_key)
            stored.last_used_ms = self.clock()
            self.store.save_olm_session(stored)
            return plaintext

        if pre_key is None:
            raise OlmDecryptionError(f"no Olm session with {their_curve25519} decrypts the message")
        try:
            session, plaintext = self.account.create_inbound_session(their_curve25519, pre_key)
        except ValueError as exc:
            raise OlmDecryptionError(f"cannot create an inbound Olm session: {exc}") from exc
        with self.store.transaction():
            self._save(their_curve25519, session)
            self.save_account()
        return plaintext

    def _save(self, their_curve25519: str, session: vodozemac.Session) -> None:
        now = self.clock()
        self.store.save_olm_session(
            StoredOlmSession(
                session_id=session.session_id,
                sender_key=their_curve25519,
                pickle=session.pickle(self.pickle_key),
                created_ms=now,
                last_used_ms=now,
            )
        )

    def _unpickle(self, stored: StoredOlmSession) -> vodozemac.Session:
        return vodozemac.Session.from_pickle(stored.pickle, self.pickle_key)


def build_payload(
    *,
    sender: str,
    sender_device: str,
    sender_ed25519: str,
    recipient: str,
    recipient_ed25519: str,
    event_type: str,
    content: dict[str, Any],
) -> bytes:
    """The Olm plaintext the spec defines for m.olm.v1.curve25519-aes-sha2, as UTF-8 JSON."""
    return compact_json(
        {
            "type": event_type,
            "content": content,
            "sender": sender,
            "sender_device": sender_device,
            "keys": {"ed25519": sender_ed25519},
            "recipient": recipient,
            "recipient_keys": {"ed25519": recipient_ed25519},
        }
    )


def parse_and_check_payload(
    plaintext: bytes,
    *,
    event_sender: str,
    our_user_id: str,
    our_ed25519: str,
    sender_device_ed25519: str | None,
) -> dict[str, Any]:
    """Parse an Olm plaintext and apply the spec's checks; return the payload.

    ``recipient``/``recipient_keys`` must name us (else the message was meant for someone else and
    re-targeted), ``sender`` must be the to-device event's sender, and when we know the sending
    device its Ed25519 key must equal the payload's ``keys.ed25519`` (else the sender lies about
    which device it is, which would let it claim room keys as another device's).
    """
    try:
        payload = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OlmDecryptionError(f"Olm plaintext is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise OlmDecryptionError("Olm plaintext is not a JSON object")
    if not isinstance(payload.get("type"), str) or not isinstance(payload.get("content"), dict):
        raise OlmDecryptionError("Olm plaintext lacks type or content")
    if payload.get("recipient") != our_user_id:
        raise OlmDecryptionError("Olm message was meant for another recipient")
    recipient_keys = payload.get("recipient_keys")
    if not isinstance(recipient_keys, dict) or recipient_keys.get("ed25519") != our_ed25519:
        raise OlmDecryptionError("Olm message was meant for another device (recipient_keys mismatch)")
    if payload.get("sender") != event_sender:
        raise OlmDecryptionError("Olm payload sender does not match the event sender")
    keys = payload.get("keys")
    if not isinstance(keys, dict) or not isinstance(keys.get("ed25519"), str):
        raise OlmDecryptionError("Olm payload lacks the sender's ed25519 key")
    if sender_device_ed25519 is not None and keys["ed25519"] != sender_device_ed25519:
        raise OlmDecryptionError("Olm payload claims an ed25519 key that the sending device does not have")
    return payload
