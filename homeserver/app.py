"""The composition root: builds storage and services, mounts every route, owns background tasks.

Only this module wires optional parts together, so each service can be built and tested on its own.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from homeserver.api import mount_all
from homeserver.api.context import HS, client_ip
from homeserver.api.http import REQUEST_ID, Routes, access_token_from, matrix_middleware
from homeserver.clock import Clock
from homeserver.config import Config, ConfigError
from homeserver.errors import MatrixError
from homeserver.services.admin import AdminService
from homeserver.services.accounts import AccountService, password_stage
from homeserver.services.dehydrated_devices import DehydratedDeviceService
from homeserver.services.devices import DeviceService
from homeserver.services.directory import DirectoryService
from homeserver.services.e2e_keys import E2eKeyService
from homeserver.services.remote_devices import RemoteDeviceLists
from homeserver.services.passwords import PasswordHasher
from homeserver.services.profile import ProfileService
from homeserver.services.ratelimit import RateLimiter
from homeserver.services.registration import RegistrationService
from homeserver.services.registration_tokens import RegistrationTokenService
from homeserver.services.sessions import Requester, SessionService
from homeserver.services.uia import UiaResult, UiaService
from homeserver.services.client_events import ClientEventFormatter
from homeserver.services.event_creation import EventCreator
from homeserver.services.filters import FilterService
from homeserver.services.key_backup import KeyBackupService
from homeserver.services.membership import MembershipService
from homeserver.services.notifier import Notifier
from homeserver.services.openid import OpenIdService
from homeserver.services.room_creation import RoomCreationService
from homeserver.services.room_upgrade import RoomUpgradeService
from homeserver.services.rooms import RoomService
from homeserver.services.search import SearchService
from homeserver.services.spaces import SpaceService
from homeserver.services.presence import PresenceService
from homeserver.services.push import PushEvaluator
from homeserver.services.push_rules import PushRuleService
from homeserver.services.pushers import PusherService
from homeserver.services.sync import SyncService
from homeserver.services.to_device import ToDeviceService
from homeserver.services.typing import TypingService
from homeserver.services.user_data import UserDataService
from homeserver.services.visibility import VisibilityService
from homeserver.services.voip import VoipService
from homeserver.signing_key import read_old_verify_keys, read_signing_keys

from homeserver.appservice.registration import RegistrationError, load_registrations
from homeserver.services.appservices import AppServices
from homeserver.services.audit_export import AuditExporter
from homeserver.services.media import MediaService
from homeserver.services.url_preview import UrlPreviewService
from homeserver.services.usage import UsageService
from homeserver.services.sliding_sync import SlidingSyncService
from homeserver.services.delayed_events import DelayedEventService
from federation import api as federation_api
from federation.edus import EduHandler
from federation.runtime import FederationRuntime
from homeserver.storage import Storage
from homeserver.storage.sequences import current_id

logger = logging.getLogger("qasid")

UIA_SWEEP_INTERVAL_S = 3600


class StreamPositions:
    """Where each stream stands now (what a token minted at this moment would say)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def current_events_position(self) -> int:
        return await current_id(self.storage.db, "events_stream")


