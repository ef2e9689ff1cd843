"""The reference e-Office service, run as a real process and exercised over HTTP against docs/eoffice-api.md.

Nothing here imports the sandbox's code: the tests play the part of an integrator (the bridge) who
only has the contract, including verifying webhook signatures independently.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-0123456789abcdef"
BRIDGE_TOKEN = "bridge-token-0123456789abcdef"
SECRET = "whsec-0123456789abcdef-secret"
DEADLINE = 30.0
YEAR = dt.datetime.now(dt.timezone.utc).year
MAX_UPLOAD = 8 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def eventually(check: Callable[[], Awaitable[Any]], what: str, deadline: float = DEADLINE) -> Any:
    """Poll ``check`` until it returns something truthy; fail (naming ``what``) only after the deadline."""
    end = time.monotonic() + deadline
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Sandbox:
    """One sandbox process; ``restart`` keeps the data directory and port."""

    data_dir: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    async def start(self) -> None:
        args = [sys.executable, "-m", "appservices.eoffice.sandbox", "--data-dir", str(self.data_dir),
                "--port", str(self.port), "--token", TOKEN, "--integration", f"bridge:{BRIDGE_TOKEN}",
                "--file-prefix", "MOFA", "--max-upload-bytes", str(MAX_UPLOAD),
                "--webhook-retry-base", "0.05", "--webhook-retry-max", "0.5", *self.extra_args]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

        async def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"sandbox exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                async with aiohttp.ClientSession() as s, s.get(f"{self.url}/health") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(healthy, "the sandbox to answer /health")

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        end = time.monotonic() + DEADLINE
        while self.proc.poll() is None:
            if time.monotonic() > end:
                self.proc.kill()
                raise AssertionError("sandbox did not stop")
            await asyncio.sleep(0.05)
        if sig == signal.SIGTERM:
            assert self.proc.returncode == 0, self.log_path.read_text()

    async def restart(self, sig: int = signal.SIGTERM) -> None:
        await self.stop(sig)
        await self.start()


class Api:
    """A thin JSON client: ``await api.post(path, body)`` → ``(status, json)``."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str = TOKEN) -> None:
        self.session, self.base = session, base
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                   data: Any = None) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"headers": {**self.headers, **(headers or {})}}
        if data is not None:
            kwargs["data"] = data
        elif body is not None:
            kwargs["json"] = body
        async with self.session.request(method, self.base + path, **kwargs) as r:
            raw = await r.read()
            return r.status, (json.loads(raw) if raw else None)

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.call("GET", path)

    async def post(self, path: str, body: Any, **kw: Any) -> tuple[int, Any]:
        return await self.call("POST", path, body, **kw)

    async def patch(self, path: str, body: Any) -> tuple[int, Any]:
        return await self.call("PATCH", path, body)

    async def delete(self, path: str) -> tuple[int, Any]:
        return await self.call("DELETE", path)

    async def all_events(self, after: int = 0) -> list[dict[str, Any]]:
        status, page = await self.get(f"/events?after={after}&limit=1000")
        assert status == 200, page
        return page["events"]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    box = Sandbox(tmp_path / "data", tmp_path / "sandbox.log")
    await box.start()
    try:
        yield box
    finally:
        await box.stop(signal.SIGKILL if box.proc and box.proc.poll() is None else signal.SIGTERM)


@pytest.fixture
def api(sandbox: Sandbox, session: aiohttp.ClientSession) -> Api:
    return Api(session, sandbox.url)


def assert_error(status: int, body: Any, expected_status: int, code: str) -> None:
    assert status == expected_status, body
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


async def new_file(api: Api, subject: str = "Visa facilitation for delegates", **extra: Any) -> dict[str, Any]:
    status, file = await api.post("/files", {"subject": subject, "classification": "Confidential",
                                             "created_by": "E1001", **extra})
    assert status == 201, file
    return file


def ref_for(content: bytes, event_id: str = "$abc123:mofa.gov.example") -> dict[str, str]:
    return {"matrix_event_id": event_id, "room_id": "!room:mofa.gov.example",
            "origin_server": "mofa.gov.example", "content_sha256": hashlib.sha256(content).hexdigest()}


# --- auth and errors ------------------------------------------------------------------------------

