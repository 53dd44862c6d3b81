"""Cases, sightings, SMS rows, tickets, audit and outbox rows in PostgreSQL.

Every function takes a connection inside the caller's transaction: a case change, its SMS row,
its ticket and its outbox rows commit together or not at all. Uniqueness in the schema makes
replays harmless: a sighting per (integrator, ``event_id``), an SMS per (case, kind), a ticket per case.
"""

import json
import secrets
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg
from pydantic import BaseModel

from pipeline.cases.machine import Case, Sighting, State, delivery_moment
from schemas import events
from pipeline.evidence import store as evidence_images
from pipeline.restore import sms_id_for
from schemas.codec import encode

CASE_COLUMNS = """id, plate, state, zone, place, camera_id, lat, lon, violation, latest_capture,
    window_seconds, detected_at, opened_at, warned_at, deadline_at, wake_at, closed_at, reason, warning_delivered_at,
    fresh_capture, left_at, caution, confirm, plate_type"""


async def init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def sighting_to_json(s: Sighting | None) -> dict | None:
    if s is None:
        return None
    return {"event_id": s.event_id, "integrator": s.integrator, "camera_id": s.camera_id,
            "taken_at": s.taken_at.isoformat(), "lat": s.lat, "lon": s.lon, "place": s.place,
            "evidence_url": s.evidence_url}


def sighting_from_json(d: dict | None) -> Sighting | None:
    if d is None:
        return None
    return Sighting(d["event_id"], d["camera_id"], datetime.fromisoformat(d["taken_at"]), d["lat"], d["lon"],
                    d.get("place", ""), d.get("evidence_url"), d.get("integrator", ""))


def case_from_row(r) -> Case:
    return Case(id=r["id"], plate=r["plate"], state=State(r["state"]), zone=r["zone"], place=r["place"],
                violation=sighting_from_json(r["violation"]), opened_at=r["opened_at"], warned_at=r["warned_at"],
                deadline_at=r["deadline_at"], wake_at=r["wake_at"],
                latest_capture=sighting_from_json(r["latest_capture"]), closed_at=r["closed_at"], reason=r["reason"],
                warning_delivered_at=r["warning_delivered_at"], window=timedelta(seconds=r["window_seconds"]),
                fresh_capture=sighting_from_json(r["fresh_capture"]), left_at=r["left_at"], caution=r["caution"],
                confirm=r["confirm"], plate_type=r["plate_type"])


async def add_sighting(conn, kind: str, event, sighting: Sighting, zone: str, received_at: datetime) -> bool:
    """Record a camera event once per (integrator, ``event_id``, kept in ``sighting_ids``: sightings are
    partitioned, see pipeline/retention/job.py); False for a replay. ``sighting`` and
    ``zone`` are the event as the camera registry places it (``pipeline.cameras``); the position the
    event carried, if any, is kept as reported_lat/lon."""
    evidence = getattr(event, "evidence", None)
    reported = event.location
    inserted = await conn.fetchval(
        """WITH fresh AS (INSERT INTO sighting_ids (integrator, event_id, received_at) VALUES ($1, $2, $12)
                          ON CONFLICT (integrator, event_id) DO NOTHING RETURNING true)
           INSERT INTO sightings (integrator, event_id, kind, plate, camera_id, taken_at, lat, lon, place, zone,
                                  evidence, received_at, reported_lat, reported_lon)
           SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14 FROM fresh RETURNING true""",
        sighting.integrator, event.event_id, kind, event.plate, event.camera_id, event.taken_at, sighting.lat,
        sighting.lon, sighting.place, zone, evidence.model_dump() if evidence else None, received_at,
        reported.lat if reported else None, reported.lon if reported else None,
    )
    return bool(inserted)


async def add_sightings(conn, rows: list[tuple], received_at: datetime) -> set[tuple[str, str]]:
    """``add_sighting`` for many events in two statements' worth of one: ``rows`` are (kind, event,
    sighting, zone). Returns the (integrator, event_id) of those recorded now (the others are
    replays); of an event repeated within ``rows``, the first is recorded."""
    columns: list[list] = [[] for _ in range(13)]
    for kind, event, sighting, zone in rows:
        evidence = getattr(event, "evidence", None)
        reported = event.location
        for column, value in zip(columns, (
                sighting.integrator, event.event_id, kind, event.plate, event.camera_id, event.taken_at, sighting.lat,
                sighting.lon, sighting.place, zone, json.dumps(evidence.model_dump()) if evidence else None,
                reported.lat if reported else None, reported.lon if reported else None)):
            column.append(value)
    recorded = await conn.fetch(
        """WITH input AS (
               SELECT DISTINCT ON (integrator, event_id) * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                   $5::text[], $6::timestamptz[], $7::float8[], $8::float8[], $9::text[], $10::text[], $11::text[],
                   $12::float8[], $13::float8[]) WITH ORDINALITY
                   AS t(integrator, event_id, kind, plate, camera_id, taken_at, lat, lon, place, zone, evidence,
                        reported_lat, reported_lon, n)
               ORDER BY integrator, event_id, n),
           fresh AS (INSERT INTO sighting_ids (integrator, event_id, received_at)
                     SELECT integrator, event_id, $14 FROM input
                     ON CONFLICT (integrator, event_id) DO NOTHING RETURNING integrator, event_id)
           INSERT INTO sightings (integrator, event_id, kind, plate, camera_id, taken_at, lat, lon, place, zone,
                                  evidence, received_at, reported_lat, reported_lon)
           SELECT i.integrator, i.event_id, i.kind, i.plate, i.camera_id, i.taken_at, i.lat, i.lon, i.place, i.zone,
                  i.evidence::jsonb, $14, i.reported_lat, i.reported_lon
           FROM input i JOIN fresh f USING (integrator, event_id)
           RETURNING integrator, event_id""",
        *columns, received_at)
    return {(r["integrator"], r["event_id"]) for r in recorded}


