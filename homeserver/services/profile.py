"""Profiles: displayname, avatar_url and the extensible custom fields of spec v1.16."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import orjson

from homeserver.errors import MatrixError, forbidden
from homeserver.storage import Storage

if TYPE_CHECKING:
    from homeserver.services.event_creation import EventCreator

logger = logging.getLogger(__name__)

MAX_DISPLAYNAME_LEN = 256
MAX_AVATAR_URL_LEN = 1000
MAX_PROFILE_BYTES = 65536
MAX_KEY_BYTES = 255


class ProfileService:
    def __init__(self, storage: Storage, server_name: str, creator: "EventCreator | None" = None) -> None:
        self.storage = storage
        self.server_name = server_name
        self.creator = creator
        # Set by the composition root when federation is on.
        self.remote_lookup: Callable[[str], Awaitable[dict[str, Any]]] | None = None
        # Asks the application service owning a user ID to create it (the spec's user query).
        self.appservice_query: Callable[[str], Awaitable[bool]] | None = None

    def is_local(self, user_id: str) -> bool:
        return user_id.endswith(":" + self.server_name) and user_id.startswith("@")

    async def get_profile(self, user_id: str) -> dict[str, Any]:
        if not self.is_local(user_id):
            if self.remote_lookup is None or not user_id.startswith("@") or ":" not in user_id:
                raise MatrixError(404, "M_NOT_FOUND", "Profile was not found")
            return await self.remote_lookup(user_id)
        user = await self.storage.users.get(user_id)
        if user is None and self.appservice_query is not None and await self.appservice_query(user_id):
            user = await self.storage.users.get(user_id)
        if user is None:
            raise MatrixError(404, "M_NOT_FOUND", "Profile was not found")
        return await self.storage.users.get_profile(user_id)

    async def get_field(self, user_id: str, field: str) -> dict[str, Any]:
        _check_key(field)
        profile = await self.get_profile(user_id)
        if field not in profile:
            raise MatrixError(404, "M_NOT_FOUND", f"The user has no {field}")
        return {field: profile[field]}

    async def set_field(self, requester_user: str, target_user: str, field: str, value: Any, *, is_admin: bool = False) -> None:
        _check_key(field)
        if requester_user != target_user and not is_admin:
            raise forbidden("You may only change your own profile")
        if not self.is_local(target_user):
            raise MatrixError(400, "M_INVALID_PARAM", "Can only change profiles of local users")
        user = await self.storage.users.get(target_user)
        if user is None or user.deactivated:
            raise MatrixError(404, "M_NOT_FOUND", "Profile was not found")
        value = _validate(field, value)
        profile = await self.storage.users.get_profile(target_user)
        profile[field] = value
        if len(orjson.dumps({k: v for k, v in profile.items() if v is not None})) > MAX_PROFILE_BYTES:
            raise MatrixError(400, "M_PROFILE_TOO_LARGE", "The profile would exceed 64 KiB")
        async with self.storage.db.transaction() as conn:
            await self.storage.users.set_profile_field(conn, target_user, field, value)
        if field in ("displayname", "avatar_url"):
            await self._update_memberships(target_user, field, value)

    async def _update_memberships(self, user_id: str, field: str, value: Any) -> None:
        """Carry a new display name or avatar into the member event of every joined room, as clients
        read names from there. A room that refuses the change (power levels) keeps the old one."""
        if self.creator is None:
            return
        for room_id in await self.storage.events.rooms_for_user(user_id, ("join",)):
            current = await self.storage.events.current_state_pdus(room_id, [("m.room.member", user_id)])
            old = current.get(("m.room.member", user_id), {}).get("content", {})
            if old.get("membership") != "join" or old.get(field) == value:
                continue
            content = {k: v for k, v in old.items() if k not in (field, "join_authorised_via_users_server")}
            if value is not None:
                content[field] = value
            try:
                await self.creator.send(room_id, user_id, "m.room.member", content, state_key=user_id)
            except MatrixError as e:
                logger.info("profile change not applied in %s: %s", room_id, e.errcode)

    async def delete_field(self, requester_user: str, target_user: str, field: str, *, is_admin: bool = False) -> None:
        await self.set_field(requester_user, target_user, field, None, is_admin=is_admin)


def _check_key(field: str) -> None:
    if not field or len(field.encode()) > MAX_KEY_BYTES:
        raise MatrixError(400, "M_KEY_TOO_LARGE" if field else "M_INVALID_PARAM", "Profile keys must be 1-255 bytes")


def _validate(field: str, value: Any) -> Any:
    if value is None:
        return None
    if field == "displayname":
        if not isinstance(value, str):
            raise MatrixError(400, "M_BAD_JSON", "displayname must be a string")
        if len(value) > MAX_DISPLAYNAME_LEN:
            raise MatrixError(400, "M_BAD_JSON", f"displayname must be at most {MAX_DISPLAYNAME_LEN} characters")
        return value
    if field == "avatar_url":
        if not isinstance(value, str):
            raise MatrixError(400, "M_BAD_JSON", "avatar_url must be a string")
        if len(value) > MAX_AVATAR_URL_LEN:
            raise MatrixError(400, "M_BAD_JSON", f"avatar_url must be at most {MAX_AVATAR_URL_LEN} characters")
        if value and not value.startswith("mxc://"):
            raise MatrixError(400, "M_BAD_JSON", "avatar_url must be an mxc:// URI")
        return value
    if field == "m.tz" and not isinstance(value, str):
        raise MatrixError(400, "M_BAD_JSON", "m.tz must be a string")
    return value
