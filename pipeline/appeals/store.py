"""Appeals in PostgreSQL. Times that decide (received, due, decided) are PostgreSQL's now()."""

from datetime import timedelta
from uuid import UUID

from pipeline.appeals.grounds import Filing

APPEAL_COLUMNS = """a.*, now() > a.due_at AND a.decided_at IS NULL AS overdue,
    t.issued_at, t.voided_at, t.void_reason, t.place, c.driver_code IS NOT NULL AS has_code"""


async def ticket_for_driver(conn, number: str, plate: str, code: str):
    """The ticket when number, plate and the case's driver-page code all match; else None."""
    return await conn.fetchrow(
        """SELECT t.* FROM tickets t JOIN cases c ON c.id = t.case_id
           WHERE t.number = $1 AND t.plate = $2 AND c.driver_code = $3""", number, plate, code)


async def insert(conn, appeal_id: UUID, ticket, channel: str, filing: Filing, recorded_by: str,
                 decision_within: timedelta):
    return await conn.fetchrow(
        """INSERT INTO appeals (id, ticket_number, case_id, plate, channel, ground, statement, attachments,
                                received_at, recorded_by, due_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now(), $9, now() + $10::interval)
           ON CONFLICT (ticket_number) DO NOTHING RETURNING *""",
        appeal_id, ticket["number"], ticket["case_id"], ticket["plate"], channel, filing.ground, filing.statement,
        list(filing.attachments), recorded_by, decision_within)


async def get(conn, appeal_id: UUID, lock: bool = False):
    return await conn.fetchrow(
        f"""SELECT {APPEAL_COLUMNS} FROM appeals a JOIN tickets t ON t.number = a.ticket_number
            JOIN cases c ON c.id = a.case_id WHERE a.id = $1 {'FOR UPDATE OF a, t' if lock else ''}""", appeal_id)


async def of_ticket(conn, number: str):
    return await conn.fetchrow(
        f"""SELECT {APPEAL_COLUMNS} FROM appeals a JOIN tickets t ON t.number = a.ticket_number
            JOIN cases c ON c.id = a.case_id WHERE a.ticket_number = $1""", number)


async def queue(conn, decided_limit: int = 50) -> tuple[list, list]:
    """(open appeals, soonest due first; the latest decided ones)."""
    open_ = await conn.fetch(
        f"""SELECT {APPEAL_COLUMNS} FROM appeals a JOIN tickets t ON t.number = a.ticket_number
            JOIN cases c ON c.id = a.case_id WHERE a.decided_at IS NULL ORDER BY a.due_at""")
    decided = await conn.fetch(
        f"""SELECT {APPEAL_COLUMNS} FROM appeals a JOIN tickets t ON t.number = a.ticket_number
            JOIN cases c ON c.id = a.case_id WHERE a.decided_at IS NOT NULL ORDER BY a.decided_at DESC LIMIT $1""",
        decided_limit)
    return open_, decided


async def decide(conn, appeal_id: UUID, outcome: str, reason: str, by: str):
    return await conn.fetchrow(
        """UPDATE appeals SET decided_at = now(), outcome = $2, decision_reason = $3, decided_by = $4
           WHERE id = $1 RETURNING *""", appeal_id, outcome, reason, by)


async def counts(conn) -> dict:
    row = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE decided_at IS NULL) AS open,
                  count(*) FILTER (WHERE decided_at IS NULL AND now() > due_at) AS overdue FROM appeals""")
    return dict(row)


async def add_photos(conn, appeal_id: UUID, photos) -> None:
    await conn.executemany(
        """INSERT INTO appeal_photos (id, appeal_id, position, content_type, sha256, data)
           VALUES (gen_random_uuid(), $1, $2, $3, $4, $5)""",
        [(appeal_id, n, p.content_type, p.sha256, p.data) for n, p in enumerate(photos, start=1)])


async def photos_of(conn, appeal_id: UUID) -> list:
    """The appeal's photos, without their bytes: (id, position, content_type, sha256)."""
    return await conn.fetch("SELECT id, position, content_type, sha256 FROM appeal_photos WHERE appeal_id = $1 "
                            "ORDER BY position", appeal_id)


async def photo(conn, appeal_id: UUID, photo_id: UUID):
    return await conn.fetchrow("SELECT content_type, data FROM appeal_photos WHERE appeal_id = $1 AND id = $2",
                               appeal_id, photo_id)
