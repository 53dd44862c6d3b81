"""What operators read: the live overview, case search, a case's timeline, the status summary.

Everything comes from PostgreSQL, the system of record, so any worker can serve the console and
the command line shows the same numbers. Phone numbers leave this module masked.
"""

import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg

from pipeline.cases.machine import distance_m
from pipeline.cases.store import sighting_from_json
from pipeline.console import listing
from pipeline.lookups.owners import mask_phone
from schemas.plates import normalize_plate

OPEN = ("detected", "warned", "rechecking")
STATES = ("detected", "warned", "rechecking", "moved", "ticketed", "cautioned", "to_confirm", "rejected", "unconfirmed",
          "review", "exempt", "cancelled")
RATE_WINDOW = timedelta(seconds=10)
"""Events per second are averaged over this."""

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_PHONE = re.compile(r"(?<![A-Za-z0-9])\+?\d{7,15}(?!\d)")


def scrub(text: str) -> str:
    """Mask what looks like a phone number in free text (reasons, gateway errors), but not the digits
    of a ticket number (YH261126000042) or an event id."""
    return _PHONE.sub(lambda m: mask_phone(m.group()), text)


def local_midnight(now: datetime, tz: ZoneInfo) -> datetime:
    return datetime.combine(now.astimezone(tz).date(), time(0), tz)


# ── counts: the live overview and /metrics ────────────────────────────────────────────────


async def counts(conn: asyncpg.Connection, now: datetime, tz: ZoneInfo) -> dict:
    """Today's numbers and the work still open (``live_counts`` and ``day_totals``), for the command
    line's status; the console and /metrics read the two parts on their own schedules."""
    return with_totals(await live_counts(conn, now), await day_totals(conn, now, tz))


async def live_counts(conn: asyncpg.Connection, now: datetime) -> dict:
    """What changes from second to second and stays small: events per second, cases in review and to
    confirm, the outbox, the oldest due deadline. Each reads an index (migrations 0003, 0017, 0120)
    over the rows it counts: the last few seconds or rows waiting for someone, never the open cases
    nor the day's traffic, so it costs the same at a million open cases."""
    row = await conn.fetchrow(
        """SELECT
             (SELECT count(*) FROM sightings WHERE received_at > $1) AS recent_sightings,
             (SELECT count(*) FROM dead_letters WHERE received_at > $1) AS recent_dead_letters,
             (SELECT count(*) FROM cases WHERE state = 'review') AS review_cases,
             (SELECT count(*) FROM cases WHERE state = 'to_confirm') AS to_confirm,
             (SELECT count(*) FROM outbox) AS outbox_backlog,
             (SELECT count(*) FROM outbox_set_aside) AS outbox_set_aside,
             (SELECT created_at FROM outbox ORDER BY id LIMIT 1) AS outbox_oldest,
             (SELECT min(wake_at) FROM cases WHERE state IN ('warned', 'rechecking') AND wake_at <= $2) AS oldest_due""",
        now - RATE_WINDOW, now)
    return {
        "events_per_second": round((row["recent_sightings"] + row["recent_dead_letters"])
                                   / RATE_WINDOW.total_seconds(), 1),
        **{k: row[k] for k in ("review_cases", "outbox_backlog", "outbox_set_aside", "to_confirm")},
        "outbox_oldest_age": (now - row["outbox_oldest"]).total_seconds() if row["outbox_oldest"] else 0.0,
        "deadline_lag": (now - row["oldest_due"]).total_seconds() if row["oldest_due"] else 0.0,
    }