async def test_requests_without_a_valid_token_are_refused(sandbox: Sandbox, session: aiohttp.ClientSession) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {TOKEN}"}):
        async with session.get(f"{sandbox.url}/files", headers=headers) as r:
            assert_error(r.status, await r.json(), 401, "UNAUTHORIZED")
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
    async with session.post(f"{sandbox.url}/files", json={"subject": "x"}) as r:
        assert_error(r.status, await r.json(), 401, "UNAUTHORIZED")
    async with session.get(f"{sandbox.url}/health") as r:
        assert r.status == 200


async def test_each_integration_is_recorded_in_audit_fields(sandbox: Sandbox, session: aiohttp.ClientSession) -> None:
    file = await new_file(Api(session, sandbox.url, BRIDGE_TOKEN))
    assert file["recorded_by"] == "bridge"
    assert (await new_file(Api(session, sandbox.url)))["recorded_by"] == "default"


async def test_bad_input_gets_400_with_the_error_shape(api: Api, session: aiohttp.ClientSession) -> None:
    async with session.post(api.base + "/files", data=b'{"subject": "x",', headers=api.headers) as r:
        assert_error(r.status, await r.json(), 400, "VALIDATION")
    status, body = await api.post("/files", ["not", "an", "object"])
    assert_error(status, body, 400, "VALIDATION")
    status, body = await api.post("/files", {"subject": "x", "classification": "Restricted", "created_by": "E1001"})
    assert_error(status, body, 400, "VALIDATION")
    assert body["error"]["details"]["field"] == "classification"
    status, body = await api.post("/files", {"classification": "Normal", "created_by": "E1001"})
    assert_error(status, body, 400, "VALIDATION")
    assert body["error"]["details"]["field"] == "subject"
    status, body = await api.post("/files", {"subject": "x", "classification": "Normal", "created_by": "E9999"})
    assert_error(status, body, 400, "VALIDATION")
    status, body = await api.post("/files", {"subject": "x", "classification": "Normal", "created_by": "E1001",
                                             "colour": "red"})
    assert_error(status, body, 400, "VALIDATION")
    file = await new_file(api)
    status, body = await api.post(f"/files/{file['file_id']}/notes", {"author": "E1001"})
    assert_error(status, body, 400, "VALIDATION")
    status, body = await api.post(f"/files/{file['file_id']}/notes",
                                  {"author": "E1001", "text": "x", "external_ref": {"room_id": "!r:x"}})
    assert_error(status, body, 400, "VALIDATION")
    status, body = await api.post(f"/files/{file['file_id']}/movements",
                                  {"from_employee": "E1001", "to_employee": "E1002", "due_date": "31/12/2026"})
    assert_error(status, body, 400, "VALIDATION")
    status, body = await api.post("/receipts", {"subject": "x", "from": "y"})
    assert_error(status, body, 400, "VALIDATION")
    status, body = await api.get("/events?after=soon")
    assert_error(status, body, 400, "VALIDATION")
    # Not found and inactive employees keep the same shape.
    assert_error(*(await api.get("/files/fil_doesnotexist")), 404, "NOT_FOUND")
    assert_error(*(await api.get("/no/such/endpoint")), 404, "NOT_FOUND")
    status, body = await api.post("/files", {"subject": "x", "classification": "Normal", "created_by": "E1005"})
    assert_error(status, body, 403, "FORBIDDEN")


# --- directory and files --------------------------------------------------------------------------

async def test_employee_directory(api: Api) -> None:
    status, body = await api.get("/employees")
    assert status == 200
    by_id = {e["employee_id"]: e for e in body["employees"]}
    assert set(by_id["E1001"]) == {"employee_id", "name", "designation", "section", "email", "active"}
    assert by_id["E1005"]["active"] is False
    status, one = await api.get("/employees/E1002")
    assert status == 200 and one == by_id["E1002"]
    status, active = await api.get("/employees?active=true")
    assert "E1005" not in {e["employee_id"] for e in active["employees"]}