@dataclass
class HomeServer:
    """Everything a handler may need, built once per process."""

    config: Config
    clock: Clock
    storage: Storage
    ratelimiter: RateLimiter
    hasher: PasswordHasher
    sessions: SessionService
    accounts: AccountService
    uia: UiaService
    registration_tokens: RegistrationTokenService
    registration: RegistrationService
    devices: DeviceService
    profiles: ProfileService
    notifier: Notifier
    event_creator: EventCreator
    membership: MembershipService
    room_creation: RoomCreationService
    rooms: RoomService
    filters: FilterService
    sync: SyncService
    sliding_sync: "SlidingSyncService"
    streams: "StreamPositions"
    e2e_keys: "E2eKeyService"
    to_device: "ToDeviceService"
    key_backup: "KeyBackupService"
    dehydrated_devices: "DehydratedDeviceService"
    openid: "OpenIdService"
    admin: AdminService
    typing: TypingService
    push_rules: PushRuleService
    push: PushEvaluator
    pushers: "PusherService"
    voip: "VoipService"
    directory: DirectoryService
    room_upgrade: RoomUpgradeService
    search: SearchService
    presence: PresenceService
    spaces: SpaceService
    user_data: UserDataService
    media: "MediaService"
    audit: "AuditExporter"
    appservices: "AppServices"
    url_previews: "UrlPreviewService"
    usage: "UsageService"
    delayed_events: "DelayedEventService"
    federation: "FederationRuntime | None" = None

    @classmethod
    def build(cls, config: Config, storage: Storage, clock: Clock | None = None) -> "HomeServer":
        clock = clock or Clock()
        ratelimiter = RateLimiter(clock)
        hasher = PasswordHasher(config.password_hashing)
        sessions = SessionService(storage, config, clock)
        accounts = AccountService(storage, config, clock, hasher, sessions)
        uia = UiaService(storage, clock)
        reg_tokens = RegistrationTokenService(storage, clock)
        key_path = config.resolve_path(config.signing_key_path)
        signing_key = read_signing_keys(key_path)[0]
        notifier = Notifier()
        creator = EventCreator(storage, storage.state, clock, config.server_name, signing_key, notifier)
        membership = MembershipService(storage, creator, clock, config.server_name)
        formatter = ClientEventFormatter(storage, clock)
        visibility = VisibilityService(storage)
        typing = TypingService(clock, notifier)
        push_rules = PushRuleService(storage, notifier)
        presence = PresenceService(clock, notifier, config.presence.enabled)
        directory = DirectoryService(storage, config.server_name)
        push = PushEvaluator(storage, push_rules, clock, config.server_name)
        e2e_keys = E2eKeyService(storage, notifier, config.server_name)
        remote_devices = RemoteDeviceLists(storage, clock, config.server_name)
        e2e_keys.remote_devices = remote_devices
        creator.listeners.append(remote_devices.on_event)  # joins make remote device lists stale
        sessions.on_devices_gone = e2e_keys.wake_for_device_change
        creator.in_transaction.append(push.record)
        try:
            registrations = load_registrations([config.resolve_path(p) for p in config.app_service_config_files], config.server_name)
        except RegistrationError as e:
            raise ConfigError(f"app_service_config_files: {e}") from None
        appservices = AppServices(registrations, storage, clock, config.server_name)
        creator.listeners.append(appservices.on_event)
        accounts.exclusive_user = appservices.exclusive_owner_of_user
        pushers = PusherService(storage, push, clock, config)
        creator.listeners.append(pushers.on_event)  # returns at once: delivery runs in its own tasks
        rooms = RoomService(storage, creator, membership, formatter, visibility)
        delayed_events = DelayedEventService(storage, clock, config, rooms)
        creator.listeners.append(delayed_events.on_event)
        sync = SyncService(storage, clock, notifier, formatter, visibility, typing, push_rules, push, presence, e2e_keys)
        hs = cls(
            config=config, clock=clock, storage=storage, ratelimiter=ratelimiter, hasher=hasher,
            sessions=sessions, accounts=accounts, uia=uia, registration_tokens=reg_tokens,
            registration=RegistrationService(storage, config, clock, accounts, uia, reg_tokens, ratelimiter),
            devices=DeviceService(storage, e2e_keys), profiles=ProfileService(storage, config.server_name, creator),
            notifier=notifier, event_creator=creator, membership=membership,
            room_creation=RoomCreationService(storage, creator, membership, config.default_room_version),
            rooms=rooms,
            filters=FilterService(storage),
            sync=sync,
            sliding_sync=SlidingSyncService(sync),
            delayed_events=delayed_events,
            presence=presence,
            typing=typing, user_data=UserDataService(storage, clock, notifier),
            pushers=pushers, voip=VoipService(config, clock),
            push_rules=push_rules, push=push, directory=directory, spaces=SpaceService(storage, directory),
            room_upgrade=RoomUpgradeService(storage, creator),
            search=SearchService(storage, formatter, visibility),
            streams=StreamPositions(storage),
            key_backup=KeyBackupService(storage), e2e_keys=e2e_keys,
            dehydrated_devices=DehydratedDeviceService(storage, e2e_keys, clock),
            openid=OpenIdService(storage, clock, config.server_name), to_device=ToDeviceService(storage, notifier, clock, config.server_name),
            admin=AdminService(storage, config, clock, accounts),
            appservices=appservices,
            media=MediaService(config, storage, clock), audit=AuditExporter(storage, config.server_name, lambda: None, clock),
            url_previews=UrlPreviewService(config.url_preview_allowed_hosts),
            usage=UsageService(storage, clock, config.server_name, signing_key,
                               lambda user_id: appservices.exclusive_owner_of_user(user_id) is not None),
            federation=FederationRuntime(config, storage, clock, signing_key, read_old_verify_keys(key_path), e2e_keys, creator),
        )
        if hs.federation is not None:
            hs.profiles.remote_lookup = hs.federation.remote_profile
            e2e_keys.remote_query = hs.federation.remote_keys_query
            e2e_keys.remote_claim = hs.federation.remote_keys_claim
            remote_devices.fetch = hs.federation.remote_user_devices
            membership.remote_alias = hs.federation.remote_alias
            membership.remote_join = hs.federation.rooms.remote_join
            membership.remote_invite = hs.federation.rooms.send_invite
            membership.remote_reject = hs.federation.rooms.reject_remote_invite
            membership.remote_knock = hs.federation.rooms.remote_knock
            hs.rooms.backfill = hs.federation.backfiller.backfill
            hs.audit.local_key_response = hs.federation.local_keys.response
            hs.media.remote_fetch = hs.federation.fetch_media
            hs.media.remote_allowed = hs.federation.policy.allows
            edus = EduHandler(hs, hs.federation)
            hs.federation.edus = edus
            typing.on_change = edus.typing_changed
            presence.on_change = edus.presence_changed
            hs.user_data.on_receipt = edus.receipt_sent
            e2e_keys.on_device_change = edus.device_list_changed
            hs.to_device.remote_sender = edus.send_to_device
        if registrations:
            _observe_for_appservices(hs, appservices)
            hs.profiles.appservice_query = appservices.query_user
        return hs

    async def requester(self, request: web.Request) -> Requester:
        """Authenticate the request's access token (401 M_MISSING_TOKEN / M_UNKNOWN_TOKEN otherwise).
        An application service's as_token acts as its sender, or as ``?user_id=`` in its namespace,
        and with MSC3202 as ``?device_id=`` of that user."""
        token = access_token_from(request)
        if not token:
            raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token")
        service = self.appservices.by_token(token)
        if service is not None:
            user_id = await self.appservices.acting_user(service, request.query.get("user_id"))
            device_id = request.query.get("device_id") or request.query.get("org.matrix.msc3202.device_id") or ""
            if device_id and (not service.e2ee or await self.storage.devices.get_device(user_id, device_id) is None):
                raise MatrixError(400, "M_UNKNOWN_DEVICE", "No such device for this user (device masquerading needs MSC3202)")
            requester = Requester(user_id, device_id, "as:" + service.id, False, app_service=service.id)
        else:
            requester = await self.sessions.authenticate(
                token, ip=client_ip(request), user_agent=request.headers.get("User-Agent")
            )
        if requester.puppeted_by is None:  # an admin acting as a user for support is not the user's use
            await self.usage.record_visit(requester.user_id)  # daily active users (no SQL after the first)
        return requester

    async def reauthenticate(self, request: web.Request, requester: Requester, body: dict[str, Any]) -> UiaResult:
        """UIA for sensitive actions by a logged-in user: they must prove their password again."""
        return await self.uia.authenticate(
            method=request.method, uri=request.path, body=body, flows=[["m.login.password"]],
            checkers={"m.login.password": password_stage(self.accounts, requester.user_id)},
        )

    async def admin_requester(self, request: web.Request) -> Requester:
        requester = await self.requester(request)
        if not requester.is_admin:
            raise MatrixError(403, "M_FORBIDDEN", "You are not a server admin")
        return requester

    async def sweep(self) -> None:
        """Periodic housekeeping: expire abandoned UIA sessions and give back their token uses."""
        abandoned = await self.uia.expire()
        await self.registration_tokens.release_abandoned(abandoned)


