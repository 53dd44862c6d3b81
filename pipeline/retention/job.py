"""Retention by data class (PIPL art. 19: no longer than the purpose needs; art. 28: movements are
sensitive): what each class is kept for, the purge job that removes it, and what is held now.

Classes (``Policy``, settings ``PW_RETENTION_*``; the README defends the defaults):

    unlinked_sightings   sightings no case holds: dropped a day (partition) at a time, once the whole
                         day is older than ``unlinked_sightings``. They serve only the same-stay rule and
                         events that arrive out of order.
    event_ids            the dedupe keys of sightings (``sighting_ids``: no plate, no place): deleted
                         after ``event_ids`` (longer than Kafka keeps a replayable event), never while
                         a case still holds the sighting.
    closed_cases         a case closed without a ticket or a caution (moved, unconfirmed, exempt,
                         cancelled, rejected): ``closed_cases`` after it closed, its sightings are
                         deleted (but for one that another case still keeping its data names, in its
                         ticket's evidence or as its violation: e.g. the violation of a case an officer
                         warned again; it goes with the last case that names it), its SMS lose phone
                         number (masked), text and parameters, its
                         delivery reports go, and the case row loses its later captures and the
                         violation's image link. Its evidence images (``evidence_images``, unless another
                         case still uses the same bytes) and their fetch rows go too. The case row stays (plate, place, times: counts,
                         the audit trail, the first-offence rule).
    decided_cases        a ticketed or cautioned case: the same, ``decided_cases`` after the latest of
                         its close, its ticket's issue or void and its appeal's decision, never while
                         an appeal is undecided; the appeal's statement, attachments and photos (the
                         driver's own words and pictures) are emptied. The ticket record is untouched: the hash chain
                         (``pipeline.tickets.chain``) hashes none of what goes, so ``tickets verify``
                         still holds. Open cases, cases in review and tickets to confirm keep all.
    delivery_reports     reports applied (or set aside) longer than ``delivery_reports`` ago.
    dead_letter_raw      a dead letter's raw bytes and key, ``dead_letter_raw`` after it came; its
                         reason and field errors stay.
    operator_sessions    sessions expired longer than ``operator_sessions`` ago.
    login_failures       failed logins (name, client address) last seen ``login_failures`` ago.
    audit_log            phone numbers in details masked (``pipeline.lookups.owners.scrub``) once an
                         entry is ``audit_mask`` old; months dropped (partition) once the whole month
                         is older than ``audit_log``.

``run`` is shared by the workers: one at a time (a PostgreSQL advisory lock; the others skip their
round), in batches of ``batch_size`` rows, each batch its own short transaction; each class's work
is one audit entry per run (``retention:<class>``, with its counts). Its "now" is PostgreSQL's
``now()`` unless a test passes ``at``. It also creates the partitions of the coming days and months;
the default partitions catch anything beyond them, and their rows are moved out when their
partition is created. Dropping a partition takes a brief exclusive lock on the table: it waits at
most ``lock_timeout`` and otherwise tries again next round.
"""

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from pipeline.lookups.owners import mask_phone, scrub

log = logging.getLogger(__name__)

LOCK = 0x7077_7274  # "pwrt": one purge at a time among all workers
ACTOR = "retention"
UNTICKETED = ("moved", "unconfirmed", "exempt", "cancelled", "rejected")
DECIDED = ("ticketed", "cautioned")