async def test_file_create_get_list_and_status(api: Api) -> None:
    first = await new_file(api, "First")
    second = await new_file(api, "Second", current_holder="E1003")
    assert first["file_no"] == f"MOFA/{YEAR}/0001" and second["file_no"] == f"MOFA/{YEAR}/0002"
    assert first["file_id"] != first["file_no"] and "/" not in first["file_id"]
    assert first["status"] == "open" and first["current_holder"] == "E1001"
    assert second["current_holder"] == "E1003" and second["classification"] == "Confidential"
    status, got = await api.get(f"/files/{first['file_id']}")
    assert status == 200 and got == first
    status, listing = await api.get("/files")
    assert [f["file_id"] for f in listing["files"]] == [first["file_id"], second["file_id"]]
    status, by_no = await api.get(f"/files?file_no=MOFA/{YEAR}/0002")
    assert [f["file_id"] for f in by_no["files"]] == [second["file_id"]]
    status, parked = await api.patch(f"/files/{first['file_id']}", {"status": "parked"})
    assert status == 200 and parked["status"] == "parked"
    assert_error(*(await api.patch(f"/files/{first['file_id']}", {"status": "shredded"})), 400, "VALIDATION")
    status, page = await api.get("/files?status=parked")
    assert [f["file_id"] for f in page["files"]] == [first["file_id"]]


# --- notes ----------------------------------------------------------------------------------------

async def test_note_lifecycle_final_is_immutable(api: Api) -> None:
    file = await new_file(api)
    notes = f"/files/{file['file_id']}/notes"
    text = "Draft: propose a 30-day validity."
    ref = ref_for(text.encode())
    status, note = await api.post(notes, {"author": "E1001", "text": text, "status": "draft", "external_ref": ref})
    assert status == 201 and note["status"] == "draft" and note["version"] == 1
    assert note["external_ref"] == ref and note["classification"] == "Confidential"
    path = f"{notes}/{note['note_id']}"

    status, edited = await api.patch(path, {"edited_by": "E1001", "text": "Draft: propose a 60-day validity."})
    assert status == 200 and edited["version"] == 2 and edited["status"] == "draft"
    assert_error(*(await api.patch(path, {"edited_by": "E1002", "text": "hijack"})), 403, "FORBIDDEN")

    status, final = await api.patch(path, {"edited_by": "E1001", "status": "final"})
    assert status == 200 and final["status"] == "final" and final["finalised_at"] is not None
    assert final["text"] == "Draft: propose a 60-day validity."

    assert_error(*(await api.patch(path, {"edited_by": "E1001", "text": "changed my mind"})), 409, "NOTE_FINAL")
    assert_error(*(await api.patch(path, {"nonsense": True})), 409, "NOTE_FINAL")
    assert_error(*(await api.delete(path)), 409, "NOTE_FINAL")
    status, after = await api.get(path)
    assert after == final

    status, draft = await api.post(notes, {"author": "E1002", "text": "scratch"})
    assert status == 201 and draft["status"] == "draft"
    assert (await api.delete(f"{notes}/{draft['note_id']}"))[0] == 204
    assert_error(*(await api.get(f"{notes}/{draft['note_id']}")), 404, "NOT_FOUND")
    status, listing = await api.get(notes)
    assert [n["note_id"] for n in listing["notes"]] == [note["note_id"]]

    types = [e["type"] for e in await api.all_events() if e["resource_type"] == "note"]
    assert types == ["note.created", "note.updated", "note.finalised", "note.created", "note.deleted"]


async def test_note_external_ref_hash_must_match_text(api: Api) -> None:
    file = await new_file(api)
    status, body = await api.post(f"/files/{file['file_id']}/notes",
                                  {"author": "E1001", "text": "actual", "external_ref": ref_for(b"other")})
    assert_error(status, body, 400, "VALIDATION")
    assert body["error"]["details"]["field"] == "external_ref.content_sha256"


async def test_idempotent_note_creation(api: Api) -> None:
    file = await new_file(api)
    notes = f"/files/{file['file_id']}/notes"
    body = {"author": "E1001", "text": "Approved as proposed.", "status": "final"}
    key = {"Idempotency-Key": "bridge-$event1"}
    s1, n1 = await api.post(notes, body, headers=key)
    s2, n2 = await api.post(notes, body, headers=key)
    assert (s1, s2) == (201, 201) and n1 == n2
    assert_error(*(await api.post(notes, {**body, "text": "Rejected."}, headers=key)), 422, "IDEMPOTENCY_MISMATCH")
    # Concurrent retries of one request still make one note.
    key2 = {"Idempotency-Key": "bridge-$event2"}
    body2 = {"author": "E1001", "text": "Second note."}
    results = await asyncio.gather(*(api.post(notes, body2, headers=key2) for _ in range(8)))
    assert {r[0] for r in results} == {201} and len({r[1]["note_id"] for r in results}) == 1
    status, listing = await api.get(notes)
    assert [n["text"] for n in listing["notes"]] == ["Approved as proposed.", "Second note."]
    created = [e for e in await api.all_events() if e["type"] == "note.created"]
    assert len(created) == 2