async def plates_with_open_cases(conn, plates: list[str]) -> set[str]:
    """Those of ``plates`` that have an open case now (one query for a batch)."""
    rows = await conn.fetch(
        "SELECT DISTINCT plate FROM cases WHERE plate = ANY($1::text[]) AND state IN ('detected', 'warned', 'rechecking')",
        plates)
    return {r["plate"] for r in rows}


LINK_SIGHTING = "UPDATE sightings SET case_id = $3 WHERE integrator = $1 AND event_id = $2"


async def cases_of_plates(conn, plates: list[str], latest_of: list[str]) -> tuple[dict[str, Case], dict[str, Case]]:
    """For a batch, in one query: the open case of each of ``plates`` that has one (``open_case_for``),
    and the most recent case, open or closed, of each of ``latest_of`` (``latest_case``), all locked,
    in plate order."""
    rows = await conn.fetch(
        f"""SELECT {CASE_COLUMNS} FROM cases WHERE id IN (
                SELECT id FROM cases WHERE plate = ANY($1::text[]) AND state IN ('detected', 'warned', 'rechecking')
                UNION ALL
                SELECT latest.id FROM unnest($2::text[]) AS p(plate) CROSS JOIN LATERAL (
                    SELECT id FROM cases WHERE plate = p.plate ORDER BY opened_at DESC LIMIT 1) AS latest)
            ORDER BY plate, opened_at FOR NO KEY UPDATE""",
        sorted(set(plates)), sorted(set(latest_of)))
    open_cases, latest, latest_of = {}, {}, set(latest_of)
    for case in map(case_from_row, rows):
        if case.plate in latest_of:
            latest[case.plate] = case
        if case.is_open:
            open_cases[case.plate] = case
    return open_cases, latest


async def link_sighting(conn, integrator: str, event_id: str, case_id: UUID) -> None:
    await conn.execute(LINK_SIGHTING, integrator, event_id, case_id)


async def open_case_for(conn, plate: str) -> Case | None:
    row = await conn.fetchrow(
        f"SELECT {CASE_COLUMNS} FROM cases WHERE plate = $1 AND state IN ('detected', 'warned', 'rechecking') FOR NO KEY UPDATE",
        plate,
    )
    return case_from_row(row) if row else None


async def get_case(conn, case_id: UUID, lock: bool = False) -> Case | None:
    row = await conn.fetchrow(f"SELECT {CASE_COLUMNS} FROM cases WHERE id = $1 {'FOR NO KEY UPDATE' if lock else ''}", case_id)
    return case_from_row(row) if row else None


async def claim_due_cases(conn, camera_events: str, limit: int, reach_m: float = 50.0) -> tuple[datetime, list]:
    """PostgreSQL's now() and the cases due by it whose input has been read past their ``wake_at``
    (``pipeline.cases.watermarks``), locked; rows, not cases, so that one unreadable row is the
    caller's to set aside.

    ``camera_events`` is the bare topic name: its per-integrator topics (``camera-events.<name>``)
    all count. The case's own topic must be read past ``wake_at`` on its partition, and so must the
    same partition of every other integrator's topic (the plate's key picks the same partition
    number in each, all having the same partition count): another integrator's camera may hold
    the answer. Except an integrator marked stale (``watermarks.mark_stale``) with no camera within
    ``reach_m`` of the case's place: its topic can only say the car was elsewhere, and the case is
    decided without it. Each row's ``decided_without`` names the topics so passed over."""
    now = await conn.fetchval("SELECT now()")
    rows = await conn.fetch(
        f"""WITH family AS (
                SELECT w.topic, w.partition, w.read_to,
                       EXISTS (SELECT 1 FROM stale_topics s WHERE s.topic = w.topic) AS stale
                FROM partition_watermarks w
                WHERE w.topic = $3 OR left(w.topic, length($3) + 1) = $3 || '.')
            SELECT {CASE_COLUMNS}, source_partition,
                   ARRAY(SELECT f.topic FROM family f WHERE f.partition = c.source_partition
                         AND f.read_to < c.wake_at ORDER BY f.topic) AS decided_without
            FROM cases c
            WHERE state IN ('warned', 'rechecking') AND wake_at <= $1
              AND (source_partition IS NULL OR (
                   EXISTS (SELECT 1 FROM partition_watermarks w
                           WHERE w.topic = coalesce(c.source_topic, $3) AND w.partition = c.source_partition
                             AND w.read_to >= c.wake_at)
                   AND NOT EXISTS (SELECT 1 FROM family f
                           WHERE f.partition = c.source_partition AND f.read_to < c.wake_at
                             AND (NOT f.stale OR EXISTS (
                                 SELECT 1 FROM cameras k
                                 WHERE k.integrator = substr(f.topic, length($3) + 2) AND k.removed_at IS NULL
                                   AND abs(k.lat - c.lat) < $4 / 111000.0 * 1.1
                                   AND 2 * 6371008.8 * asin(sqrt(power(sin(radians(k.lat - c.lat) / 2), 2)
                                       + cos(radians(c.lat)) * cos(radians(k.lat))
                                         * power(sin(radians(k.lon - c.lon) / 2), 2))) <= $4)))))
            ORDER BY wake_at LIMIT $2 FOR NO KEY UPDATE OF c SKIP LOCKED""",
        now, limit, camera_events, reach_m * 1.01 + 1,
    )
    return now, rows


