"""POST /createRoom: presets, initial state, power-level overrides, invites — in the spec's order."""

from __future__ import annotations

from typing import Any

from homeserver.errors import MatrixError
from homeserver.events import get_room_version
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS, UnsupportedRoomVersion
from homeserver.services.event_creation import EventCreator
from homeserver.services.membership import MembershipService
from homeserver.storage import Storage
from homeserver.types import split_user_id

# Per preset: join rule, history visibility, whether invitees become admins, guest access, overrides.
PRESETS: dict[str, dict[str, Any]] = {
    "private_chat": {"join_rule": "invite", "history": "shared", "invitees_admin": False, "guests": True, "pl": {"invite": 0}},
    "trusted_private_chat": {"join_rule": "invite", "history": "shared", "invitees_admin": True, "guests": True, "pl": {"invite": 0}},
    "public_chat": {"join_rule": "public", "history": "shared", "invitees_admin": False, "guests": False, "pl": {}},
}


def default_power_levels(creator: str, creators_privileged: bool) -> dict[str, Any]:
    """Synapse's defaults, so rooms behave the same whichever server created them."""
    return {
        # Room version 12 gives creators infinite power; they must not appear in ``users``.
        "users": {} if creators_privileged else {creator: 100},
        "users_default": 0,
        "events": {
            "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
            "m.room.server_acl": 100, "m.room.encryption": 100,
        },
        "events_default": 0, "state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 50,
        "historical": 100,
    }


class RoomCreationService:
    def __init__(self, storage: Storage, creator: EventCreator, membership: MembershipService, default_version: str) -> None:
        self.storage = storage
        self.events = creator
        self.membership = membership
        self.default_version = default_version

    async def create_room(self, user_id: str, body: dict[str, Any]) -> str:
        version_id = body.get("room_version", self.default_version)
        if not isinstance(version_id, str) or version_id not in KNOWN_ROOM_VERSIONS:
            raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", f"Your homeserver does not support room version {version_id!r}")
        try:
            rv = get_room_version(version_id)
        except UnsupportedRoomVersion:
            raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", "Unsupported room version") from None

        visibility = body.get("visibility", "private")
        if visibility not in ("public", "private"):
            raise MatrixError(400, "M_INVALID_PARAM", "visibility must be 'public' or 'private'")
        preset_name = body.get("preset", "public_chat" if visibility == "public" else "private_chat")
        if preset_name not in PRESETS:
            raise MatrixError(400, "M_INVALID_PARAM", f"Unknown preset {preset_name!r}")
        preset = PRESETS[preset_name]
        invites = body.get("invite", [])
        if not isinstance(invites, list) or not all(isinstance(u, str) and split_user_id(u) for u in invites):
            raise MatrixError(400, "M_INVALID_PARAM", "invite must be a list of user IDs")
        if body.get("invite_3pid"):
            raise MatrixError(400, "M_UNKNOWN", "Third-party invites are not supported on this server")
        is_direct = body.get("is_direct", False)
        if not isinstance(is_direct, bool):
            raise MatrixError(400, "M_INVALID_PARAM", "is_direct must be a boolean")
        creation_content = body.get("creation_content", {})
        if not isinstance(creation_content, dict):
            raise MatrixError(400, "M_INVALID_PARAM", "creation_content must be an object")
        initial_state = _initial_state(body.get("initial_state", []))
        pl_override = body.get("power_level_content_override")
        if pl_override is not None and not isinstance(pl_override, dict):
            raise MatrixError(400, "M_INVALID_PARAM", "power_level_content_override must be an object")
        for key in ("name", "topic"):
            if key in body and not isinstance(body[key], str):
                raise MatrixError(400, "M_INVALID_PARAM", f"{key} must be a string")
        alias = None
        if body.get("room_alias_name") is not None:
            alias = await self.membership.directory_alias_for_creation(body["room_alias_name"])

        content = {k: v for k, v in creation_content.items() if k not in ("room_version",)}
        content["room_version"] = rv.identifier
        if not rv.creator_is_sender:
            content["creator"] = user_id
        elif rv.privileged_creators and preset["invitees_admin"] and invites:
            extra = [u for u in invites if u != user_id]
            content["additional_creators"] = sorted(set(content.get("additional_creators", []) + extra))
        create = await self.events.create_room_event(user_id, rv, content)
        room_id = create.room_id

        send = self.events.send
        profile = await self.storage.users.get_profile(user_id)
        member = {"membership": "join", **{k: profile[k] for k in ("displayname", "avatar_url") if k in profile}}
        await send(room_id, user_id, "m.room.member", member, user_id)

        if ("m.room.power_levels", "") in initial_state:
            await send(room_id, user_id, "m.room.power_levels", initial_state.pop(("m.room.power_levels", "")), "")
        else:
            pl = default_power_levels(user_id, rv.privileged_creators)
            if preset["invitees_admin"] and not rv.privileged_creators:
                for invitee in invites:
                    pl["users"][invitee] = 100
            pl.update(preset["pl"])
            if pl_override:
                pl.update(pl_override)
            await send(room_id, user_id, "m.room.power_levels", pl, "")

        if alias is not None and ("m.room.canonical_alias", "") not in initial_state:
            await send(room_id, user_id, "m.room.canonical_alias", {"alias": alias}, "")
        defaults = {
            ("m.room.join_rules", ""): {"join_rule": preset["join_rule"]},
            ("m.room.history_visibility", ""): {"history_visibility": preset["history"]},
        }
        if preset["guests"]:
            defaults[("m.room.guest_access", "")] = {"guest_access": "can_join"}
        for (etype, skey), c in defaults.items():
            if (etype, skey) not in initial_state:
                await send(room_id, user_id, etype, c, skey)
        for (etype, skey), c in initial_state.items():
            await send(room_id, user_id, etype, c, skey)
        if "name" in body:
            await send(room_id, user_id, "m.room.name", {"name": body["name"]}, "")
        if "topic" in body:
            topic = body["topic"]
            await send(room_id, user_id, "m.room.topic",
                       {"topic": topic, "m.topic": [{"mimetype": "text/plain", "body": topic}]}, "")
        if alias is not None:
            await self.membership.bind_alias(alias, room_id, user_id)
        for invitee in invites:
            await self.membership.invite(user_id, room_id, invitee, is_direct=is_direct)
        if visibility == "public":
            await self.storage.events.set_public(room_id, True)
        return room_id


def _initial_state(raw: Any) -> dict[tuple[str, str], dict[str, Any]]:
    if not isinstance(raw, list):
        raise MatrixError(400, "M_INVALID_PARAM", "initial_state must be a list")
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for i, ev in enumerate(raw):
        if not isinstance(ev, dict) or not isinstance(ev.get("type"), str) or not isinstance(ev.get("content"), dict):
            raise MatrixError(400, "M_INVALID_PARAM", f"initial_state[{i}] needs a type and a content object")
        skey = ev.get("state_key", "")
        if not isinstance(skey, str):
            raise MatrixError(400, "M_INVALID_PARAM", f"initial_state[{i}].state_key must be a string")
        if ev["type"] == "m.room.create" or ev["type"] == "m.room.member":
            raise MatrixError(400, "M_INVALID_PARAM", f"initial_state[{i}] may not set {ev['type']}")
        out[(ev["type"], skey)] = ev["content"]
    return out
