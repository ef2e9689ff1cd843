"""Handlers for the directory and the file records: employees, files, notes, movements and receipts.

Handlers only parse and validate; the store does the work inside one transaction.
"""

from __future__ import annotations

import hashlib

from aiohttp import web

from . import store
from . import validation as v
from .errors import validation
from .plumbing import canonical, idempotency_key, integration, json_body, json_response, outcome_response, services

routes = web.RouteTableDef()
_MAX_PAGE = 500


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_ref_hash(ref: dict[str, object] | None, text: str) -> None:
    """``external_ref.content_sha256`` must be the hash of what is filed: proof the record matches Matrix."""
    if ref is not None and ref["content_sha256"] != _sha256_text(text):
        raise validation("'external_ref.content_sha256' is not the SHA-256 of the UTF-8 note text",
                         "external_ref.content_sha256")


# --- employees ----------------------------------------------------------------------------------

@routes.get("/api/v1/employees")
async def list_employees(request: web.Request) -> web.Response:
    q = request.query
    active = None
    if "active" in q:
        if q["active"] not in ("true", "false"):
            raise validation("query parameter 'active' must be true or false", "active")
        active = q["active"] == "true"
    return json_response(await services(request).db.run(store.list_employees, q.get("section"), active))


@routes.get("/api/v1/employees/{employee_id}")
async def get_employee(request: web.Request) -> web.Response:
    return json_response(await services(request).db.run(store.get_employee, request.match_info["employee_id"]))


# --- files --------------------------------------------------------------------------------------

@routes.post("/api/v1/files")
async def create_file(request: web.Request) -> web.Response:
    body = await json_body(request)
    v.reject_unknown(body, {"subject", "classification", "created_by", "current_holder"})
    subject = v.string(body, "subject", max_len=v.MAX_SHORT)
    classification = v.choice(body, "classification", v.CLASSIFICATIONS)
    created_by = v.string(body, "created_by")
    holder = v.string(body, "current_holder", required=False)
    svc = services(request)
    outcome = await svc.db.write_idempotent(
        idempotency_key(request, canonical(body)), store.create_file, svc.config.file_prefix,
        subject, classification, created_by, holder, integration(request))
    return outcome_response(outcome)


@routes.get("/api/v1/files")
async def list_files(request: web.Request) -> web.Response:
    q = request.query
    filters = {k: q[k] for k in ("status", "current_holder", "classification", "file_no") if k in q}
    limit = v.int_param(q, "limit", 100, 1, _MAX_PAGE)
    offset = v.int_param(q, "offset", 0, 0, 2**31)
    return json_response(await services(request).db.run(store.list_files, filters, limit, offset))


@routes.get("/api/v1/files/{file_id}")
async def get_file(request: web.Request) -> web.Response:
    return json_response(await services(request).db.run(store.get_file, request.match_info["file_id"]))


@routes.patch("/api/v1/files/{file_id}")
async def patch_file(request: web.Request) -> web.Response:
    body = await json_body(request)
    v.reject_unknown(body, {"status"})
    status = v.choice(body, "status", v.FILE_STATUSES)
    file = await services(request).db.write(store.set_file_status, request.match_info["file_id"], status,
                                            integration(request))
    return json_response(file)


# --- notes --------------------------------------------------------------------------------------

@routes.post("/api/v1/files/{file_id}/notes")
async def create_note(request: web.Request) -> web.Response:
    body = await json_body(request)
    v.reject_unknown(body, {"author", "text", "status", "external_ref"})
    author = v.string(body, "author")
    text = v.string(body, "text", max_len=v.MAX_TEXT)
    status = v.choice(body, "status", v.NOTE_STATUSES, required=False, default="draft")
    ref = v.external_ref(body)
    assert text is not None
    _check_ref_hash(ref, text)
    svc = services(request)
    outcome = await svc.db.write_idempotent(
        idempotency_key(request, canonical(body)), store.create_note, request.match_info["file_id"],
        author, text, status, ref, integration(request))
    return outcome_response(outcome)


@routes.get("/api/v1/files/{file_id}/notes")
async def list_notes(request: web.Request) -> web.Response:
    return json_response(await services(request).db.run(store.list_notes, request.match_info["file_id"]))