async def postpone(conn, case_id: UUID) -> None:
    """Wake a case that could not be decided nor set aside again in 5 minutes, behind the others."""
    await conn.execute("UPDATE cases SET wake_at = now() + interval '5 minutes' WHERE id = $1", case_id)


INSERT_CASE = f"""INSERT INTO cases ({CASE_COLUMNS}, updated_at, source_partition, source_topic) VALUES
    ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24,
     $25, $26, $27)"""


async def insert_case(conn, case: Case, window_seconds: int, now: datetime, source_partition: int | None = None,
                      source_topic: str | None = None) -> None:
    """``source_topic``, ``source_partition``: the camera-events topic and partition that carried the
    violation (see ``watermarks``)."""
    if isinstance(conn, Batch):
        conn.opened[case.id] = (len(conn.waiting[INSERT_CASE]), window_seconds, source_partition, source_topic)
    await conn.execute(INSERT_CASE, *_case_row(case, window_seconds, now, source_partition, source_topic))
    await evidence_images.want(conn, case.id, case.violation)


def _case_row(case: Case, window_seconds: int, now: datetime, source_partition: int | None,
              source_topic: str | None) -> tuple:
    v = case.violation
    return (case.id, case.plate, case.state.value, case.zone, case.place, v.camera_id, v.lat, v.lon,
            sighting_to_json(v), sighting_to_json(case.latest_capture), window_seconds, v.taken_at, case.opened_at,
            case.warned_at, case.deadline_at, case.wake_at, case.closed_at, case.reason, case.warning_delivered_at,
            sighting_to_json(case.fresh_capture), case.left_at, case.caution, case.confirm, case.plate_type, now,
            source_partition, source_topic)


UPDATE_CASE = """UPDATE cases SET state = $2, latest_capture = $3, warned_at = $4, deadline_at = $5, wake_at = $6,
    closed_at = $7, reason = $8, warning_delivered_at = $9, updated_at = $10, fresh_capture = $11, left_at = $12
    WHERE id = $1"""


async def update_case(conn, case: Case, now: datetime) -> None:
    """Save a case's new state. In a ``Batch``, a case the batch opened is inserted as it ends up."""
    opened = conn.opened.get(case.id) if isinstance(conn, Batch) else None
    if opened is not None:
        row, window_seconds, source_partition, source_topic = opened
        conn.waiting[INSERT_CASE][row] = _case_row(case, window_seconds, now, source_partition, source_topic)
    else:
        await conn.execute(
            UPDATE_CASE,
            case.id, case.state.value, sighting_to_json(case.latest_capture), case.warned_at, case.deadline_at,
            case.wake_at, case.closed_at, case.reason, case.warning_delivered_at, now,
            sighting_to_json(case.fresh_capture), case.left_at,
        )
    await evidence_images.want(conn, case.id, case.fresh_capture)


ADD_SMS = """INSERT INTO sms_messages (id, case_id, kind, phone, params, next_attempt_at, created_at)
    VALUES ($1, $2, $3, $4, $5, now(), $6) ON CONFLICT (case_id, kind) DO NOTHING"""


async def add_sms(conn, case_id: UUID, kind: str, phone: str, params: dict, now: datetime) -> None:
    """One SMS per (case, kind): a second call for the same pair does nothing. Due at once, on
    PostgreSQL's clock (a worker whose clock runs ahead cannot postpone it for the others). Its id is
    ``restore.sms_id_for(case, kind)``: a replay after a restore queues the same message again."""
    await conn.execute(ADD_SMS, sms_id_for(case_id, kind), case_id, kind, phone, params, now)


WITHDRAW_WARNING = "UPDATE sms_messages SET status = 'withdrawn' WHERE case_id = $1 AND kind = 'warning' AND status = 'pending'"


async def withdraw_warning(conn, case_id: UUID) -> None:
    await conn.execute(WITHDRAW_WARNING, case_id)


async def database_now(conn) -> datetime:
    """PostgreSQL's clock: the one clock all workers share (never a worker's own)."""
    return await conn.fetchval("SELECT clock_timestamp()")


SMS_ROW = """s.id, s.case_id, s.kind, s.phone, s.params, s.attempts, s.text, s.status, c.state AS case_state,
    c.window_seconds, c.plate,
    (SELECT min(r.received_at) FROM sms_delivery_reports r WHERE r.sms_id = s.id) AS first_report_at"""


async def claim_due_sms(conn, limit: int):
    """Pending messages that are due (on PostgreSQL's clock), with their case row locked too (so the
    case cannot move under us) and the time of the first delivery report on each, if any: a message
    put back after it was in doubt may have left after all."""
    return await conn.fetch(
        f"""SELECT {SMS_ROW}
            FROM sms_messages s JOIN cases c ON c.id = s.case_id
            WHERE s.status = 'pending' AND s.next_attempt_at <= now()
            ORDER BY s.next_attempt_at LIMIT $1 FOR NO KEY UPDATE OF s, c SKIP LOCKED""",
        limit,
    )


