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

from federation.client import FederationClient, FederationError, path
from federation.keyring import Keyring
from federation.policy import FederationPolicy
from federation.rooms import FederationRooms
from federation.backfill import Backfiller
from federation.media import fetch_remote_media
from federation.sender import FederationSender
from federation.server_keys import LocalServerKeys

if TYPE_CHECKING:
    from homeserver.services.e2e_keys import E2eKeyService
    from homeserver.services.event_creation import EventCreator


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
                 old_keys: list[OldVerifyKey], keys: "E2eKeyService", creator: "EventCreator") -> None:
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
        self.rooms = FederationRooms(config.server_name, storage, creator, self.keyring, self.client, signing_key)
        self.sender = FederationSender(config.server_name, self.client, clock, storage.federation_outbox)
        self.backfiller = Backfiller(config.server_name, storage, creator, self.client, self.rooms.remote)
        self._seen_txns: dict[tuple[str, str], dict[str, Any]] = {}
        self.edus: Any = None  # the EduHandler, attached by the composition root
        creator.listeners.append(self.on_local_event)

    async def on_local_event(self, new: Any) -> None:
        """Send each event one of our users sent to the other servers with members in its room."""
        pdu = new.pdu
        if not str(pdu.get("sender", "")).endswith(":" + self.server_name):
            return
        servers = await self.rooms.servers_in_room(new.room_id)
        if pdu.get("type") == "m.room.member" and isinstance(pdu.get("state_key"), str) \
                and (pdu.get("content") or {}).get("membership") in ("leave", "ban"):
            servers.add(pdu["state_key"].split(":", 1)[1])  # a kicked or banned user's server hears of it
        servers.discard(self.server_name)
        servers = {s for s in servers if self.policy.allows(s)}
        if servers:
            await self.sender.enqueue(servers, pdu)

    async def fetch_media(self, origin: str, media_id: str, sink: Any, thumbnail: dict[str, str] | None) -> None:
        await fetch_remote_media(self.client, origin, media_id, sink, thumbnail=thumbnail)

    async def receive_transaction(self, origin: str, txn_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """A retried transaction gets the first answer again instead of being processed twice."""
        key = (origin, txn_id)
        if key in self._seen_txns:
            return self._seen_txns[key]
        result = await self.rooms.receive_transaction(origin, body)
        if self.edus is not None and isinstance(body.get("edus"), list):
            await self.edus.receive(origin, body["edus"])
        if len(self._seen_txns) > 10_000:
            self._seen_txns.clear()
        self._seen_txns[key] = result
        return result

    async def close(self) -> None:
        await self.sender.close()
        await self.client.close()

    # --- asking other servers (for our clients) --------------------------------------------

    @staticmethod
    def _as_client_error(e: FederationError, not_found: str) -> MatrixError:
        """A remote failure as our clients see it: the remote's 404 stays a 404, anything else is 502."""
        if e.status == 404:
            return MatrixError(404, "M_NOT_FOUND", not_found)
        if e.status == 403 and "allowlist" in str(e):
            return MatrixError(403, "M_FORBIDDEN", "This server does not federate with that server")
        return MatrixError(502, "M_UNKNOWN", f"Could not get an answer from {e.destination}")

    async def remote_profile(self, user_id: str) -> dict[str, Any]:
        server = user_id.split(":", 1)[1]
        try:
            body = await self.client.get_json(server, "/_matrix/federation/v1/query/profile", {"user_id": user_id})
        except FederationError as e:
            raise self._as_client_error(e, "Profile was not found") from None
        if not isinstance(body, dict):
            raise MatrixError(502, "M_UNKNOWN", f"{server} sent a malformed profile")
        return body

    async def remote_alias(self, alias: str) -> dict[str, Any]:
        server = alias.split(":", 1)[1]
        try:
            body = await self.client.get_json(server, "/_matrix/federation/v1/query/directory", {"room_alias": alias})
        except FederationError as e:
            raise self._as_client_error(e, f"Room alias {alias} not found") from None
        if not isinstance(body, dict) or not isinstance(body.get("room_id"), str):
            raise MatrixError(502, "M_UNKNOWN", f"{server} sent a malformed directory answer")
        servers = [s for s in body.get("servers", []) if isinstance(s, str)] or [server]
        return {"room_id": body["room_id"], "servers": servers}

    async def remote_public_rooms(self, server: str, body: dict[str, Any] | None, query: dict[str, str] | None) -> dict[str, Any]:
        """Another server's published rooms (POST with a body to search, GET otherwise)."""
        path = "/_matrix/federation/v1/publicRooms"
        try:
            if body is not None:
                result = await self.client.post_json(server, path, body)
            else:
                result = await self.client.get_json(server, path, query or {})
        except FederationError as e:
            raise self._as_client_error(e, "That server has no room directory") from None
        if not isinstance(result, dict) or not isinstance(result.get("chunk"), list):
            raise MatrixError(502, "M_UNKNOWN", f"{server} sent a malformed room list")
        return result

    async def remote_keys_query(self, server: str, device_keys: dict[str, list[str]]) -> dict[str, Any]:
        """Raises FederationError; the key service turns that into a per-server failure."""
        return await self.client.post_json(server, "/_matrix/federation/v1/user/keys/query", {"device_keys": device_keys})

    async def remote_user_devices(self, user_id: str) -> Any:
        """A remote user's whole device list (GET /user/devices), for the device-list cache. Raises
        FederationError; the cache checks the body."""
        server = user_id.split(":", 1)[1] if ":" in user_id else user_id
        return await self.client.get_json(server, path("/_matrix/federation/v1/user/devices/{}", user_id))

    async def remote_keys_claim(self, server: str, one_time_keys: dict[str, dict[str, str]]) -> dict[str, Any]:
        return await self.client.post_json(server, "/_matrix/federation/v1/user/keys/claim", {"one_time_keys": one_time_keys})

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
        return await self.keys.federation_device_list(user_id)

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
