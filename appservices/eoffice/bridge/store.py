"""The bridge's own state (SQLite, in its data directory): which rooms are linked to which files,
which Matrix event became which note, the ordered queue of what e-Office still has to receive, and
which appservice transactions and e-Office events were already handled. Everything that must not be
lost or done twice is written here before it is acknowledged."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seen_txns (txn_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS seen_eoffice (event_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS links (room_id TEXT PRIMARY KEY, file_id TEXT NOT NULL, file_no TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS links_file ON links (file_id);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, idem TEXT NOT NULL UNIQUE, payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT);
CREATE TABLE IF NOT EXISTS notes (
    event_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, file_id TEXT NOT NULL, note_id TEXT, author TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending_encrypted (event_id TEXT PRIMARY KEY, event TEXT NOT NULL);
"""


class BridgeStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # --- small values ---------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        r = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return r[0] if r else None

    def put(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    # --- links ---------------------------------------------------------------------------------

    def link(self, room_id: str, file_id: str, file_no: str) -> None:
        """The newest link of a file is where e-Office news goes (an officer linking a room on purpose
        overrides the room the bridge made when the file was opened)."""
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("DELETE FROM links WHERE room_id = ?", (room_id,))
        self.db.execute("INSERT INTO links (room_id, file_id, file_no) VALUES (?, ?, ?)", (room_id, file_id, file_no))
        self.db.execute("COMMIT")

    def file_of(self, room_id: str) -> tuple[str, str] | None:
        r = self.db.execute("SELECT file_id, file_no FROM links WHERE room_id = ?", (room_id,)).fetchone()
        return (r[0], r[1]) if r else None

    def room_of(self, file_id: str) -> str | None:
        r = self.db.execute("SELECT room_id FROM links WHERE file_id = ? ORDER BY rowid DESC LIMIT 1", (file_id,)).fetchone()
        return r[0] if r else None

    # --- work received, recorded atomically with what it produced -------------------------------

    def record(self, *, txn_id: str | None = None, eoffice_event: str | None = None,
               items: list[tuple[str, str, dict[str, Any]]] = (), notes: list[tuple[str, str, str, str]] = ()) -> bool:
        """Mark a transaction or e-Office event handled and queue its items, in one SQLite
        transaction. False (and nothing written) if it had been handled already."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if txn_id is not None and self.db.execute("INSERT OR IGNORE INTO seen_txns (txn_id) VALUES (?)", (txn_id,)).rowcount == 0:
                self.db.execute("ROLLBACK")
                return False
            if eoffice_event is not None and self.db.execute(
                    "INSERT OR IGNORE INTO seen_eoffice (event_id) VALUES (?)", (eoffice_event,)).rowcount == 0:
                self.db.execute("ROLLBACK")
                return False
            for kind, idem, payload in items:
                self.db.execute("INSERT OR IGNORE INTO outbox (kind, idem, payload) VALUES (?, ?, ?)", (kind, idem, json.dumps(payload)))
            for event_id, room_id, file_id, author in notes:
                self.db.execute("INSERT OR IGNORE INTO notes (event_id, room_id, file_id, author) VALUES (?, ?, ?, ?)",
                                (event_id, room_id, file_id, author))
            self.db.execute("COMMIT")
            return True
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def txn_seen(self, txn_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM seen_txns WHERE txn_id = ?", (txn_id,)).fetchone() is not None

    def eoffice_seen(self, event_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM seen_eoffice WHERE event_id = ?", (event_id,)).fetchone() is not None

    # --- the outbox ------------------------------------------------------------------------------

    def next_item(self) -> tuple[int, str, str, dict[str, Any]] | None:
        r = self.db.execute("SELECT seq, kind, idem, payload FROM outbox ORDER BY seq LIMIT 1").fetchone()
        return (int(r[0]), r[1], r[2], json.loads(r[3])) if r else None

    def done(self, seq: int) -> None:
        self.db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def failed(self, seq: int, error: str) -> None:
        self.db.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE seq = ?", (error[:500], seq))

    def pending_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    # --- notes -----------------------------------------------------------------------------------

    def note(self, event_id: str) -> tuple[str, str, str | None, str] | None:
        r = self.db.execute("SELECT room_id, file_id, note_id, author FROM notes WHERE event_id = ?", (event_id,)).fetchone()
        return (r[0], r[1], r[2], r[3]) if r else None

    def set_note_id(self, event_id: str, note_id: str) -> None:
        self.db.execute("UPDATE notes SET note_id = ? WHERE event_id = ?", (note_id, event_id))

    def add_note(self, event_id: str, room_id: str, file_id: str, note_id: str, author: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO notes (event_id, room_id, file_id, note_id, author) VALUES (?, ?, ?, ?, ?)",
                        (event_id, room_id, file_id, note_id, author))

    def note_by_id(self, note_id: str) -> str | None:
        r = self.db.execute("SELECT event_id FROM notes WHERE note_id = ?", (note_id,)).fetchone()
        return r[0] if r else None

    # --- encrypted events waiting for their room key ---------------------------------------------

    def park(self, event: dict[str, Any]) -> None:
        self.db.execute("INSERT OR IGNORE INTO pending_encrypted (event_id, event) VALUES (?, ?)", (event["event_id"], json.dumps(event)))

    def parked(self) -> list[dict[str, Any]]:
        return [json.loads(r[0]) for r in self.db.execute("SELECT event FROM pending_encrypted ORDER BY rowid")]

    def unpark(self, event_id: str) -> None:
        self.db.execute("DELETE FROM pending_encrypted WHERE event_id = ?", (event_id,))
