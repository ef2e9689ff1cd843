"""What the bridge does with what it hears.

From rooms (appservice transactions): in a room linked to a file, an officer's message becomes a
draft note; the author's ✅ reaction (or ``!eoffice final`` in reply) makes it final; an edit or a
redaction of a note goes to e-Office, which refuses it for a final note (the refusal is posted in the
room); a file or image becomes correspondence — decrypted first in an encrypted room, with its SHA-256.
``!eoffice link FILE-NO`` links a room, by a member with enough power. Every note and document carries
the Matrix event ID, room ID, origin server and content hash, so an auditor can tie the file record
to the room's signed log.

From e-Office (signed webhooks, and the event feed polled as a catch-up): a new file gets a room named
"FILE-NO: subject"; a movement invites the next holder and posts a notice; a note written in e-Office
is posted by the officer's puppet.

Towards e-Office everything goes through the persisted outbox, in order, with idempotency keys: a
retried transaction never files a note twice, and while e-Office is down items wait and go later.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any
from urllib.parse import quote

from e2ee.attachments import decrypt_attachment

from .config import BridgeConfig
from .eoffice import EOffice, EOfficeRefused, EOfficeUnavailable
from .matrix import C, CryptoDevice, Matrix, MatrixCallError
from .store import BridgeStore

logger = logging.getLogger(__name__)

FINAL_REACTIONS = ("✅", "✔️", "✔")
FILE_MSGTYPES = ("m.file", "m.image", "m.video", "m.audio")
MAX_BACKOFF_S = 60.0


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Bridge:
    def __init__(self, config: BridgeConfig, store: BridgeStore, matrix: Matrix, eoffice: EOffice) -> None:
        self.config = config
        self.store = store
        self.matrix = matrix
        self.eoffice = eoffice
        self.bot_device: CryptoDevice | None = None
        self._devices: dict[str, CryptoDevice] = {}
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one transaction / e-Office event at a time keeps the order
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.bot_device = await CryptoDevice.open(self.matrix, self.store, self.config.bot, self.config.data_dir, self.config.pickle_key)
        self._devices[self.config.bot] = self.bot_device
        self._tasks.append(asyncio.create_task(self._deliver_loop()))
        self._tasks.append(asyncio.create_task(self._poll_loop()))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()

    async def device_for(self, user_id: str) -> CryptoDevice:
        dev = self._devices.get(user_id)
        if dev is None:
            dev = await CryptoDevice.open(self.matrix, self.store, user_id, self.config.data_dir, self.config.pickle_key)
            self._devices[user_id] = dev
        return dev

    # --- sending into rooms -------------------------------------------------------------------

    async def send(self, room_id: str, content: dict[str, Any], as_user: str | None = None) -> str:
        sender = as_user or self.config.bot
        if await self.matrix.state(room_id, "m.room.encryption") is not None:
            return await (await self.device_for(sender)).send(room_id, "m.room.message", content)
        sent = await self.matrix.call("PUT", f"{C}/rooms/{quote(room_id)}/send/m.room.message/{time.time_ns()}",
                                      content, as_user=sender)
        return sent["event_id"]

    async def notice(self, room_id: str, text: str) -> None:
        try:
            await self.send(room_id, {"msgtype": "m.notice", "body": text})
        except MatrixCallError as e:
            logger.warning("could not post a notice in %s: %s", room_id, e)

    # --- appservice transactions ----------------------------------------------------------------

    async def on_transaction(self, txn_id: str, body: dict[str, Any]) -> None:
        async with self._lock:
            if self.store.txn_seen(txn_id):
                return
            await self._crypto_housekeeping(body)
            items: list[tuple[str, str, dict[str, Any]]] = []
            notes: list[tuple[str, str, str, str]] = []
            for event in body.get("events") or []:
                if isinstance(event, dict):
                    await self._on_event(event, items, notes)
            for event in self.store.parked():  # room keys may have arrived with this transaction
                decrypted = self.bot_device.decrypt(event) if self.bot_device else None
                if decrypted is not None:
                    self.store.unpark(event["event_id"])
                    await self._on_plain_event(event, decrypted, items, notes)
            self.store.record(txn_id=txn_id, items=items, notes=notes)
        if items:
            self._wake.set()

    async def _crypto_housekeeping(self, body: dict[str, Any]) -> None:
        for msg in body.get("de.sorunome.msc2409.to_device") or body.get("org.matrix.msc2409.to_device") or []:
            if not isinstance(msg, dict):
                continue
            dev = self._devices.get(str(msg.get("to_user_id")))
            if dev is not None and msg.get("to_device_id") == dev.device_id:
                dev.receive_to_device(msg)
        counts = body.get("org.matrix.msc3202.device_one_time_keys_count") or {}
        fallback = body.get("org.matrix.msc3202.device_unused_fallback_key_types") or {}
        for user_id, dev in self._devices.items():
            c = (counts.get(user_id) or {}).get(dev.device_id)
            if c is not None:
                try:
                    await dev.upload_keys(c, (fallback.get(user_id) or {}).get(dev.device_id))
                except MatrixCallError as e:
                    logger.warning("key upload for %s failed: %s", user_id, e)

    async def _on_event(self, event: dict[str, Any], items: list[Any], notes: list[Any]) -> None:
        etype, room_id, sender = event.get("type"), str(event.get("room_id")), str(event.get("sender"))
        if etype == "m.room.member" and event.get("state_key") == self.config.bot and (event.get("content") or {}).get("membership") == "invite":
            try:
                await self.matrix.call("POST", f"{C}/join/{quote(room_id)}", {})
            except MatrixCallError as e:
                logger.warning("could not join %s: %s", room_id, e)
            return
        if self.config.is_bridge_user(sender):
            return
        if etype == self.config.file_prefix and event.get("state_key") == "":
            content = event.get("content") or {}
            if isinstance(content.get("file_id"), str) and isinstance(content.get("file_no"), str):
                self.store.link(room_id, content["file_id"], content["file_no"])
            return
        if etype == "m.room.encrypted":
            decrypted = self.bot_device.decrypt(event) if self.bot_device else None
            if decrypted is None:
                self.store.park(event)  # its room key is still on its way
                return
            await self._on_plain_event(event, decrypted, items, notes)
            return
        await self._on_plain_event(event, event, items, notes)

    async def _on_plain_event(self, original: dict[str, Any], event: dict[str, Any], items: list[Any], notes: list[Any]) -> None:
        """``original`` is the event as it is in the room's log (ciphertext in an encrypted room);
        ``event`` is what it says."""
        etype, content = event.get("type"), event.get("content") or {}
        room_id, sender, event_id = str(original["room_id"]), str(original["sender"]), str(original["event_id"])
        if etype == "m.room.message" and isinstance(content.get("body"), str) and content["body"].startswith("!eoffice link "):
            await self._link(room_id, sender, content["body"].split(None, 2)[2].strip())
            return
        linked = self.store.file_of(room_id)
        if linked is None:
            return
        file_id, _ = linked
        author = self.config.employee_of(sender)
        origin = sender.split(":", 1)[1]
        relates = content.get("m.relates_to") or {}
        if etype == "m.reaction":
            target = relates.get("event_id")
            if relates.get("rel_type") == "m.annotation" and relates.get("key") in FINAL_REACTIONS and isinstance(target, str):
                self._finalise(target, sender, items, room_id)
            return
        if etype == "m.room.redaction":
            target = original.get("redacts") or content.get("redacts")
            if isinstance(target, str) and self.store.note(target) is not None:
                items.append(("note_delete", f"delete:{target}", {"event_id": target, "room_id": room_id}))
            return
        if etype != "m.room.message":
            return
        if author is None:
            await self.notice(room_id, f"{sender} is not in the e-Office directory: their messages are not filed.")
            return
        ref = {"matrix_event_id": event_id, "room_id": room_id, "origin_server": origin}
        if relates.get("rel_type") == "m.replace" and isinstance(relates.get("event_id"), str):
            new = content.get("m.new_content") or {}
            text = new.get("body") if isinstance(new.get("body"), str) else None
            if text is not None and self.store.note(relates["event_id"]) is not None:
                items.append(("note_edit", f"edit:{event_id}", {"event_id": relates["event_id"], "room_id": room_id, "text": text,
                                                               "author": author, "external_ref": {**ref, "content_sha256": sha256_text(text)}}))
            return
        body = content.get("body")
        if isinstance(body, str) and body.strip() == "!eoffice final":
            target = ((relates.get("m.in_reply_to") or {}).get("event_id"))
            if isinstance(target, str):
                self._finalise(target, sender, items, room_id)
            return
        msgtype = content.get("msgtype")
        if msgtype in FILE_MSGTYPES:
            items.append(("correspondence", f"corr:{event_id}", {
                "file_id": file_id, "room_id": room_id, "event_id": event_id, "author": author, "ref": ref,
                "url": content.get("url"), "file": content.get("file"),
                "filename": content.get("filename") or content.get("body") or "document",
                "content_type": (content.get("info") or {}).get("mimetype") or "application/octet-stream"}))
            return
        if msgtype in ("m.text", "m.emote") and isinstance(body, str) and body.strip():
            items.append(("note_create", f"note:{event_id}", {
                "file_id": file_id, "event_id": event_id, "room_id": room_id,
                "body": {"author": author, "text": body, "status": "draft",
                         "external_ref": {**ref, "content_sha256": sha256_text(body)}}}))
            notes.append((event_id, room_id, file_id, author))

    def _finalise(self, target: str, sender: str, items: list[Any], room_id: str) -> None:
        note = self.store.note(target)
        pending_author = next((n for n in items if n[0] == "note_create" and n[2]["event_id"] == target), None)
        author = note[3] if note else (pending_author[2]["body"]["author"] if pending_author else None)
        if author is None or self.config.employee_of(sender) != author:
            return  # only its author finalises a note
        items.append(("note_final", f"final:{target}", {"event_id": target, "room_id": room_id, "author": author}))

    async def _link(self, room_id: str, sender: str, file_no: str) -> None:
        levels = await self.matrix.state(room_id, "m.room.power_levels") or {}
        power = (levels.get("users") or {}).get(sender, levels.get("users_default", 0))
        state = await self.matrix.call("GET", f"{C}/rooms/{quote(room_id)}/state")
        create = next((e for e in state if e.get("type") == "m.room.create"), {})
        content = create.get("content") or {}
        if content.get("room_version") == "12" and sender in [create.get("sender"), *(content.get("additional_creators") or [])]:
            power = float("inf")  # room version 12: creators outrank every power level
        if power < self.config.link_power_level:
            await self.notice(room_id, f"Only members with power level {self.config.link_power_level} or more can link this room to a file.")
            return
        try:
            found = await self.eoffice.find_file(file_no)
        except (EOfficeUnavailable, EOfficeRefused) as e:
            await self.notice(room_id, f"e-Office could not be asked about {file_no}: {e}")
            return
        if found is None:
            await self.notice(room_id, f"There is no e-Office file {file_no}.")
            return
        refusal = await self._classification_refusal(room_id, found)
        if refusal is not None:
            await self.notice(room_id, refusal)
            return
        self.store.link(room_id, found["file_id"], found["file_no"])
        try:
            await self.matrix.call("PUT", f"{C}/rooms/{quote(room_id)}/state/{quote(self.config.file_prefix)}/",
                                   {"file_id": found["file_id"], "file_no": found["file_no"]})
        except MatrixCallError as e:
            if e.status != 403:
                raise
            await self.notice(room_id, f"The bridge has linked this room to {found['file_no']}, but cannot record the link in the room's "
                                       f"state: give {self.config.bot} power level {self.config.link_power_level} so every member sees it.")
        await self.notice(room_id, f"This room is now linked to e-Office file {found['file_no']}: {found.get('subject', '')}. "
                                   "Messages become draft notes; react with ✅ to make your note final.")

    def _local_only(self, file: dict[str, Any]) -> bool:
        return str(file.get("classification") or "") in self.config.local_only_classifications

    async def _classification_refusal(self, room_id: str, file: dict[str, Any]) -> str | None:
        """Why this room may not carry this file, by the file's classification, or None. A classified
        file's notes must not travel in clear text, and the most sensitive ones not leave the ministry's
        own server (federated members' servers would hold copies)."""
        classification = str(file.get("classification") or "")
        if classification in self.config.encrypted_classifications \
                and await self.matrix.state(room_id, "m.room.encryption") is None:
            return (f"{file['file_no']} is {classification}: it can only be linked to an encrypted room. "
                    "Turn on encryption for this room (or create an encrypted one) and link again.")
        if classification in self.config.local_only_classifications:
            members = await self.matrix.call("GET", f"{C}/rooms/{quote(room_id)}/members")
            outside = sorted({e["state_key"] for e in members.get("chunk", [])
                              if (e.get("content") or {}).get("membership") in ("join", "invite", "knock")
                              and not e["state_key"].endswith(":" + self.config.server_name)})
            if outside:
                return (f"{file['file_no']} is {classification}: it can only be linked to a room whose members all belong "
                        f"to {self.config.server_name}; this room has {', '.join(outside)}.")
        return None

    # --- delivery to e-Office --------------------------------------------------------------------

    async def _deliver_loop(self) -> None:
        backoff = 1.0
        while True:
            item = self.store.next_item()
            if item is None:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), 30)
                except asyncio.TimeoutError:
                    pass
                continue
            seq, kind, idem, payload = item
            try:
                await self._deliver(kind, idem, payload)
                self.store.done(seq)
                backoff = 1.0
            except EOfficeUnavailable as e:
                self.store.failed(seq, str(e))
                await asyncio.sleep(backoff)  # the same item again, nothing behind it overtakes it
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            except EOfficeRefused as e:
                self.store.done(seq)
                await self.notice(payload["room_id"], self._refusal(kind, e))
            except Exception:  # noqa: BLE001 - a bug must not stop the queue for good
                logger.exception("delivering %s failed", kind)
                self.store.failed(seq, "internal error")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    @staticmethod
    def _refusal(kind: str, e: EOfficeRefused) -> str:
        if e.code == "NOTE_FINAL":
            return "e-Office refused the change: that note is final and can no longer be edited or removed."
        return f"e-Office refused a {kind.replace('_', ' ')}: {e.code} {e.message}"

    async def _deliver(self, kind: str, idem: str, p: dict[str, Any]) -> None:
        if kind == "note_create":
            note = await self.eoffice.add_note(p["file_id"], p["body"], idem)
            self.store.set_note_id(p["event_id"], note["note_id"])
            return
        if kind in ("note_final", "note_edit", "note_delete"):
            rec = self.store.note(p["event_id"])
            if rec is None or rec[2] is None:
                return  # never filed (e.g. refused): nothing to change
            _, file_id, note_id, author = rec
            if kind == "note_final":
                await self.eoffice.patch_note(file_id, note_id, {"edited_by": author, "status": "final"})
            elif kind == "note_edit":
                await self.eoffice.patch_note(file_id, note_id, {"edited_by": p["author"], "text": p["text"], "external_ref": p["external_ref"]})
            else:
                await self.eoffice.delete_note(file_id, note_id)
            return
        if kind == "correspondence":
            data = await self._fetch_attachment(p)
            meta = {"subject": p["filename"], "from": p["author"], "to": p["author"], "date": time.strftime("%Y-%m-%d"),
                    "filename": _plain_name(p["filename"]), "content_type": p["content_type"],
                    "external_ref": {**p["ref"], "content_sha256": hashlib.sha256(data).hexdigest()}}
            await self.eoffice.add_correspondence(p["file_id"], meta, data, _plain_name(p["filename"]), p["content_type"], idem)

    async def _fetch_attachment(self, p: dict[str, Any]) -> bytes:
        try:
            if isinstance(p.get("file"), dict):  # an encrypted attachment: the key came in the (decrypted) event
                return decrypt_attachment(await self.matrix.download(p["file"]["url"]), p["file"])
            return await self.matrix.download(str(p["url"]))
        except MatrixCallError as e:
            raise EOfficeRefused(e.status, "MATRIX_DOWNLOAD", f"the attachment could not be fetched ({e.errcode})") from None

    # --- from e-Office -----------------------------------------------------------------------------

    async def on_eoffice_event(self, event: dict[str, Any]) -> None:
        event_id = event.get("event_id")
        if not isinstance(event_id, str):
            return
        async with self._lock:
            if self.store.eoffice_seen(event_id):
                return
            etype, res = event.get("type"), event.get("resource") or {}
            try:
                if etype == "file.created":
                    await self._room_for_file(res)
                elif etype == "file.moved":
                    await self._moved(res)
                elif etype == "note.created" and not res.get("external_ref"):
                    await self._note_from_eoffice(res)
            except MatrixCallError as e:
                logger.warning("e-Office event %s could not be brought to Matrix yet: %s", event_id, e)
                return  # not marked seen: the next delivery or poll tries again
            self.store.record(eoffice_event=event_id)

    async def _room_for_file(self, file: dict[str, Any], extra_members: tuple[str, ...] = ()) -> str:
        existing = self.store.room_of(file["file_id"])
        if existing:
            return existing
        members = {self.config.directory[e] for e in (file.get("created_by"), file.get("current_holder"), *extra_members)
                   if e in self.config.directory}
        if self._local_only(file):  # the most sensitive files stay on this ministry's server
            members = {m for m in members if m.endswith(":" + self.config.server_name)}
        initial_state = [{"type": self.config.file_prefix, "state_key": "", "content": {"file_id": file["file_id"], "file_no": file["file_no"]}}]
        if self.config.encrypt_new_rooms or str(file.get("classification") or "") in self.config.encrypted_classifications:
            initial_state.append({"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}})
        created = await self.matrix.call("POST", f"{C}/createRoom", {
            "name": f"{file['file_no']}: {file.get('subject', '')}", "preset": "private_chat", "invite": sorted(members),
            "initial_state": initial_state,
            # The bot creates the room, so it has full power (from room version 12 a creator is never listed).
            "power_level_content_override": {"users": {m: 50 for m in members}}})
        room_id = created["room_id"]
        self.store.link(room_id, file["file_id"], file["file_no"])
        return room_id

    async def _moved(self, movement: dict[str, Any]) -> None:
        file = await self.eoffice.file(movement["file_id"])
        room_id = await self._room_for_file(file, (movement.get("to_employee", ""),))
        to_user = self.config.directory.get(str(movement.get("to_employee")))
        if to_user and self._local_only(file) and not to_user.endswith(":" + self.config.server_name):
            await self.notice(room_id, f"File {file['file_no']} is {file.get('classification')}: {to_user} is on another "
                                       "server and is not invited to this room; they work on it in e-Office.")
            to_user = None
        if to_user:
            members = await self.matrix.members(room_id)
            if to_user not in members:
                try:
                    await self.matrix.call("POST", f"{C}/rooms/{quote(room_id)}/invite", {"user_id": to_user,
                                                                                         "reason": "e-Office file moved to you"})
                except MatrixCallError as e:
                    if e.status != 403:  # already invited
                        raise
        remarks = f" Remarks: {movement['remarks']}" if movement.get("remarks") else ""
        await self.notice(room_id, f"File {file['file_no']} moved from {movement.get('from_employee')} to {movement.get('to_employee')}.{remarks}")

    async def _note_from_eoffice(self, note: dict[str, Any]) -> None:
        room_id = self.store.room_of(str(note.get("file_id")))
        author = str(note.get("author"))
        if room_id is None or author not in self.config.directory:
            return
        puppet = self.config.puppet_of(author)
        await self.matrix.ensure_puppet(puppet, f"{author} (e-Office)")
        members = await self.matrix.members(room_id)
        if puppet not in members:
            await self.matrix.call("POST", f"{C}/rooms/{quote(room_id)}/invite", {"user_id": puppet})
            await self.matrix.call("POST", f"{C}/join/{quote(room_id)}", {}, as_user=puppet)
        event_id = await self.send(room_id, {"msgtype": "m.text", "body": str(note.get("text", "")),
                                             "pk.gov.eoffice.note": {"note_id": note.get("note_id"), "status": note.get("status")}}, puppet)
        self.store.add_note(event_id, room_id, str(note["file_id"]), str(note["note_id"]), author)

    async def _poll_loop(self) -> None:
        """The feed as a catch-up: anything a webhook did not bring (bridge down, delivery lost)."""
        while True:
            try:
                cursor = int(self.store.get("feed_cursor") or 0)
                page = await self.eoffice.events(cursor)
                for ev in page.get("events", []):
                    await self.on_eoffice_event(ev)
                    if self.store.eoffice_seen(str(ev.get("event_id"))):
                        self.store.put("feed_cursor", str(ev["cursor"]))
                    else:
                        break  # keep the order: retry from here next time
            except (EOfficeUnavailable, EOfficeRefused) as e:
                logger.info("e-Office feed not reachable: %s", e)
            except Exception:  # noqa: BLE001
                logger.exception("polling e-Office failed")
            await asyncio.sleep(self.config.poll_interval_s)


def _plain_name(name: str) -> str:
    cleaned = "".join(c for c in name.replace("/", "_").replace("\\", "_") if c.isprintable())
    return cleaned[:200] or "document"
