"""plate -> owner -> phone, over the plate registry and the contact registry."""

import re
import time
from typing import Protocol

import asyncpg
from cachetools import TTLCache


class OwnerDirectory(Protocol):
    async def phone_for(self, plate: str, conn: asyncpg.Connection) -> str | None:
        """The phone of the plate's registered owner, or None when either registry has no entry.

        Looked up on ``conn``, the caller's connection (inside its transaction): never a second
        connection from the pool while the caller holds one, which could wait on itself forever."""


class PostgresOwnerDirectory:
    """One join over the two registries, behind a bounded cache with a TTL (misses are cached too)."""

    def __init__(self, max_size: int, ttl_seconds: float, timer=time.monotonic):
        self._cache: TTLCache | None = TTLCache(max_size, ttl_seconds, timer=timer) if max_size else None
        self.queries = 0

    async def phone_for(self, plate: str, conn: asyncpg.Connection) -> str | None:
        if self._cache is not None and plate in self._cache:
            return self._cache[plate]
        self.queries += 1
        phone = await conn.fetchval(
            "SELECT c.phone FROM plate_registry p JOIN contact_registry c USING (owner_id) WHERE p.plate = $1",
            plate,
        )
        if self._cache is not None:
            self._cache[plate] = phone
        return phone


def mask_phone(phone: str | None) -> str:
    """138****8000: what logs, screens and test output may show of a phone number."""
    if not phone:
        return "(none)"
    digits = phone.lstrip("+")
    if len(digits) >= 11:
        return f"{digits[:3]}{'*' * (len(digits) - 7)}{digits[-4:]}"
    if len(digits) >= 7:
        return f"{digits[:2]}{'*' * (len(digits) - 4)}{digits[-2:]}"
    return "*" * len(digits)


_NUMBERS = re.compile(r"(?<![A-Za-z0-9])\+?\d{7,15}(?![0-9])")


def scrub(text: str) -> str:
    """Mask anything that looks like a phone number in free text (gateway answers, errors)."""
    return _NUMBERS.sub(lambda m: mask_phone(m.group()), text)