async def claim_reported_pending_sms(conn, limit: int):
    """Pending messages a delivery report arrived for (they were put back after being in doubt, and
    had left after all), due or not, locked like ``claim_due_sms``."""
    return await conn.fetch(
        f"""SELECT {SMS_ROW}
            FROM sms_messages s JOIN cases c ON c.id = s.case_id
            WHERE s.status = 'pending'
              AND s.id IN (SELECT r.sms_id FROM sms_delivery_reports r WHERE r.applied_at IS NULL)
            LIMIT $1 FOR NO KEY UPDATE OF s, c SKIP LOCKED""",
        limit,
    )


async def sms_sending(conn, sms_id: UUID, text: str, worker: str, lease_seconds: float) -> int:
    """Mark a claimed message as being handed to the gateway by ``worker``, its lease running
    ``lease_seconds`` on PostgreSQL's clock (committed before the gateway is asked). Returns the
    message's attempt number, which the worker shows again when it records the answer."""
    return await conn.fetchval(
        """UPDATE sms_messages SET status = 'sending', text = $2, sending_since = now(), sending_by = $3,
               lease_until = clock_timestamp() + make_interval(secs => $4), attempts = attempts + 1
           WHERE id = $1 RETURNING attempts""",
        sms_id, text, worker, lease_seconds,
    )


async def sms_sending_many(conn, texts: dict[UUID, str], worker: str, lease_seconds: float) -> dict[UUID, int]:
    """``sms_sending`` for many claimed messages (id -> text) in one statement: id -> attempt number."""
    rows = await conn.fetch(
        """UPDATE sms_messages s SET status = 'sending', text = u.text, sending_since = now(), sending_by = $3,
               lease_until = clock_timestamp() + make_interval(secs => $4), attempts = s.attempts + 1
           FROM unnest($1::uuid[], $2::text[]) AS u(id, text)
           WHERE s.id = u.id RETURNING s.id, s.attempts""",
        list(texts), list(texts.values()), worker, lease_seconds)
    return {r["id"]: r["attempts"] for r in rows}


async def renew_sms_leases(conn, sms_ids: list[UUID], worker: str, lease_seconds: float) -> int:
    """Extend ``worker``'s leases on messages it is still sending; returns how many it still holds."""
    result = await conn.execute(
        """UPDATE sms_messages SET lease_until = clock_timestamp() + make_interval(secs => $3)
           WHERE id = ANY($1::uuid[]) AND status = 'sending' AND sending_by = $2""",
        sms_ids, worker, lease_seconds,
    )
    return int(result.split()[-1])


async def lock_answered_sms(conn, sms_id: UUID, attempt: int, worker: str):
    """The message row (with its case's state and window), locked, if ``worker``'s answer for its
    attempt ``attempt`` still counts: the message is still ``sending`` by that worker under that
    attempt, or it was put back to ``pending`` after being in doubt and not sent again since.
    None otherwise (settled from delivery reports, or sent again)."""
    return await conn.fetchrow(
        f"""SELECT {SMS_ROW}
            FROM sms_messages s JOIN cases c ON c.id = s.case_id
            WHERE s.id = $1 AND s.attempts = $2
              AND (s.status = 'sending' AND s.sending_by = $3 OR s.status = 'pending')
            FOR NO KEY UPDATE OF s""",
        sms_id, attempt, worker,
    )


async def lock_answered_many(conn, answered: list[tuple[UUID, int]], worker: str) -> dict[UUID, dict]:
    """``lock_answered_sms`` for many (id, attempt) in one query: id -> row, for those whose answer counts."""
    rows = await conn.fetch(
        f"""SELECT {SMS_ROW}
            FROM sms_messages s JOIN cases c ON c.id = s.case_id
            JOIN unnest($1::uuid[], $2::int[]) AS a(id, attempt) ON a.id = s.id AND s.attempts = a.attempt
            WHERE (s.status = 'sending' AND s.sending_by = $3) OR s.status = 'pending'
            ORDER BY s.id FOR NO KEY UPDATE OF s""",
        [sms_id for sms_id, _ in answered], [attempt for _, attempt in answered], worker)
    return {r["id"]: r for r in rows}


async def cases_by_id(conn, case_ids: list[UUID]) -> dict[UUID, Case]:
    """``get_case(lock=True)`` for many cases in one query (locked in id order)."""
    rows = await conn.fetch(f"SELECT {CASE_COLUMNS} FROM cases WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE",
                            sorted(set(case_ids)))
    return {r["id"]: case_from_row(r) for r in rows}


async def claim_in_doubt_sms(conn, limit: int):
    """Messages left ``sending`` whose lease ran out (on PostgreSQL's clock): their sender died, lost
    PostgreSQL, or had no answer from the gateway, and stopped renewing. With the time of the first
    delivery report on each (None: the gateway never reported on it)."""
    return await conn.fetch(
        f"""SELECT {SMS_ROW}
            FROM sms_messages s JOIN cases c ON c.id = s.case_id
            WHERE s.status = 'sending' AND s.lease_until < clock_timestamp()
            ORDER BY s.lease_until LIMIT $1 FOR NO KEY UPDATE OF s SKIP LOCKED""",
        limit,
    )


SMS_ACCEPTED = """UPDATE sms_messages SET status = 'accepted', text = $2, accepted_at = $3, gateway_ref = $4,
    last_error = NULL, lease_until = NULL WHERE id = $1"""


async def sms_accepted(conn, sms_id: UUID, text: str, at: datetime, gateway_ref: str) -> None:
    await conn.execute(SMS_ACCEPTED, sms_id, text, at, gateway_ref)