@dataclass(frozen=True)
class Policy:
    unlinked_sightings: timedelta = timedelta(hours=36)
    event_ids: timedelta = timedelta(days=8)
    closed_cases: timedelta = timedelta(days=30)
    decided_cases: timedelta = timedelta(days=210)
    delivery_reports: timedelta = timedelta(days=30)
    dead_letter_raw: timedelta = timedelta(days=14)
    operator_sessions: timedelta = timedelta(hours=24)
    login_failures: timedelta = timedelta(days=7)
    audit_mask: timedelta = timedelta(days=30)
    audit_log_months: int = 24
    batch_size: int = 1000
    max_batches: int = 20
    """Per class and run: a backlog goes over several runs, never in one long round."""
    days_ahead: int = 3
    lock_timeout: float = 2.0

    @classmethod
    def of(cls, s) -> "Policy":
        return cls(unlinked_sightings=timedelta(hours=s.retention_unlinked_sightings_hours),
                   event_ids=timedelta(days=s.retention_event_ids_days),
                   closed_cases=timedelta(days=s.retention_closed_case_days),
                   decided_cases=timedelta(days=s.retention_decided_case_days),
                   delivery_reports=timedelta(days=s.retention_delivery_report_days),
                   dead_letter_raw=timedelta(days=s.retention_dead_letter_raw_days),
                   operator_sessions=timedelta(hours=s.retention_operator_session_hours),
                   login_failures=timedelta(days=s.retention_login_failure_days),
                   audit_mask=timedelta(days=s.retention_audit_mask_days),
                   audit_log_months=s.retention_audit_log_months, batch_size=s.retention_batch_size,
                   days_ahead=s.retention_partitions_ahead_days, lock_timeout=s.retention_lock_timeout_seconds)


# ── partitions ──────────────────────────────────────────────────────────────────────────────

_BOUNDS = """
SELECT c.relname AS name,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\)'))[1]::timestamptz AS low,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz AS high
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = $1::regclass AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
ORDER BY high"""


@dataclass(frozen=True)
class Partitioned:
    """A table partitioned by a time column, a day or a month a partition."""

    table: str
    column: str
    default: str
    monthly: bool

    def start_of(self, at: datetime) -> datetime:
        at = at.astimezone(UTC)
        return at.replace(day=1 if self.monthly else at.day, hour=0, minute=0, second=0, microsecond=0)

    def after(self, start: datetime) -> datetime:
        if not self.monthly:
            return start + timedelta(days=1)
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)

    def name_of(self, start: datetime) -> str:
        return f"{self.table}_{start:%Y%m}" if self.monthly else f"{self.table}_{start:%Y%m%d}"


SIGHTINGS = Partitioned("sightings_unlinked", "received_at", "sightings_unlinked_default", monthly=False)
AUDIT = Partitioned("audit_log", "at", "audit_log_default", monthly=True)


async def partitions(conn, p: Partitioned) -> list[asyncpg.Record]:
    """(name, low, high) of each range partition, oldest first (low None: from the beginning)."""
    return await conn.fetch(_BOUNDS, p.table)


async def create_ahead(conn, p: Partitioned, at: datetime, count: int, lock_timeout: float = 2.0) -> list[str]:
    """Create the partitions of the ``count`` days (months) from ``at``'s on that do not exist yet,
    moving in any rows the default partition caught for them."""
    existing = await partitions(conn, p)
    created = []
    start = p.start_of(at)
    for _ in range(count):
        end = p.after(start)
        if not any(r["high"] > start and (r["low"] is None or r["low"] < end) for r in existing):
            name = p.name_of(start)
            try:
                await _create(conn, p, name, start, end, lock_timeout)
            except asyncpg.LockNotAvailableError:
                log.warning("retention: %s is busy (a long transaction?); creating %s next round", p.table, name)
                break
            created.append(name)
        start = end
    return created


async def _create(conn, p: Partitioned, name: str, start: datetime, end: datetime, lock_timeout: float) -> None:
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout * 1000)}ms'")
        await conn.execute(f'CREATE TABLE "{name}" (LIKE {p.table} INCLUDING DEFAULTS)')
        await conn.execute(
            f"""WITH moved AS (DELETE FROM {p.default} WHERE {p.column} >= $1 AND {p.column} < $2 RETURNING *)
                INSERT INTO "{name}" SELECT * FROM moved""", start, end)
        await conn.execute(f"""ALTER TABLE {p.table} ATTACH PARTITION "{name}"
                               FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')""")


