"""SQLite persistence for one device's end-to-end-encryption state.

Losing this state means losing the ability to read history and forcing every peer to set up new
sessions, so it lives in a file, not in memory. The store holds vodozemac *pickles*: strings that
vodozemac has already encrypted and authenticated with the caller's 32-byte pickle key, so the
file never holds a private key, ratchet or room key in the clear. Metadata that is public anyway
(other devices' public keys, room and session ids, which devices a room key went to) is stored
plainly so that it can be queried.

The store knows nothing about vodozemac objects; the account, olm and megolm modules pickle and
unpickle. It uses the standard library's ``sqlite3`` synchronously: every call is a few
milliseconds at most, and a bot or bridge can call it from an event loop without a thread pool.
Writes are grouped with ``transaction()`` where a change spans several rows (for example a new
Olm session together with the account that consumed a one-time key), so a crash never leaves the
two disagreeing.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS account (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    pickle TEXT NOT NULL,
    shared INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS olm_sessions (
    session_id TEXT NOT NULL,
    sender_key TEXT NOT NULL,
    pickle TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    last_used_ms INTEGER NOT NULL,
    -- Bumped on every use: orders sessions by recency even within one clock millisecond.
    use_seq INTEGER NOT NULL,
    PRIMARY KEY (sender_key, session_id)
);
CREATE TABLE IF NOT EXISTS outbound_group_sessions (
    room_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    pickle TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    message_count INTEGER NOT NULL,
    rotation_period_ms INTEGER NOT NULL,
    rotation_period_msgs INTEGER NOT NULL,
    invalidated INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS outbound_group_session_shares (
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    message_index INTEGER NOT NULL,
    PRIMARY KEY (room_id, session_id, user_id, device_id)
);
CREATE TABLE IF NOT EXISTS inbound_group_sessions (
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    sender_key TEXT NOT NULL,
    signing_key TEXT NOT NULL,
    forwarding_chain TEXT NOT NULL,
    pickle TEXT NOT NULL,
    first_known_index INTEGER NOT NULL,
    imported INTEGER NOT NULL,
    PRIMARY KEY (room_id, session_id)
);
CREATE TABLE IF NOT EXISTS megolm_message_indices (
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    message_index INTEGER NOT NULL,
    event_id TEXT,
    origin_server_ts INTEGER,
    PRIMARY KEY (room_id, session_id, message_index)
);
CREATE TABLE IF NOT EXISTS devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    curve25519 TEXT NOT NULL,
    ed25519 TEXT NOT NULL,
    keys_json TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id)
);
CREATE INDEX IF NOT EXISTS devices_by_curve25519 ON devices (curve25519);
CREATE TABLE IF NOT EXISTS cross_signing (
    user_id TEXT PRIMARY KEY,
    sealed TEXT NOT NULL,
    published INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tracked_users (
    user_id TEXT PRIMARY KEY,
    outdated INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS wedged_devices (
    user_id TEXT NOT NULL,
    sender_key TEXT NOT NULL,
    marked_ms INTEGER NOT NULL,
    unwedged_ms INTEGER,
    PRIMARY KEY (user_id, sender_key)
);
"""


@dataclass
class StoredAccount:
    """The device's own Olm account: identity keys and unpublished/unused one-time keys."""

    user_id: str
    device_id: str
    pickle: str
    shared: bool


@dataclass
class StoredOlmSession:
    """One Olm session with the device whose Curve25519 identity key is ``sender_key``."""

    session_id: str
    sender_key: str
    pickle: str
    created_ms: int
    last_used_ms: int


@dataclass
class StoredOutboundGroupSession:
    """The Megolm session this device currently encrypts a room's events with."""

    room_id: str
    session_id: str
    pickle: str
    created_ms: int
    message_count: int
    rotation_period_ms: int
    rotation_period_msgs: int
    invalidated: bool = False


@dataclass
class StoredInboundGroupSession:
    """A Megolm room key we can decrypt with, and where it came from.

    ``sender_key``/``signing_key`` are the Curve25519 and (claimed) Ed25519 keys of the device that
    created the session; ``forwarding_chain`` lists the Curve25519 keys of devices that forwarded
    it; ``imported`` marks keys from a key export or forward rather than straight from the creator.
    """

    room_id: str
    session_id: str
    sender_key: str
    signing_key: str
    forwarding_chain: list[str]
    pickle: str
    first_known_index: int
    imported: bool


@dataclass
class StoredDevice:
    """Another device's verified public keys, as last seen in /keys/query."""

    user_id: str
    device_id: str
    curve25519: str
    ed25519: str
    keys: dict = field(default_factory=dict)
    deleted: bool = False