async def sms_retry(conn, sms_id: UUID, error: str, delay_seconds: float, horizon_seconds: float) -> bool:
    """Put a message back to be sent again in ``delay_seconds``, unless the gateway has had it
    for ``horizon_seconds`` since its first failure (PostgreSQL's clock): False then, and nothing
    is changed (the caller gives it up)."""
    return bool(await conn.fetchval(
        """UPDATE sms_messages SET status = 'pending', last_error = $2, lease_until = NULL,
               next_attempt_at = now() + make_interval(secs => $3),
               retry_until = coalesce(retry_until, now() + make_interval(secs => $4))
           WHERE id = $1 AND coalesce(retry_until, now() + make_interval(secs => $4)) > now()
           RETURNING true""",
        sms_id, error[:500], delay_seconds, horizon_seconds,
    ))


async def sms_failed(conn, sms_id: UUID, error: str, at: datetime) -> None:
    await conn.execute(
        """UPDATE sms_messages SET status = 'failed', last_error = $2, failed_at = $3, lease_until = NULL
           WHERE id = $1""",
        sms_id, error[:500], at,
    )


async def sms_withdrawn(conn, sms_id: UUID) -> None:
    await conn.execute("UPDATE sms_messages SET status = 'withdrawn' WHERE id = $1", sms_id)


async def issue_ticket(conn, case: Case, deadline_at: datetime, evidence: list[dict], prefix: str,
                       now: datetime, local_now: datetime) -> str | None:
    """Issue the case's ticket; None if it already has one. Numbers read ``YH261126000042``
    (prefix, local date, serial). The ticket keeps what its notice shows, for its link in the ticket
    record: each capture's image hash (from the sighting, by integrator and event id), the warning's
    acceptance and delivery, the decision's reason."""
    serial = await conn.fetchval("SELECT nextval('ticket_serial')")
    number = f"{prefix}{local_now:%y%m%d}{serial:06d}"
    v = case.violation
    hashes = {(r["integrator"], r["event_id"]): r["sha256"] for r in await conn.fetch(
        """SELECT integrator, event_id, evidence ->> 'sha256' AS sha256 FROM sightings
           WHERE (integrator, event_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))""",
        [e.get("integrator") or "" for e in evidence], [e["event_id"] for e in evidence])}
    evidence = [e | {"image_sha256": hashes.get((e.get("integrator") or "", e["event_id"]))} for e in evidence]
    for e in evidence:
        await evidence_images.want(conn, case.id, sighting_from_json(e))
    return await conn.fetchval(
        """INSERT INTO tickets (number, case_id, plate, issued_at, deadline_at, place, zone, lat, lon, evidence,
                                reason, warning_accepted_at, warning_delivered_at)
           SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, s.accepted_at, s.delivered_at
           FROM (SELECT 1) AS one
           LEFT JOIN sms_messages s ON s.case_id = $2 AND s.kind = 'warning'
           ON CONFLICT (case_id) DO NOTHING RETURNING number""",
        number, case.id, case.plate, now, deadline_at, case.place, case.zone, v.lat, v.lon, evidence, case.reason,
    )


AUDIT = "INSERT INTO audit_log (at, case_id, actor, action, detail) VALUES ($1, $2, $3, $4, $5)"


async def audit(conn, at: datetime, case_id: UUID | None, actor: str, action: str, detail: dict) -> None:
    await conn.execute(AUDIT, at, case_id, actor, action, detail)


ADD_OUTBOX = "INSERT INTO outbox (topic, key, value) VALUES ($1, $2, $3)"


async def add_outbox(conn, topic: str, key: str, message: BaseModel) -> None:
    await conn.execute(ADD_OUTBOX, topic, key.encode(), encode(message))


async def add_dead_letter(conn, topic: str, partition: int, offset: int, key: bytes | None, reason: str,
                          errors: list[dict], raw: bytes, at: datetime, raw_sha256: bytes | None = None) -> bool:
    """Keep an unusable input message once per (topic, partition, offset). ``raw_sha256``: the original
    bytes' hash when ``raw`` is a masked copy of them (the reference feeds')."""
    return bool(await conn.fetchval(
        """INSERT INTO dead_letters (source_topic, partition, "offset", key, reason, errors, raw, received_at,
                                     raw_sha256)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING RETURNING true""",
        topic, partition, offset, key, reason, errors, raw, at, raw_sha256,
    ))


async def dead_letter_raw_allowed(conn, source_topic: str, size: int, per_day: int) -> bool:
    """Count ``size`` raw bytes of a new dead letter against its source topic's day (PostgreSQL's UTC
    day): True when the day's bytes stay within ``per_day`` (keep them), else False (counted as dropped)."""
    if size <= per_day and await conn.fetchval(
            """INSERT INTO dead_letter_raw_bytes AS d (source_topic, day, kept) VALUES ($1, (now() AT TIME ZONE 'UTC')::date, $2)
               ON CONFLICT (source_topic, day) DO UPDATE SET kept = d.kept + excluded.kept
               WHERE d.kept + excluded.kept <= $3 RETURNING true""", source_topic, size, per_day):
        return True
    await conn.execute(
        """INSERT INTO dead_letter_raw_bytes AS d (source_topic, day, dropped) VALUES ($1, (now() AT TIME ZONE 'UTC')::date, $2)
           ON CONFLICT (source_topic, day) DO UPDATE SET dropped = d.dropped + excluded.dropped""", source_topic, size)
    return False