async def drop_older(conn, p: Partitioned, before: datetime, lock_timeout: float = 2.0) -> tuple[list[str], int]:
    """Drop the partitions whose every row is older than ``before``: (their names, rows dropped)."""
    dropped, rows = [], 0
    for r in await partitions(conn, p):
        if r["high"] > before:
            break
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout * 1000)}ms'")
                held = await conn.fetchval(f'SELECT count(*) FROM "{r["name"]}"')
                await conn.execute(f'DROP TABLE "{r["name"]}"')
        except asyncpg.LockNotAvailableError:
            log.warning("retention: %s is busy (a long transaction?); dropping it next round", r["name"])
            break
        dropped.append(r["name"])
        rows += held
    return dropped, rows


# ── the purge ───────────────────────────────────────────────────────────────────────────────


async def _batches(conn, policy: Policy, sql: str, *args) -> int:
    """Run a statement that handles at most ``batch_size`` rows ($1) and returns one row per row
    handled, each in its own transaction, until fewer come back; the number handled."""
    total = 0
    for _ in range(policy.max_batches):
        async with conn.transaction():
            n = len(await conn.fetch(sql, policy.batch_size, *args))
        total += n
        if n < policy.batch_size:
            break
    return total


_CASE_PURGE = """
WITH chosen AS (
    SELECT id FROM cases WHERE id = ANY($1::uuid[]) AND personal_data_removed_at IS NULL FOR UPDATE SKIP LOCKED
), named AS (
    SELECT e ->> 'event_id' AS event_id, e ->> 'integrator' AS integrator
    FROM chosen JOIN tickets t ON t.case_id = chosen.id CROSS JOIN LATERAL jsonb_array_elements(t.evidence) e
    UNION
    SELECT c.violation ->> 'event_id', c.violation ->> 'integrator' FROM chosen JOIN cases c ON c.id = chosen.id
), held AS (
    SELECT s.integrator, s.event_id FROM sightings s JOIN chosen ON s.case_id = chosen.id
    UNION
    SELECT s.integrator, s.event_id FROM named n
    JOIN sightings s ON s.event_id = n.event_id AND s.integrator = coalesce(n.integrator, s.integrator)
), gone_sightings AS (
    DELETE FROM sightings s USING held h
    WHERE s.integrator = h.integrator AND s.event_id = h.event_id
      AND NOT EXISTS (
          SELECT 1 FROM tickets t JOIN cases c ON c.id = t.case_id
          WHERE t.evidence @> jsonb_build_array(jsonb_build_object('event_id', s.event_id))
            AND c.personal_data_removed_at IS NULL AND c.id NOT IN (SELECT id FROM chosen)
            AND EXISTS (SELECT 1 FROM jsonb_array_elements(t.evidence) e
                        WHERE e ->> 'event_id' = s.event_id AND coalesce(e ->> 'integrator', s.integrator) = s.integrator))
      AND NOT EXISTS (
          SELECT 1 FROM cases c
          WHERE c.violation ->> 'event_id' = s.event_id AND coalesce(c.violation ->> 'integrator', s.integrator) = s.integrator
            AND c.personal_data_removed_at IS NULL AND c.id NOT IN (SELECT id FROM chosen))
    RETURNING 1
), gone_reports AS (
    DELETE FROM sms_delivery_reports r USING sms_messages m, chosen
    WHERE r.sms_id = m.id AND m.case_id = chosen.id RETURNING 1
), gone_photos AS (
    DELETE FROM appeal_photos p USING appeals a, chosen WHERE p.appeal_id = a.id AND a.case_id = chosen.id RETURNING 1
), gone_fetches AS (
    DELETE FROM evidence_fetches f USING chosen
    WHERE f.case_id = chosen.id
      AND NOT EXISTS (
          SELECT 1 FROM tickets t JOIN cases c ON c.id = t.case_id
          WHERE c.personal_data_removed_at IS NULL AND c.id NOT IN (SELECT id FROM chosen)
            AND EXISTS (SELECT 1 FROM jsonb_array_elements(t.evidence) e
                        WHERE e ->> 'event_id' = f.event_id AND coalesce(e ->> 'integrator', f.integrator) = f.integrator))
      AND NOT EXISTS (
          SELECT 1 FROM cases c
          WHERE c.violation ->> 'event_id' = f.event_id AND coalesce(c.violation ->> 'integrator', f.integrator) = f.integrator
            AND c.personal_data_removed_at IS NULL AND c.id NOT IN (SELECT id FROM chosen))
    RETURNING f.image_sha256
), appeals_emptied AS (
    UPDATE appeals a SET statement = '', attachments = '[]' FROM chosen
    WHERE a.case_id = chosen.id
      AND (a.statement <> '' OR a.attachments <> '[]' OR EXISTS (SELECT FROM appeal_photos p WHERE p.appeal_id = a.id))
    RETURNING 1
), marked AS (
    UPDATE cases c SET personal_data_removed_at = $2, latest_capture = NULL, fresh_capture = NULL,
                       violation = c.violation - 'evidence_url'
    FROM chosen WHERE c.id = chosen.id RETURNING c.id
)
SELECT (SELECT count(*) FROM marked) AS cases, (SELECT count(*) FROM gone_sightings) AS sightings,
       (SELECT count(*) FROM gone_reports) AS delivery_reports, (SELECT count(*) FROM appeals_emptied) AS appeals,
       (SELECT array_agg(id) FROM marked) AS ids,
       (SELECT array_agg(DISTINCT image_sha256) FROM gone_fetches WHERE image_sha256 IS NOT NULL) AS images"""