# --- correspondence -------------------------------------------------------------------------------

def correspondence_form(content: bytes, ref: dict[str, str] | None = None, **meta: Any) -> aiohttp.FormData:
    metadata = {"subject": "Note verbale from Embassy", "from": "Embassy of Example", "to": "E1001",
                "date": "2026-05-04", "filename": "note-verbale.pdf", "content_type": "application/pdf", **meta}
    if ref is not None:
        metadata["external_ref"] = ref
    form = aiohttp.FormData()
    form.add_field("metadata", json.dumps(metadata), content_type="application/json")
    form.add_field("file", content, filename=metadata["filename"], content_type="application/octet-stream")
    return form


async def test_correspondence_upload_and_streamed_download(api: Api, session: aiohttp.ClientSession) -> None:
    file = await new_file(api)
    base = f"/files/{file['file_id']}/correspondence"
    content = os.urandom(5 * 1024 * 1024 + 4321)
    digest = hashlib.sha256(content).hexdigest()
    ref = ref_for(content, "$upload:mofa.gov.example")
    status, item = await api.call("POST", base, data=correspondence_form(content, ref),
                                  headers={"Idempotency-Key": "upload-1"})
    assert status == 201, item
    assert item["sha256"] == digest and item["size"] == len(content)
    assert item["external_ref"] == ref and item["filename"] == "note-verbale.pdf"

    hasher, received = hashlib.sha256(), bytearray()
    async with session.get(f"{api.base}{base}/{item['correspondence_id']}/content", headers=api.headers) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "application/pdf"
        assert r.headers["X-Content-SHA256"] == digest
        async for chunk in r.content.iter_chunked(64 * 1024):
            hasher.update(chunk)
            received += chunk
    assert hasher.hexdigest() == digest and bytes(received) == content

    # Replaying the same upload returns the same record; nothing new is stored.
    status, again = await api.call("POST", base, data=correspondence_form(content, ref),
                                   headers={"Idempotency-Key": "upload-1"})
    assert status == 201 and again == item
    status, listing = await api.get(base)
    assert [c["correspondence_id"] for c in listing["correspondence"]] == [item["correspondence_id"]]


async def test_correspondence_rejections(api: Api) -> None:
    file = await new_file(api)
    base = f"/files/{file['file_id']}/correspondence"
    status, body = await api.call("POST", base, data=correspondence_form(b"x" * (MAX_UPLOAD + 1)))
    assert_error(status, body, 413, "TOO_LARGE")
    status, body = await api.call("POST", base, data=correspondence_form(b"hello", ref_for(b"other")))
    assert_error(status, body, 400, "VALIDATION")
    status, body = await api.call("POST", base, data=correspondence_form(b"hello", filename="../../etc/passwd"))
    assert_error(status, body, 400, "VALIDATION")
    status, body = await api.post(base, {"subject": "not multipart"})
    assert_error(status, body, 400, "VALIDATION")
    status, listing = await api.get(base)
    assert listing["correspondence"] == []


# --- movements, receipts, feed --------------------------------------------------------------------

async def test_movement_changes_holder_and_is_in_the_feed(api: Api) -> None:
    file = await new_file(api)
    moves = f"/files/{file['file_id']}/movements"
    assert_error(*(await api.post(moves, {"from_employee": "E1002", "to_employee": "E1003"})), 409, "CONFLICT")
    status, move = await api.post(moves, {"from_employee": "E1001", "to_employee": "E1002",
                                          "remarks": "For comments", "due_date": "2026-06-01"})
    assert status == 201 and move["to_employee"] == "E1002" and move["due_date"] == "2026-06-01"
    assert (await api.get(f"/files/{file['file_id']}"))[1]["current_holder"] == "E1002"
    status, listing = await api.get(moves)
    assert [m["movement_id"] for m in listing["movements"]] == [move["movement_id"]]
    moved = [e for e in await api.all_events() if e["type"] == "file.moved"]
    assert len(moved) == 1 and moved[0]["resource"] == move


