"""Fixtures for the e2ee tests: pure unit tests, no homeserver."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import pytest

from e2ee import CryptoStore, OlmMachine

from .fakeserver import FakeClock, FakeKeyServer, introduce, upload_keys

ALICE = "@alice:hs1.test"
BOB = "@bob:hs2.test"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server() -> FakeKeyServer:
    return FakeKeyServer()


@pytest.fixture
def make_machine(tmp_path: Path, clock: FakeClock, server: FakeKeyServer) -> Iterator[Callable[..., OlmMachine]]:
    """``make_machine(user, device)`` → an OlmMachine with a file store whose keys are uploaded."""
    stores: list[CryptoStore] = []

    def factory(user_id: str, device_id: str, pickle_key: bytes | None = None, upload: bool = True) -> OlmMachine:
        store = CryptoStore(tmp_path / f"{user_id}-{device_id}.db")
        stores.append(store)
        machine = OlmMachine(user_id, device_id, store, pickle_key or os.urandom(32), clock=clock)
        if upload:
            upload_keys(server, machine)
        return machine

    yield factory
    for store in stores:
        store.close()


@pytest.fixture
def alice(make_machine: Callable[..., OlmMachine]) -> OlmMachine:
    return make_machine(ALICE, "ALICEDEV")


@pytest.fixture
def bob(make_machine: Callable[..., OlmMachine]) -> OlmMachine:
    return make_machine(BOB, "BOBDEV")


@pytest.fixture
def acquainted(server: FakeKeyServer, alice: OlmMachine, bob: OlmMachine) -> tuple[OlmMachine, OlmMachine]:
    """Alice and Bob know each other's device keys (no Olm sessions yet)."""
    introduce(server, alice, [ALICE, BOB])
    introduce(server, bob, [ALICE, BOB])
    return alice, bob
