"""Filing and deciding appeals: one transaction each, with its audit entry.

    driver page (number + plate + code) ─┐
    officer, appeal by phone ────────────┴─> file ──> appeals row (due date) + audit
    officer in the console ──> decide ──> appeals row + AppealDecided (chained, published)
                                          [+ the ticket voided: TicketVoided (chained, published)]
                                          + audit + SMS to the owner (one per case, kind appeal_decision)
"""

from dataclasses import dataclass
from uuid import UUID, uuid4

import asyncpg

from pipeline.appeals import grounds, store
from pipeline.appeals.grounds import Filing, NotAllowed
from pipeline.cases import store as cases
from pipeline.lookups import owners
from pipeline.tickets import chain
from pipeline.tickets.pack import Terms

DRIVER = "driver"


@dataclass(frozen=True)
class AppealDesk:
    """What appeals need from the worker: its pool, the tickets topic, the terms."""

    pool: asyncpg.Pool
    tickets_topic: str
    terms: Terms


async def file(desk: AppealDesk, ticket, channel: str, filing: Filing, recorded_by: str, photos=()):
    """File an appeal against ``ticket`` (a tickets row whose owner was checked by the caller), with
    the driver's ``photos`` (``pipeline.appeals.photos.Photo``, already cleaned); the owner is told its
    reference by SMS."""
    async with desk.pool.acquire() as conn, conn.transaction():
        ticket = await conn.fetchrow("SELECT * FROM tickets WHERE number = $1 FOR UPDATE", ticket["number"])
        now = await conn.fetchval("SELECT now()")
        already = await conn.fetchval("SELECT true FROM appeals WHERE ticket_number = $1", ticket["number"])
        grounds.check_can_file(ticket["voided_at"] is not None, bool(already), now,
                               desk.terms.appeal_until(ticket["issued_at"]))
        appeal = await store.insert(conn, uuid4(), ticket, channel, filing, recorded_by, desk.terms.appeal_decision)
        await cases.audit(conn, now, ticket["case_id"], recorded_by, "appeal_filed",
                          {"appeal_id": str(appeal["id"]), "ticket_number": ticket["number"], "ground": filing.ground,
                           "channel": channel, "due_at": appeal["due_at"].isoformat(), "photos": len(photos)})
        await store.add_photos(conn, appeal["id"], photos)
        owner = await _owner(conn, ticket["case_id"], ticket["plate"])
        if owner.found:
            await cases.add_sms(conn, ticket["case_id"], "appeal_received", owner.phone,
                                {"plate": ticket["plate"], "ticket_number": ticket["number"],
                                 "reference": grounds.reference(ticket["number"]), "due_at": appeal["due_at"].isoformat(),
                                 "language": owner.language}, now)
        return appeal


async def _owner(conn, case_id, plate: str):
    plate_type = await conn.fetchval("SELECT plate_type FROM cases WHERE id = $1", case_id)
    return await owners.PostgresOwnerDirectory(0, 0).owner_for(plate, conn, (plate_type,) if plate_type else None)


async def file_as_driver(desk: AppealDesk, number: str, plate: str, code: str, filing: Filing, photos=()):
    """A driver's appeal from the driver page: number, plate and code must match (else ``not_found``)."""
    async with desk.pool.acquire() as conn:
        ticket = await store.ticket_for_driver(conn, number, plate, code)
    if ticket is None:
        raise NotAllowed("not_found")
    return await file(desk, ticket, "driver_page", filing, DRIVER, photos)


async def file_by_phone(desk: AppealDesk, actor: str, number: str, plate: str, filing: Filing):
    """An appeal an officer took by phone: the plate the caller gave must be the ticket's."""
    async with desk.pool.acquire() as conn:
        ticket = await conn.fetchrow("SELECT * FROM tickets WHERE number = $1", number)
    if ticket is None:
        raise NotAllowed("no_ticket")
    if ticket["plate"] != plate:
        raise NotAllowed("plate_mismatch")
    return await file(desk, ticket, "phone", filing, actor)


async def decide(desk: AppealDesk, actor: str, appeal_id: UUID, outcome: str, reason: str):
    """Decide an appeal (the caller checked the officer may, and the reason): upheld, or the ticket voided."""
    async with desk.pool.acquire() as conn, conn.transaction():
        appeal = await store.get(conn, appeal_id, lock=True)
        if appeal is None:
            raise NotAllowed("no_appeal")
        outcome = grounds.check_decision(outcome, appeal["decided_at"] is not None)
        if outcome == "upheld" and appeal["voided_at"] is not None:
            raise NotAllowed("ticket_void")
        decided = await store.decide(conn, appeal_id, outcome, reason, actor)
        await chain.append(conn, desk.tickets_topic, chain.appeal_message(decided), decided["ticket_number"],
                           appeal_id=decided["id"])
        if outcome == "voided" and appeal["voided_at"] is None:
            await chain.void(conn, desk.tickets_topic, decided["ticket_number"], f"appeal allowed: {reason}", actor,
                             decided["decided_at"])
        await cases.audit(conn, decided["decided_at"], decided["case_id"], actor, "appeal_decided",
                          {"appeal_id": str(appeal_id), "ticket_number": decided["ticket_number"], "outcome": outcome,
                           "reason": reason})
        owner = await _owner(conn, decided["case_id"], decided["plate"])
        if owner.found:
            await cases.add_sms(conn, decided["case_id"], "appeal_decision", owner.phone,
                                {"plate": decided["plate"], "ticket_number": decided["ticket_number"],
                                 "outcome": outcome, "language": owner.language}, decided["decided_at"])
        return decided