async def test_receipts_get_diary_numbers(api: Api) -> None:
    file = await new_file(api)
    body = {"subject": "Request for consular access", "from": "High Commission of Example",
            "received_on": "2026-05-02", "received_by": "E1004", "mode": "post"}
    s1, r1 = await api.post("/receipts", body)
    s2, r2 = await api.post("/receipts", {**body, "file_id": file["file_id"]})
    assert (s1, s2) == (201, 201)
    assert r1["diary_no"] == f"R/{YEAR}/000001" and r2["diary_no"] == f"R/{YEAR}/000002"
    assert r1["file_id"] is None and r2["file_id"] == file["file_id"]
    status, linked = await api.patch(f"/receipts/{r1['receipt_id']}", {"file_id": file["file_id"]})
    assert status == 200 and linked["file_id"] == file["file_id"]
    assert_error(*(await api.post("/receipts", {**body, "file_id": "fil_nope"})), 400, "VALIDATION")
    status, listing = await api.get("/receipts")
    assert [r["diary_no"] for r in listing["receipts"]] == [r1["diary_no"], r2["diary_no"]]


async def test_event_feed_is_ordered_and_pages_by_cursor(api: Api) -> None:
    file = await new_file(api)
    fid = file["file_id"]
    await api.post(f"/files/{fid}/notes", {"author": "E1001", "text": "n1"})
    await api.post(f"/files/{fid}/movements", {"from_employee": "E1001", "to_employee": "E1003"})
    await api.post("/receipts", {"subject": "r", "from": "x", "received_on": "2026-05-01", "file_id": fid})
    await api.patch(f"/files/{fid}", {"status": "closed"})
    expected = ["file.created", "note.created", "file.moved", "receipt.created", "file.status_changed"]

    seen: list[dict[str, Any]] = []
    after = 0
    while True:
        status, page = await api.get(f"/events?after={after}&limit=2")
        assert status == 200
        seen += page["events"]
        assert page["next_cursor"] >= after
        after = page["next_cursor"]
        if not page["has_more"]:
            break
    assert [e["type"] for e in seen] == expected
    cursors = [e["cursor"] for e in seen]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
    assert all({"event_id", "cursor", "type", "timestamp", "resource", "resource_type"} <= set(e) for e in seen)
    status, empty = await api.get(f"/events?after={after}")
    assert empty["events"] == [] and empty["next_cursor"] == after and empty["has_more"] is False
    # A closed file takes no more notes.
    assert_error(*(await api.post(f"/files/{fid}/notes", {"author": "E1001", "text": "late"})), 409, "CONFLICT")

    # Long poll: a waiting reader is released by the next change.
    waiter = asyncio.create_task(api.get(f"/events?after={after}&wait=20"))
    await asyncio.sleep(0)
    await new_file(api)
    status, page = await waiter
    assert [e["type"] for e in page["events"]] == ["file.created"]


# --- webhooks -------------------------------------------------------------------------------------

@dataclass
class Receiver:
    """A bridge-like webhook endpoint that verifies signatures itself and can be told to fail."""

    failures_left: int = 0
    always_fail: bool = False
    attempts: list[str] = field(default_factory=list)  # event ids, every attempt
    accepted: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        ts = request.headers["X-EOffice-Timestamp"]
        expected = "sha256=" + hmac.new(SECRET.encode(), ts.encode() + b"." + raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers["X-EOffice-Signature"]) \
                or abs(time.time() - int(ts)) > 300:
            self.bad_signatures += 1
            return web.Response(status=401)
        event = json.loads(raw)
        assert event["event_id"] == request.headers["X-EOffice-Event-Id"]
        self.attempts.append(event["event_id"])
        if self.always_fail or self.failures_left > 0:
            self.failures_left -= 1
            return web.Response(status=500)
        self.accepted.append(event)
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    rec.url = f"http://127.0.0.1:{port}/hook"
    yield rec
    await runner.cleanup()


async def subscribe(api: Api, receiver: Receiver, events: list[str] | None = None) -> dict[str, Any]:
    status, hook = await api.post("/webhooks", {"url": receiver.url, "secret": SECRET, "events": events or ["*"]})
    assert status == 201, hook
    assert "secret" not in hook
    return hook