@routes.get("/api/v1/files/{file_id}/notes/{note_id}")
async def get_note(request: web.Request) -> web.Response:
    m = request.match_info
    return json_response(await services(request).db.run(store.get_note, m["file_id"], m["note_id"]))


@routes.patch("/api/v1/files/{file_id}/notes/{note_id}")
async def patch_note(request: web.Request) -> web.Response:
    m, svc = request.match_info, services(request)
    # A final note answers 409 NOTE_FINAL whatever the body says: immutability is the first rule.
    await svc.db.run(store.check_note_mutable, m["file_id"], m["note_id"])
    body = await json_body(request)
    v.reject_unknown(body, {"edited_by", "text", "status", "external_ref"})
    edited_by = v.string(body, "edited_by")
    text = v.string(body, "text", required=False, max_len=v.MAX_TEXT)
    status = v.choice(body, "status", ("final",), required=False)
    ref = v.external_ref(body)
    if text is None and status is None:
        raise validation("nothing to change: give 'text' and/or 'status': 'final'")
    if ref is not None:
        if text is None:
            raise validation("'external_ref' may only accompany a new 'text'", "external_ref")
        _check_ref_hash(ref, text)
    note = await svc.db.write(store.update_note, m["file_id"], m["note_id"], edited_by, text, status, ref,
                              integration(request))
    return json_response(note)


@routes.delete("/api/v1/files/{file_id}/notes/{note_id}")
async def delete_note(request: web.Request) -> web.Response:
    m = request.match_info
    await services(request).db.write(store.delete_note, m["file_id"], m["note_id"], integration(request))
    return web.Response(status=204)


# --- movements ----------------------------------------------------------------------------------

@routes.post("/api/v1/files/{file_id}/movements")
async def move_file(request: web.Request) -> web.Response:
    body = await json_body(request)
    v.reject_unknown(body, {"from_employee", "to_employee", "remarks", "due_date"})
    from_employee = v.string(body, "from_employee")
    to_employee = v.string(body, "to_employee")
    remarks = v.string(body, "remarks", required=False, max_len=v.MAX_TEXT)
    due_date = v.date(body, "due_date", required=False)
    svc = services(request)
    outcome = await svc.db.write_idempotent(
        idempotency_key(request, canonical(body)), store.move_file, request.match_info["file_id"],
        from_employee, to_employee, remarks, due_date, integration(request))
    return outcome_response(outcome)


@routes.get("/api/v1/files/{file_id}/movements")
async def list_movements(request: web.Request) -> web.Response:
    return json_response(await services(request).db.run(store.list_movements, request.match_info["file_id"]))


# --- receipts -----------------------------------------------------------------------------------

@routes.post("/api/v1/receipts")
async def create_receipt(request: web.Request) -> web.Response:
    body = await json_body(request)
    v.reject_unknown(body, {"subject", "from", "received_on", "received_by", "mode", "file_id", "external_ref"})
    fields = {
        "subject": v.string(body, "subject"),
        "from": v.string(body, "from"),
        "received_on": v.date(body, "received_on"),
        "received_by": v.string(body, "received_by", required=False),
        "mode": v.string(body, "mode", required=False),
        "file_id": v.string(body, "file_id", required=False),
        "external_ref": v.external_ref(body),
    }
    svc = services(request)
    outcome = await svc.db.write_idempotent(
        idempotency_key(request, canonical(body)), store.create_receipt, fields, integration(request))
    return outcome_response(outcome)


@routes.get("/api/v1/receipts")
async def list_receipts(request: web.Request) -> web.Response:
    q = request.query
    limit = v.int_param(q, "limit", 100, 1, _MAX_PAGE)
    offset = v.int_param(q, "offset", 0, 0, 2**31)
    return json_response(await services(request).db.run(store.list_receipts, limit, offset))


@routes.get("/api/v1/receipts/{receipt_id}")
async def get_receipt(request: web.Request) -> web.Response:
    return json_response(await services(request).db.run(store.get_receipt, request.match_info["receipt_id"]))


@routes.patch("/api/v1/receipts/{receipt_id}")
async def link_receipt(request: web.Request) -> web.Response:
    body = await json_body(request)
    v.reject_unknown(body, {"file_id"})
    file_id = v.string(body, "file_id")
    receipt = await services(request).db.write(store.link_receipt, request.match_info["receipt_id"], file_id,
                                               integration(request))
    return json_response(receipt)