class CryptoStore:
    """One SQLite database holding one device's crypto state (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Open (creating if needed) the database at ``path``; ``":memory:"`` gives a throwaway store."""
        self.path = os.fspath(path)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves so transactions nest predictably.
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._depth = 0
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._create_schema()

    def _create_schema(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"crypto store {self.path} has schema {version}, newer than this code ({SCHEMA_VERSION})")
        # executescript commits on its own; it runs before any transaction is open.
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the database; the object is unusable afterwards."""
        self._db.close()

    def __enter__(self) -> "CryptoStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes atomically; nested uses join the outermost transaction."""
        if self._depth == 0:
            self._db.execute("BEGIN IMMEDIATE")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("ROLLBACK")
            raise
        else:
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("COMMIT")

    # --- account -------------------------------------------------------------------------------

    def load_account(self) -> StoredAccount | None:
        """The stored account, or None for a fresh store."""
        row = self._db.execute("SELECT user_id, device_id, pickle, shared FROM account WHERE id = 1").fetchone()
        if row is None:
            return None
        return StoredAccount(row[0], row[1], row[2], bool(row[3]))

    def save_account(self, account: StoredAccount) -> None:
        """Insert or replace the account row."""
        with self.transaction():
            self._db.execute(
                "INSERT INTO account (id, user_id, device_id, pickle, shared) VALUES (1, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, device_id = excluded.device_id,"
                " pickle = excluded.pickle, shared = excluded.shared",
                (account.user_id, account.device_id, account.pickle, int(account.shared)),
            )

    # --- olm sessions --------------------------------------------------------------------------

    def olm_sessions(self, sender_key: str) -> list[StoredOlmSession]:
        """All Olm sessions with one device, most recently used first (the order to try them in)."""
        rows = self._db.execute(
            "SELECT session_id, sender_key, pickle, created_ms, last_used_ms FROM olm_sessions"
            " WHERE sender_key = ? ORDER BY use_seq DESC",
            (sender_key,),
        ).fetchall()
        return [StoredOlmSession(*row) for row in rows]

    def save_olm_session(self, session: StoredOlmSession) -> None:
        """Insert or replace one Olm session, making it the most recently used one."""
        with self.transaction():
            self._db.execute(
                "INSERT INTO olm_sessions (session_id, sender_key, pickle, created_ms, last_used_ms, use_seq)"
                " VALUES (?, ?, ?, ?, ?, (SELECT COALESCE(MAX(use_seq), 0) + 1 FROM olm_sessions))"
                " ON CONFLICT (sender_key, session_id) DO UPDATE SET"
                " pickle = excluded.pickle, last_used_ms = excluded.last_used_ms, use_seq = excluded.use_seq",
                (session.session_id, session.sender_key, session.pickle, session.created_ms, session.last_used_ms),
            )

    # --- outbound megolm -----------------------------------------------------------------------

    def load_outbound_group_session(self, room_id: str) -> StoredOutboundGroupSession | None:
        """The room's current outbound Megolm session, if any."""
        row = self._db.execute(
            "SELECT room_id, session_id, pickle, created_ms, message_count, rotation_period_ms,"
            " rotation_period_msgs, invalidated FROM outbound_group_sessions WHERE room_id = ?",
            (room_id,),
        ).fetchone()
        if row is None:
            return None
        return StoredOutboundGroupSession(
            room_id=row[0],
            session_id=row[1],
            pickle=row[2],
            created_ms=row[3],
            message_count=row[4],
            rotation_period_ms=row[5],
            rotation_period_msgs=row[6],
            invalidated=bool(row[7]),
        )

    def save_outbound_group_session(self, session: StoredOutboundGroupSession) -> None:
        """Insert or replace the room's outbound session; a new session id forgets old shares."""
        with self.transaction():
            self._db.execute(
                "DELETE FROM outbound_group_session_shares WHERE room_id = ? AND session_id != ?",
                (session.room_id, session.session_id),
            )
            self._db.execute(
                "INSERT OR REPLACE INTO outbound_group_sessions (room_id, session_id, pickle, created_ms,"
                " message_count, rotation_period_ms, rotation_period_msgs, invalidated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session.room_id,
                    session.session_id,
                    session.pickle,
                    session.created_ms,
                    session.message_count,
                    session.rotation_period_ms,
                    session.rotation_period_msgs,
                    int(session.invalidated),
                ),
            )

    def invalidate_outbound_group_session(self, room_id: str) -> None:
        """Mark the room's outbound session as not to be used again (it will be replaced)."""
        with self.transaction():
            self._db.execute("UPDATE outbound_group_sessions SET invalidated = 1 WHERE room_id = ?", (room_id,))

    def outbound_shares(self, room_id: str, session_id: str) -> dict[tuple[str, str], int]:
        """Devices the session was shared with, mapped to the message index they received it at."""
        rows = self._db.execute(
            "SELECT user_id, device_id, message_index FROM outbound_group_session_shares"
            " WHERE room_id = ? AND session_id = ?",
            (room_id, session_id),
        ).fetchall()
        return {(row[0], row[1]): row[2] for row in rows}

    def add_outbound_shares(self, room_id: str, session_id: str, devices: list[tuple[str, str]], message_index: int) -> None:
        """Record that the session was sent to ``devices`` at ``message_index``."""
        with self.transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO outbound_group_session_shares (room_id, session_id, user_id, device_id,"
                " message_index) VALUES (?, ?, ?, ?, ?)",
                [(room_id, session_id, user_id, device_id, message_index) for user_id, device_id in devices],
            )

    # --- inbound megolm ------------------------------------------------------------------------

    def load_inbound_group_session(self, room_id: str, session_id: str) -> StoredInboundGroupSession | None:
        """The room key for (room, session), if we hold it."""
        row = self._db.execute(
            "SELECT room_id, session_id, sender_key, signing_key, forwarding_chain, pickle, first_known_index,"
            " imported FROM inbound_group_sessions WHERE room_id = ? AND session_id = ?",
            (room_id, session_id),
        ).fetchone()
        return None if row is None else self._inbound_from_row(row)

    def inbound_group_sessions(self, room_id: str | None = None) -> list[StoredInboundGroupSession]:
        """All room keys, or those of one room (for key export)."""
        query = (
            "SELECT room_id, session_id, sender_key, signing_key, forwarding_chain, pickle, first_known_index,"
            " imported FROM inbound_group_sessions"
        )
        if room_id is None:
            rows = self._db.execute(query + " ORDER BY room_id, session_id").fetchall()
        else:
            rows = self._db.execute(query + " WHERE room_id = ? ORDER BY session_id", (room_id,)).fetchall()
        return [self._inbound_from_row(row) for row in rows]

    @staticmethod
    def _inbound_from_row(row: tuple) -> StoredInboundGroupSession:
        return StoredInboundGroupSession(
            room_id=row[0],
            session_id=row[1],
            sender_key=row[2],
            signing_key=row[3],
            forwarding_chain=json.loads(row[4]),
            pickle=row[5],
            first_known_index=row[6],
            imported=bool(row[7]),
        )

    def save_inbound_group_session(self, session: StoredInboundGroupSession) -> None:
        """Insert or replace one room key."""
        with self.transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO inbound_group_sessions (room_id, session_id, sender_key, signing_key,"
                " forwarding_chain, pickle, first_known_index, imported) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session.room_id,
                    session.session_id,
                    session.sender_key,
                    session.signing_key,
                    json.dumps(session.forwarding_chain),
                    session.pickle,
                    session.first_known_index,
                    int(session.imported),
                ),
            )

    def record_message_index(
        self, room_id: str, session_id: str, message_index: int, event_id: str | None, origin_server_ts: int | None
    ) -> tuple[str | None, int | None] | None:
        """Remember which event used a Megolm message index; return the earlier (event_id, ts) if any.

        The caller compares the earlier event with the current one: the same index in a different
        event means the ciphertext was replayed.
        """
        with self.transaction():
            row = self._db.execute(
                "SELECT event_id, origin_server_ts FROM megolm_message_indices"
                " WHERE room_id = ? AND session_id = ? AND message_index = ?",
                (room_id, session_id, message_index),
            ).fetchone()
            if row is not None:
                return (row[0], row[1])
            self._db.execute(
                "INSERT INTO megolm_message_indices (room_id, session_id, message_index, event_id, origin_server_ts)"
                " VALUES (?, ?, ?, ?, ?)",
                (room_id, session_id, message_index, event_id, origin_server_ts),
            )
            return None

    # --- other devices -------------------------------------------------------------------------

    def save_device(self, device: StoredDevice) -> None:
        """Insert or replace a device's keys."""
        with self.transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO devices (user_id, device_id, curve25519, ed25519, keys_json, deleted)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    device.user_id,
                    device.device_id,
                    device.curve25519,
                    device.ed25519,
                    json.dumps(device.keys),
                    int(device.deleted),
                ),
            )

    def mark_device_deleted(self, user_id: str, device_id: str) -> None:
        """Keep a vanished device's keys (old messages may need them) but stop sending to it."""
        with self.transaction():
            self._db.execute(
                "UPDATE devices SET deleted = 1 WHERE user_id = ? AND device_id = ?", (user_id, device_id)
            )

    def get_device(self, user_id: str, device_id: str) -> StoredDevice | None:
        """One device, deleted or not."""
        row = self._db.execute(
            "SELECT user_id, device_id, curve25519, ed25519, keys_json, deleted FROM devices"
            " WHERE user_id = ? AND device_id = ?",
            (user_id, device_id),
        ).fetchone()
        return None if row is None else self._device_from_row(row)

    def get_device_by_curve25519(self, curve25519: str) -> StoredDevice | None:
        """The device owning a Curve25519 identity key (how an Olm sender is identified)."""
        row = self._db.execute(
            "SELECT user_id, device_id, curve25519, ed25519, keys_json, deleted FROM devices"
            " WHERE curve25519 = ? ORDER BY deleted LIMIT 1",
            (curve25519,),
        ).fetchone()
        return None if row is None else self._device_from_row(row)

    def devices_of(self, user_id: str, include_deleted: bool = False) -> list[StoredDevice]:
        """A user's known devices."""
        query = "SELECT user_id, device_id, curve25519, ed25519, keys_json, deleted FROM devices WHERE user_id = ?"
        if not include_deleted:
            query += " AND deleted = 0"
        rows = self._db.execute(query + " ORDER BY device_id", (user_id,)).fetchall()
        return [self._device_from_row(row) for row in rows]

    @staticmethod
    def _device_from_row(row: tuple) -> StoredDevice:
        return StoredDevice(row[0], row[1], row[2], row[3], json.loads(row[4]), bool(row[5]))

    # --- device-list tracking ------------------------------------------------------------------

    def load_cross_signing(self, user_id: str) -> tuple[str, bool] | None:
        """The sealed cross-signing seeds (see cross_signing.py) and whether they were published."""
        row = self._db.execute("SELECT sealed, published FROM cross_signing WHERE user_id = ?", (user_id,)).fetchone()
        return (row[0], bool(row[1])) if row else None

    def save_cross_signing(self, user_id: str, sealed: str, published: bool) -> None:
        self._db.execute(
            "INSERT INTO cross_signing (user_id, sealed, published) VALUES (?, ?, ?)"
            " ON CONFLICT (user_id) DO UPDATE SET sealed = excluded.sealed, published = excluded.published",
            (user_id, sealed, int(published)),
        )

    def track_users(self, user_ids: list[str]) -> None:
        """Start tracking users' device lists; newly tracked users need a /keys/query."""
        with self.transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO tracked_users (user_id, outdated) VALUES (?, 1)", [(u,) for u in user_ids]
            )

    def untrack_users(self, user_ids: list[str]) -> None:
        """Stop tracking users we no longer share a room with."""
        with self.transaction():
            self._db.executemany("DELETE FROM tracked_users WHERE user_id = ?", [(u,) for u in user_ids])

    def set_users_outdated(self, user_ids: list[str], outdated: bool) -> None:
        """Flag tracked users' device lists as needing (or not needing) a new /keys/query."""
        with self.transaction():
            self._db.executemany(
                "UPDATE tracked_users SET outdated = ? WHERE user_id = ?", [(int(outdated), u) for u in user_ids]
            )

    def outdated_users(self) -> list[str]:
        """Tracked users whose device lists must be queried again."""
        rows = self._db.execute("SELECT user_id FROM tracked_users WHERE outdated = 1 ORDER BY user_id").fetchall()
        return [row[0] for row in rows]

    def tracked_users(self) -> list[str]:
        """Every tracked user."""
        return [row[0] for row in self._db.execute("SELECT user_id FROM tracked_users ORDER BY user_id")]

    # --- wedged sessions -----------------------------------------------------------------------

    def mark_wedged(self, user_id: str, sender_key: str, now_ms: int) -> None:
        """Note that an Olm message from this device failed to decrypt and a new session is needed."""
        with self.transaction():
            self._db.execute(
                "INSERT INTO wedged_devices (user_id, sender_key, marked_ms, unwedged_ms) VALUES (?, ?, ?, NULL)"
                " ON CONFLICT (user_id, sender_key) DO UPDATE SET marked_ms = excluded.marked_ms",
                (user_id, sender_key, now_ms),
            )

    def wedged(self) -> list[tuple[str, str, int, int | None]]:
        """(user_id, sender_key, marked_ms, unwedged_ms) for every device ever marked wedged."""
        rows = self._db.execute(
            "SELECT user_id, sender_key, marked_ms, unwedged_ms FROM wedged_devices ORDER BY user_id, sender_key"
        ).fetchall()
        return [tuple(row) for row in rows]  # type: ignore[misc]

    def mark_unwedged(self, user_id: str, sender_key: str, now_ms: int) -> None:
        """Record that a fresh session was made with the device (and when, to rate-limit repeats)."""
        with self.transaction():
            self._db.execute(
                "UPDATE wedged_devices SET unwedged_ms = ? WHERE user_id = ? AND sender_key = ?",
                (now_ms, user_id, sender_key),
            )