_UNUSED_IMAGES = """
DELETE FROM evidence_images i WHERE i.sha256 = ANY($1::text[])
  AND NOT EXISTS (SELECT FROM evidence_fetches f WHERE f.image_sha256 = i.sha256) RETURNING 1"""


async def _purge_cases(conn, policy: Policy, candidates_sql: str, at: datetime, horizon: datetime) -> dict:
    """Remove the personal data of the cases ``candidates_sql`` ($1 batch size, $2 horizon) picks."""
    counts = {"cases": 0, "sightings": 0, "sms": 0, "delivery_reports": 0, "appeals": 0, "evidence_images": 0}
    for _ in range(policy.max_batches):
        async with conn.transaction():
            ids = [r["id"] for r in await conn.fetch(candidates_sql, policy.batch_size, horizon)]
            if not ids:
                break
            done = await conn.fetchrow(_CASE_PURGE, ids, at)
            marked = done["ids"] or []
            sms = await conn.fetch("SELECT id, phone FROM sms_messages WHERE case_id = ANY($1::uuid[])", marked)
            await conn.executemany("UPDATE sms_messages SET phone = $2, text = NULL, params = '{}' WHERE id = $1",
                                   [(m["id"], m["phone"] if "*" in m["phone"] else mask_phone(m["phone"])) for m in sms])
            for key in ("cases", "sightings", "delivery_reports", "appeals"):
                counts[key] += done[key]
            counts["sms"] += len(sms)
            counts["evidence_images"] += len(await conn.fetch(_UNUSED_IMAGES, done["images"] or []))
        if len(ids) < policy.batch_size:
            break
    return counts


_CLOSED_CASES = f"""
SELECT id FROM cases
WHERE closed_at IS NOT NULL AND personal_data_removed_at IS NULL AND closed_at <= $2
  AND state IN ({", ".join(f"'{s}'" for s in UNTICKETED)})
ORDER BY closed_at LIMIT $1"""