async def day_totals(conn: asyncpg.Connection, now: datetime, tz: ZoneInfo) -> dict:
    """Today's totals (since local midnight) and the open cases by state, each from an index over
    the rows it counts: they grow with a day's traffic and the open work (a million rows at a
    province's size, a second or more to count), not with the history kept. The console re-counts
    them less often than ``live_counts`` (``views.TOTALS_SECONDS``)."""
    today = local_midnight(now, tz)
    row = await conn.fetchrow(
        """SELECT
             (SELECT count(*) FROM sightings WHERE received_at >= $1) AS events_today,
             (SELECT count(*) FROM sms_messages WHERE kind = 'warning' AND accepted_at >= $1) AS warnings_today,
             (SELECT count(*) FROM cases WHERE state = 'moved' AND closed_at >= $1) AS moved_today,
             (SELECT count(*) FROM tickets WHERE issued_at >= $1) AS tickets_today,
             (SELECT count(*) FROM tickets WHERE issued_at >= $1 AND voided_at IS NOT NULL) AS voided_today,
             (SELECT count(*) FROM dead_letters WHERE received_at >= $1) AS dead_letters_today,
             (SELECT count(*) FROM cases WHERE state = 'cautioned' AND closed_at >= $1) AS cautions_today""",
        today)
    open_by_state = await conn.fetch(
        "SELECT state, count(*) AS n FROM cases WHERE state IN ('detected', 'warned', 'rechecking') GROUP BY state")
    sms = await conn.fetch(
        """SELECT kind, status, count(*) AS n FROM (
             SELECT kind, status FROM sms_messages WHERE created_at >= $1 AND status NOT IN ('pending', 'sending')
             UNION ALL SELECT kind, status FROM sms_messages WHERE status = 'pending'
             UNION ALL SELECT kind, status FROM sms_messages WHERE status = 'sending') m
           GROUP BY kind, status ORDER BY 1, 2""", today)
    cases = {s: 0 for s in OPEN} | {r["state"]: r["n"] for r in open_by_state}
    return {
        **{k: row[k] for k in ("events_today", "warnings_today", "moved_today", "tickets_today", "voided_today",
                               "dead_letters_today", "cautions_today")},
        "open_cases": sum(cases.values()),
        "open_by_state": cases,
        "sms": [(r["kind"], r["status"], r["n"]) for r in sms],
        "totals_at": now,
    }


def with_totals(live: dict, totals: dict) -> dict:
    """``live_counts`` and ``day_totals`` as one: what ``counts`` returns."""
    return {**live, **totals,
            "cases": totals["open_by_state"] | {"review": live["review_cases"], "to_confirm": live["to_confirm"]}}


TILES = ("events_today", "warnings_today", "moved_today", "tickets_today", "voided_today", "dead_letters_today",
         "open_cases", "review_cases", "outbox_set_aside", "to_confirm", "cautions_today")


async def overview(conn: asyncpg.Connection, now: datetime, counts: dict, drive_away: dict,
                   open_limit: int = 60) -> dict:
    """The console's live view: today's ``counts``, open cases, car parks, recent decisions and the
    ``drive_away`` rate (both read beforehand, on their own schedules)."""
    open_rows = await conn.fetch(
        """SELECT c.id, c.plate, c.state, c.zone, c.place, c.camera_id, c.detected_at, c.deadline_at, c.wake_at
           FROM cases c WHERE c.state IN ('detected', 'warned', 'rechecking')
           ORDER BY c.deadline_at NULLS LAST, c.detected_at LIMIT $1""", open_limit)
    return {
        "now": now,
        "events_per_second": counts["events_per_second"],
        "counts": {k: counts[k] for k in TILES},
        "totals_at": counts.get("totals_at"),
        "open_cases": [dict(r) for r in open_rows],
        "car_parks": await car_park_occupancy(conn),
        "drive_away": drive_away,
        "recent": await recent_decisions(conn, 12),
    }


async def car_park_occupancy(conn: asyncpg.Connection) -> list[dict]:
    rows = await conn.fetch(
        """SELECT p.id, p.short_name, p.capacity, s.free_spaces, s.reported_at
           FROM car_parks p LEFT JOIN car_park_status s ON s.car_park_id = p.id ORDER BY p.id""")
    parks = []
    for r in rows:
        free = r["free_spaces"]
        occupied = None if free is None or not r["capacity"] else max(0.0, min(1.0, 1 - free / r["capacity"]))
        parks.append({**dict(r), "occupancy": occupied})
    return sorted(parks, key=lambda p: 1 if p["occupancy"] is None else -p["occupancy"])


async def drive_away_rate(conn: asyncpg.Connection, since: datetime, tz: ZoneInfo) -> dict:
    """Share of warned cars that left in time, by zone and local hour of the warning.

    Counted over warned cases with a known outcome: left in time (moved, with a departure or a
    move seen before the deadline) against still there (ticketed, a warning notice, a ticket to
    confirm) or left late. Unconfirmed cases (no fresh capture after the recheck) and cancelled
    ones are left out: nobody knows when they left.
    """
    rows = await conn.fetch(
        """SELECT c.zone, extract(hour FROM c.warned_at AT TIME ZONE $2)::int AS hour,
                  count(*) FILTER (WHERE c.state = 'moved' AND (c.closed_at <= c.deadline_at OR EXISTS (
                      SELECT 1 FROM sightings s WHERE s.case_id = c.id AND s.kind = 'VehicleDeparted'
                                                  AND s.taken_at <= c.deadline_at))) AS left_in_time,
                  count(*) AS decided
           FROM cases c WHERE c.warned_at >= $1 AND c.state IN ('moved', 'ticketed', 'cautioned', 'to_confirm')
           GROUP BY 1, 2 ORDER BY 1, 2""", since, str(tz))
    zones: dict[str, dict] = {}
    for r in rows:
        z = zones.setdefault(r["zone"], {"zone": r["zone"], "hours": {}, "left_in_time": 0, "decided": 0})
        z["hours"][r["hour"]] = (r["left_in_time"], r["decided"])
        z["left_in_time"] += r["left_in_time"]
        z["decided"] += r["decided"]
    return {"since": since, "zones": list(zones.values())}


