"""A per-key rate limit for HTTP ingest: a token bucket per integrator, shared by every worker.

Each request takes one token; a bucket holds at most ``burst`` tokens and refills at
``rate_per_second``. The buckets are rows in PostgreSQL (``ingest_buckets``), updated in one
statement under the row's lock and timed by the database's clock, so a key gets the same limit
however many workers stand behind the load balancer. While PostgreSQL is unreachable the limit
is not applied, so that events keep reaching Kafka.
"""

import logging
import math

import asyncpg

from pipeline.cases.service import CONNECTION_ERRORS

log = logging.getLogger(__name__)

_LEVEL = "least($2::float8, b.tokens + $3::float8 * extract(epoch FROM statement_timestamp() - b.at)::float8)"

_TAKE = f"""
INSERT INTO ingest_buckets AS b (integrator, tokens, at, allowed)
VALUES ($1, $2::float8 - 1, statement_timestamp(), true)
ON CONFLICT (integrator) DO UPDATE SET
    tokens = {_LEVEL} - CASE WHEN {_LEVEL} >= 1 THEN 1 ELSE 0 END,
    allowed = {_LEVEL} >= 1,
    at = statement_timestamp()
RETURNING tokens, allowed"""


class RateLimiter:
    def __init__(self, pool: asyncpg.Pool, rate_per_second: float, burst: int):
        self.pool = pool
        self.rate = rate_per_second
        self.burst = max(1, burst)

    async def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 when allowed, else the seconds until one is free."""
        try:
            row = await self.pool.fetchrow(_TAKE, key, float(self.burst), float(self.rate), timeout=2)
        except (*CONNECTION_ERRORS, TimeoutError) as exc:
            log.warning("rate limit not applied to %s: PostgreSQL unreachable (%s)", key, type(exc).__name__)
            return 0.0
        if row["allowed"]:
            return 0.0
        return (1 - row["tokens"]) / self.rate


def retry_after_header(wait_seconds: float) -> str:
    """HTTP Retry-After is whole seconds: round up, at least 1."""
    return str(max(1, math.ceil(wait_seconds)))