_DECIDED_END = """greatest(c.closed_at, t.issued_at, t.voided_at, a.decided_at)"""
_DECIDED_CASES = f"""
SELECT c.id FROM cases c
LEFT JOIN tickets t ON t.case_id = c.id
LEFT JOIN appeals a ON a.case_id = c.id
WHERE c.closed_at IS NOT NULL AND c.personal_data_removed_at IS NULL
  AND c.state IN ({", ".join(f"'{s}'" for s in DECIDED)})
  AND (a.id IS NULL OR a.decided_at IS NOT NULL)
  AND {_DECIDED_END} <= $2
ORDER BY c.closed_at LIMIT $1"""


async def _mask_audit(conn, policy: Policy, horizon: datetime) -> int:
    """Mask phone numbers in the details of entries older than ``horizon``, in id order from the mark
    (the audit log is append-only for everyone else: its partitions are updated by name)."""
    masked = 0
    for _ in range(policy.max_batches):
        async with conn.transaction():
            mark = await conn.fetchval(
                "SELECT value FROM retention_marks WHERE name = 'audit_log_masked_through_id' FOR UPDATE")
            rows = await conn.fetch(
                """SELECT tableoid::regclass::text AS part, id, at, detail FROM audit_log
                   WHERE id > $1 ORDER BY id LIMIT $2""", mark, policy.batch_size)
            through = mark
            for r in rows:
                if r["at"] > horizon:
                    break
                clean = _scrubbed(r["detail"])
                if clean != r["detail"]:
                    await conn.execute(f'UPDATE "{r["part"]}" SET detail = $3 WHERE id = $1 AND at = $2',
                                       r["id"], r["at"], clean)
                    masked += 1
                through = r["id"]
            await conn.execute("UPDATE retention_marks SET value = $1 WHERE name = 'audit_log_masked_through_id'",
                               through)
        if through == mark or len(rows) < policy.batch_size or through != rows[-1]["id"]:
            break
    return masked


def _scrubbed(value):
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    return value