def _observe_for_appservices(hs: HomeServer, appservices: "AppServices") -> None:
    """Typing, receipts and presence (MSC2409) and to-device messages reach interested appservices,
    beside whatever else already listens (federation)."""
    typing_before, presence_before, receipt_before = hs.typing.on_change, hs.presence.on_change, hs.user_data.on_receipt

    def typing_changed(room_id: str, user_id: str, typing: bool) -> None:
        if typing_before is not None:
            typing_before(room_id, user_id, typing)
        edu = {"type": "m.typing", "content": {"user_ids": hs.typing.typing_users(room_id)}}
        asyncio.get_running_loop().create_task(appservices.on_ephemeral(room_id, edu))

    def presence_changed(user_id: str) -> None:
        if presence_before is not None:
            presence_before(user_id)
        edu = {"type": "m.presence", "sender": user_id, "content": hs.presence.get(user_id)}
        asyncio.get_running_loop().create_task(appservices.on_ephemeral(None, edu, [user_id]))

    async def receipt_sent(receipt: Any) -> None:
        if receipt_before is not None:
            await receipt_before(receipt)
        content = {receipt.event_id: {receipt.receipt_type: {receipt.user_id: {"ts": receipt.ts}}}}
        await appservices.on_ephemeral(receipt.room_id, {"type": "m.receipt", "content": content})

    hs.typing.on_change = typing_changed
    hs.presence.on_change = presence_changed
    hs.user_data.on_receipt = receipt_sent
    hs.to_device.on_delivered = appservices.on_to_device
    hs.e2e_keys.device_change_listeners.append(appservices.on_device_list_change)


