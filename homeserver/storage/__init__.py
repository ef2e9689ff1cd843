"""Storage: the only package with SQL. ``Storage`` bundles the stores over one database."""

from __future__ import annotations

from homeserver.storage.database import Connection, Database, connect
from homeserver.storage.appservices import AppServiceStore
from homeserver.storage.dehydrated_devices import DehydratedDeviceStore
from homeserver.storage.delayed_events import DelayedEventStore
from homeserver.storage.devices import DeviceStore
from homeserver.storage.e2e_keys import E2eKeyStore
from homeserver.storage.events import AliasStore, EventStore
from homeserver.storage.federation_outbox import FederationOutboxStore
from homeserver.storage.filters import FilterStore
from homeserver.storage.key_backup import KeyBackupStore
from homeserver.storage.media import MediaStore
from homeserver.storage.migrations import migrate
from homeserver.storage.openid import OpenIdStore
from homeserver.storage.push_rules import PushActionStore, PushRuleStore
from homeserver.storage.pushers import PusherStore
from homeserver.storage.registration_tokens import RegistrationTokenStore
from homeserver.storage.relations import RelationStore
from homeserver.storage.remote_devices import RemoteDeviceStore
from homeserver.storage.remote_invites import RemoteInviteStore
from homeserver.storage.search import SearchStore
from homeserver.storage.server_keys import ServerKeyStore
from homeserver.storage.state import StateStore
from homeserver.storage.to_device import ToDeviceStore
from homeserver.storage.uia import UiaStore
from homeserver.storage.usage import UsageStore
from homeserver.storage.user_data import UserDataStore
from homeserver.storage.users import UserStore


class Storage:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.users = UserStore(db)
        self.devices = DeviceStore(db)
        self.registration_tokens = RegistrationTokenStore(db)
        self.uia = UiaStore(db)
        self.events = EventStore(db)
        self.state = StateStore(db)
        self.aliases = AliasStore(db)
        self.filters = FilterStore(db)
        self.user_data = UserDataStore(db)
        self.push_rules = PushRuleStore(db)
        self.push_actions = PushActionStore(db)
        self.relations = RelationStore(db)
        self.search = SearchStore(db)
        self.e2e_keys = E2eKeyStore(db)
        self.to_device = ToDeviceStore(db)
        self.key_backup = KeyBackupStore(db)
        self.server_keys = ServerKeyStore(db)
        self.dehydrated_devices = DehydratedDeviceStore(db)
        self.delayed_events = DelayedEventStore(db)
        self.openid = OpenIdStore(db)
        self.remote_invites = RemoteInviteStore(db)
        self.remote_devices = RemoteDeviceStore(db)
        self.federation_outbox = FederationOutboxStore(db)
        self.pushers = PusherStore(db)
        self.media = MediaStore(db)
        self.appservices = AppServiceStore(db)
        self.usage = UsageStore(db)

    @classmethod
    async def open(cls, url: str, *, pool_size: int = 10) -> "Storage":
        db = await connect(url, pool_size=pool_size)
        try:
            await migrate(db)
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def close(self) -> None:
        await self.db.close()


__all__ = ["Connection", "Database", "Storage", "connect", "migrate"]