async def recent_decisions(conn: asyncpg.Connection, limit: int) -> list[dict]:
    rows = await conn.fetch(
        """SELECT c.id, c.plate, c.state, c.place, c.reason, c.updated_at, t.number AS ticket_number, t.voided_at
           FROM cases c LEFT JOIN tickets t ON t.case_id = c.id ORDER BY c.updated_at DESC LIMIT $1""", limit)
    return [dict(r) for r in rows]


# ── the status summary (command line) ───────────────────────────────────────────────────


async def status(conn: asyncpg.Connection, now: datetime, tz: ZoneInfo) -> dict:
    """``counts`` and the dead letters of all time (a whole-table count: for a person asking once)."""
    return {**await counts(conn, now, tz),
            "dead_letters_total": await conn.fetchval("SELECT count(*) FROM dead_letters")}


async def recent_latency(conn: asyncpg.Connection, now: datetime, window: timedelta) -> dict[str, dict[float, float]]:
    """Per-stage latency quantiles over cases that passed the stage within ``window`` (from row timestamps).

    capture_to_warning: camera capture -> warning accepted by the SMS gateway (what a driver feels);
    sms_queue: SMS row created -> accepted; deadline_to_ticket: deadline -> ticket issued.
    """
    since = now - window
    quantiles = [0.5, 0.9, 0.99]
    sql = {
        "capture_to_warning": """SELECT extract(epoch FROM s.accepted_at - c.detected_at) AS v FROM sms_messages s
                                 JOIN cases c ON c.id = s.case_id WHERE s.kind = 'warning' AND s.accepted_at >= $1""",
        "sms_queue": "SELECT extract(epoch FROM accepted_at - created_at) AS v FROM sms_messages WHERE accepted_at >= $1",
        "deadline_to_ticket": "SELECT extract(epoch FROM issued_at - deadline_at) AS v FROM tickets WHERE issued_at >= $1",
    }
    result = {}
    for stage, inner in sql.items():
        row = await conn.fetchrow(
            f"SELECT percentile_cont($2::float8[]) WITHIN GROUP (ORDER BY v) AS q, count(*) AS n FROM ({inner}) x",
            since, quantiles)
        result[stage] = dict(zip(quantiles, row["q"])) if row["n"] else {}
    return result


# ── search ──────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Criteria:
    """What an operator searches by; empty fields do not filter. Times are aware datetimes."""

    plate: str = ""
    ticket: str = ""
    camera: str = ""
    zone: str = ""
    state: str = ""
    since: datetime | None = None
    until: datetime | None = None

    @property
    def empty(self) -> bool:
        return not any((self.plate, self.ticket, self.camera, self.zone, self.state, self.since, self.until))


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


CASES = listing.Listing({
    "detected_at": listing.Column("c.detected_at", "timestamptz"),
    "plate": listing.Column("c.plate", "text"),
    "state": listing.Column("c.state", "text"),
    "ticket": listing.Column("coalesce(t.number, '')", "text"),
    "place": listing.Column("c.place", "text"),
    "camera": listing.Column("c.camera_id", "text"),
    "zone": listing.Column("c.zone", "text"),
}, default="detected_at", default_desc=True, tie=listing.Column("c.id", "uuid"))
"""Case search's sortable columns; ties broken by the case's id."""


