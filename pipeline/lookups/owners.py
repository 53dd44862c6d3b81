"""plate -> owner -> phone, over the plate registry and the contact registry."""

import re
import time
from dataclasses import dataclass
from collections.abc import Collection
from datetime import datetime
from typing import Protocol

import asyncpg
from cachetools import TTLCache

REVIEW_REASONS = ("not_registered", "plate_type_ambiguous", "plate_type_mismatch", "vehicle_colour_mismatch",
                  "no_valid_contact", "sms_opt_out")
"""Why an owner lookup sends a case to review instead of naming an owner to warn: keys of the reasons
catalogue (``pipeline/cases/reasons.py``), which words each."""


@dataclass(frozen=True, repr=False)
class OwnerAnswer:
    """Either an owner to warn (``owner_id``, ``phone``, ``language``) or a ``review_reason``
    (a key of ``REVIEW_REASONS``); ``owner_id`` is set too when the registry named an owner."""

    owner_id: str | None = None
    phone: str | None = None
    language: str | None = None
    """The owner's SMS language (zh, en); None: the city's."""
    plate_type: str | None = None
    review_reason: str | None = None

    @property
    def found(self) -> bool:
        return self.review_reason is None

    def __repr__(self) -> str:
        return (f"OwnerAnswer(owner_id={self.owner_id!r}, phone={mask_phone(self.phone)}, language={self.language!r}, "
                f"plate_type={self.plate_type!r}, review_reason={self.review_reason!r})")


class OwnerDirectory(Protocol):
    async def phone_for(self, plate: str, conn: asyncpg.Connection) -> str | None:
        """The phone of the plate's registered owner, or None when there is none to warn (see ``owner_for``).

        Looked up on ``conn``, the caller's connection (inside its transaction): never a second
        connection from the pool while the caller holds one, which could wait on itself forever."""

    async def owner_for(self, plate: str, conn: asyncpg.Connection, plate_types: Collection[str] | None = None,
                        vehicle_colour: str | None = None, at: datetime | None = None) -> OwnerAnswer:
        """The owner to warn about ``plate`` at moment ``at`` (default: PostgreSQL's now), or why the
        case goes to review. ``plate_types``: the plate types the camera's reading allows (its plate
        type, or the types of the plate colour it read; None: it read neither); ``vehicle_colour``:
        the body colour it read, if any."""

    async def owners_for(self, lookups: list[tuple[str, Collection[str] | None, str | None]],
                         conn: asyncpg.Connection) -> list[OwnerAnswer]:
        """``owner_for`` (at now) for each (plate, plate_types, vehicle_colour) of a batch: one query
        for all the plates not cached."""

    def invalidate(self, plate: str) -> None:
        """Forget what is cached for ``plate``: the next lookup reads the registries."""


_REGISTRATIONS = """
    SELECT p.plate_type, p.owner_id, p.vehicle_colour, c.phone, c.language, o.phone IS NOT NULL AS opted_out
      FROM plate_registry p
      LEFT JOIN LATERAL (SELECT phone, language FROM contact_registry c
                          WHERE c.owner_id = p.owner_id AND c.valid_from <= coalesce($2, now())
                            AND (c.valid_to IS NULL OR c.valid_to > coalesce($2, now()))
                          ORDER BY c.valid_from DESC LIMIT 1) c ON true
      LEFT JOIN sms_opt_out o ON o.phone = c.phone
     WHERE p.plate = $1 AND p.retired_at IS NULL
     ORDER BY p.plate_type"""

_REGISTRATIONS_OF_PLATES = _REGISTRATIONS.replace(
    "SELECT p.plate_type", "SELECT p.plate, p.plate_type").replace("p.plate = $1", "p.plate = ANY($1::text[])")


def decide_owner(registrations: list, plate_types: Collection[str] | None, vehicle_colour: str | None) -> OwnerAnswer:
    """Pure: the answer from a plate's live registrations (rows of ``_REGISTRATIONS``). Never a guess:
    a number registered under several of the types the camera's reading allows goes to review."""
    if not registrations:
        return OwnerAnswer(review_reason="not_registered")
    matching = registrations if plate_types is None else [r for r in registrations if r["plate_type"] in plate_types]
    if not matching:
        return OwnerAnswer(review_reason="plate_type_mismatch")
    if len(matching) > 1:
        return OwnerAnswer(review_reason="plate_type_ambiguous")
    r = matching[0]
    known = dict(owner_id=r["owner_id"], plate_type=r["plate_type"])
    if vehicle_colour is not None and r["vehicle_colour"] is not None and r["vehicle_colour"] != vehicle_colour:
        return OwnerAnswer(**known, review_reason="vehicle_colour_mismatch")
    if r["phone"] is None:
        return OwnerAnswer(**known, review_reason="no_valid_contact")
    if r["opted_out"]:
        return OwnerAnswer(**known, review_reason="sms_opt_out")
    return OwnerAnswer(**known, phone=r["phone"], language=r["language"])


class PostgresOwnerDirectory:
    """One query over the two registries and the opt-out list, behind a bounded cache with a TTL
    (per plate, misses too). ``invalidate(plate)`` / ``clear()`` drop what a registry update changed.
    A lookup at an explicit moment (``at``) is not cached."""

    def __init__(self, max_size: int, ttl_seconds: float, timer=time.monotonic):
        self._cache: TTLCache | None = TTLCache(max_size, ttl_seconds, timer=timer) if max_size else None
        self.queries = 0

    async def phone_for(self, plate: str, conn: asyncpg.Connection) -> str | None:
        return (await self.owner_for(plate, conn)).phone

    async def owner_for(self, plate: str, conn: asyncpg.Connection, plate_types: Collection[str] | None = None,
                        vehicle_colour: str | None = None, at: datetime | None = None) -> OwnerAnswer:
        if at is None and self._cache is not None and plate in self._cache:
            registrations = self._cache[plate]
        else:
            self.queries += 1
            registrations = [dict(r) for r in await conn.fetch(_REGISTRATIONS, plate, at)]
            if at is None and self._cache is not None:
                self._cache[plate] = registrations
        return decide_owner(registrations, plate_types, vehicle_colour)

    async def owners_for(self, lookups: list[tuple[str, Collection[str] | None, str | None]],
                         conn: asyncpg.Connection) -> list[OwnerAnswer]:
        registrations = {plate: self._cache[plate] for plate, _, _ in lookups
                         if self._cache is not None and plate in self._cache}
        missing = sorted({plate for plate, _, _ in lookups} - set(registrations))
        if missing:
            self.queries += 1
            found: dict[str, list[dict]] = {plate: [] for plate in missing}
            for r in await conn.fetch(_REGISTRATIONS_OF_PLATES, missing, None):
                found[r["plate"]].append({k: v for k, v in r.items() if k != "plate"})
            if self._cache is not None:
                self._cache.update(found)
            registrations |= found
        return [decide_owner(registrations[plate], types, colour) for plate, types, colour in lookups]

    def invalidate(self, plate: str) -> None:
        """Forget what is cached for ``plate`` (its registration or contacts changed)."""
        if self._cache is not None:
            self._cache.pop(plate, None)

    def clear(self) -> None:
        """Forget everything cached (a bulk import changed the registries)."""
        if self._cache is not None:
            self._cache.clear()


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
