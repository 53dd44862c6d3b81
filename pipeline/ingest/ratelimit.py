"""A per-key rate limit: a token bucket per API key, in this worker's memory.

Each request takes one token; a key's bucket holds at most ``burst`` tokens and refills at
``rate_per_second``. With several workers behind a load balancer each keeps its own buckets, so
the limit a key sees is per worker (documented in docs/integrators.md).
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    def __init__(self, rate_per_second: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate_per_second
        self.burst = max(1, burst)
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 when allowed, else the seconds until one is free."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate


def retry_after_header(wait_seconds: float) -> str:
    """HTTP Retry-After is whole seconds: round up, at least 1."""
    return str(max(1, math.ceil(wait_seconds)))