async def search(conn: asyncpg.Connection, c: Criteria, order: listing.Order | None = None,
                 size: int = 200) -> listing.Page:
    """A page of the cases matching every given criterion, in ``order`` (newest first by default). A
    plate matches in part (浙A12 finds 浙A12345), from a trigram index when pg_trgm is there
    (migration 0017).

    Only the given criteria enter the statement, so PostgreSQL plans each search for what it asks
    (a generic plan for ``$1 IS NULL OR plate LIKE $1`` could use no index at all).
    """
    order = order or CASES.order({})
    plate = normalize_plate(c.plate) if c.plate else None
    wanted = {
        "c.plate LIKE {}": _like(plate) if plate else None,
        "t.number = {}": c.ticket.strip().upper() or None,
        "(c.camera_id = {0} OR EXISTS (SELECT 1 FROM sightings s WHERE s.case_id = c.id AND s.camera_id = {0}))":
            c.camera.strip() or None,
        "c.zone = {}": c.zone.strip() or None,
        "c.state = {}": c.state or None,
        "c.detected_at >= {}": c.since,
        "c.detected_at < {}": c.until,
    }
    conditions, args = [], []
    for condition, value in wanted.items():
        if value is not None:
            args.append(value)
            conditions.append(condition.format(f"${len(args)}"))
    page, order_by = order.keyset(args)
    args.append(size + 1)
    rows = await conn.fetch(
        f"""SELECT c.id, c.plate, c.state, c.zone, c.place, c.camera_id, c.detected_at, c.deadline_at, c.closed_at,
                   c.reason, t.number AS ticket_number, t.voided_at, {order.select}
            FROM cases c LEFT JOIN tickets t ON t.case_id = c.id
            WHERE {" AND ".join([*conditions, page])}
            ORDER BY {order_by} LIMIT ${len(args)}""", *args)
    return listing.Page.of(rows, order, size)


@dataclass(frozen=True)
class TicketFilter:
    """What the tickets list is filtered by; empty fields do not filter. ``status``: issued or voided;
    ``appeal``: none, open, upheld or voided."""

    since: datetime | None = None
    until: datetime | None = None
    zone: str = ""
    status: str = ""
    appeal: str = ""


TICKET_STATUSES = ("issued", "voided")
APPEAL_STATES = ("none", "open", "upheld", "voided")
_TICKET_STATUS = "CASE WHEN t.voided_at IS NULL THEN 'issued' ELSE 'voided' END"
_APPEAL_STATE = "CASE WHEN a.id IS NULL THEN 'none' WHEN a.decided_at IS NULL THEN 'open' ELSE a.outcome END"
TICKETS = listing.Listing({
    "issued_at": listing.Column("t.issued_at", "timestamptz"),
    "number": listing.Column("t.number", "text"),
    "plate": listing.Column("t.plate", "text"),
    "zone": listing.Column("t.zone", "text"),
    "status": listing.Column(_TICKET_STATUS, "text"),
    "appeal": listing.Column(_APPEAL_STATE, "text"),
}, default="issued_at", default_desc=True, tie=listing.Column("t.number", "text"))
"""The tickets list's sortable columns; ties broken by the ticket's number."""


async def tickets(conn: asyncpg.Connection, f: TicketFilter, order: listing.Order | None = None,
                  size: int = 200) -> listing.Page:
    """A page of tickets issued in the period (by ``issued_at``), in ``order`` (newest first by
    default), each with its status (issued, voided), its appeal's state (none, open, upheld,
    voided) and its case."""
    order = order or TICKETS.order({})
    wanted = {
        "t.issued_at >= {}": f.since,
        "t.issued_at < {}": f.until,
        "t.zone = {}": f.zone or None,
        f"{_TICKET_STATUS} = {{}}": f.status or None,
        f"{_APPEAL_STATE} = {{}}": f.appeal or None,
    }
    conditions, args = [], []
    for condition, value in wanted.items():
        if value is not None:
            args.append(value)
            conditions.append(condition.format(f"${len(args)}"))
    page, order_by = order.keyset(args)
    args.append(size + 1)
    rows = await conn.fetch(
        f"""SELECT t.number, t.plate, t.zone, t.place, t.issued_at, t.voided_at, t.void_reason, t.case_id,
                   {_TICKET_STATUS} AS status, {_APPEAL_STATE} AS appeal, a.id AS appeal_id,
                   coalesce(now() > a.due_at AND a.decided_at IS NULL, false) AS appeal_overdue, {order.select}
            FROM tickets t LEFT JOIN appeals a ON a.ticket_number = t.number
            WHERE {" AND ".join([*conditions, page])}
            ORDER BY {order_by} LIMIT ${len(args)}""", *args)
    return listing.Page.of(rows, order, size)


async def find_cases(conn: asyncpg.Connection, plate_or_ticket: str, limit: int = 20) -> list[UUID]:
    """Case ids for a ticket number, or the cases of a plate (newest first)."""
    text = plate_or_ticket.strip()
    by_ticket = await conn.fetchval("SELECT case_id FROM tickets WHERE number = $1", text.upper())
    if by_ticket:
        return [by_ticket]
    rows = await conn.fetch("SELECT id FROM cases WHERE plate = $1 ORDER BY opened_at DESC LIMIT $2",
                            normalize_plate(text), limit)
    return [r["id"] for r in rows]


# ── one case ────────────────────────────────────────────────────────────────────────────────