def mount_routes(app: web.Application) -> None:
    """Every route this server serves: the client-server API and the federation and key APIs."""
    mount_all(Routes(app))
    federation_api.setup(app)


def create_app(hs: HomeServer) -> web.Application:
    app = web.Application(middlewares=[matrix_middleware], client_max_size=hs.config.max_request_body_size)
    app[HS] = hs
    app[REQUEST_ID] = [0]
    mount_routes(app)
    return app


async def _sweeper(hs: HomeServer) -> None:
    while True:
        await asyncio.sleep(UIA_SWEEP_INTERVAL_S)
        try:
            await hs.sweep()
        except Exception:  # keep sweeping; a failed pass is retried next hour
            logger.exception("housekeeping failed")


async def start_homeserver(config: Config, clock: Clock | None = None) -> tuple[HomeServer, web.Application]:
    storage = await Storage.open(config.database_url, pool_size=config.database_pool_size)
    hs = HomeServer.build(config, storage, clock)
    app = create_app(hs)
    task: dict[str, Any] = {}

    async def on_startup(_: web.Application) -> None:
        task["sweeper"] = asyncio.create_task(_sweeper(hs))
        if hs.federation is not None:
            await hs.federation.sender.resume()  # catch up on what was not delivered before the last stop
        await hs.pushers.resume()  # likewise for push notifications
        await hs.appservices.ensure_senders()
        await hs.appservices.resume()  # and for application services
        hs.delayed_events.start()  # and delayed events that fell due while the server was down

    async def on_cleanup(_: web.Application) -> None:
        if "sweeper" in task:
            task["sweeper"].cancel()
        await hs.pushers.close()
        await hs.delayed_events.close()
        await hs.appservices.close()
        if hs.federation is not None:
            await hs.federation.close()
        await storage.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return hs, app
