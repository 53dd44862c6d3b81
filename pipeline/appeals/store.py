"""Appeals in PostgreSQL. Times that decide (received, due, decided) are PostgreSQL's now()."""

from datetime import timedelta
from uuid import UUID

from pipeline.appeals.grounds import Filing
from pipeline.console import listing

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


OPEN = listing.Listing({
    "due_at": listing.Column("a.due_at", "timestamptz"),
    "ticket": listing.Column("a.ticket_number", "text"),
    "plate": listing.Column("a.plate", "text"),
    "ground": listing.Column("a.ground", "text"),
    "channel": listing.Column("a.channel", "text"),
    "received_at": listing.Column("a.received_at", "timestamptz"),
}, default="due_at", default_desc=False, tie=listing.Column("a.id", "uuid"))
"""The open appeals' sortable columns (soonest due first by default); ties broken by the appeal's id."""
DECIDED = listing.Listing({
    "decided_at": listing.Column("a.decided_at", "timestamptz"),
    "ticket": listing.Column("a.ticket_number", "text"),
    "plate": listing.Column("a.plate", "text"),
    "ground": listing.Column("a.ground", "text"),
    "outcome": listing.Column("a.outcome", "text"),
    "decided_by": listing.Column("a.decided_by", "text"),
}, default="decided_at", default_desc=True, tie=listing.Column("a.id", "uuid"), prefix="decided_")
"""The decided appeals' sortable columns (latest first by default), with parameters of their own
(``decided_sort``, ...) as the queue shows both lists on one page."""


async def queue_page(conn, decided: bool, order: listing.Order, size: int = 50, ground: str = "") -> listing.Page:
    """A page of the open appeals, or of the decided ones, in ``order``; ``ground``, when given, filters."""
    args: list = [ground]
    page, order_by = order.keyset(args)
    args.append(size + 1)
    rows = await conn.fetch(
        f"""SELECT {APPEAL_COLUMNS}, {order.select} FROM appeals a JOIN tickets t ON t.number = a.ticket_number
            JOIN cases c ON c.id = a.case_id
            WHERE a.decided_at IS {'NOT NULL' if decided else 'NULL'} AND ($1 = '' OR a.ground = $1) AND {page}
            ORDER BY {order_by} LIMIT ${len(args)}""", *args)
    return listing.Page.of(rows, order, size)


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