def _months_before(at: datetime, months: int) -> datetime:
    start = AUDIT.start_of(at)
    index = start.year * 12 + start.month - 1 - months
    return start.replace(year=index // 12, month=index % 12 + 1)


async def purge(conn, policy: Policy, at: datetime) -> dict[str, dict]:
    """Apply every class's retention as of ``at`` (the caller holds the lock); counts per class."""
    done: dict[str, dict] = {}
    created = await create_ahead(conn, SIGHTINGS, at, policy.days_ahead + 1, policy.lock_timeout)
    created += await create_ahead(conn, AUDIT, at, 2, policy.lock_timeout)
    if created:
        log.info("retention: created partitions %s", ", ".join(created))

    dropped, rows = await drop_older(conn, SIGHTINGS, at - policy.unlinked_sightings, policy.lock_timeout)
    rows += await _batches(conn, policy, f"""
        DELETE FROM {SIGHTINGS.default} WHERE ctid IN (
            SELECT ctid FROM {SIGHTINGS.default} WHERE received_at <= $2 LIMIT $1) RETURNING 1""",
                           at - policy.unlinked_sightings)
    done["unlinked_sightings"] = {"sightings": rows, "partitions_dropped": dropped}
    done["event_ids"] = {"event_ids": await _batches(conn, policy, """
        DELETE FROM sighting_ids WHERE (integrator, event_id) IN (
            SELECT i.integrator, i.event_id FROM sighting_ids i WHERE i.received_at <= $2 AND NOT EXISTS (
                SELECT 1 FROM sightings_of_cases s WHERE s.event_id = i.event_id AND s.integrator = i.integrator)
            LIMIT $1) RETURNING 1""",
                                                     at - policy.event_ids)}
    done["closed_cases"] = await _purge_cases(conn, policy, _CLOSED_CASES, at, at - policy.closed_cases)
    done["decided_cases"] = await _purge_cases(conn, policy, _DECIDED_CASES, at, at - policy.decided_cases)
    done["delivery_reports"] = {"delivery_reports": await _batches(conn, policy, """
        DELETE FROM sms_delivery_reports WHERE id IN (
            SELECT id FROM sms_delivery_reports WHERE received_at <= $2
               AND (applied_at IS NOT NULL OR problem IS NOT NULL) LIMIT $1) RETURNING 1""",
                                                                   at - policy.delivery_reports)}
    done["dead_letter_raw"] = {"dead_letters": await _batches(conn, policy, """
        UPDATE dead_letters SET raw = ''::bytea, key = NULL, raw_removed_at = $3 WHERE id IN (
            SELECT id FROM dead_letters WHERE raw_removed_at IS NULL AND received_at <= $2 LIMIT $1) RETURNING 1""",
                                                              at - policy.dead_letter_raw, at)}
    done["operator_sessions"] = {"sessions": await _batches(conn, policy, """
        DELETE FROM operator_sessions WHERE token_sha256 IN (
            SELECT token_sha256 FROM operator_sessions WHERE expires_at <= $2 LIMIT $1) RETURNING 1""",
                                                            at - policy.operator_sessions)}
    done["login_failures"] = {"login_failures": await _batches(conn, policy, """
        DELETE FROM login_failures WHERE (name, address) IN (
            SELECT name, address FROM login_failures WHERE last_at <= $2 LIMIT $1) RETURNING 1""",
                                                               at - policy.login_failures)}
    masked = await _mask_audit(conn, policy, at - policy.audit_mask)
    dropped, rows = await drop_older(conn, AUDIT, _months_before(at, policy.audit_log_months), policy.lock_timeout)
    rows += await _batches(conn, policy, f"""
        DELETE FROM {AUDIT.default} WHERE ctid IN (
            SELECT ctid FROM {AUDIT.default} WHERE at < $2 LIMIT $1) RETURNING 1""",
                           _months_before(at, policy.audit_log_months))
    done["audit_log"] = {"masked": masked, "entries": rows, "partitions_dropped": dropped}
    async with conn.transaction():
        for name, counts in done.items():
            await conn.execute("INSERT INTO audit_log (at, case_id, actor, action, detail) VALUES ($1, NULL, $2, $3, $4)",
                               at, ACTOR, f"retention:{name}", counts)
    return done


async def run(conn, policy: Policy, at: datetime | None = None) -> dict[str, dict] | None:
    """One purge as of ``at`` (default: PostgreSQL's now()), unless another worker's is running (None)."""
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK):
        return None
    try:
        at = at or await conn.fetchval("SELECT now()")
        return await purge(conn, policy, at)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK)


# ── what is held ────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Held:
    name: str
    rows: int
    oldest: datetime | None
    next_at: datetime | None
    """When the oldest of them goes (None: nothing held, or it waits on something else)."""
    note: str = ""


