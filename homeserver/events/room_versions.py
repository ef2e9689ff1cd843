"""Room versions Qasid speaks, as data.

Every rule that differs between room versions is a flag here, so the hashing, redaction, auth and
state-resolution code asks ``room_version.<flag>`` instead of comparing version strings. Versions 1-5
are deliberately absent: they predate integer/canonical-JSON strictness and key-validity checks, and
no current deployment creates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class StateResAlgorithm(Enum):
    V2 = "v2"
    V2_1 = "v2.1"  # MSC4297: starts from the empty state and includes the conflicted subgraph


@dataclass(frozen=True)
class RoomVersion:
    identifier: str
    state_res: StateResAlgorithm
    # v7+: the "knock" membership and join rule exist.
    knocking: bool
    # v8+: "restricted" join rule with join_authorised_via_users_server.
    restricted_joins: bool
    # v9+: redaction keeps join_authorised_via_users_server in m.room.member content
    # (v8 introduced restricted joins but forgot to preserve it).
    redaction_keeps_authorising_user: bool
    # v10+: "knock_restricted" join rule.
    knock_restricted: bool
    # v10+: power level values must be integers (strings such as "50" are refused).
    strict_integer_power_levels: bool
    # v11+ (MSC2174/MSC2176/MSC3821/MSC3989): redacts lives in content, the create event loses
    # "creator", redaction keeps all of create's content and power_levels' "invite".
    v11_redaction: bool
    redacts_in_content: bool
    creator_is_sender: bool
    # v12+ (MSC4291): the room ID is "!" + the create event's reference hash; the create event
    # has no room_id and is never listed in auth_events.
    room_id_from_create_event: bool
    # v12+ (MSC4289): the create event's sender and content.additional_creators have infinite power.
    privileged_creators: bool
    # Stable versions are offered to clients as such in /capabilities.
    stable: bool = True


def _v(identifier: str, **flags: bool | StateResAlgorithm) -> RoomVersion:
    n = int(identifier)
    defaults: dict[str, bool | StateResAlgorithm] = dict(
        state_res=StateResAlgorithm.V2_1 if n >= 12 else StateResAlgorithm.V2,
        knocking=n >= 7,
        restricted_joins=n >= 8,
        redaction_keeps_authorising_user=n >= 9,
        knock_restricted=n >= 10,
        strict_integer_power_levels=n >= 10,
        v11_redaction=n >= 11,
        redacts_in_content=n >= 11,
        creator_is_sender=n >= 11,
        room_id_from_create_event=n >= 12,
        privileged_creators=n >= 12,
    )
    defaults.update(flags)
    return RoomVersion(identifier=identifier, **defaults)  # type: ignore[arg-type]


KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {
    rv.identifier: rv for rv in (_v(str(n)) for n in range(6, 13))
}

# Synapse 1.163's default; configurable per server (``default_room_version``).
DEFAULT_ROOM_VERSION = "12"


class UnsupportedRoomVersion(Exception):
    """Raised for a room version Qasid does not implement (maps to M_UNSUPPORTED_ROOM_VERSION)."""

    def __init__(self, identifier: object) -> None:
        super().__init__(f"Unsupported room version: {identifier!r}")
        self.identifier = identifier


def get_room_version(room_version: str | RoomVersion) -> RoomVersion:
    """Accept either a version string or an object, so callers never need to care which they hold."""
    if isinstance(room_version, RoomVersion):
        return room_version
    try:
        return KNOWN_ROOM_VERSIONS[room_version]
    except (KeyError, TypeError):
        raise UnsupportedRoomVersion(room_version) from None
