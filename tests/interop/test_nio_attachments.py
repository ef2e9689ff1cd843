"""An encrypted attachment between two matrix-nio clients: alice encrypts a file, uploads the
ciphertext and sends its key inside an encrypted m.file event; bob decrypts the event, downloads the
ciphertext through the authenticated media API and decrypts it to the same bytes. The server holds
only ciphertext."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import nio
from nio.crypto.attachments import decrypt_attachment

from tests.interop.test_nio_e2ee import PASSWORD, Device, sync_all
from tests.support.servers import RunningServer

ENCRYPTION = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}


async def test_encrypted_attachment_round_trip(server: RunningServer, tmp_path: Path) -> None:
    alice = await server.create_user("alice", PASSWORD)
    bob = await server.create_user("bob", PASSWORD)
    a, b = Device(server, alice, tmp_path / "a"), Device(server, bob, tmp_path / "b")
    files: list[nio.RoomEncryptedFile] = []

    async def on_file(room: nio.MatrixRoom, event: nio.RoomEncryptedFile) -> None:
        files.append(event)

    b.client.add_event_callback(on_file, nio.RoomEncryptedFile)
    try:
        await a.login("alice's laptop")
        await b.login("bob's phone")
        room = (await a.client.room_create(invite=[bob], initial_state=[ENCRYPTION])).room_id
        await b.sync()
        await b.client.join(room)
        await sync_all([a, b])
        document = os.urandom(300_000)
        upload, keys = await a.client.upload(lambda *_: io.BytesIO(document), content_type="application/pdf",
                                             filename="memo.pdf", encrypt=True, filesize=len(document))
        assert isinstance(upload, nio.UploadResponse), upload
        await a.sync()
        sent = await a.client.room_send(room, "m.room.message", {
            "msgtype": "m.file", "body": "memo.pdf", "info": {"mimetype": "application/pdf", "size": len(document)},
            "file": {"url": upload.content_uri, **keys}}, ignore_unverified_devices=True)
        assert isinstance(sent, nio.RoomSendResponse), sent
        for _ in range(10):
            await b.sync()
            if files:
                break
        assert files and files[0].url == upload.content_uri
        event = files[0]
        downloaded = await b.client.download(mxc=event.url)
        assert isinstance(downloaded, nio.DownloadResponse), downloaded
        assert downloaded.body != document  # the server only ever had ciphertext
        plain = decrypt_attachment(downloaded.body, event.key["k"], event.hashes["sha256"], event.iv)
        assert hashlib.sha256(plain).digest() == hashlib.sha256(document).digest()
    finally:
        await a.close()
        await b.close()
