"""POST /rooms/{roomId}/upgrade: a new room of a newer version, and a tombstone pointing to it."""

from __future__ import annotations

from typing import Any

from homeserver.errors import MatrixError, forbidden
from homeserver.events import get_room_version
from homeserver.events.auth import required_power_level, user_power_level
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.services.event_creation import EventCreator
from homeserver.storage import Storage

# State that moves to the new room, as Synapse carries it.
COPIED_STATE = (
    "m.room.join_rules", "m.room.name", "m.room.topic", "m.room.history_visibility", "m.room.guest_access",
    "m.room.avatar", "m.room.encryption", "m.room.server_acl",
)


class RoomUpgradeService:
    def __init__(self, storage: Storage, creator: EventCreator) -> None:
        self.storage = storage
        self.events = creator

    async def _state_contents(self, room_id: str) -> dict[tuple[str, str], dict[str, Any]]:
        state = await self.storage.events.get_current_state_ids(room_id)
        events = await self.storage.events.get_events(state.values())
        return {k: {"pdu": events[v].pdu, "content": events[v].pdu.get("content", {})} for k, v in state.items() if v in events}

    async def upgrade(self, user_id: str, old_room_id: str, new_version: Any) -> str:
        if not isinstance(new_version, str) or new_version not in KNOWN_ROOM_VERSIONS:
            raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", f"Unsupported room version {new_version!r}")
        room = await self.storage.events.get_room(old_room_id)
        if room is None:
            raise forbidden("You are not a member of this room")
        old_rv, new_rv = get_room_version(room.room_version), get_room_version(new_version)
        state = await self._state_contents(old_room_id)
        auth = {k: v["pdu"] for k, v in state.items() if k in (("m.room.create", ""), ("m.room.power_levels", ""))}
        member = state.get(("m.room.member", user_id), {}).get("content", {}).get("membership")
        probe = {"type": "m.room.tombstone", "state_key": "", "sender": user_id}
        if member != "join" or user_power_level(user_id, auth, old_rv) < required_power_level(probe, auth, old_rv):
            raise forbidden("You may not upgrade this room")

        old_create = state[("m.room.create", "")]["content"]
        create_content: dict[str, Any] = {k: old_create[k] for k in ("type", "m.federate") if k in old_create}
        last = await self.storage.events.get_forward_extremities(old_room_id)
        create_content["predecessor"] = {"room_id": old_room_id, **({"event_id": last[0]} if last else {})}
        create_content["room_version"] = new_version
        if not new_rv.creator_is_sender:
            create_content["creator"] = user_id
        old_pl = dict(state.get(("m.room.power_levels", ""), {}).get("content", {}))
        if new_rv.privileged_creators:
            # Whoever had the most power in the old room keeps it as a creator of the new one.
            old_creators = {room.creator} if room.creator else set()
            if old_rv.privileged_creators:
                old_creators |= set(old_create.get("additional_creators", []))
            top = max((v for v in old_pl.get("users", {}).values() if isinstance(v, int)), default=None)
            admins = {u for u, v in old_pl.get("users", {}).items() if top is not None and v == top and v >= 100}
            extra = sorted((old_creators | admins) - {user_id})
            if extra:
                create_content["additional_creators"] = extra
        create = await self.events.create_room_event(user_id, new_rv, create_content)
        new_room_id = create.room_id

        profile = await self.storage.users.get_profile(user_id)
        member_content = {"membership": "join", **{k: profile[k] for k in ("displayname", "avatar_url") if k in profile}}
        await self.events.send(new_room_id, user_id, "m.room.member", member_content, user_id)

        pl = {**old_pl}
        users = dict(pl.get("users", {}))
        if new_rv.privileged_creators:
            for creator in [user_id, *create_content.get("additional_creators", [])]:
                users.pop(creator, None)
        else:
            users[user_id] = max(100, users.get(user_id, 0) if isinstance(users.get(user_id, 0), int) else 0)
        pl["users"] = users
        await self.events.send(new_room_id, user_id, "m.room.power_levels", pl, "")
        for etype in COPIED_STATE:
            if (etype, "") in state:
                await self.events.send(new_room_id, user_id, etype, state[(etype, "")]["content"], "")

        # Aliases follow the room.
        aliases = await self.storage.aliases.for_room(old_room_id)
        for alias in aliases:
            found = await self.storage.aliases.get(alias)
            await self.storage.aliases.delete(alias)
            await self.storage.aliases.create(alias, new_room_id, found[1] if found else user_id, 0)
        canonical = state.get(("m.room.canonical_alias", ""), {}).get("content")
        if canonical:
            await self.events.send(new_room_id, user_id, "m.room.canonical_alias", canonical, "")
        if room.is_public:
            await self.storage.events.set_public(new_room_id, True)
            await self.storage.events.set_public(old_room_id, False)

        await self.events.send(old_room_id, user_id, "m.room.tombstone",
                               {"body": "This room has been replaced", "replacement_room": new_room_id}, "")
        # Stop conversation continuing in the old room.
        restricted = dict(old_pl) if old_pl else {}
        if old_pl:
            floor = max(50, int(old_pl.get("users_default", 0)) + 1)
            restricted["events_default"] = max(int(old_pl.get("events_default", 0)), floor)
            restricted["invite"] = max(int(old_pl.get("invite", 0)), floor)
            if restricted != old_pl:
                await self.events.send(old_room_id, user_id, "m.room.power_levels", restricted, "")
        return new_room_id