def backoff_seconds(attempts: int, base_seconds: float, cap_seconds: float) -> float:
    """Seconds to wait after the ``attempts``-th failed request: doubling from ``base_seconds``, capped."""
    return min(base_seconds * 2 ** min(max(attempts - 1, 0), 30), cap_seconds)


async def sms_sent_since(conn, phones: list[str], since: datetime) -> dict[str, int]:
    """How many SMS each phone was sent (accepted by the gateway, or being sent) since ``since``."""
    rows = await conn.fetch(
        """SELECT phone, count(*) AS n FROM sms_messages WHERE phone = ANY($1::text[])
             AND (accepted_at >= $2 OR (status = 'sending' AND sending_since >= $2))
           GROUP BY phone""",
        list(set(phones)), since,
    )
    return {r["phone"]: r["n"] for r in rows}


async def keep_delivery_report(pool, sms_id: UUID, status: str, reported_at: datetime | None, detail: str) -> bool:
    """Store a report without touching the message row (whose lock the SMS loop may hold), received
    at PostgreSQL's time (a message in doubt counts as accepted at its first report's arrival)."""
    return bool(await pool.fetchval(
        """INSERT INTO sms_delivery_reports (sms_id, status, detail, reported_at, received_at)
           SELECT id, $2, $3, $4, clock_timestamp() FROM sms_messages WHERE id = $1 RETURNING true""",
        sms_id, status, detail[:200], reported_at,
    ))


async def keep_delivery_reports(pool, reports: list[tuple[UUID, str, str, datetime | None]]) -> list[bool]:
    """``keep_delivery_report`` for many reports (sms_id, status, detail, reported_at) in one statement,
    kept in the order given; for each, False when its message is unknown."""
    rows = await pool.fetch(
        """INSERT INTO sms_delivery_reports (sms_id, status, detail, reported_at, received_at)
           SELECT s.id, r.status, r.detail, r.reported_at, clock_timestamp()
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[]) WITH ORDINALITY
                AS r (sms_id, status, detail, reported_at, n)
           JOIN sms_messages s ON s.id = r.sms_id ORDER BY r.n RETURNING sms_id""",
        [r[0] for r in reports], [r[1] for r in reports], [r[2][:200] for r in reports], [r[3] for r in reports])
    known = {r["sms_id"] for r in rows}
    return [r[0] in known for r in reports]


async def claim_delivery_reports(conn, limit: int):
    """Unapplied reports whose message row is free now and whose acceptance is recorded, oldest first,
    with their message as it stands (``sms_status``, ``case_id``, ``kind``, ``accepted_at``, ``delivered_at``)."""
    return await conn.fetch(
        """SELECT r.id, r.sms_id, r.status, r.detail, r.reported_at, r.received_at, s.status AS sms_status,
                  s.case_id, s.kind, s.accepted_at, s.delivered_at
           FROM sms_delivery_reports r JOIN sms_messages s ON s.id = r.sms_id
           WHERE r.applied_at IS NULL AND s.status NOT IN ('pending', 'sending')
           ORDER BY r.id LIMIT $1 FOR NO KEY UPDATE OF r, s SKIP LOCKED""",
        limit,
    )


async def set_report_aside(conn, report_id: int, problem: str) -> None:
    """A report that cannot be applied: marked applied, with the problem, so it never blocks the rest."""
    await conn.execute("UPDATE sms_delivery_reports SET applied_at = now(), problem = $2 WHERE id = $1",
                       report_id, problem[:500])


APPLY_DELIVERY = """UPDATE sms_messages SET
    status = CASE WHEN $2 = 'delivered' THEN 'delivered'
                  WHEN $2 IN ('failed', 'smsc_rejected') AND status <> 'delivered' THEN 'undelivered' ELSE status END,
    delivered_at = CASE WHEN $2 = 'delivered' THEN coalesce(delivered_at, $3) ELSE delivered_at END,
    smsc_accepted_at = CASE WHEN $2 = 'smsc_accepted' THEN coalesce(smsc_accepted_at, $3) ELSE smsc_accepted_at END,
    failed_at = CASE WHEN $2 IN ('failed', 'smsc_rejected') AND status <> 'delivered' THEN coalesce(failed_at, $3)
                     ELSE failed_at END,
    last_error = CASE WHEN $2 IN ('failed', 'smsc_rejected') AND status <> 'delivered' THEN $4 ELSE last_error END
    WHERE id = $1"""
"""A report moves its message's status forward (never back from delivered); one statement for every status."""

REPORT_APPLIED = "UPDATE sms_delivery_reports SET applied_at = now() WHERE id = $1"


def delivery_applied(report, sms: dict) -> dict:
    """``sms`` (its ``status`` and ``delivered_at``) after ``APPLY_DELIVERY`` for ``report`` (a row of
    ``claim_delivery_reports``): what a batch of reports knows without reading the row again."""
    at = delivery_moment(report["reported_at"], report["accepted_at"], report["received_at"])
    if report["status"] == "delivered":
        return sms | {"status": "delivered", "delivered_at": sms["delivered_at"] or at}
    if report["status"] in ("failed", "smsc_rejected") and sms["status"] != "delivered":
        return sms | {"status": "undelivered"}
    return sms


