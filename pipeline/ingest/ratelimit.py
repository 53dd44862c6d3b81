"""Rate limits for HTTP ingest.

Per key: a token bucket per integrator, shared by every worker. Each request takes one token; a
bucket holds at most ``burst`` tokens and refills at ``rate_per_second``. The buckets are rows in
PostgreSQL (``ingest_buckets``), updated in one statement under the row's lock and timed by the
database's clock, so a key gets the same limit however many workers stand behind the load balancer.
While PostgreSQL is away the limit still holds, per worker: the same bucket is kept in the worker's
memory until PostgreSQL answers again (so a key behind N workers may then get up to N times its rate).

Per client address: ``LocalBuckets`` in the worker's memory count requests without a valid key, so
that guessing keys is refused (429) before it costs PostgreSQL anything.
"""

import math
import time

import asyncpg
from cachetools import LRUCache

from pipeline.ingest.database import DatabaseAway, GuardedPool

_LEVEL = "least($2::float8, b.tokens + $3::float8 * extract(epoch FROM statement_timestamp() - b.at)::float8)"

_TAKE = f"""
INSERT INTO ingest_buckets AS b (integrator, tokens, at, allowed)
VALUES ($1, $2::float8 - 1, statement_timestamp(), true)
ON CONFLICT (integrator) DO UPDATE SET
    tokens = {_LEVEL} - CASE WHEN {_LEVEL} >= 1 THEN 1 ELSE 0 END,
    allowed = {_LEVEL} >= 1,
    at = statement_timestamp()
RETURNING tokens, allowed"""


class LocalBuckets:
    """Token buckets in this worker's memory, one per name; beyond ``size`` names the least recently
    used bucket is forgotten (it starts full again)."""

    def __init__(self, rate_per_second: float, burst: int, size: int = 10_000, timer=time.monotonic):
        self.rate = rate_per_second
        self.burst = max(1, burst)
        self.timer = timer
        self._buckets: LRUCache = LRUCache(maxsize=size)

    def _level(self, name: str, now: float) -> float:
        tokens, at = self._buckets.get(name, (self.burst, now))
        return min(self.burst, tokens + self.rate * (now - at))

    def wait(self, name: str) -> float:
        """Seconds until ``name`` has a token (0.0 if it has one now), taking none."""
        level = self._level(name, self.timer())
        return 0.0 if level >= 1 else (1 - level) / self.rate

    def take(self, name: str) -> float:
        """Take a token for ``name``: 0.0 when there was one, else the seconds until one is free."""
        now = self.timer()
        level = self._level(name, now)
        allowed = level >= 1
        self._buckets[name] = (level - 1 if allowed else level, now)
        return 0.0 if allowed else (1 - level) / self.rate


class RateLimiter:
    def __init__(self, pool: asyncpg.Pool, rate_per_second: float, burst: int):
        self.db = GuardedPool(pool)
        self.rate = rate_per_second
        self.burst = max(1, burst)
        self.while_away = LocalBuckets(rate_per_second, burst)

    async def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 when allowed, else the seconds until one is free."""
        try:
            row = await self.db.fetchrow(_TAKE, key, float(self.burst), float(self.rate))
        except DatabaseAway:
            return self.while_away.take(key)
        if row["allowed"]:
            return 0.0
        return (1 - row["tokens"]) / self.rate


def retry_after_header(wait_seconds: float) -> str:
    """HTTP Retry-After is whole seconds: round up, at least 1."""
    return str(max(1, math.ceil(wait_seconds)))
