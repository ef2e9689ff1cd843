"""Password hashing: argon2id in the hasher's own few threads, so a burst of logins cannot hold more
than ``max_concurrent`` × memory_cost at once."""

from __future__ import annotations

import asyncio
import threading

import argon2

from homeserver.config import PasswordHashing
from homeserver.services.passwords import PasswordHasher


async def test_hashes_and_checks_run_at_most_max_concurrent_at_once(monkeypatch) -> None:
    hasher = PasswordHasher(PasswordHashing(time_cost=1, memory_cost_kib=64, parallelism=1, max_concurrent=2))
    running = 0
    peak = 0
    threads: set[int] = set()
    lock = threading.Lock()
    real_hash = argon2.PasswordHasher.hash

    def slow_hash(self: argon2.PasswordHasher, password: str, **kw: object) -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            threads.add(threading.get_ident())
        try:
            threading.Event().wait(0.05)  # long enough for every submitted hash to be waiting
            return real_hash(self, password, **kw)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(argon2.PasswordHasher, "hash", slow_hash)
    hashes = await asyncio.gather(*(hasher.hash(f"pw-{i}") for i in range(8)))
    assert peak == 2
    assert len(threads) == 2
    # The hashes are real: each checks against its own password only.
    assert await hasher.verify(hashes[3], "pw-3")
    assert not await hasher.verify(hashes[3], "pw-4")
    assert not await hasher.verify(None, "pw-3")
