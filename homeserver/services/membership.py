"""Membership changes by local users in rooms this server holds, and room aliases.

Joining rooms on other servers needs federation (step 5); until then such joins answer 404 as Synapse
does when it knows no server to join through.
"""

from __future__ import annotations

import re
from typing import Any, Awaitable, Callable

from homeserver.clock import Clock
from homeserver.errors import MatrixError, forbidden
from homeserver.services.event_creation import EventCreator, NewEvent
from homeserver.storage import Storage
from homeserver.types import split_user_id

_ALIAS_LOCALPART = re.compile(r"^[^:\s#]+$")
MAX_REASON_LEN = 2048


class MembershipService:
    def __init__(self, storage: Storage, creator: EventCreator, clock: Clock, server_name: str) -> None:
        self.storage = storage
        self.events = creator
        self.clock = clock
        self.server_name = server_name
        # Set by the composition root when federation is on.
        self.remote_alias: Callable[[str], Awaitable[dict[str, Any]]] | None = None
        self.remote_join: Callable[[str, str, list[str], dict[str, Any]], Awaitable[str]] | None = None
        self.remote_invite: Callable[[str, dict[str, Any], str], Awaitable[dict[str, Any]]] | None = None
        self.remote_reject: Callable[[str, str], Awaitable[None]] | None = None
        self.remote_knock: Callable[[str, str, list[str], dict[str, Any]], Awaitable[str]] | None = None

    # --- lookups ---------------------------------------------------------------------------

    async def membership_of(self, room_id: str, user_id: str) -> str | None:
        eid = await self.storage.events.get_current_state_event_id(room_id, "m.room.member", user_id)
        if eid is None:
            return None
        ev = await self.storage.events.get_event(eid)
        return ev.pdu["content"].get("membership") if ev else None

    async def _state_content(self, room_id: str, etype: str, skey: str = "") -> dict[str, Any] | None:
        eid = await self.storage.events.get_current_state_event_id(room_id, etype, skey)
        if eid is None:
            return None
        ev = await self.storage.events.get_event(eid)
        return ev.pdu.get("content", {}) if ev else None

    async def resolve_room(self, room_id_or_alias: str) -> str:
        if room_id_or_alias.startswith("#"):
            found = await self.storage.aliases.get(room_id_or_alias)
            if found is None:
                raise MatrixError(404, "M_NOT_FOUND", "Room alias not found")
            return found[0]
        if not room_id_or_alias.startswith("!"):
            raise MatrixError(400, "M_INVALID_PARAM", "Expected a room ID or alias")
        return room_id_or_alias

    async def _resolve_with_servers(self, room_id_or_alias: str, via: list[str] | None) -> tuple[str, list[str]]:
        """The room ID, and the servers that may let us in if we do not hold the room: those given,
        those a remote alias names, and for rooms before version 12 the server in the room ID."""
        servers = list(via or [])
        if room_id_or_alias.startswith("#") and not room_id_or_alias.endswith(":" + self.server_name) \
                and self.remote_alias is not None:
            found = await self.remote_alias(room_id_or_alias)
            room_id, servers = found["room_id"], servers + found["servers"]
        else:
            room_id = await self.resolve_room(room_id_or_alias)
        if ":" in room_id:
            servers.append(room_id.split(":", 1)[1])
        return room_id, servers

    async def _require_room(self, room_id: str) -> None:
        if await self.storage.events.get_room(room_id) is None:
            # A room we don't hold: only federation could reach it.
            raise MatrixError(404, "M_NOT_FOUND", "No known servers to join this room through")

    # --- membership ------------------------------------------------------------------------

    async def _profile_content(self, user_id: str) -> dict[str, Any]:
        profile = await self.storage.users.get_profile(user_id)
        return {k: profile[k] for k in ("displayname", "avatar_url") if isinstance(profile.get(k), str)}

    async def join(self, user_id: str, room_id_or_alias: str, *, reason: str | None = None,
                   via: list[str] | None = None) -> str:
        room_id, servers = await self._resolve_with_servers(room_id_or_alias, via)
        if await self.storage.events.get_room(room_id) is None and self.remote_join is not None:
            invite = await self.storage.remote_invites.get(user_id, room_id)
            if invite is not None:
                servers.append(str(invite.event.get("sender", "")).split(":", 1)[-1])
            content: dict[str, Any] = {"membership": "join", **await self._profile_content(user_id)}
            _add_reason(content, reason)
            return await self.remote_join(user_id, room_id, list(dict.fromkeys(servers)), content)
        await self._require_room(room_id)
        current = await self.membership_of(room_id, user_id)
        if current == "ban":
            raise forbidden("You are banned from this room")
        content: dict[str, Any] = {"membership": "join", **await self._profile_content(user_id)}
        _add_reason(content, reason)
        join_rules = await self._state_content(room_id, "m.room.join_rules") or {}
        rule = join_rules.get("join_rule")
        if rule in ("restricted", "knock_restricted") and current not in ("invite", "join"):
            content["join_authorised_via_users_server"] = await self._authorise_restricted_join(room_id, user_id, join_rules)
        await self.events.send(room_id, user_id, "m.room.member", content, user_id)
        await self.storage.aliases.unforget(user_id, room_id)
        return room_id

    async def _authorise_restricted_join(self, room_id: str, user_id: str, join_rules: dict[str, Any]) -> str:
        """Check the join rule's allow list and pick a local member who may invite to vouch for the join."""
        allowed = False
        for entry in join_rules.get("allow", []) or []:
            if isinstance(entry, dict) and entry.get("type") == "m.room_membership" and isinstance(entry.get("room_id"), str):
                if await self.membership_of(entry["room_id"], user_id) == "join":
                    allowed = True
                    break
        if not allowed:
            raise forbidden("You are not a member of any room that allows joining this one")
        pl = await self._state_content(room_id, "m.room.power_levels") or {}
        invite_level = _int(pl.get("invite", 0))
        users = pl.get("users", {}) if isinstance(pl.get("users"), dict) else {}
        creators = await self._creators(room_id)
        for member in await self.storage.events.members(room_id):
            if not member.endswith(":" + self.server_name):
                continue
            level = float("inf") if member in creators else _int(users.get(member, pl.get("users_default", 0)))
            if level >= invite_level:
                return member
        raise MatrixError(400, "M_UNABLE_TO_AUTHORISE_JOIN", "No local member can authorise this join")

    async def _creators(self, room_id: str) -> set[str]:
        create = await self._state_content(room_id, "m.room.create") or {}
        room = await self.storage.events.get_room(room_id)
        creators = {room.creator} if room and room.creator else set()
        extra = create.get("additional_creators")
        if isinstance(extra, list):
            creators |= {u for u in extra if isinstance(u, str)}
        from homeserver.events import get_room_version

        if room is None or not get_room_version(room.room_version).privileged_creators:
            return set()
        return creators

    async def invite(self, sender: str, room_id: str, target: str, *, reason: str | None = None, is_direct: bool = False) -> NewEvent:
        if split_user_id(target) is None:
            raise MatrixError(400, "M_INVALID_PARAM", "user_id must be a user ID")
        await self._require_room(room_id)
        remote = not target.endswith(":" + self.server_name)
        if remote and self.remote_invite is None:
            raise MatrixError(400, "M_UNKNOWN", "Inviting users on other servers needs federation, which is not enabled")
        if not remote and not await self.storage.users.exists(target):
            raise MatrixError(404, "M_NOT_FOUND", "Unknown user")
        current = await self.membership_of(room_id, target)
        if current == "ban":
            raise forbidden(f"{target} is banned from the room")
        if current == "join":
            raise forbidden(f"{target} is already in the room")
        content: dict[str, Any] = {"membership": "invite", **await self._profile_content(target)}
        if is_direct:
            content["is_direct"] = True
        _add_reason(content, reason)
        return await self.events.send(room_id, sender, "m.room.member", content, target,
                                      before_persist=self.remote_invite if remote else None)

    async def leave(self, user_id: str, room_id: str, *, reason: str | None = None) -> None:
        if await self.storage.events.get_room(room_id) is None and self.remote_reject is not None \
                and await self.storage.remote_invites.get(user_id, room_id) is not None:
            await self.remote_reject(user_id, room_id)  # rejecting an invite to a room another server holds
            return
        await self._require_room(room_id)
        current = await self.membership_of(room_id, user_id)
        if current in (None, "leave", "ban"):
            if current is None:
                raise forbidden("You are not in this room")
            return  # leaving twice is a no-op, as Synapse does
        content: dict[str, Any] = {"membership": "leave"}
        _add_reason(content, reason)
        await self.events.send(room_id, user_id, "m.room.member", content, user_id)

    async def kick(self, sender: str, room_id: str, target: str, *, reason: str | None = None) -> None:
        await self._require_room(room_id)
        current = await self.membership_of(room_id, target)
        if current not in ("join", "invite", "knock"):
            raise forbidden(f"{target} is not in the room")
        content: dict[str, Any] = {"membership": "leave"}
        _add_reason(content, reason)
        await self.events.send(room_id, sender, "m.room.member", content, target)

    async def ban(self, sender: str, room_id: str, target: str, *, reason: str | None = None) -> None:
        if split_user_id(target) is None:
            raise MatrixError(400, "M_INVALID_PARAM", "user_id must be a user ID")
        await self._require_room(room_id)
        content: dict[str, Any] = {"membership": "ban"}
        _add_reason(content, reason)
        await self.events.send(room_id, sender, "m.room.member", content, target)

    async def unban(self, sender: str, room_id: str, target: str, *, reason: str | None = None) -> None:
        await self._require_room(room_id)
        if await self.membership_of(room_id, target) != "ban":
            raise forbidden(f"{target} is not banned")
        content: dict[str, Any] = {"membership": "leave"}
        _add_reason(content, reason)
        await self.events.send(room_id, sender, "m.room.member", content, target)

    async def knock(self, user_id: str, room_id_or_alias: str, *, reason: str | None = None,
                    via: list[str] | None = None) -> str:
        room_id, servers = await self._resolve_with_servers(room_id_or_alias, via)
        if await self.storage.events.get_room(room_id) is None and self.remote_knock is not None:
            content: dict[str, Any] = {"membership": "knock", **await self._profile_content(user_id)}
            _add_reason(content, reason)
            return await self.remote_knock(user_id, room_id, list(dict.fromkeys(servers)), content)
        await self._require_room(room_id)
        current = await self.membership_of(room_id, user_id)
        if current in ("join", "ban"):
            raise forbidden("You cannot knock on this room")
        content: dict[str, Any] = {"membership": "knock", **await self._profile_content(user_id)}
        _add_reason(content, reason)
        await self.events.send(room_id, user_id, "m.room.member", content, user_id)
        return room_id

    async def forget(self, user_id: str, room_id: str) -> None:
        current = await self.membership_of(room_id, user_id)
        if current in ("join", "invite", "knock"):
            raise MatrixError(400, "M_UNKNOWN", "You must leave the room before forgetting it")
        if current is None:
            raise MatrixError(404, "M_NOT_FOUND", "You have never been in this room")
        await self.storage.aliases.forget(user_id, room_id)

    # --- aliases ---------------------------------------------------------------------------

    async def directory_alias_for_creation(self, localpart: Any) -> str:
        if not isinstance(localpart, str) or not _ALIAS_LOCALPART.match(localpart):
            raise MatrixError(400, "M_INVALID_PARAM", "room_alias_name must not contain ':', '#' or whitespace")
        alias = f"#{localpart}:{self.server_name}"
        if len(alias) > 255:
            raise MatrixError(400, "M_INVALID_PARAM", "Alias is too long")
        if await self.storage.aliases.get(alias) is not None:
            raise MatrixError(400, "M_ROOM_IN_USE", "Room alias already taken")
        return alias

    async def bind_alias(self, alias: str, room_id: str, creator: str) -> None:
        if not await self.storage.aliases.create(alias, room_id, creator, self.clock.time_ms()):
            raise MatrixError(409, "M_UNKNOWN", "Room alias already exists")


def _add_reason(content: dict[str, Any], reason: Any) -> None:
    if reason is None:
        return
    if not isinstance(reason, str) or len(reason) > MAX_REASON_LEN:
        raise MatrixError(400, "M_INVALID_PARAM", f"reason must be a string of at most {MAX_REASON_LEN} characters")
    content["reason"] = reason


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
