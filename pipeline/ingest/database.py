"""How the ingest asks PostgreSQL, so that an outage is an answer (503, or what the worker already
knows), never a 500 and never a request left hanging on a connection that will not come."""

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

log = logging.getLogger(__name__)

OUTAGE_SQLSTATE_CLASSES = frozenset({"08", "25", "40", "53", "55", "57", "58"})
"""connection, read-only (a failover), rollback, resources (too many connections, full disk), lock
not available, operator intervention (shutdown, starting up, statement cancelled), system error."""


class DatabaseAway(Exception):
    """PostgreSQL did not answer: down, restarting, read-only, out of connections, or too slow."""


def is_outage(exc: BaseException) -> bool:
    """Whether an error means PostgreSQL is away for now (not that the statement or the data is wrong)."""
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        return True
    return isinstance(exc, asyncpg.PostgresError) and (exc.sqlstate or "")[:2] in OUTAGE_SQLSTATE_CLASSES


@asynccontextmanager
async def connection(pool: asyncpg.Pool, timeout: float = 5.0) -> AsyncIterator[asyncpg.Connection]:
    """A connection from ``pool`` within ``timeout``; an outage while getting or using it raises
    ``DatabaseAway`` (any other error passes unchanged)."""
    try:
        async with pool.acquire(timeout=timeout) as conn:
            yield conn
    except DatabaseAway:
        raise
    except Exception as exc:
        if not is_outage(exc):
            raise
        raise DatabaseAway(f"PostgreSQL unreachable ({type(exc).__name__}: {exc})") from exc


class GuardedPool:
    """Runs one statement on a pool, bounded as a whole by ``timeout`` (getting a connection, then the
    answer). An outage raises ``DatabaseAway``; for ``pause`` seconds after one, statements fail at
    once instead of each waiting for PostgreSQL again."""

    def __init__(self, pool: asyncpg.Pool, timeout: float = 2.0, pause: float = 1.0, timer=time.monotonic):
        self.pool = pool
        self.timeout = timeout
        self.pause = pause
        self.timer = timer
        self._away_until = float("-inf")
        self._reason = ""

    async def fetchrow(self, sql: str, *args):
        if self.timer() < self._away_until:
            raise DatabaseAway(self._reason)
        try:
            async with connection(self.pool, self.timeout) as conn:
                return await conn.fetchrow(sql, *args, timeout=self.timeout)
        except DatabaseAway as away:
            self._away_until = self.timer() + self.pause
            self._reason = str(away)
            log.warning("ingest: %s", away)
            raise
