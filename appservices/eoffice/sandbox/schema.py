"""The sandbox's SQLite schema (created on first start; ``meta.schema_version`` guards upgrades).

Every table keeps ``created_at`` and ``recorded_by`` (the integration whose token made the change)
because the contract promises auditors who did what, and when.
"""

from __future__ import annotations

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS employees (
    employee_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    designation TEXT NOT NULL,
    section TEXT NOT NULL,
    email TEXT NOT NULL,
    active INTEGER NOT NULL
);

-- Per-series sequence numbers for file numbers ('file:MOFA:2026') and diary numbers ('receipt:2026').
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);

CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    file_id TEXT NOT NULL UNIQUE,
    file_no TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    classification TEXT NOT NULL,
    status TEXT NOT NULL,
    created_by TEXT NOT NULL REFERENCES employees(employee_id),
    current_holder TEXT NOT NULL REFERENCES employees(employee_id),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    recorded_by TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS notes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    note_id TEXT NOT NULL UNIQUE,
    file_id TEXT NOT NULL REFERENCES files(file_id),
    author TEXT NOT NULL REFERENCES employees(employee_id),
    text TEXT NOT NULL,
    status TEXT NOT NULL,
    version INTEGER NOT NULL,
    external_ref TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finalised_at INTEGER,
    recorded_by TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notes_by_file ON notes(file_id, seq);

CREATE TABLE IF NOT EXISTS correspondence (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    correspondence_id TEXT NOT NULL UNIQUE,
    file_id TEXT NOT NULL REFERENCES files(file_id),
    subject TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    date TEXT NOT NULL,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    external_ref TEXT,
    created_at INTEGER NOT NULL,
    recorded_by TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS correspondence_by_file ON correspondence(file_id, seq);

CREATE TABLE IF NOT EXISTS movements (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    movement_id TEXT NOT NULL UNIQUE,
    file_id TEXT NOT NULL REFERENCES files(file_id),
    from_employee TEXT NOT NULL REFERENCES employees(employee_id),
    to_employee TEXT NOT NULL REFERENCES employees(employee_id),
    remarks TEXT,
    due_date TEXT,
    created_at INTEGER NOT NULL,
    recorded_by TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS movements_by_file ON movements(file_id, seq);

CREATE TABLE IF NOT EXISTS receipts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    receipt_id TEXT NOT NULL UNIQUE,
    diary_no TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    sender TEXT NOT NULL,
    received_on TEXT NOT NULL,
    received_by TEXT REFERENCES employees(employee_id),
    mode TEXT,
    file_id TEXT REFERENCES files(file_id),
    external_ref TEXT,
    created_at INTEGER NOT NULL,
    recorded_by TEXT NOT NULL
);

-- The change feed. ``cursor`` is handed out in commit order by the single writer thread.
CREATE TABLE IF NOT EXISTS events (
    cursor INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    body TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    integration TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    response TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (integration, key)
);

CREATE TABLE IF NOT EXISTS webhooks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    events TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    recorded_by TEXT NOT NULL
);

-- One row per (subscription, event); delivered strictly in ``id`` order per subscription.
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id TEXT NOT NULL REFERENCES webhooks(webhook_id) ON DELETE CASCADE,
    cursor INTEGER NOT NULL REFERENCES events(cursor),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_status INTEGER,
    last_error TEXT,
    delivered_at INTEGER
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries(webhook_id, id) WHERE delivered_at IS NULL;
"""
