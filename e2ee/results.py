"""What the OlmMachine hands back: request bodies to send and decrypted events with provenance.

The machine does no HTTP, so everything it wants sent is returned as data the caller's HTTP layer
can post as-is, and everything it decrypted comes with the facts needed to decide how far to trust
it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ToDeviceRequest:
    """A PUT /sendToDevice/{event_type}/{txn_id} request.

    ``messages`` maps user id → device id → content, exactly the ``messages`` member of the body.
    The transaction id is generated once so that a retried request is deduplicated by the server.
    """

    event_type: str
    messages: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    txn_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def add(self, user_id: str, device_id: str, content: dict[str, Any]) -> None:
        """Add one device's message."""
        self.messages.setdefault(user_id, {})[device_id] = content

    def body(self) -> dict[str, Any]:
        """The JSON body to PUT."""
        return {"messages": self.messages}

    def devices(self) -> list[tuple[str, str]]:
        """Every (user id, device id) addressed."""
        return [(user, device) for user, per_device in self.messages.items() for device in per_device]

    def __len__(self) -> int:
        return sum(len(per_device) for per_device in self.messages.values())


@dataclass
class DecryptedToDevice:
    """A decrypted Olm to-device event.

    ``event`` has ``type``, ``content`` and ``sender`` like an unencrypted to-device event.
    ``sender_key`` is the Curve25519 key the Olm layer authenticated; ``sender_device`` is the
    device id owning that key if we have it from /keys/query (None if we have not seen the device,
    in which case the claimed ``sender_ed25519`` could not be checked against its device keys).
    """

    event: dict[str, Any]
    sender_key: str
    sender_ed25519: str
    sender_device: str | None


@dataclass
class DecryptedRoomEvent:
    """A decrypted Megolm room event.

    ``event`` is the original event with ``type`` and ``content`` replaced by the plaintext ones.
    ``authentic`` is True only if the room key came straight from the creating device over Olm
    (not forwarded or imported) and that device is a known device of the event's ``sender`` with the
    Ed25519 key the key claimed; it says nothing about whether the device is *verified* by a human.
    """

    event: dict[str, Any]
    session_id: str
    message_index: int
    sender_key: str
    sender_claimed_ed25519: str
    forwarding_chain: list[str]
    authentic: bool


@dataclass
class KeysQueryResult:
    """What a /keys/query response changed in the device store."""

    new_devices: list[tuple[str, str]] = field(default_factory=list)
    deleted_devices: list[tuple[str, str]] = field(default_factory=list)
    rejected_devices: list[tuple[str, str, str]] = field(default_factory=list)  # (user, device, reason)


@dataclass
class ClaimResult:
    """Outcome of a /keys/claim response.

    ``unwedge`` holds encrypted ``m.dummy`` messages for devices whose broken session was just
    replaced: sending them tells the peer to switch to the new session.
    """

    created: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (user, device, reason)
    unwedge: ToDeviceRequest | None = None
