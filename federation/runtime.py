"""The federation parts of one server, built by the composition root: policy, our keys, the keyring,
the outbound client, and the answers to other servers' queries about our users."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from nacl.signing import SigningKey

from homeserver.clock import Clock
from homeserver.config import Config
from homeserver.errors import MatrixError
from homeserver.signing_key import OldVerifyKey
from homeserver.storage import Storage
from homeserver.storage.sequences import current_id

from federation.client import FederationClient
from federation.keyring import Keyring
from federation.policy import FederationPolicy
from federation.server_keys import LocalServerKeys

if TYPE_CHECKING:
    from homeserver.services.e2e_keys import E2eKeyService


def policy_from_config(config: Config) -> FederationPolicy:
    allow = config.federation_domain_whitelist
    directory = config.federation.directory
    return FederationPolicy(
        allowlist=frozenset([*allow, config.server_name]) if allow is not None else None,
        addresses={s: p.address for s, p in directory.items() if p.address},
        pinned_keys={s: dict(p.verify_keys) for s, p in directory.items() if p.verify_keys},
    )


class FederationRuntime:
    def __init__(self, config: Config, storage: Storage, clock: Clock, signing_key: SigningKey,
                 old_keys: list[OldVerifyKey], keys: "E2eKeyService") -> None:
        self.server_name = config.server_name
        self.storage = storage
        self.keys = keys
        self.policy = policy_from_config(config)
        self.local_keys = LocalServerKeys(config.server_name, signing_key, old_keys, clock)
        ca = config.resolve_path(config.federation.tls_ca_file) if config.federation.tls_ca_file else None
        self.client = FederationClient(
            config.server_name, signing_key, self.policy, ca_bundle=str(ca) if ca else None,
            verify_tls=config.federation.verify_tls, timeout_s=config.federation.request_timeout / 1000,
        )
        self.keyring = Keyring(
            storage.server_keys, clock, self.local_keys, pinned=self.policy.pinned_keys,
            fetch_direct=self._fetch_keys, notaries=list(config.federation.notaries),
            fetch_from_notary=self._fetch_from_notary,
        )

    async def close(self) -> None:
        await self.client.close()

    async def _fetch_keys(self, server_name: str) -> Mapping[str, Any]:
        return await self.client.get_json(server_name, "/_matrix/key/v2/server", signed=False)

    async def _fetch_from_notary(self, notary: str, server_name: str) -> list[Mapping[str, Any]]:
        body = await self.client.post_json(notary, "/_matrix/key/v2/query", {"server_keys": {server_name: {}}})
        found = body.get("server_keys") if isinstance(body, dict) else None
        return [r for r in found if isinstance(r, dict)] if isinstance(found, list) else []

    # --- the notary ---------------------------------------------------------------------------

    async def notary_responses(self, server_name: str) -> list[dict[str, Any]]:
        """Key responses for a server, countersigned by us (fetched first if we hold none)."""
        if server_name == self.server_name:
            return [self.local_keys.response()]
        if not self.policy.allows(server_name):
            return []
        responses = await self.keyring.responses_for(server_name)
        if not responses:
            await self.keyring.refresh(server_name)
            responses = await self.keyring.responses_for(server_name)
        return [self.local_keys.countersign(r) for r in responses]

    # --- queries about our users ------------------------------------------------------------

    def _local(self, user_id: str) -> bool:
        return user_id.startswith("@") and user_id.endswith(":" + self.server_name)

    async def user_devices(self, user_id: str) -> dict[str, Any]:
        if not self._local(user_id):
            raise MatrixError(403, "M_FORBIDDEN", "That user is not on this server")
        found = (await self.storage.e2e_keys.devices_with_keys([user_id])).get(user_id, {})
        listed = await self.storage.devices.list_devices(user_id)
        devices = []
        for d in listed:
            entry: dict[str, Any] = {"device_id": d.device_id}
            if d.device_id in found:
                entry["keys"] = found[d.device_id][0]
            if d.display_name:
                entry["device_display_name"] = d.display_name
            devices.append(entry)
        out: dict[str, Any] = {"user_id": user_id, "stream_id": await current_id(self.storage.db, "device_lists"),
                               "devices": devices}
        cross = await self.storage.e2e_keys.cross_signing_keys(user_id)
        if "master" in cross:
            out["master_key"] = cross["master"]
        if "self_signing" in cross:
            out["self_signing_key"] = cross["self_signing"]
        return out

    async def keys_query(self, body: Mapping[str, Any]) -> dict[str, Any]:
        wanted = body.get("device_keys")
        if not isinstance(wanted, dict):
            raise MatrixError(400, "M_BAD_JSON", "device_keys must be an object")
        local = {u: d for u, d in wanted.items() if isinstance(u, str) and self._local(u)}
        result = await self.keys.query("", {"device_keys": local})
        return {"device_keys": result["device_keys"], "master_keys": result["master_keys"],
                "self_signing_keys": result["self_signing_keys"]}

    async def keys_claim(self, body: Mapping[str, Any]) -> dict[str, Any]:
        wanted = body.get("one_time_keys")
        if not isinstance(wanted, dict):
            raise MatrixError(400, "M_BAD_JSON", "one_time_keys must be an object")
        local = {u: d for u, d in wanted.items() if isinstance(u, str) and self._local(u)}
        return {"one_time_keys": (await self.keys.claim({"one_time_keys": local}))["one_time_keys"]}