async def test_webhook_deliveries_are_signed_retried_and_in_order(api: Api, receiver: Receiver) -> None:
    await subscribe(api, receiver)
    receiver.failures_left = 4
    file = await new_file(api)
    fid = file["file_id"]
    for i in range(3):
        await api.post(f"/files/{fid}/notes", {"author": "E1001", "text": f"note {i}"})
    await api.post(f"/files/{fid}/movements", {"from_employee": "E1001", "to_employee": "E1002"})
    feed = await api.all_events()
    assert len(feed) == 5

    await eventually(lambda: _true(len(receiver.accepted) >= len(feed)), "all webhook deliveries")
    assert [e["event_id"] for e in receiver.accepted] == [e["event_id"] for e in feed]
    assert [e["cursor"] for e in receiver.accepted] == [e["cursor"] for e in feed]
    assert receiver.accepted == feed  # same representation as the polling feed
    # Every failure hit the head of the queue: the first event was retried, none overtook it.
    assert receiver.attempts[:5] == [feed[0]["event_id"]] * 5
    assert receiver.bad_signatures == 0
    await asyncio.sleep(0.3)  # nothing further trickles in after success (no duplicates)
    assert len(receiver.accepted) == len(feed)


async def test_webhook_event_filter(api: Api, receiver: Receiver) -> None:
    await subscribe(api, receiver, ["file.moved"])
    file = await new_file(api)
    await api.post(f"/files/{file['file_id']}/notes", {"author": "E1001", "text": "ignored by the filter"})
    await api.post(f"/files/{file['file_id']}/movements", {"from_employee": "E1001", "to_employee": "E1002"})
    await eventually(lambda: _true(receiver.accepted), "the file.moved delivery")
    assert [e["type"] for e in receiver.accepted] == ["file.moved"]
    assert_error(*(await api.post("/webhooks", {"url": receiver.url, "secret": SECRET, "events": ["file.burnt"]})),
                 400, "VALIDATION")


async def test_restart_keeps_records_and_pending_deliveries(sandbox: Sandbox, api: Api, receiver: Receiver) -> None:
    receiver.always_fail = True
    hook = await subscribe(api, receiver)
    file = await new_file(api)
    fid = file["file_id"]
    status, note = await api.post(f"/files/{fid}/notes", {"author": "E1001", "text": "kept", "status": "final"},
                                  headers={"Idempotency-Key": "persist-1"})
    assert status == 201

    async def retried() -> bool:
        _, h = await api.get(f"/webhooks/{hook['webhook_id']}")
        return h["pending_deliveries"] == 2 and (h["head_of_queue"] or {}).get("attempts", 0) >= 2

    await eventually(retried, "failed delivery attempts")
    await sandbox.restart(signal.SIGKILL)  # a crash, not a polite stop
    receiver.always_fail = False

    await eventually(lambda: _true(len(receiver.accepted) == 2), "pending deliveries after the restart")
    assert [e["type"] for e in receiver.accepted] == ["file.created", "note.created"]
    assert (await api.get(f"/files/{fid}"))[1] == file
    assert (await api.get(f"/files/{fid}/notes/{note['note_id']}"))[1] == note
    # Idempotency keys survived too: the retry after the crash returns the original note.
    status, again = await api.post(f"/files/{fid}/notes", {"author": "E1001", "text": "kept", "status": "final"},
                                   headers={"Idempotency-Key": "persist-1"})
    assert status == 201 and again == note
    # Numbering continues where it left off, and the final note is still final.
    assert (await new_file(api))["file_no"] == f"MOFA/{YEAR}/0002"
    assert_error(*(await api.patch(f"/files/{fid}/notes/{note['note_id']}", {"edited_by": "E1001", "text": "x"})),
                 409, "NOTE_FINAL")

    await sandbox.restart()  # a clean stop and start keeps everything as well
    assert (await api.get(f"/files/{fid}/notes"))[1]["notes"] == [note]
    await eventually(lambda: _pending_zero(api, hook["webhook_id"]), "the queue to drain")


async def _pending_zero(api: Api, webhook_id: str) -> bool:
    _, h = await api.get(f"/webhooks/{webhook_id}")
    return bool(h["pending_deliveries"] == 0)


async def _true(value: Any) -> Any:
    return value


def test_documented_signature_example_is_correct() -> None:
    """The worked example in the contract must verify, or integrators will chase a wrong algorithm."""
    doc = (ROOT / "docs" / "eoffice-api.md").read_text()
    body = next(line for line in doc.splitlines() if line.startswith('{"cursor":42,')).encode()
    assert f"(shortened) {len(body)}-byte body" in doc
    mac = hmac.new(b"whsec-example-0123456789abcdef", b"1778313600." + body, hashlib.sha256).hexdigest()
    assert f"X-EOffice-Signature: sha256={mac}" in doc
    assert hashlib.sha256(b"Approved as proposed.").hexdigest() in doc