@dataclass
class CaseFile:
    """A case with everything that happened to it, in time order."""

    case: dict
    ticket: dict | None
    timeline: list[dict] = field(default_factory=list)
    fresh_captures: list[dict] = field(default_factory=list)
    """Captures an officer may use as the fresh evidence for a ticket on review (set by the console)."""
    evidence_bounds: tuple[datetime, datetime] | None = None
    """For a review case: when a fresh capture must have been taken (set by the console)."""
    pair: dict | None = None
    """For a ticket waiting for confirmation: its two captures side by side (``evidence_pair``)."""
    owner_has_phone: bool = True
    """For a review case: whether the registries name a phone to warn now (set by the console)."""
    claim: dict | None = None
    """For a review case: the officer who has claimed it, and since when."""
    photos: dict = field(default_factory=dict)
    """Event id -> its evidence image's fetch (``pipeline.evidence.store.status_of``; set by the console)."""

    @property
    def warned_again_as(self) -> str | None:
        """The case that warned the owner again, when this review case was resolved that way."""
        for e in self.timeline:
            if e["kind"] == "operator" and e["what"] == "warn_again":
                return e["detail"].get("new_case_id")
        return None


async def case_file(conn: asyncpg.Connection, case_id: UUID, now: datetime) -> CaseFile | None:
    case = await conn.fetchrow("SELECT * FROM cases WHERE id = $1", case_id)
    if case is None:
        return None
    ticket = await conn.fetchrow("SELECT * FROM tickets WHERE case_id = $1", case_id)
    # Captures linked to the case, its violation (linked to the first case when an operator warned
    # again), and captures of the plate kept unlinked while the case was closed (e.g. a camera's
    # answer to an operator's recheck request), up to the plate's next violation.
    sightings = await conn.fetch(
        """SELECT s.*, s.case_id IS NULL AS unlinked FROM sightings s
           WHERE s.case_id = $1 OR (s.integrator = $5 AND s.event_id = $4)
              OR (s.case_id IS NULL AND s.plate = $2 AND s.taken_at >= $3 AND s.taken_at <
                  coalesce((SELECT min(n.detected_at) FROM cases n WHERE n.plate = $2 AND n.detected_at > $3), 'infinity'))
           ORDER BY s.taken_at, s.integrator, s.event_id""",
        case_id, case["plate"], case["detected_at"], case["violation"]["event_id"],
        case["violation"].get("integrator", ""))
    sms = await conn.fetch("SELECT * FROM sms_messages WHERE case_id = $1 ORDER BY created_at", case_id)
    reports = await conn.fetch(
        """SELECT r.* FROM sms_delivery_reports r JOIN sms_messages s ON s.id = r.sms_id
           WHERE s.case_id = $1 ORDER BY r.id""", case_id)
    audit = await conn.fetch("SELECT * FROM audit_log WHERE case_id = $1 ORDER BY id", case_id)

    timeline = []
    for s in sightings:
        timeline.append({"at": s["taken_at"], "kind": "capture", "what": s["kind"], "camera_id": s["camera_id"],
                         "place": s["place"], "event_id": s["event_id"], "integrator": s["integrator"],
                         "unlinked": s["unlinked"],
                         "lat": s["lat"], "lon": s["lon"],
                         "evidence_url": (s["evidence"] or {}).get("image_url"), "received_at": s["received_at"]})
    for m in sms:
        timeline.append({
            "at": m["created_at"], "kind": "sms", "what": m["kind"], "status": m["status"],
            "phone": mask_phone(m["phone"]), "attempts": m["attempts"], "text": m["text"],
            "accepted_at": m["accepted_at"], "delivered_at": m["delivered_at"], "failed_at": m["failed_at"],
            "last_error": scrub(m["last_error"]) if m["last_error"] else None,
            "reports": [{"status": r["status"], "detail": scrub(r["detail"]), "at": r["reported_at"] or r["received_at"]}
                        for r in reports if r["sms_id"] == m["id"]],
        })
    for a in audit:
        detail = {k: scrub(v) if isinstance(v, str) else v for k, v in (a["detail"] or {}).items()}
        timeline.append({"at": a["at"], "kind": "operator" if a["actor"].startswith("operator:") else "decision",
                         "what": a["action"], "actor": a["actor"], "detail": detail, "id": a["id"]})
    order = {"capture": 0, "decision": 1, "operator": 1, "sms": 2}
    timeline.sort(key=lambda e: (e["at"], order[e["kind"]], e.get("id", 0)))

    return CaseFile(dict(case), dict(ticket) if ticket else None, timeline)


