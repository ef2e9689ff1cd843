"""Password hashing (argon2id) and the password policy.

Hashing runs in worker threads: it is deliberately slow and memory-hard, and must not stall the event
loop that serves every other request. The threads are the hasher's own and few (one per CPU by default):
each hash holds ``memory_cost_kib`` of memory, so a burst of logins sharing the loop's default pool
(five or more threads) multiplied the server's peak memory without finishing any sooner.
"""

from __future__ import annotations

import asyncio
import os
import string
from concurrent.futures import ThreadPoolExecutor

import argon2
from argon2.low_level import Type

from homeserver.config import PasswordHashing, PasswordPolicy
from homeserver.errors import MatrixError

MAX_PASSWORD_LENGTH = 512


class PasswordHasher:
    def __init__(self, params: PasswordHashing) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=params.time_cost, memory_cost=params.memory_cost_kib, parallelism=params.parallelism,
            type=Type.ID,
        )
        workers = params.max_concurrent or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        if not stored_hash or len(password) > MAX_PASSWORD_LENGTH:
            return False

        def check() -> bool:
            try:
                return self._hasher.verify(stored_hash, password)
            except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
                return False

        return await asyncio.get_running_loop().run_in_executor(self._pool, check)


def check_password_policy(password: object, policy: PasswordPolicy) -> str:
    """Return the password if acceptable; raise the spec's M_WEAK_PASSWORD (or M_BAD_JSON) otherwise."""
    if not isinstance(password, str) or not password:
        raise MatrixError(400, "M_BAD_JSON", "password must be a non-empty string")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise MatrixError(400, "M_BAD_JSON", f"password must be at most {MAX_PASSWORD_LENGTH} characters")
    if "\x00" in password:
        raise MatrixError(400, "M_BAD_JSON", "password must not contain NUL characters")
    if not policy.enabled:
        return password
    problems = []
    if len(password) < policy.minimum_length:
        problems.append(f"at least {policy.minimum_length} characters")
    if policy.require_digit and not any(c.isdigit() for c in password):
        problems.append("a digit")
    if policy.require_symbol and all(c.isalnum() for c in password):
        problems.append("a symbol")
    if policy.require_lowercase and not any(c in string.ascii_lowercase or (c.isalpha() and c.islower()) for c in password):
        problems.append("a lower-case letter")
    if policy.require_uppercase and not any(c.isalpha() and c.isupper() for c in password):
        problems.append("an upper-case letter")
    if problems:
        raise MatrixError(400, "M_WEAK_PASSWORD", "Password must contain " + ", ".join(problems))
    return password
