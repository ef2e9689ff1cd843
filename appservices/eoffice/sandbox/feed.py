"""SQL for the change feed and the webhook queue.

``emit`` is called inside the same transaction as the change it describes, and enqueues one delivery
per matching subscription there too, so a change, its event and its pending deliveries are either
all committed or none are: nothing is lost between "saved" and "announced", even on a crash.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from .clock import new_id, now_ms
from .errors import not_found

EVENT_TYPES = (
    "file.created", "file.moved", "file.status_changed",
    "note.created", "note.updated", "note.finalised", "note.deleted",
    "correspondence.added", "receipt.created", "receipt.linked",
)


def emit(conn: sqlite3.Connection, type_: str, resource_type: str, resource: dict[str, Any],
         integration: str) -> int:
    """Append an event (with a snapshot of the resource) and queue it for every matching webhook."""
    assert type_ in EVENT_TYPES, type_
    now = now_ms()
    body = {"event_id": new_id("evt"), "type": type_, "timestamp": now, "integration": integration,
            "resource_type": resource_type, "resource": resource}
    cur = conn.execute("INSERT INTO events(event_id, type, created_at, body) VALUES(?, ?, ?, ?)",
                       (body["event_id"], type_, now, json.dumps(body, sort_keys=True)))
    cursor = int(cur.lastrowid or 0)
    for hook in conn.execute("SELECT webhook_id, events FROM webhooks").fetchall():
        wanted = json.loads(hook["events"])
        if "*" in wanted or type_ in wanted:
            conn.execute("INSERT INTO deliveries(webhook_id, cursor, next_attempt_at) VALUES(?, ?, ?)",
                         (hook["webhook_id"], cursor, now))
    return cursor


def _event(row: sqlite3.Row) -> dict[str, Any]:
    body = json.loads(row["body"])
    body["cursor"] = row["cursor"]
    return body


def event_bytes(event: dict[str, Any]) -> bytes:
    """The exact bytes a webhook receives; stable across retries so a signature covers the same body."""
    return json.dumps(event, sort_keys=True, separators=(",", ":")).encode("utf-8")


def list_events(conn: sqlite3.Connection, after: int, limit: int) -> dict[str, Any]:
    rows = conn.execute("SELECT cursor, body FROM events WHERE cursor > ? ORDER BY cursor LIMIT ?",
                        (after, limit + 1)).fetchall()
    events = [_event(r) for r in rows[:limit]]
    return {"events": events, "next_cursor": events[-1]["cursor"] if events else after,
            "has_more": len(rows) > limit}


# --- webhook subscriptions ---------------------------------------------------------------------

def _webhook(conn: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
    stats = conn.execute(
        "SELECT COUNT(*) AS pending, MIN(id) AS head FROM deliveries WHERE webhook_id=? AND delivered_at IS NULL",
        (row["webhook_id"],)).fetchone()
    head = None
    if stats["head"] is not None:
        h = conn.execute("SELECT attempts, last_status, last_error, next_attempt_at FROM deliveries WHERE id=?",
                         (stats["head"],)).fetchone()
        head = {"attempts": h["attempts"], "last_status": h["last_status"], "last_error": h["last_error"],
                "next_attempt_at": h["next_attempt_at"]}
    # The secret is write-only: it is never echoed back, so a leaked read token cannot forge deliveries.
    return {"webhook_id": row["webhook_id"], "url": row["url"], "events": json.loads(row["events"]),
            "created_at": row["created_at"], "recorded_by": row["recorded_by"],
            "pending_deliveries": stats["pending"], "head_of_queue": head}


def create_webhook(conn: sqlite3.Connection, url: str, secret: str, events: list[str],
                   integration: str) -> tuple[int, dict[str, Any]]:
    webhook_id = new_id("whk")
    conn.execute("INSERT INTO webhooks(webhook_id, url, secret, events, created_at, recorded_by)"
                 " VALUES(?, ?, ?, ?, ?, ?)",
                 (webhook_id, url, secret, json.dumps(sorted(set(events))), now_ms(), integration))
    return 201, get_webhook(conn, webhook_id)


def get_webhook(conn: sqlite3.Connection, webhook_id: str) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM webhooks WHERE webhook_id=?", (webhook_id,)).fetchone()
    if row is None:
        raise not_found("webhook")
    return _webhook(conn, row)


def list_webhooks(conn: sqlite3.Connection) -> dict[str, Any]:
    rows = conn.execute("SELECT * FROM webhooks ORDER BY seq").fetchall()
    return {"webhooks": [_webhook(conn, r) for r in rows]}


def delete_webhook(conn: sqlite3.Connection, webhook_id: str) -> None:
    get_webhook(conn, webhook_id)
    conn.execute("DELETE FROM deliveries WHERE webhook_id=?", (webhook_id,))
    conn.execute("DELETE FROM webhooks WHERE webhook_id=?", (webhook_id,))


# --- delivery queue (used by webhooks.py) ------------------------------------------------------

def webhook_ids(conn: sqlite3.Connection) -> list[str]:
    return [r["webhook_id"] for r in conn.execute("SELECT webhook_id FROM webhooks ORDER BY seq")]


def next_delivery(conn: sqlite3.Connection, webhook_id: str) -> dict[str, Any] | None:
    """The head of a subscription's queue: only it may be attempted, which keeps deliveries in order."""
    row = conn.execute(
        "SELECT d.id, d.attempts, d.next_attempt_at, w.url, w.secret, e.cursor, e.body"
        " FROM deliveries d JOIN webhooks w ON w.webhook_id = d.webhook_id JOIN events e ON e.cursor = d.cursor"
        " WHERE d.webhook_id=? AND d.delivered_at IS NULL ORDER BY d.id LIMIT 1", (webhook_id,)).fetchone()
    if row is None:
        return None
    return {"id": row["id"], "attempts": row["attempts"], "next_attempt_at": row["next_attempt_at"],
            "url": row["url"], "secret": row["secret"], "event": _event(row)}


def mark_delivered(conn: sqlite3.Connection, delivery_id: int, status: int) -> None:
    conn.execute("UPDATE deliveries SET delivered_at=?, last_status=?, attempts=attempts+1, last_error=NULL"
                 " WHERE id=?", (now_ms(), status, delivery_id))


def mark_failed(conn: sqlite3.Connection, delivery_id: int, status: int | None, error: str,
                next_attempt_at: int) -> None:
    conn.execute("UPDATE deliveries SET attempts=attempts+1, last_status=?, last_error=?, next_attempt_at=?"
                 " WHERE id=?", (status, error[:500], next_attempt_at, delivery_id))