async def case_version(conn: asyncpg.Connection, case_id: UUID) -> tuple | None:
    """Changes whenever anything on the case page would change (cheap enough to poll)."""
    row = await conn.fetchrow(
        """SELECT c.updated_at,
                  (SELECT count(*) FROM sightings s WHERE s.case_id = c.id OR (s.case_id IS NULL AND s.plate = c.plate
                                                          AND s.taken_at >= c.detected_at)) AS sightings,
                  (SELECT coalesce(string_agg(status || attempts::text, ',' ORDER BY id), '') FROM sms_messages
                    WHERE case_id = c.id) AS sms,
                  (SELECT count(*) FROM sms_delivery_reports r JOIN sms_messages m ON m.id = r.sms_id
                    WHERE m.case_id = c.id) AS reports,
                  (SELECT count(*) FROM audit_log a WHERE a.case_id = c.id) AS audit,
                  (SELECT voided_at FROM tickets t WHERE t.case_id = c.id) AS voided_at
           FROM cases c WHERE c.id = $1""", case_id)
    return tuple(row.values()) if row else None


# ── reference data and the audit log ───────────────────────────────────────────────────────


async def zones(conn: asyncpg.Connection) -> list[dict]:
    """Every zone with its rules, its shape's type (NULL: none), and the registered cameras in it."""
    return [dict(r) for r in await conn.fetch(
        """SELECT z.id, z.name, z.window_seconds, z.exempt_reason, z.exempt_from_hour, z.exempt_until_hour,
                  z.exempt_starts_at, z.exempt_ends_at, z.exempt_by,
                  CASE WHEN z.exempt_reason IS NULL THEN NULL
                       WHEN z.exempt_ends_at <= now() THEN 'expired'
                       WHEN z.exempt_starts_at > now() THEN 'scheduled'
                       WHEN z.exempt_ends_at <= now() + interval '24 hours' THEN 'expiring'
                       ELSE 'active' END AS exempt_status,
                  z.first_offence_months, z.new_camera_days, z.confirm_tickets, z.geometry->>'type' AS shape, z.width_m,
                  coalesce((SELECT jsonb_agg(jsonb_build_object('id', c.id, 'place', c.place,
                                                                'by_position', c.zone_by_position) ORDER BY c.id)
                            FROM cameras c WHERE c.zone = z.id AND c.removed_at IS NULL), '[]') AS cameras
           FROM zones z ORDER BY z.id""")]


async def cameras_outside_zones(conn: asyncpg.Connection) -> list[dict]:
    """Registered cameras that no zone's shape holds (their zone is the operator's), and whether that
    zone exists (a camera in an unknown zone gets the city's default rules)."""
    return [dict(r) for r in await conn.fetch(
        """SELECT c.id, c.place, c.zone, EXISTS (SELECT 1 FROM zones z WHERE z.id = c.zone) AS known
           FROM cameras c WHERE c.removed_at IS NULL AND NOT c.zone_by_position ORDER BY c.id""")]


# ── tickets waiting for an officer's confirmation ────────────────────────────────────────────


async def to_confirm(conn: asyncpg.Connection, limit: int = 100) -> tuple[int, list[dict]]:
    """Tickets waiting for confirmation, oldest first, each with its two captures side by side: how
    many there are, and the first ``limit``."""
    total = await conn.fetchval("SELECT count(*) FROM cases WHERE state = 'to_confirm'")
    rows = await conn.fetch(
        """SELECT id, plate, zone, place, camera_id, detected_at, warned_at, warning_delivered_at, deadline_at,
                  closed_at, reason, violation, fresh_capture, window_seconds
           FROM cases WHERE state = 'to_confirm' ORDER BY closed_at LIMIT $1""", limit)
    return total, [evidence_pair(dict(r)) for r in rows]


def evidence_pair(case: dict) -> dict:
    """A case with its two captures (violation, fresh capture) and how far apart they are."""
    first, second = sighting_from_json(case["violation"]), sighting_from_json(case.get("fresh_capture"))
    pair = {**case, "captures": [first] + ([second] if second else [])}
    if second:
        pair["distance_m"] = round(distance_m(first, second))
        pair["interval_seconds"] = (second.taken_at - first.taken_at).total_seconds()
    return pair


async def cameras(conn: asyncpg.Connection) -> list[str]:
    return [r["camera_id"] for r in await conn.fetch(
        "SELECT DISTINCT camera_id FROM cases WHERE detected_at > now() - interval '30 days' ORDER BY 1 LIMIT 500")]


