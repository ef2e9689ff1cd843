"""SQL for the e-Office records: employees, files, notes, correspondence, movements and receipts.

Each function takes an open connection inside a transaction (see ``db.py``) and, when it changes
something, emits the matching feed event in that same transaction. Functions that create a
resource return ``(status, body)`` so ``Database.write_idempotent`` can store and replay them.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Iterable

from .clock import current_year, new_id, now_ms
from .config import Employee
from .errors import conflict, forbidden, not_found, note_final, validation
from .feed import emit

Created = tuple[int, dict[str, Any]]

_FILE_SELECT = "SELECT * FROM files"
_NOTE_SELECT = ("SELECT n.*, f.file_no, f.classification FROM notes n JOIN files f ON f.file_id = n.file_id")
_CORR_SELECT = ("SELECT c.*, f.file_no, f.classification FROM correspondence c"
                " JOIN files f ON f.file_id = c.file_id")
_MOVE_SELECT = ("SELECT m.*, f.file_no, f.classification FROM movements m JOIN files f ON f.file_id = m.file_id")


def _ref(raw: str | None) -> dict[str, Any] | None:
    return json.loads(raw) if raw else None


# --- employees ----------------------------------------------------------------------------------

def seed_employees(conn: sqlite3.Connection, employees: Iterable[Employee]) -> None:
    """The YAML is the source of truth; employees dropped from it are kept (files refer to them) but deactivated."""
    listed = []
    for e in employees:
        listed.append(e.employee_id)
        conn.execute(
            "INSERT INTO employees(employee_id, name, designation, section, email, active) VALUES(?,?,?,?,?,?)"
            " ON CONFLICT(employee_id) DO UPDATE SET name=excluded.name, designation=excluded.designation,"
            " section=excluded.section, email=excluded.email, active=excluded.active",
            (e.employee_id, e.name, e.designation, e.section, e.email, int(e.active)))
    marks = ",".join("?" * len(listed))
    conn.execute(f"UPDATE employees SET active=0 WHERE employee_id NOT IN ({marks})", listed)


def _employee(row: sqlite3.Row) -> dict[str, Any]:
    return {"employee_id": row["employee_id"], "name": row["name"], "designation": row["designation"],
            "section": row["section"], "email": row["email"], "active": bool(row["active"])}


def list_employees(conn: sqlite3.Connection, section: str | None, active: bool | None) -> dict[str, Any]:
    sql, args = "SELECT * FROM employees WHERE 1=1", []
    if section is not None:
        sql += " AND section=?"
        args.append(section)
    if active is not None:
        sql += " AND active=?"
        args.append(int(active))
    return {"employees": [_employee(r) for r in conn.execute(sql + " ORDER BY employee_id", args)]}


def get_employee(conn: sqlite3.Connection, employee_id: str) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM employees WHERE employee_id=?", (employee_id,)).fetchone()
    if row is None:
        raise not_found("employee")
    return _employee(row)


def _acting(conn: sqlite3.Connection, employee_id: str, field: str) -> None:
    """An employee named as acting must exist (400) and be active (403): the inactive cannot act on files."""
    row = conn.execute("SELECT active FROM employees WHERE employee_id=?", (employee_id,)).fetchone()
    if row is None:
        raise validation(f"{field!r}: unknown employee {employee_id!r}", field)
    if not row["active"]:
        raise forbidden(f"{field!r}: employee {employee_id!r} is not active")


def _next_number(conn: sqlite3.Connection, series: str) -> int:
    conn.execute("INSERT INTO counters(name, value) VALUES(?, 1)"
                 " ON CONFLICT(name) DO UPDATE SET value = value + 1", (series,))
    return int(conn.execute("SELECT value FROM counters WHERE name=?", (series,)).fetchone()["value"])


# --- files --------------------------------------------------------------------------------------

def _file(row: sqlite3.Row) -> dict[str, Any]:
    return {k: row[k] for k in ("file_id", "file_no", "subject", "classification", "status", "created_by",
                                "current_holder", "created_at", "updated_at", "recorded_by")}


def _file_row(conn: sqlite3.Connection, file_id: str) -> sqlite3.Row:
    row = conn.execute(_FILE_SELECT + " WHERE file_id=?", (file_id,)).fetchone()
    if row is None:
        raise not_found("file")
    return row


def create_file(conn: sqlite3.Connection, prefix: str, subject: str, classification: str, created_by: str,
                holder: str | None, integration: str) -> Created:
    _acting(conn, created_by, "created_by")
    if holder is not None:
        _acting(conn, holder, "current_holder")
    year = current_year()
    file_no = f"{prefix}/{year}/{_next_number(conn, f'file:{prefix}:{year}'):04d}"
    file_id, now = new_id("fil"), now_ms()
    conn.execute("INSERT INTO files(file_id, file_no, subject, classification, status, created_by,"
                 " current_holder, created_at, updated_at, recorded_by) VALUES(?,?,?,?,?,?,?,?,?,?)",
                 (file_id, file_no, subject, classification, "open", created_by, holder or created_by,
                  now, now, integration))
    file = get_file(conn, file_id)
    emit(conn, "file.created", "file", file, integration)
    return 201, file


def get_file(conn: sqlite3.Connection, file_id: str) -> dict[str, Any]:
    return _file(_file_row(conn, file_id))


def list_files(conn: sqlite3.Connection, filters: dict[str, str], limit: int, offset: int) -> dict[str, Any]:
    sql, args = _FILE_SELECT + " WHERE 1=1", []
    for column in ("status", "current_holder", "classification", "file_no"):
        if column in filters:
            sql += f" AND {column}=?"
            args.append(filters[column])
    rows = conn.execute(sql + " ORDER BY seq LIMIT ? OFFSET ?", (*args, limit + 1, offset)).fetchall()
    return {"files": [_file(r) for r in rows[:limit]],
            "next_offset": offset + limit if len(rows) > limit else None}


def set_file_status(conn: sqlite3.Connection, file_id: str, status: str, integration: str) -> dict[str, Any]:
    row = _file_row(conn, file_id)
    if row["status"] == status:
        return _file(row)
    conn.execute("UPDATE files SET status=?, updated_at=? WHERE file_id=?", (status, now_ms(), file_id))
    file = get_file(conn, file_id)
    emit(conn, "file.status_changed", "file", {**file, "previous_status": row["status"]}, integration)
    return file


def _writable_file(conn: sqlite3.Connection, file_id: str) -> sqlite3.Row:
    row = _file_row(conn, file_id)
    if row["status"] == "closed":
        raise conflict("the file is closed; reopen it before adding to it")
    return row


# --- notes --------------------------------------------------------------------------------------

def _note(row: sqlite3.Row) -> dict[str, Any]:
    return {"note_id": row["note_id"], "file_id": row["file_id"], "file_no": row["file_no"],
            "classification": row["classification"], "author": row["author"], "text": row["text"],
            "status": row["status"], "version": row["version"], "external_ref": _ref(row["external_ref"]),
            "created_at": row["created_at"], "updated_at": row["updated_at"],
            "finalised_at": row["finalised_at"], "recorded_by": row["recorded_by"]}


def _note_row(conn: sqlite3.Connection, file_id: str, note_id: str) -> sqlite3.Row:
    _file_row(conn, file_id)
    row = conn.execute(_NOTE_SELECT + " WHERE n.file_id=? AND n.note_id=?", (file_id, note_id)).fetchone()
    if row is None:
        raise not_found("note")
    return row


def create_note(conn: sqlite3.Connection, file_id: str, author: str, text: str, status: str,
                ref: dict[str, Any] | None, integration: str) -> Created:
    _writable_file(conn, file_id)
    _acting(conn, author, "author")
    note_id, now = new_id("nte"), now_ms()
    conn.execute("INSERT INTO notes(note_id, file_id, author, text, status, version, external_ref, created_at,"
                 " updated_at, finalised_at, recorded_by) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                 (note_id, file_id, author, text, status, 1, json.dumps(ref) if ref else None, now, now,
                  now if status == "final" else None, integration))
    note = _note(_note_row(conn, file_id, note_id))
    emit(conn, "note.created", "note", note, integration)
    return 201, note


def list_notes(conn: sqlite3.Connection, file_id: str) -> dict[str, Any]:
    _file_row(conn, file_id)
    rows = conn.execute(_NOTE_SELECT + " WHERE n.file_id=? ORDER BY n.seq", (file_id,))
    return {"notes": [_note(r) for r in rows]}


def get_note(conn: sqlite3.Connection, file_id: str, note_id: str) -> dict[str, Any]:
    return _note(_note_row(conn, file_id, note_id))


def check_note_mutable(conn: sqlite3.Connection, file_id: str, note_id: str) -> None:
    """Final means final: checked before anything else about the request, so the answer is always 409."""
    if _note_row(conn, file_id, note_id)["status"] == "final":
        raise note_final()


def update_note(conn: sqlite3.Connection, file_id: str, note_id: str, edited_by: str, text: str | None,
                status: str | None, ref: dict[str, Any] | None, integration: str) -> dict[str, Any]:
    row = _note_row(conn, file_id, note_id)
    if row["status"] == "final":
        raise note_final()
    _writable_file(conn, file_id)
    _acting(conn, edited_by, "edited_by")
    if edited_by != row["author"]:
        raise forbidden("only the note's author may edit or finalise a draft")
    now = now_ms()
    if text is not None and text != row["text"]:
        conn.execute("UPDATE notes SET text=?, version=version+1, updated_at=?, external_ref=COALESCE(?, external_ref)"
                     " WHERE note_id=?", (text, now, json.dumps(ref) if ref else None, note_id))
        emit(conn, "note.updated", "note", get_note(conn, file_id, note_id), integration)
    if status == "final":
        conn.execute("UPDATE notes SET status='final', finalised_at=?, updated_at=? WHERE note_id=?",
                     (now, now, note_id))
        emit(conn, "note.finalised", "note", get_note(conn, file_id, note_id), integration)
    return get_note(conn, file_id, note_id)


def delete_note(conn: sqlite3.Connection, file_id: str, note_id: str, integration: str) -> None:
    row = _note_row(conn, file_id, note_id)
    if row["status"] == "final":
        raise note_final()
    note = _note(row)
    conn.execute("DELETE FROM notes WHERE note_id=?", (note_id,))
    # The deleted draft's last text stays in the feed: drafts may go, but not without trace.
    emit(conn, "note.deleted", "note", note, integration)


# --- correspondence -----------------------------------------------------------------------------

def _corr(row: sqlite3.Row) -> dict[str, Any]:
    return {"correspondence_id": row["correspondence_id"], "file_id": row["file_id"], "file_no": row["file_no"],
            "classification": row["classification"], "subject": row["subject"], "from": row["sender"],
            "to": row["recipient"], "date": row["date"], "filename": row["filename"],
            "content_type": row["content_type"], "size": row["size"], "sha256": row["sha256"],
            "external_ref": _ref(row["external_ref"]), "created_at": row["created_at"],
            "recorded_by": row["recorded_by"]}


def check_file_writable(conn: sqlite3.Connection, file_id: str) -> None:
    _writable_file(conn, file_id)


def add_correspondence(conn: sqlite3.Connection, file_id: str, correspondence_id: str, meta: dict[str, Any],
                       size: int, sha256: str, integration: str) -> Created:
    _writable_file(conn, file_id)
    ref = meta.get("external_ref")
    conn.execute("INSERT INTO correspondence(correspondence_id, file_id, subject, sender, recipient, date, filename,"
                 " content_type, size, sha256, external_ref, created_at, recorded_by)"
                 " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
                 (correspondence_id, file_id, meta["subject"], meta["from"], meta["to"], meta["date"],
                  meta["filename"], meta["content_type"], size, sha256, json.dumps(ref) if ref else None,
                  now_ms(), integration))
    item = get_correspondence(conn, file_id, correspondence_id)
    emit(conn, "correspondence.added", "correspondence", item, integration)
    return 201, item


def get_correspondence(conn: sqlite3.Connection, file_id: str, correspondence_id: str) -> dict[str, Any]:
    _file_row(conn, file_id)
    row = conn.execute(_CORR_SELECT + " WHERE c.file_id=? AND c.correspondence_id=?",
                       (file_id, correspondence_id)).fetchone()
    if row is None:
        raise not_found("correspondence")
    return _corr(row)


def list_correspondence(conn: sqlite3.Connection, file_id: str) -> dict[str, Any]:
    _file_row(conn, file_id)
    rows = conn.execute(_CORR_SELECT + " WHERE c.file_id=? ORDER BY c.seq", (file_id,))
    return {"correspondence": [_corr(r) for r in rows]}


# --- movements ----------------------------------------------------------------------------------

def _movement(row: sqlite3.Row) -> dict[str, Any]:
    return {k: row[k] for k in ("movement_id", "file_id", "file_no", "classification", "from_employee",
                                "to_employee", "remarks", "due_date", "created_at", "recorded_by")}


def move_file(conn: sqlite3.Connection, file_id: str, from_employee: str, to_employee: str, remarks: str | None,
              due_date: str | None, integration: str) -> Created:
    row = _file_row(conn, file_id)
    if row["status"] != "open":
        raise conflict(f"the file is {row['status']}; only open files move")
    _acting(conn, from_employee, "from_employee")
    _acting(conn, to_employee, "to_employee")
    if row["current_holder"] != from_employee:
        raise conflict(f"the file is held by {row['current_holder']!r}, not {from_employee!r}")
    if to_employee == from_employee:
        raise validation("'to_employee' must differ from 'from_employee'", "to_employee")
    movement_id, now = new_id("mov"), now_ms()
    conn.execute("INSERT INTO movements(movement_id, file_id, from_employee, to_employee, remarks, due_date,"
                 " created_at, recorded_by) VALUES(?,?,?,?,?,?,?,?)",
                 (movement_id, file_id, from_employee, to_employee, remarks, due_date, now, integration))
    conn.execute("UPDATE files SET current_holder=?, updated_at=? WHERE file_id=?", (to_employee, now, file_id))
    movement = _movement(conn.execute(_MOVE_SELECT + " WHERE m.movement_id=?", (movement_id,)).fetchone())
    emit(conn, "file.moved", "movement", movement, integration)
    return 201, movement


def list_movements(conn: sqlite3.Connection, file_id: str) -> dict[str, Any]:
    _file_row(conn, file_id)
    rows = conn.execute(_MOVE_SELECT + " WHERE m.file_id=? ORDER BY m.seq", (file_id,))
    return {"movements": [_movement(r) for r in rows]}


# --- receipts -----------------------------------------------------------------------------------

def _receipt(row: sqlite3.Row) -> dict[str, Any]:
    return {"receipt_id": row["receipt_id"], "diary_no": row["diary_no"], "subject": row["subject"],
            "from": row["sender"], "received_on": row["received_on"], "received_by": row["received_by"],
            "mode": row["mode"], "file_id": row["file_id"], "external_ref": _ref(row["external_ref"]),
            "created_at": row["created_at"], "recorded_by": row["recorded_by"]}


def _linkable_file(conn: sqlite3.Connection, file_id: str) -> None:
    """A receipt names its file in the body, so an unknown file is a bad field (400), not a missing URL (404)."""
    if conn.execute("SELECT 1 FROM files WHERE file_id=?", (file_id,)).fetchone() is None:
        raise validation(f"'file_id': unknown file {file_id!r}", "file_id")
    _writable_file(conn, file_id)


def create_receipt(conn: sqlite3.Connection, fields: dict[str, Any], integration: str) -> Created:
    if fields.get("received_by") is not None:
        _acting(conn, fields["received_by"], "received_by")
    if fields.get("file_id") is not None:
        _linkable_file(conn, fields["file_id"])
    year = current_year()
    diary_no = f"R/{year}/{_next_number(conn, f'receipt:{year}'):06d}"
    receipt_id = new_id("rcp")
    ref = fields.get("external_ref")
    conn.execute("INSERT INTO receipts(receipt_id, diary_no, subject, sender, received_on, received_by, mode,"
                 " file_id, external_ref, created_at, recorded_by) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
                 (receipt_id, diary_no, fields["subject"], fields["from"], fields["received_on"],
                  fields.get("received_by"), fields.get("mode"), fields.get("file_id"),
                  json.dumps(ref) if ref else None, now_ms(), integration))
    receipt = get_receipt(conn, receipt_id)
    emit(conn, "receipt.created", "receipt", receipt, integration)
    return 201, receipt


def get_receipt(conn: sqlite3.Connection, receipt_id: str) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM receipts WHERE receipt_id=?", (receipt_id,)).fetchone()
    if row is None:
        raise not_found("receipt")
    return _receipt(row)


def list_receipts(conn: sqlite3.Connection, limit: int, offset: int) -> dict[str, Any]:
    rows = conn.execute("SELECT * FROM receipts ORDER BY seq LIMIT ? OFFSET ?", (limit + 1, offset)).fetchall()
    return {"receipts": [_receipt(r) for r in rows[:limit]],
            "next_offset": offset + limit if len(rows) > limit else None}


def link_receipt(conn: sqlite3.Connection, receipt_id: str, file_id: str, integration: str) -> dict[str, Any]:
    row = conn.execute("SELECT file_id FROM receipts WHERE receipt_id=?", (receipt_id,)).fetchone()
    if row is None:
        raise not_found("receipt")
    if row["file_id"] == file_id:
        return get_receipt(conn, receipt_id)
    if row["file_id"] is not None:
        raise conflict("the receipt is already linked to another file")
    _linkable_file(conn, file_id)
    conn.execute("UPDATE receipts SET file_id=? WHERE receipt_id=?", (file_id, receipt_id))
    receipt = get_receipt(conn, receipt_id)
    emit(conn, "receipt.linked", "receipt", receipt, integration)
    return receipt