async def status(conn, policy: Policy, at: datetime | None = None) -> list[Held]:
    """Per class: how many rows are held, the oldest, and when the next of them goes."""
    at = at or await conn.fetchval("SELECT now()")
    held = []

    row = await conn.fetchrow("SELECT count(*) AS n, min(received_at) AS oldest FROM sightings_unlinked")
    first = await _oldest_held(conn, SIGHTINGS)
    in_default = await conn.fetchval(f"SELECT min(received_at) FROM {SIGHTINGS.default}")
    goes = [t for t in (first and first["high"], in_default) if t is not None]
    held.append(Held("unlinked_sightings", row["n"], row["oldest"],
                     min(goes) + policy.unlinked_sightings if goes else None,
                     f"a day (UTC) at a time, once the whole day is {_span(policy.unlinked_sightings)} old"))

    row = await conn.fetchrow("SELECT count(*) AS n, min(received_at) AS oldest FROM sighting_ids")
    held.append(Held("event_ids", row["n"], row["oldest"], _plus(row["oldest"], policy.event_ids),
                     "dedupe keys only (no plate, no place)"))

    row = await conn.fetchrow(f"""SELECT count(*) AS n, min(closed_at) AS oldest FROM cases
        WHERE closed_at IS NOT NULL AND personal_data_removed_at IS NULL
          AND state IN ({", ".join(f"'{s}'" for s in UNTICKETED)})""")
    held.append(Held("closed_cases", row["n"], row["oldest"], _plus(row["oldest"], policy.closed_cases),
                     "cases closed without a ticket: their sightings, SMS phone and text"))

    row = await conn.fetchrow(f"""SELECT count(*) AS n, min({_DECIDED_END}) AS oldest,
               min({_DECIDED_END}) FILTER (WHERE a.id IS NULL OR a.decided_at IS NOT NULL) AS oldest_free,
               count(*) FILTER (WHERE a.id IS NOT NULL AND a.decided_at IS NULL) AS appealed
        FROM cases c LEFT JOIN tickets t ON t.case_id = c.id LEFT JOIN appeals a ON a.case_id = c.id
        WHERE c.closed_at IS NOT NULL AND c.personal_data_removed_at IS NULL
          AND c.state IN ({", ".join(f"'{s}'" for s in DECIDED)})""")
    held.append(Held("decided_cases", row["n"], row["oldest"], _plus(row["oldest_free"], policy.decided_cases),
                     f"ticketed and cautioned cases' evidence; {row['appealed']} wait for an appeal's decision"))

    row = await conn.fetchrow("""SELECT count(*) AS n, min(c.opened_at) AS oldest FROM cases c
        WHERE c.closed_at IS NULL OR c.state IN ('review', 'to_confirm')""")
    held.append(Held("open_cases", row["n"], row["oldest"], None,
                     "open, in review or to confirm: kept whole until closed"))

    for name, sql, span in (
            ("delivery_reports", "SELECT count(*) AS n, min(received_at) AS oldest FROM sms_delivery_reports",
             policy.delivery_reports),
            ("dead_letter_raw", "SELECT count(*) AS n, min(received_at) AS oldest FROM dead_letters "
                                "WHERE raw_removed_at IS NULL", policy.dead_letter_raw),
            ("operator_sessions", "SELECT count(*) AS n, min(expires_at) AS oldest FROM operator_sessions",
             policy.operator_sessions),
            ("login_failures", "SELECT count(*) AS n, min(last_at) AS oldest FROM login_failures",
             policy.login_failures)):
        row = await conn.fetchrow(sql)
        held.append(Held(name, row["n"], row["oldest"], _plus(row["oldest"], span)))

    row = await conn.fetchrow("SELECT count(*) AS n, min(at) AS oldest FROM audit_log")
    first = await _oldest_held(conn, AUDIT)
    next_at = None
    if first is not None:
        next_at = first["high"]
        for _ in range(policy.audit_log_months):
            next_at = AUDIT.after(next_at)
    unmasked = await conn.fetchval(
        "SELECT count(*) FROM audit_log WHERE id > (SELECT value FROM retention_marks "
        "WHERE name = 'audit_log_masked_through_id')")
    held.append(Held("audit_log", row["n"], row["oldest"], next_at,
                     f"a month at a time after {policy.audit_log_months} months; {unmasked} entries not yet "
                     f"masked (masked at {_span(policy.audit_mask)})"))
    return held


async def _oldest_held(conn, p: Partitioned) -> asyncpg.Record | None:
    """The oldest range partition that holds a row."""
    for r in await partitions(conn, p):
        if await conn.fetchval(f'SELECT EXISTS (SELECT 1 FROM "{r["name"]}")'):
            return r
    return None


def _plus(at: datetime | None, span: timedelta) -> datetime | None:
    return at + span if at is not None else None


def _span(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    return f"{hours:g} h" if hours < 72 else f"{hours / 24:g} days"


def summary(done: dict[str, dict]) -> str:
    """One line per class, for the command line and the log."""
    return "\n".join(f"{name}: {json.dumps(counts, ensure_ascii=False)}" for name, counts in done.items())
