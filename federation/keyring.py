"""Other servers' signing keys: where to get them, how to check them, how long to trust them.

Order of trust: keys pinned in the static federation directory (a closed government federation can
distribute them out of band, and then nothing is fetched); keys already fetched and still valid;
a direct fetch from the server's own ``/_matrix/key/v2/server``; finally the configured notaries.
Every fetched response is checked (right server, self-signed by each key it lists, and for a
notary also signed by the notary) and stored with its signatures, for auditors.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Mapping

from nacl.signing import VerifyKey
from unpaddedbase64 import decode_base64, encode_base64

from homeserver.clock import Clock
from homeserver.events.signing import VerifyKeyInfo, verify_json_signature
from homeserver.storage.server_keys import ServerKeyStore, StoredServerKey

from federation.server_keys import LocalServerKeys

logger = logging.getLogger(__name__)

# Room versions 5+ forbid trusting a key response for longer than this, whatever it claims.
MAX_VALIDITY_MS = 7 * 24 * 3600 * 1000

KeyFetcher = Callable[[str], Awaitable[Mapping[str, Any]]]
NotaryFetcher = Callable[[str, str], Awaitable[list[Mapping[str, Any]]]]


class KeyNotFound(Exception):
    pass


def _verify_key(b64: Any) -> VerifyKey | None:
    if not isinstance(b64, str):
        return None
    try:
        raw = decode_base64(b64)
    except Exception:  # noqa: BLE001 - an undecodable key is no key
        return None
    return VerifyKey(raw) if len(raw) == 32 else None


def check_key_response(response: Mapping[str, Any], server_name: str, now_ms: int) -> dict[str, VerifyKey]:
    """The verify keys of a well-formed, self-signed response from ``server_name``; raises ValueError."""
    if response.get("server_name") != server_name:
        raise ValueError(f"key response names {response.get('server_name')!r}, not {server_name!r}")
    verify_keys = response.get("verify_keys")
    if not isinstance(verify_keys, dict) or not verify_keys:
        raise ValueError("key response has no verify_keys")
    if not isinstance(response.get("valid_until_ts"), int):
        raise ValueError("key response has no valid_until_ts")
    keys: dict[str, VerifyKey] = {}
    for kid, entry in verify_keys.items():
        vk = _verify_key(entry.get("key") if isinstance(entry, dict) else None)
        if vk is None or not kid.startswith("ed25519:"):
            raise ValueError(f"verify key {kid} is not an ed25519 key")
        if not verify_json_signature(response, server_name, kid, vk):
            raise ValueError(f"key response is not signed by its own key {kid}")
        keys[kid] = vk
    return keys


class Keyring:
    def __init__(
        self, store: ServerKeyStore, clock: Clock, local: LocalServerKeys,
        pinned: Mapping[str, Mapping[str, str]] | None = None,
        fetch_direct: KeyFetcher | None = None,
        notaries: list[str] | None = None, fetch_from_notary: NotaryFetcher | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.local = local
        self.pinned = {s: {k: vk for k, v in keys.items() if (vk := _verify_key(v)) is not None}
                       for s, keys in (pinned or {}).items()}
        self.fetch_direct = fetch_direct
        self.notaries = notaries or []
        self.fetch_from_notary = fetch_from_notary

    async def get_key(self, server_name: str, key_id: str, at_ts: int | None = None) -> VerifyKeyInfo:
        """The key ``server_name`` signed with, if it was valid at ``at_ts`` (default: now)."""
        at = self.clock.time_ms() if at_ts is None else at_ts
        local = self._local_key(server_name, key_id)
        if local is not None:
            return local
        if server_name in self.pinned:
            vk = self.pinned[server_name].get(key_id)
            if vk is None:
                raise KeyNotFound(f"{server_name} has no pinned key {key_id}")
            return VerifyKeyInfo(vk)
        cached = await self._cached(server_name, key_id, at)
        if cached is not None:
            return cached
        await self.refresh(server_name, key_id)
        cached = await self._cached(server_name, key_id, at)
        if cached is None:
            raise KeyNotFound(f"no valid key {key_id} for {server_name}")
        return cached

    def _local_key(self, server_name: str, key_id: str) -> VerifyKeyInfo | None:
        if server_name != self.local.server_name:
            return None
        if key_id == self.local.key_id:
            return VerifyKeyInfo(self.local.signing_key.verify_key)
        for old in self.local.old_keys:
            if old.key_id == key_id and (vk := _verify_key(old.public_key)) is not None:
                return VerifyKeyInfo(vk, expired_ts=old.expired_ts)
        raise KeyNotFound(f"this server has no key {key_id}")

    async def _cached(self, server_name: str, key_id: str, at: int) -> VerifyKeyInfo | None:
        stored = await self.store.get(server_name, key_id)
        if stored is None:
            return None
        vk = _verify_key(stored.verify_key)
        if vk is None:
            return None
        info = VerifyKeyInfo(vk, valid_until_ts=stored.valid_until_ts, expired_ts=stored.expired_ts)
        return info if info.valid_at(at) else None

    async def refresh(self, server_name: str, key_id: str | None = None) -> None:
        """Fetch the server's keys, directly and then through the notaries, and store what checks out."""
        if self.fetch_direct is not None:
            try:
                response = await self.fetch_direct(server_name)
                await self.accept(response, server_name, source="direct")
                if key_id is None or await self.store.get(server_name, key_id) is not None:
                    return
            except Exception as e:  # noqa: BLE001 - an unreachable server is normal; try the notaries
                logger.info("direct key fetch from %s failed: %s", server_name, e)
        for notary in self.notaries:
            if self.fetch_from_notary is None:
                break
            try:
                for response in await self.fetch_from_notary(notary, server_name):
                    await self.accept(response, server_name, source=f"notary:{notary}", notary=notary)
                if key_id is None or await self.store.get(server_name, key_id) is not None:
                    return
            except Exception as e:  # noqa: BLE001
                logger.info("key fetch for %s from notary %s failed: %s", server_name, notary, e)

    async def accept(self, response: Mapping[str, Any], server_name: str, *, source: str, notary: str | None = None) -> None:
        """Check a key response and store its keys; raises ValueError when it does not check out."""
        now = self.clock.time_ms()
        current = check_key_response(response, server_name, now)
        if notary is not None:
            signed_by = (response.get("signatures") or {}).get(notary) or {}
            if not signed_by:
                raise ValueError(f"notary {notary} did not sign the response")
            for kid in signed_by:
                notary_key = await self.get_key(notary, kid)
                if not verify_json_signature(response, notary, kid, notary_key.verify_key):
                    raise ValueError(f"bad notary signature {kid} from {notary}")
        valid_until = min(int(response["valid_until_ts"]), now + MAX_VALIDITY_MS)
        rows = [StoredServerKey(server_name, kid, _b64(vk), valid_until, None, now, source, dict(response))
                for kid, vk in current.items()]
        for kid, entry in (response.get("old_verify_keys") or {}).items():
            if not isinstance(entry, dict) or kid in current:
                continue
            vk = _verify_key(entry.get("key"))
            expired = entry.get("expired_ts")
            if vk is not None and isinstance(expired, int):
                rows.append(StoredServerKey(server_name, kid, _b64(vk), None, expired, now, source, dict(response)))
        await self.store.put(rows)

    async def responses_for(self, server_name: str) -> list[dict[str, Any]]:
        """The stored key responses of a server (for the notary API and audit exports)."""
        if server_name == self.local.server_name:
            return [self.local.response()]
        seen: dict[str, dict[str, Any]] = {}
        for k in await self.store.for_server(server_name):
            seen[str(k.response.get("valid_until_ts")) + k.key_id] = k.response
        unique: list[dict[str, Any]] = []
        for r in seen.values():
            if r not in unique:
                unique.append(r)
        return unique


def _b64(vk: VerifyKey) -> str:
    return encode_base64(bytes(vk))