async def whitelist(conn: asyncpg.Connection) -> list[dict]:
    """Whitelist entries with their period and status: active, expiring (within 24 h), scheduled, expired."""
    return [dict(r) for r in await conn.fetch(
        """SELECT plate, reason, added_at, added_by, valid_from, valid_until,
                  CASE WHEN valid_until <= now() THEN 'expired' WHEN valid_from > now() THEN 'scheduled'
                       WHEN valid_until <= now() + interval '24 hours' THEN 'expiring' ELSE 'active' END AS status
           FROM whitelisted_plates ORDER BY plate""")]


AUDIT = listing.Listing({
    "at": listing.Column("a.at", "timestamptz"),
    "actor": listing.Column("a.actor", "text"),
    "action": listing.Column("a.action", "text"),
    "plate": listing.Column("coalesce(c.plate, '')", "text"),
}, default="at", default_desc=True, tie=listing.Column("a.id", "bigint"))
"""The audit log's sortable columns; ties broken by the entry's id."""


async def audit_entries(conn: asyncpg.Connection, operators_only: bool, order: listing.Order | None = None,
                        size: int = 200) -> listing.Page:
    """A page of the audit log (everything, or the operators' entries), newest first by default."""
    order = order or AUDIT.order({})
    args: list = [operators_only]
    page, order_by = order.keyset(args)
    args.append(size + 1)
    rows = await conn.fetch(
        f"""SELECT a.id, a.at, a.case_id, a.actor, a.action, a.detail, c.plate, {order.select} FROM audit_log a
            LEFT JOIN cases c ON c.id = a.case_id
            WHERE (NOT $1 OR a.actor LIKE 'operator:%') AND {page}
            ORDER BY {order_by} LIMIT ${len(args)}""", *args)
    result = listing.Page.of(rows, order, size)
    result.rows = [{**r, "detail": {k: scrub(v) if isinstance(v, str) else v for k, v in (r["detail"] or {}).items()}}
                   for r in result.rows]
    return result


async def health_lists(conn: asyncpg.Connection, limit: int = 50) -> dict:
    """What each health component counts, oldest first, for the health page (phones masked):
    messages awaiting a delivery report, decisions held for their input, the outbox's oldest rows,
    the last hour's dead letters."""
    awaiting = await conn.fetch(
        """SELECT s.case_id, s.kind, s.phone, s.accepted_at, c.plate, c.state
           FROM sms_messages s JOIN cases c ON c.id = s.case_id
           WHERE s.status = 'accepted' AND s.accepted_at > now() - interval '24 hours'
           ORDER BY s.accepted_at LIMIT $1""", limit)
    held = await conn.fetch(
        """SELECT c.id, c.plate, c.state, c.wake_at, c.source_partition FROM cases c
           WHERE c.state IN ('warned', 'rechecking') AND c.wake_at <= now()
           ORDER BY c.wake_at LIMIT $1""", limit)
    outbox = await conn.fetch("SELECT id, topic, created_at FROM outbox ORDER BY id LIMIT $1", limit)
    dead = await conn.fetch(
        """SELECT id, source_topic, reason, received_at FROM dead_letters
           WHERE received_at > now() - interval '1 hour' ORDER BY received_at DESC LIMIT $1""", limit)
    return {"awaiting_report": [{**dict(r), "phone": mask_phone(r["phone"])} for r in awaiting],
            "held": [dict(r) for r in held], "outbox": [dict(r) for r in outbox],
            "dead_letters": [{**dict(r), "reason": scrub(r["reason"])} for r in dead]}


async def review_queue(conn: asyncpg.Connection, sla: timedelta, limit: int = 500) -> list[dict]:
    """Cases waiting for review, oldest first: since when (the case went to review when it was set
    aside, ``closed_at``), due by (``sla`` later, on PostgreSQL's clock), who has claimed it."""
    rows = await conn.fetch(
        """SELECT c.id, c.plate, c.place, c.zone, c.reason, c.closed_at AS since, c.closed_at + $1::interval AS due_at,
                  now() > c.closed_at + $1::interval AS overdue, extract(epoch FROM now() - c.closed_at) AS age,
                  r.operator AS claimed_by, r.claimed_at
           FROM cases c LEFT JOIN review_claims r ON r.case_id = c.id
           WHERE c.state = 'review' ORDER BY c.closed_at, c.id LIMIT $2""", sla, limit)
    return [dict(r) for r in rows]


async def claim_of(conn: asyncpg.Connection, case_id: UUID) -> dict | None:
    row = await conn.fetchrow("SELECT operator, claimed_at FROM review_claims WHERE case_id = $1", case_id)
    return dict(row) if row else None


