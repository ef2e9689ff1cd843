"""Token-bucket rate limiting, in memory per process (as Synapse does).

Buckets are keyed by (action, key) and forgotten once full again, so memory stays bounded by the
number of currently active clients.
"""

from __future__ import annotations

from dataclasses import dataclass

from homeserver.clock import Clock
from homeserver.config import RateLimit
from homeserver.errors import limit_exceeded


@dataclass
class _Bucket:
    tokens: float
    updated: float
    limit: RateLimit


class RateLimiter:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._last_sweep = clock.monotonic()

    def check(self, action: str, key: str, limit: RateLimit, *, cost: float = 1.0, update: bool = True) -> None:
        """Raise 429 M_LIMIT_EXCEEDED if ``key`` has used up its allowance for ``action``."""
        if limit.per_second <= 0 and limit.burst_count <= 0:
            return
        now = self._clock.monotonic()
        self._sweep(now)
        bucket = self._buckets.get((action, key))
        if bucket is None:
            bucket = _Bucket(tokens=limit.burst_count, updated=now, limit=limit)
        else:
            bucket.tokens = min(limit.burst_count, bucket.tokens + (now - bucket.updated) * limit.per_second)
            bucket.updated = now
        if bucket.tokens < cost:
            needed = cost - bucket.tokens
            wait = needed / limit.per_second if limit.per_second > 0 else 3600.0
            self._buckets[(action, key)] = bucket
            raise limit_exceeded(int(wait * 1000) + 1)
        if update:
            bucket.tokens -= cost
            self._buckets[(action, key)] = bucket

    def record(self, action: str, key: str, limit: RateLimit) -> None:
        """Spend one token without refusing (e.g. count a failed login after the fact)."""
        try:
            self.check(action, key, limit)
        except Exception:
            pass

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < 60 or len(self._buckets) < 1000:
            return
        self._last_sweep = now
        full = [
            k for k, b in self._buckets.items()
            if b.tokens + (now - b.updated) * b.limit.per_second >= b.limit.burst_count
        ]
        for k in full:
            del self._buckets[k]
