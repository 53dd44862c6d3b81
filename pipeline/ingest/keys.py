"""Integrators and their API keys.

A key is ``pwk_`` followed by 43 random URL-safe characters (256 bits). It is shown once, when the
integrator is added; PostgreSQL keeps only its SHA-256 (a fast hash is enough for a random key of
this length: there is nothing to guess from) and its first characters, to tell keys apart in
listings. Two kinds: a ``publisher`` may post events, an ``operator`` may also read dead letters.
"""

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

import asyncpg
from cachetools import LRUCache, TTLCache

from pipeline.ingest.database import DatabaseAway, GuardedPool

KEY_PREFIX = "pwk_"
KEY_PATTERN = re.compile(r"pwk_[A-Za-z0-9_-]{43}")
KINDS = ("publisher", "operator")


@dataclass(frozen=True)
class Integrator:
    id: int
    name: str
    kind: str

    @property
    def may_read_dead_letters(self) -> bool:
        return self.kind == "operator"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def looks_like_key(key: str) -> bool:
    """Whether ``key`` has the shape of a key we make (anything else is unknown without asking)."""
    return KEY_PATTERN.fullmatch(key) is not None


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class IntegratorExists(ValueError):
    pass


async def add(conn: asyncpg.Connection, name: str, kind: str = "publisher",
              produce_bytes_per_second: int | None = None) -> tuple[Integrator, str]:
    """Add an integrator (its name taken in the one namespace of ``principals``, with its Kafka produce
    quota); return it and its key (the only time the key is ever seen)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    key = new_key()
    try:
        async with conn.transaction():
            await conn.execute("INSERT INTO principals (name, kind, produce_bytes_per_second) "
                               "VALUES ($1, 'integrator', $2)", name, produce_bytes_per_second)
            row = await conn.fetchrow(
                "INSERT INTO integrators (name, kind, key_prefix, key_sha256) VALUES ($1, $2, $3, $4) RETURNING id",
                name, kind, key[: len(KEY_PREFIX) + 6], key_digest(key))
    except asyncpg.UniqueViolationError:
        taken = await conn.fetchval("SELECT kind FROM principals WHERE name = $1", name)
        if taken in (None, "integrator"):
            raise IntegratorExists(f"an integrator named {name!r} exists; revoke it first or pick another name") \
                from None
        raise IntegratorExists(f"the name {name!r} is taken by a {taken.replace('_', ' ')}; pick another name") \
            from None
    except asyncpg.CheckViolationError:
        raise ValueError("name: 1-64 characters, letters, digits, '.', '_' or '-', starting with a letter or digit") \
            from None
    return Integrator(row["id"], name, kind), key


async def revoke(conn: asyncpg.Connection, name: str) -> bool:
    """Revoke an integrator's key (its name stays taken, for the record). False if none was active."""
    return bool(await conn.fetchval(
        """WITH revoked AS (UPDATE integrators SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL
                            RETURNING name, revoked_at)
           UPDATE principals p SET revoked_at = r.revoked_at FROM revoked r WHERE p.name = r.name RETURNING true""",
        name))


async def listing(conn: asyncpg.Connection) -> list:
    return await conn.fetch(
        """SELECT i.name, i.kind, i.key_prefix, i.created_at, i.revoked_at, p.produce_bytes_per_second
           FROM integrators i LEFT JOIN principals p USING (name) ORDER BY i.name""")


class KeyBook:
    """Answers "whose key is this?" for the ingest, asking PostgreSQL as little as it can:

    - a known key is trusted for ``ttl_seconds`` (a revoked key keeps working that long on a worker
      that saw it);
    - a key PostgreSQL did not know is remembered as unknown for ``unknown_ttl_seconds``, in a cache
      of its own (bounded by ``unknown_size``), so that a flood of bad keys neither asks PostgreSQL
      once per request nor evicts the known keys; keys are random, so a key added later is never one
      tried before;
    - a string that is not shaped like a key is unknown without asking;
    - while PostgreSQL is away, a key this worker has seen valid keeps working (its last known
      answer, however old) and any other raises ``DatabaseAway``.

    ``lookups`` counts the questions put to PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool, ttl_seconds: float, unknown_ttl_seconds: float = 60, size: int = 10_000,
                 unknown_size: int = 10_000, timer=time.monotonic):
        self.db = GuardedPool(pool, timer=timer)
        self._known: TTLCache = TTLCache(maxsize=size, ttl=ttl_seconds, timer=timer)
        self._last_known: LRUCache = LRUCache(maxsize=size)
        self._unknown: TTLCache = TTLCache(maxsize=unknown_size, ttl=unknown_ttl_seconds, timer=timer)
        self.lookups = 0

    def trusted(self, key: str) -> Integrator | None:
        """The integrator of a key checked within ``ttl_seconds``, without asking PostgreSQL."""
        return self._known.get(key_digest(key)) if key else None

    async def integrator_for(self, key: str) -> Integrator | None:
        """The key's integrator; None for an unknown or revoked key. Raises ``DatabaseAway`` when
        PostgreSQL cannot be asked and the key was never seen valid here."""
        if not looks_like_key(key):
            return None
        digest = key_digest(key)
        found = self._known.get(digest)
        if found is not None:
            return found
        if digest in self._unknown:
            return None
        self.lookups += 1
        try:
            row = await self.db.fetchrow(
                "SELECT id, name, kind FROM integrators WHERE key_sha256 = $1 AND revoked_at IS NULL", digest)
        except DatabaseAway:
            if (last := self._last_known.get(digest)) is not None:
                return last
            raise
        if row is None:
            self._last_known.pop(digest, None)
            self._unknown[digest] = True
            return None
        found = self._known[digest] = self._last_known[digest] = Integrator(row["id"], row["name"], row["kind"])
        return found
