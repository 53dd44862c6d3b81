"""Integrators and their API keys.

A key is ``pwk_`` followed by 43 random URL-safe characters (256 bits). It is shown once, when the
integrator is added; PostgreSQL keeps only its SHA-256 (a fast hash is enough for a random key of
this length: there is nothing to guess from) and its first characters, to tell keys apart in
listings. Two kinds: a ``publisher`` may post events, an ``operator`` may also read dead letters.
"""

import hashlib
import secrets
import time
from dataclasses import dataclass

import asyncpg
from cachetools import TTLCache

KEY_PREFIX = "pwk_"
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


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class IntegratorExists(ValueError):
    pass


async def add(conn: asyncpg.Connection, name: str, kind: str = "publisher") -> tuple[Integrator, str]:
    """Add an integrator; return it and its key (the only time the key is ever seen)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    key = new_key()
    try:
        row = await conn.fetchrow(
            "INSERT INTO integrators (name, kind, key_prefix, key_sha256) VALUES ($1, $2, $3, $4) RETURNING id",
            name, kind, key[: len(KEY_PREFIX) + 6], key_digest(key))
    except asyncpg.UniqueViolationError:
        raise IntegratorExists(f"an integrator named {name!r} exists; revoke it first or pick another name") from None
    except asyncpg.CheckViolationError:
        raise ValueError("name: 1-64 characters, letters, digits, '.', '_' or '-', starting with a letter or digit") \
            from None
    return Integrator(row["id"], name, kind), key


async def revoke(conn: asyncpg.Connection, name: str) -> bool:
    """Revoke an integrator's key (its name stays taken, for the record). False if none was active."""
    return bool(await conn.fetchval(
        "UPDATE integrators SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL RETURNING true", name))


async def listing(conn: asyncpg.Connection) -> list:
    return await conn.fetch(
        "SELECT name, kind, key_prefix, created_at, revoked_at FROM integrators ORDER BY name")


class KeyBook:
    """Answers "whose key is this?" for the ingest. Known keys are cached for ``ttl_seconds``, so a
    revoked key keeps working for at most that long on a worker that saw it; unknown keys are not
    cached, so a key added a moment ago works at once."""

    def __init__(self, pool: asyncpg.Pool, ttl_seconds: float, size: int = 10_000):
        self.pool = pool
        self._known: TTLCache = TTLCache(maxsize=size, ttl=ttl_seconds, timer=time.monotonic)

    async def integrator_for(self, key: str) -> Integrator | None:
        digest = key_digest(key)
        found = self._known.get(digest)
        if found is not None:
            return found
        row = await self.pool.fetchrow(
            "SELECT id, name, kind FROM integrators WHERE key_sha256 = $1 AND revoked_at IS NULL", digest)
        if row is None:
            return None
        found = self._known[digest] = Integrator(row["id"], row["name"], row["kind"])
        return found