async def apply_delivery(conn, report, sms: dict | None = None) -> dict:
    """Apply a report (a row of ``claim_delivery_reports``) to its message, ``sms`` (id, case_id, kind,
    status, delivered_at) as it stands before (default: as claimed); returns it after. The report's
    time counts within [acceptance, the report's arrival] (``machine.delivery_moment``)."""
    if sms is None:
        sms = {"id": report["sms_id"], "case_id": report["case_id"], "kind": report["kind"],
               "status": report["sms_status"], "delivered_at": report["delivered_at"]}
    at = delivery_moment(report["reported_at"], report["accepted_at"], report["received_at"])
    await conn.execute(APPLY_DELIVERY, report["sms_id"], report["status"], at,
                       f"{report['status']} {report['detail']}".strip()[:500])
    await conn.execute(REPORT_APPLIED, report["id"])
    return delivery_applied(report, sms)


async def publish_delivered(conn, topic: str, before: Case, after: Case, sms) -> None:
    """``WarningDelivered`` on case-events for a warning's first delivery report: when the phone had
    it and the deadline in force from then on (moved to delivery + window when that is later)."""
    if after.warning_delivered_at is None or after.warned_at is None or after.deadline_at is None:
        return
    await add_outbox(conn, topic, after.plate, events.WarningDelivered(
        case_id=str(after.id), plate=after.plate, sms_id=str(sms["id"]), accepted_at=after.warned_at,
        delivered_at=after.warning_delivered_at, deadline_at=after.deadline_at,
        deadline_moved=before.deadline_at is not None and after.deadline_at > before.deadline_at))


async def unlinked_sightings_since(conn, plate: str, since: datetime) -> list[tuple[str, Sighting]]:
    """Observations and departures of ``plate`` taken at or after ``since`` that no case holds yet
    (they arrived while the plate had no open case), oldest first: (kind, sighting)."""
    rows = await conn.fetch(
        """SELECT kind, integrator, event_id, camera_id, taken_at, lat, lon, place, evidence FROM sightings
           WHERE plate = $1 AND case_id IS NULL AND taken_at >= $2
             AND kind IN ('VehicleObserved', 'VehicleDeparted')
           ORDER BY taken_at, integrator, event_id""",
        plate, since,
    )
    return [(r["kind"], Sighting(r["event_id"], r["camera_id"], r["taken_at"], r["lat"], r["lon"], r["place"] or "",
                                 (r["evidence"] or {}).get("image_url"), r["integrator"])) for r in rows]


async def unlinked_sightings_of(conn, since: dict[str, datetime]) -> dict[str, list[tuple[str, Sighting]]]:
    """``unlinked_sightings_since`` for many plates (plate -> since) in one query."""
    rows = await conn.fetch(
        """SELECT s.plate, s.kind, s.integrator, s.event_id, s.camera_id, s.taken_at, s.lat, s.lon, s.place, s.evidence
           FROM unnest($1::text[], $2::timestamptz[]) AS p(plate, since)
           JOIN sightings s ON s.plate = p.plate AND s.case_id IS NULL AND s.taken_at >= p.since
                           AND s.kind IN ('VehicleObserved', 'VehicleDeparted')
           ORDER BY s.taken_at, s.integrator, s.event_id""",
        list(since), list(since.values()))
    found: dict[str, list[tuple[str, Sighting]]] = {plate: [] for plate in since}
    for r in rows:
        found[r["plate"]].append((r["kind"], Sighting(r["event_id"], r["camera_id"], r["taken_at"], r["lat"], r["lon"],
                                                      r["place"] or "", (r["evidence"] or {}).get("image_url"),
                                                      r["integrator"])))
    return found


async def latest_case(conn, plate: str) -> Case | None:
    """The plate's most recent case (open or closed), locked."""
    row = await conn.fetchrow(
        f"SELECT {CASE_COLUMNS} FROM cases WHERE plate = $1 ORDER BY opened_at DESC LIMIT 1 FOR NO KEY UPDATE", plate)
    return case_from_row(row) if row else None


async def seen_between(conn, plate: str, since: datetime, until: datetime, camera_id: str,
                       limit: int = 200) -> tuple[list[datetime], list[Sighting]]:
    """What could show that the car left between two moments: its departures, and its captures by
    other cameras than ``camera_id`` (the machine measures how far they were), oldest first."""
    rows = await conn.fetch(
        """SELECT kind, integrator, event_id, camera_id, taken_at, lat, lon, place FROM sightings
           WHERE plate = $1 AND taken_at BETWEEN $2 AND $3
             AND (kind = 'VehicleDeparted' OR camera_id <> $4)
           ORDER BY taken_at LIMIT $5""",
        plate, since, until, camera_id, limit)
    departures = [r["taken_at"] for r in rows if r["kind"] == "VehicleDeparted"]
    captures = [Sighting(r["event_id"], r["camera_id"], r["taken_at"], r["lat"], r["lon"], r["place"] or "",
                         integrator=r["integrator"]) for r in rows if r["kind"] != "VehicleDeparted"]
    return departures, captures


async def seen_between_many(conn, asks: dict[str, tuple[datetime, datetime, str]],
                            limit: int = 200) -> dict[str, tuple[list[datetime], list[Sighting]]]:
    """``seen_between`` for many plates (plate -> (since, until, camera_id)) in one query."""
    rows = await conn.fetch(
        """SELECT p.plate, s.* FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[])
                AS p(plate, since, until, camera_id)
           CROSS JOIN LATERAL (
               SELECT kind, integrator, event_id, camera_id, taken_at, lat, lon, place FROM sightings
               WHERE plate = p.plate AND taken_at BETWEEN p.since AND p.until
                 AND (kind = 'VehicleDeparted' OR camera_id <> p.camera_id)
               ORDER BY taken_at LIMIT $5) AS s""",
        list(asks), [a[0] for a in asks.values()], [a[1] for a in asks.values()], [a[2] for a in asks.values()], limit)
    found: dict[str, tuple[list[datetime], list[Sighting]]] = {plate: ([], []) for plate in asks}
    for r in rows:
        departures, captures = found[r["plate"]]
        if r["kind"] == "VehicleDeparted":
            departures.append(r["taken_at"])
        else:
            captures.append(Sighting(r["event_id"], r["camera_id"], r["taken_at"], r["lat"], r["lon"], r["place"] or "",
                                     integrator=r["integrator"]))
    return found


