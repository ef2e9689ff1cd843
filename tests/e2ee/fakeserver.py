"""A stand-in for the homeserver's key and to-device endpoints, operating on request bodies only.

It keeps just enough state to route bodies between OlmMachines the way a homeserver would
(uploaded device keys, one-time keys handed out once, fallback keys reused, to-device queues), so the
tests exercise the machines' real request/response handling without any HTTP.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from e2ee import OlmMachine, ToDeviceRequest


@dataclass
class FakeClock:
    """Milliseconds since the epoch, advanced by hand."""

    now: int = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@dataclass
class FakeKeyServer:
    device_keys: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    one_time_keys: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    fallback_keys: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    fallback_used: set[tuple[str, str]] = field(default_factory=set)
    inbox: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)

    def upload(self, user_id: str, device_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if "device_keys" in body:
            self.device_keys.setdefault(user_id, {})[device_id] = copy.deepcopy(body["device_keys"])
        self.one_time_keys.setdefault((user_id, device_id), {}).update(copy.deepcopy(body.get("one_time_keys", {})))
        if body.get("fallback_keys"):
            self.fallback_keys[(user_id, device_id)] = copy.deepcopy(body["fallback_keys"])
            self.fallback_used.discard((user_id, device_id))
        return {"one_time_key_counts": self.counts(user_id, device_id)}

    def counts(self, user_id: str, device_id: str) -> dict[str, int]:
        return {"signed_curve25519": len(self.one_time_keys.get((user_id, device_id), {}))}

    def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        key = (user_id, device_id)
        return ["signed_curve25519"] if key in self.fallback_keys and key not in self.fallback_used else []

    def query(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "device_keys": {user: copy.deepcopy(self.device_keys.get(user, {})) for user in body["device_keys"]},
            "failures": {},
        }

    def claim(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, dict[str, Any]] = {}
        for user_id, devices in body["one_time_keys"].items():
            for device_id, algorithm in devices.items():
                pool = self.one_time_keys.get((user_id, device_id), {})
                key_id = next((k for k in sorted(pool) if k.startswith(algorithm + ":")), None)
                if key_id is not None:
                    result.setdefault(user_id, {})[device_id] = {key_id: pool.pop(key_id)}
                elif (user_id, device_id) in self.fallback_keys:
                    self.fallback_used.add((user_id, device_id))
                    result.setdefault(user_id, {})[device_id] = copy.deepcopy(self.fallback_keys[(user_id, device_id)])
        return {"one_time_keys": result, "failures": {}}

    def send_to_device(self, sender: str, request: ToDeviceRequest) -> None:
        for user_id, devices in request.messages.items():
            for device_id, content in devices.items():
                self.inbox.setdefault((user_id, device_id), []).append(
                    {"type": request.event_type, "sender": sender, "content": copy.deepcopy(content)}
                )

    def take_to_device(self, user_id: str, device_id: str) -> list[dict[str, Any]]:
        return self.inbox.pop((user_id, device_id), [])


def upload_keys(server: FakeKeyServer, machine: OlmMachine) -> dict[str, Any] | None:
    """One sync-driven upload round, as a client would do it."""
    body = machine.keys_for_upload(
        server.counts(machine.user_id, machine.device_id),
        server.unused_fallback_key_types(machine.user_id, machine.device_id),
    )
    if body is not None:
        server.upload(machine.user_id, machine.device_id, body)
        machine.mark_keys_as_published()
    return body


def introduce(server: FakeKeyServer, machine: OlmMachine, users: list[str]) -> None:
    """Track users and query their keys."""
    machine.update_tracked_users(users)
    request = machine.keys_query_request()
    if request is not None:
        machine.receive_keys_query(server.query(request))


def establish(server: FakeKeyServer, machine: OlmMachine, user_devices: dict[str, Any]) -> None:
    """Claim keys and create Olm sessions, delivering any unwedging dummies."""
    request = machine.claim_request(user_devices)
    if request is not None:
        result = machine.create_olm_sessions(server.claim(request))
        if result.unwedge is not None:
            server.send_to_device(machine.user_id, result.unwedge)