@dataclass(frozen=True)
class DeadLetterFilter:
    source: str = ""
    integrator: str = ""
    reason: str = ""
    field: str = ""
    since: datetime | None = None
    until: datetime | None = None


def integrator_of(topic: str, camera_events: str) -> str:
    """The integrator a camera-events topic belongs to (``<camera_events>.<integrator>``), else ''."""
    return topic[len(camera_events) + 1:] if topic.startswith(camera_events + ".") else ""


def shown_raw(raw: bytes | None) -> str:
    """A dead letter's bytes for a screen: UTF-8, with bytes that are not and control characters
    escaped (\\xNN), phones masked."""
    if not raw:
        return ""
    text = raw.decode("utf-8", "backslashreplace")
    return scrub(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text))


async def dead_letters(conn: asyncpg.Connection, f: DeadLetterFilter, camera_events: str, limit: int = 100,
                       before_id: int | None = None) -> list[dict]:
    """Dead letters newest first, filtered by source topic, integrator, reason (part of it), field
    (one of its errors) and time; each with its integrator, its fields, and its raw bytes as shown."""
    rows = await conn.fetch(
        """SELECT id, source_topic, partition, "offset", reason, errors, raw, received_at, raw_removed_at,
                  replayed_at, replayed_by
           FROM dead_letters
           WHERE ($1 = '' OR source_topic = $1)
             AND ($2 = '' OR source_topic = $7 || '.' || $2)
             AND ($3 = '' OR reason ILIKE '%' || $3 || '%')
             AND ($4 = '' OR errors @> jsonb_build_array(jsonb_build_object('field', $4::text)))
             AND ($5::timestamptz IS NULL OR received_at >= $5) AND ($6::timestamptz IS NULL OR received_at < $6)
             AND ($8::bigint IS NULL OR id < $8)
           ORDER BY id DESC LIMIT $9""",
        f.source, f.integrator, f.reason, f.field, f.since, f.until, camera_events, before_id, limit)
    return [{**dict(r), "integrator": integrator_of(r["source_topic"], camera_events),
             "reason": scrub(r["reason"]),
             "fields": [e.get("field", "") for e in (r["errors"] or [])],
             "messages": [scrub(f"{e.get('field', '')}: {e.get('message', '')}") for e in (r["errors"] or [])],
             "raw": shown_raw(r["raw"])} for r in rows]


async def dead_letter_sources(conn: asyncpg.Connection) -> list[str]:
    return [r["source_topic"] for r in await conn.fetch(
        "SELECT DISTINCT source_topic FROM dead_letters WHERE received_at > now() - interval '30 days' ORDER BY 1")]


async def shift_summary(conn: asyncpg.Connection, since: datetime, until: datetime) -> list[dict]:
    """What a shift did, by zone, between ``since`` and ``until``: warnings accepted, cars moved,
    tickets issued, warning notices, tickets voided, appeals decided. A last row ``*`` sums them."""
    rows = await conn.fetch(
        """WITH figures AS (
             SELECT c.zone, 'warnings' AS what FROM sms_messages s JOIN cases c ON c.id = s.case_id
               WHERE s.kind = 'warning' AND s.accepted_at >= $1 AND s.accepted_at < $2
             UNION ALL SELECT zone, 'moved' FROM cases WHERE state = 'moved' AND closed_at >= $1 AND closed_at < $2
             UNION ALL SELECT c.zone, 'tickets' FROM tickets t JOIN cases c ON c.id = t.case_id
               WHERE t.issued_at >= $1 AND t.issued_at < $2
             UNION ALL SELECT zone, 'cautions' FROM cases WHERE state = 'cautioned' AND closed_at >= $1 AND closed_at < $2
             UNION ALL SELECT c.zone, 'voids' FROM tickets t JOIN cases c ON c.id = t.case_id
               WHERE t.voided_at >= $1 AND t.voided_at < $2
             UNION ALL SELECT c.zone, 'appeals_decided' FROM appeals a JOIN cases c ON c.id = a.case_id
               WHERE a.decided_at >= $1 AND a.decided_at < $2)
           SELECT zone, what, count(*) AS n FROM figures GROUP BY zone, what""", since, until)
    by_zone: dict[str, dict] = {}
    for r in rows:
        by_zone.setdefault(r["zone"], {k: 0 for k in SUMMARY})[r["what"]] = r["n"]
    summary = [{"zone": z, **v} for z, v in sorted(by_zone.items())]
    summary.append({"zone": "*", **{k: sum(row[k] for row in summary) for k in SUMMARY}})
    return summary


SUMMARY = ("warnings", "moved", "tickets", "cautions", "voids", "appeals_decided")