async def last_offences(conn, plates: list[str]) -> dict[str, datetime | None]:
    """``last_offence`` for many plates in one query."""
    rows = await conn.fetch(
        """SELECT p.plate, greatest(
                      (SELECT max(issued_at) FROM tickets t WHERE t.plate = p.plate AND voided_at IS NULL),
                      (SELECT max(detected_at) FROM cases c WHERE c.plate = p.plate
                                                             AND state IN ('cautioned', 'to_confirm'))) AS at
           FROM unnest($1::text[]) AS p(plate)""",
        list(set(plates)))
    return {r["plate"]: r["at"] for r in rows}


async def last_offence(conn, plate: str) -> datetime | None:
    """When the plate last had a ticket that stands, or a warning notice (or a ticket to confirm)."""
    return await conn.fetchval(
        """SELECT greatest((SELECT max(issued_at) FROM tickets WHERE plate = $1 AND voided_at IS NULL),
                           (SELECT max(detected_at) FROM cases WHERE plate = $1 AND state IN ('cautioned', 'to_confirm')))""",
        plate)


CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
DRIVER_CODE_LENGTH = 10
"""32 symbols (no 0/O, 1/I), 10 of them: 50 random bits. With a million codes out, a guess hits one
in about a billion tries; the page also limits lookups per address."""


def new_driver_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(DRIVER_CODE_LENGTH))


SET_DRIVER_CODE = "UPDATE cases SET driver_code = $2 WHERE id = $1"


async def give_driver_code(conn, case_id: UUID, draw=new_driver_code, attempts: int = 5) -> str:
    """A random code for the driver page, unique among all cases (a unique index): a code already
    given is drawn again, in a savepoint so the caller's transaction goes on. In a ``Batch`` the
    code is set with the batch's writes, with no savepoint: a code already given (50 random bits:
    about one in a billion with a million codes out) fails the batch, which is then decided in
    smaller parts, each drawing again."""
    if isinstance(conn, Batch):
        code = draw()
        await conn.execute(SET_DRIVER_CODE, case_id, code)
        return code
    for _ in range(attempts):
        code = draw()
        try:
            async with conn.transaction():
                await conn.execute(SET_DRIVER_CODE, case_id, code)
            return code
        except asyncpg.UniqueViolationError:
            continue
    raise RuntimeError(f"no unused driver-page code in {attempts} draws")


async def keep_driver_code(conn, case_id: UUID) -> str:
    """The case's driver-page code, given now if it has none (a case ticketed without a warning)."""
    code = await conn.fetchval("SELECT driver_code FROM cases WHERE id = $1", case_id)
    return code or await give_driver_code(conn, case_id)


async def case_for_driver_code(conn, code: str, grace: timedelta):
    """The case a driver-page code was given for, unless it was closed longer than ``grace`` ago
    (by PostgreSQL's clock); None for an unknown or expired code."""
    return await conn.fetchrow(
        """SELECT plate, state, place, lat, lon, deadline_at FROM cases
           WHERE driver_code = $1 AND (closed_at IS NULL OR closed_at > now() - $2::interval)""", code, grace)


class Batch:
    """A connection whose case writes wait for ``flush``, for a batch of decisions (issue 16): each
    kind of write (``WAITING``, in this order) is then sent as one ``executemany``, one round trip
    for the batch. The order keeps what each write needs: the cases that were there are updated
    before the batch's new cases are inserted (a plate's case is closed before its next one opens:
    one open case per plate), a new case is inserted as the batch leaves it (``update_case``) and
    before it is linked, audited or given SMS rows, and a warning is queued before it can be
    withdrawn. Reads, and the writes not in ``WAITING`` (tickets, dead letters), go to the
    connection at once: they read nothing a waiting write changes."""

    WAITING = (UPDATE_CASE, INSERT_CASE, SET_DRIVER_CODE, LINK_SIGHTING, evidence_images.WANT, AUDIT, ADD_SMS,
               WITHDRAW_WARNING, SMS_ACCEPTED, APPLY_DELIVERY, REPORT_APPLIED, ADD_OUTBOX)

    def __init__(self, conn):
        self.conn = conn
        self.waiting: dict[str, list[tuple]] = {sql: [] for sql in self.WAITING}
        self.written: set[str] = set()
        """The kinds of waiting writes flushed (``WAITING`` statements): what the batch wrote."""
        self.opened: dict[UUID, tuple] = {}
        """The cases the batch opened: id -> (their row in the INSERT_CASE rows, and what else it holds)."""

    def __getattr__(self, name):
        return getattr(self.conn, name)

    async def execute(self, sql: str, *args):
        if sql in self.waiting:
            self.waiting[sql].append(args)
            return None
        return await self.conn.execute(sql, *args)

    async def flush(self) -> None:
        for sql, rows in self.waiting.items():
            if rows:
                await self.conn.executemany(sql, rows)
                rows.clear()
                self.written.add(sql)
