"""Talking to the homeserver as the appservice: its bot and its officer puppets, and for each of
them an end-to-end-encryption device built on ``e2ee`` so the bridge reads and writes encrypted rooms
like any other participant."""

from __future__ import annotations

import logging
import ssl
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from e2ee.errors import E2EEError
from e2ee.machine import OlmMachine
from e2ee.store import CryptoStore

from .config import BridgeConfig
from .store import BridgeStore

logger = logging.getLogger(__name__)
C = "/_matrix/client/v3"


class MatrixCallError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.errcode = body.get("errcode") if isinstance(body, dict) else None


class Matrix:
    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        ctx: ssl.SSLContext | bool = ssl.create_default_context(cafile=config.ca_file) if config.ca_file else True
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx), timeout=aiohttp.ClientTimeout(total=60))

    async def close(self) -> None:
        await self.session.close()

    async def call(self, method: str, path: str, body: Any = None, *, as_user: str | None = None,
                   params: dict[str, str] | None = None, raw: bool = False) -> Any:
        q = dict(params or {})
        if as_user is not None and as_user != self.config.bot:
            q["user_id"] = as_user
        async with self.session.request(method, self.config.homeserver_url + path, json=body, params=q or None,
                                        headers={"Authorization": f"Bearer {self.config.as_token}"}) as r:
            data = await r.read()
            if r.status != 200:
                try:
                    parsed = await r.json(content_type=None)
                except ValueError:
                    parsed = data[:200]
                raise MatrixCallError(r.status, parsed)
            return data if raw else (await r.json(content_type=None))

    async def ensure_puppet(self, user_id: str, displayname: str) -> None:
        try:
            await self.call("POST", f"{C}/register", {"type": "m.login.application_service",
                                                       "username": user_id[1:].split(":")[0], "inhibit_login": True})
        except MatrixCallError as e:
            if e.errcode != "M_USER_IN_USE":
                raise
            return
        await self.call("PUT", f"{C}/profile/{quote(user_id)}/displayname", {"displayname": displayname}, as_user=user_id)

    async def state(self, room_id: str, event_type: str, state_key: str = "") -> dict[str, Any] | None:
        try:
            return await self.call("GET", f"{C}/rooms/{quote(room_id)}/state/{quote(event_type)}/{quote(state_key)}")
        except MatrixCallError as e:
            if e.status == 404:
                return None
            raise

    async def members(self, room_id: str) -> list[str]:
        body = await self.call("GET", f"{C}/rooms/{quote(room_id)}/joined_members")
        return list(body.get("joined", {}))

    async def download(self, mxc: str) -> bytes:
        server, media_id = mxc[len("mxc://"):].split("/", 1)
        return await self.call("GET", f"/_matrix/client/v1/media/download/{quote(server)}/{quote(media_id)}", raw=True)


class CryptoDevice:
    """One device (of the bot or of a puppet) with its own Olm account, logged in once and kept."""

    def __init__(self, matrix: Matrix, store: BridgeStore, user_id: str, device_id: str, data_dir: Path, pickle_key: bytes) -> None:
        self.matrix = matrix
        self.user_id = user_id
        self.device_id = device_id
        safe = "".join(c if c.isalnum() else "_" for c in user_id)
        self.machine = OlmMachine(user_id, device_id, CryptoStore(data_dir / f"crypto-{safe}.db"), pickle_key)
        self.store = store

    @classmethod
    async def open(cls, matrix: Matrix, store: BridgeStore, user_id: str, data_dir: Path, pickle_key: bytes) -> "CryptoDevice":
        key = f"device:{user_id}"
        device_id = store.get(key)
        if device_id is None:
            login = await matrix.call("POST", f"{C}/login", {
                "type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": user_id},
                "initial_device_display_name": "e-Office bridge"})
            device_id = login["device_id"]
            store.put(key, device_id)
        dev = cls(matrix, store, user_id, device_id, data_dir, pickle_key)
        # Ask the server how many one-time keys it holds, so a fresh device publishes a full stock
        # (and a fallback key) before anyone tries to start an Olm session with it.
        counts = await dev._call("POST", f"{C}/keys/upload", {})
        await dev.upload_keys(counts.get("one_time_key_counts", {}), [])
        await dev.verify_own_device()
        return dev

    async def verify_own_device(self) -> None:
        """Cross-sign this device with its user's own keys, so officers' clients show the bridge's and
        puppets' messages as coming from a device its owner verified (no warning shield)."""
        upload, signatures = self.machine.cross_signing_requests()
        try:
            if upload is not None:
                await self._call("POST", f"{C}/keys/device_signing/upload", upload)
                self.machine.mark_cross_signing_published()
            await self._call("POST", f"{C}/keys/signatures/upload", signatures)
        except MatrixCallError as e:  # e.g. keys published by an earlier install: the bridge works unverified
            logger.warning("could not cross-sign the device of %s: %s", self.user_id, e)

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        # Device masquerading (MSC3202): the appservice speaks as this user's own device.
        return await self.matrix.call(method, path, body, as_user=self.user_id, params={"device_id": self.device_id})

    async def upload_keys(self, counts: dict[str, int] | None = None, fallback: list[str] | None = None) -> None:
        body = self.machine.keys_for_upload(counts, fallback)
        if body is not None:
            await self._call("POST", f"{C}/keys/upload", body)
            self.machine.mark_keys_as_published()

    def receive_to_device(self, event: dict[str, Any]) -> None:
        if event.get("type") != "m.room.encrypted":
            return
        try:
            self.machine.decrypt_to_device(event)
        except E2EEError as e:
            logger.info("to-device message for %s not decrypted: %s", self.user_id, e)

    def decrypt(self, event: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return self.machine.decrypt_room_event(event).event
        except E2EEError:
            return None

    async def send(self, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        """Encrypt for every device of every member (sharing the room key first) and send."""
        members = await self.matrix.members(room_id)
        self.machine.update_tracked_users(members)
        query = self.machine.keys_query_request(members)
        if query is not None:
            self.machine.receive_keys_query(await self._call("POST", f"{C}/keys/query", query))
        claim = self.machine.claim_request({u: None for u in members})
        if claim is not None:
            result = self.machine.create_olm_sessions(await self._call("POST", f"{C}/keys/claim", claim))
            for request in getattr(result, "unwedge", []) or []:
                await self._call("PUT", f"{C}/sendToDevice/{quote(request.event_type)}/{request.txn_id}", {"messages": request.messages})
        share = self.machine.share_room_key(room_id, {u: None for u in members})
        if share.messages:
            try:
                await self._call("PUT", f"{C}/sendToDevice/{quote(share.event_type)}/{share.txn_id}", {"messages": share.messages})
            except MatrixCallError:
                self.machine.invalidate_room_session(room_id)
                raise
        encrypted = self.machine.encrypt_room_event(room_id, event_type, content)
        sent = await self._call("PUT", f"{C}/rooms/{quote(room_id)}/send/m.room.encrypted/{uuid.uuid4().hex}", encrypted)
        return sent["event_id"]
