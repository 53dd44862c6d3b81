"""Cases, sightings, SMS rows, tickets, audit and outbox rows in PostgreSQL.

Every function takes a connection inside the caller's transaction: a case change, its SMS row,
its ticket and its outbox rows commit together or not at all. Uniqueness in the schema makes
replays harmless: a sighting per (integrator, ``event_id``), an SMS per (case, kind), a ticket per case.
"""

import json
import secrets
from datetime import datetime, timedelta
from uuid import UUID, uuid4

import asyncpg
from pydantic import BaseModel

from pipeline.cases.machine import Case, Sighting, State
from schemas.codec import encode

CASE_COLUMNS = """id, plate, state, zone, place, camera_id, lat, lon, violation, latest_capture,
    window_seconds, detected_at, opened_at, warned_at, deadline_at, wake_at, closed_at, reason, warning_delivered_at"""


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
                warning_delivered_at=r["warning_delivered_at"])


async def add_sighting(conn, kind: str, event, sighting: Sighting, zone: str, received_at: datetime) -> bool:
    """Record a camera event once per (integrator, ``event_id``); False for a replay. ``sighting`` and
    ``zone`` are the event as the camera registry places it (``pipeline.cameras``); the position the
    event carried, if any, is kept as reported_lat/lon."""
    evidence = getattr(event, "evidence", None)
    reported = event.location
    inserted = await conn.fetchval(
        """INSERT INTO sightings (integrator, event_id, kind, plate, camera_id, taken_at, lat, lon, place, zone,
                                  evidence, received_at, reported_lat, reported_lon)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
           ON CONFLICT (integrator, event_id) DO NOTHING RETURNING true""",
        sighting.integrator, event.event_id, kind, event.plate, event.camera_id, event.taken_at, sighting.lat,
        sighting.lon, sighting.place, zone, evidence.model_dump() if evidence else None, received_at,
        reported.lat if reported else None, reported.lon if reported else None,
    )
    return bool(inserted)


async def link_sighting(conn, integrator: str, event_id: str, case_id: UUID) -> None:
    await conn.execute("UPDATE sightings SET case_id = $3 WHERE integrator = $1 AND event_id = $2",
                       integrator, event_id, case_id)


async def open_case_for(conn, plate: str) -> Case | None:
    row = await conn.fetchrow(
        f"SELECT {CASE_COLUMNS} FROM cases WHERE plate = $1 AND state IN ('detected', 'warned', 'rechecking') FOR NO KEY UPDATE",
        plate,
    )
    return case_from_row(row) if row else None


async def get_case(conn, case_id: UUID, lock: bool = False) -> Case | None:
    row = await conn.fetchrow(f"SELECT {CASE_COLUMNS} FROM cases WHERE id = $1 {'FOR NO KEY UPDATE' if lock else ''}", case_id)
    return case_from_row(row) if row else None


async def claim_due_cases(conn, camera_events: str, limit: int) -> tuple[datetime, list]:
    """PostgreSQL's now() and the cases due by it whose input has been read past their ``wake_at``
    (``pipeline.cases.watermarks``), locked; rows, not cases, so that one unreadable row is the
    caller's to set aside.

    ``camera_events`` is the bare topic name: its per-integrator topics (``camera-events.<name>``)
    all count. The case's own topic must be read past ``wake_at`` on its partition, and so must the
    same partition of every other integrator's topic (the plate's key picks the same partition
    number in each, all having the same partition count): another integrator's camera may hold
    the answer."""
    now = await conn.fetchval("SELECT now()")
    rows = await conn.fetch(
        f"""SELECT {CASE_COLUMNS}, source_partition FROM cases c
            WHERE state IN ('warned', 'rechecking') AND wake_at <= $1
              AND (source_partition IS NULL OR (
                   EXISTS (SELECT 1 FROM partition_watermarks w
                           WHERE w.topic = coalesce(c.source_topic, $3) AND w.partition = c.source_partition
                             AND w.read_to >= c.wake_at)
                   AND NOT EXISTS (SELECT 1 FROM partition_watermarks w
                           WHERE (w.topic = $3 OR left(w.topic, length($3) + 1) = $3 || '.')
                             AND w.partition = c.source_partition AND w.read_to < c.wake_at)))
            ORDER BY wake_at LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED""",
        now, limit, camera_events,
    )
    return now, rows


async def postpone(conn, case_id: UUID) -> None:
    """Wake a case that could not be decided nor set aside again in 5 minutes, behind the others."""
    await conn.execute("UPDATE cases SET wake_at = now() + interval '5 minutes' WHERE id = $1", case_id)


async def insert_case(conn, case: Case, window_seconds: int, now: datetime, source_partition: int | None = None,
                      source_topic: str | None = None) -> None:
    """``source_topic``, ``source_partition``: the camera-events topic and partition that carried the
    violation (see ``watermarks``)."""
    v = case.violation
    await conn.execute(
        f"""INSERT INTO cases ({CASE_COLUMNS}, updated_at, source_partition, source_topic) VALUES
            ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)""",
        case.id, case.plate, case.state.value, case.zone, case.place, v.camera_id, v.lat, v.lon,
        sighting_to_json(v), sighting_to_json(case.latest_capture), window_seconds, v.taken_at, case.opened_at,
        case.warned_at, case.deadline_at, case.wake_at, case.closed_at, case.reason, case.warning_delivered_at, now,
        source_partition, source_topic,
    )


async def update_case(conn, case: Case, now: datetime) -> None:
    await conn.execute(
        """UPDATE cases SET state = $2, latest_capture = $3, warned_at = $4, deadline_at = $5, wake_at = $6,
           closed_at = $7, reason = $8, warning_delivered_at = $9, updated_at = $10 WHERE id = $1""",
        case.id, case.state.value, sighting_to_json(case.latest_capture), case.warned_at, case.deadline_at,
        case.wake_at, case.closed_at, case.reason, case.warning_delivered_at, now,
    )


async def add_sms(conn, case_id: UUID, kind: str, phone: str, params: dict, now: datetime) -> None:
    """One SMS per (case, kind): a second call for the same pair does nothing."""
    await conn.execute(
        """INSERT INTO sms_messages (id, case_id, kind, phone, params, next_attempt_at, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (case_id, kind) DO NOTHING""",
        uuid4(), case_id, kind, phone, params, now,
    )


async def withdraw_warning(conn, case_id: UUID) -> None:
    await conn.execute(
        "UPDATE sms_messages SET status = 'withdrawn' WHERE case_id = $1 AND kind = 'warning' AND status = 'pending'",
        case_id,
    )


async def claim_due_sms(conn, now: datetime, limit: int):
    """Pending messages that are due, with their case row locked too (so the case cannot move under us)."""
    return await conn.fetch(
        """SELECT s.id, s.case_id, s.kind, s.phone, s.params, s.attempts, c.state AS case_state,
                  c.window_seconds, c.plate
           FROM sms_messages s JOIN cases c ON c.id = s.case_id
           WHERE s.status = 'pending' AND s.next_attempt_at <= $1
           ORDER BY s.next_attempt_at LIMIT $2 FOR NO KEY UPDATE OF s, c SKIP LOCKED""",
        now, limit,
    )


async def sms_sending(conn, sms_id: UUID, text: str, now: datetime) -> None:
    """Mark a claimed message as being handed to the gateway (committed before the gateway is asked)."""
    await conn.execute(
        "UPDATE sms_messages SET status = 'sending', text = $2, sending_since = $3 WHERE id = $1",
        sms_id, text, now,
    )


async def lock_sending_sms(conn, sms_id: UUID):
    """The message row (with its case's state and window) if it is still 'sending', locked; else None
    (another worker already settled it as in doubt)."""
    return await conn.fetchrow(
        """SELECT s.id, s.case_id, s.kind, s.attempts, s.text, s.params, c.window_seconds
           FROM sms_messages s JOIN cases c ON c.id = s.case_id
           WHERE s.id = $1 AND s.status = 'sending' FOR NO KEY UPDATE OF s""",
        sms_id,
    )


async def claim_in_doubt_sms(conn, sending_before: datetime, limit: int, reported_only: bool = False):
    """Messages left 'sending' since before ``sending_before`` (their sender died mid-send), with the
    time of the first delivery report on each (None: the gateway never reported on it);
    ``reported_only``: just those with a report."""
    return await conn.fetch(
        """SELECT s.id, s.case_id, s.kind, s.attempts, s.text, s.params, c.window_seconds,
                  (SELECT min(r.received_at) FROM sms_delivery_reports r WHERE r.sms_id = s.id) AS first_report_at
           FROM sms_messages s JOIN cases c ON c.id = s.case_id
           WHERE s.status = 'sending' AND s.sending_since < $1
             AND (NOT $3 OR EXISTS (SELECT 1 FROM sms_delivery_reports r WHERE r.sms_id = s.id))
           ORDER BY s.sending_since LIMIT $2 FOR NO KEY UPDATE OF s SKIP LOCKED""",
        sending_before, limit, reported_only,
    )


async def sms_accepted(conn, sms_id: UUID, text: str, at: datetime, gateway_ref: str) -> None:
    await conn.execute(
        """UPDATE sms_messages SET status = 'accepted', text = $2, accepted_at = $3, gateway_ref = $4,
           attempts = attempts + 1, last_error = NULL WHERE id = $1""",
        sms_id, text, at, gateway_ref,
    )


async def sms_retry(conn, sms_id: UUID, error: str, next_attempt_at: datetime) -> None:
    await conn.execute(
        """UPDATE sms_messages SET status = 'pending', attempts = attempts + 1, last_error = $2,
           next_attempt_at = $3 WHERE id = $1""",
        sms_id, error[:500], next_attempt_at,
    )


async def sms_failed(conn, sms_id: UUID, error: str, at: datetime) -> None:
    await conn.execute(
        """UPDATE sms_messages SET status = 'failed', attempts = attempts + 1, last_error = $2, failed_at = $3
           WHERE id = $1""",
        sms_id, error[:500], at,
    )


async def sms_withdrawn(conn, sms_id: UUID) -> None:
    await conn.execute("UPDATE sms_messages SET status = 'withdrawn' WHERE id = $1", sms_id)


async def issue_ticket(conn, case: Case, deadline_at: datetime, evidence: list[dict], prefix: str,
                       now: datetime, local_now: datetime) -> str | None:
    """Issue the case's ticket; None if it already has one. Numbers read ``YH261126000042``
    (prefix, local date, serial)."""
    serial = await conn.fetchval("SELECT nextval('ticket_serial')")
    number = f"{prefix}{local_now:%y%m%d}{serial:06d}"
    v = case.violation
    return await conn.fetchval(
        """INSERT INTO tickets (number, case_id, plate, issued_at, deadline_at, place, zone, lat, lon, evidence)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (case_id) DO NOTHING RETURNING number""",
        number, case.id, case.plate, now, deadline_at, case.place, case.zone, v.lat, v.lon, evidence,
    )


async def audit(conn, at: datetime, case_id: UUID | None, actor: str, action: str, detail: dict) -> None:
    await conn.execute(
        "INSERT INTO audit_log (at, case_id, actor, action, detail) VALUES ($1, $2, $3, $4, $5)",
        at, case_id, actor, action, detail,
    )


async def add_outbox(conn, topic: str, key: str, message: BaseModel) -> None:
    await conn.execute(
        "INSERT INTO outbox (topic, key, value) VALUES ($1, $2, $3)", topic, key.encode(), encode(message)
    )


async def add_dead_letter(conn, topic: str, partition: int, offset: int, key: bytes | None, reason: str,
                          errors: list[dict], raw: bytes, at: datetime) -> bool:
    """Keep an unusable input message once per (topic, partition, offset)."""
    return bool(await conn.fetchval(
        """INSERT INTO dead_letters (source_topic, partition, "offset", key, reason, errors, raw, received_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING RETURNING true""",
        topic, partition, offset, key, reason, errors, raw, at,
    ))


def backoff(attempts: int, base_seconds: float) -> timedelta:
    return timedelta(seconds=min(base_seconds * 2 ** attempts, 300))


async def sms_sent_since(conn, phones: list[str], since: datetime) -> dict[str, int]:
    """How many SMS each phone was sent (accepted by the gateway, or being sent) since ``since``."""
    rows = await conn.fetch(
        """SELECT phone, count(*) AS n FROM sms_messages WHERE phone = ANY($1::text[])
             AND (accepted_at >= $2 OR (status = 'sending' AND sending_since >= $2))
           GROUP BY phone""",
        list(set(phones)), since,
    )
    return {r["phone"]: r["n"] for r in rows}


async def keep_delivery_report(pool, sms_id: UUID, status: str, reported_at: datetime | None, detail: str,
                               now: datetime) -> bool:
    """Store a report without touching the message row (whose lock the SMS loop may hold)."""
    return bool(await pool.fetchval(
        """INSERT INTO sms_delivery_reports (sms_id, status, detail, reported_at, received_at)
           SELECT id, $2, $3, $4, $5 FROM sms_messages WHERE id = $1 RETURNING true""",
        sms_id, status, detail[:200], reported_at, now,
    ))


async def claim_delivery_reports(conn, limit: int):
    """Unapplied reports whose message row is free now and whose acceptance is recorded, oldest first."""
    return await conn.fetch(
        """SELECT r.id, r.sms_id, r.status, r.detail, r.reported_at, r.received_at
           FROM sms_delivery_reports r JOIN sms_messages s ON s.id = r.sms_id
           WHERE r.applied_at IS NULL AND s.status NOT IN ('pending', 'sending')
           ORDER BY r.id LIMIT $1 FOR NO KEY UPDATE OF r, s SKIP LOCKED""",
        limit,
    )


async def set_report_aside(conn, report_id: int, problem: str) -> None:
    """A report that cannot be applied: marked applied, with the problem, so it never blocks the rest."""
    await conn.execute("UPDATE sms_delivery_reports SET applied_at = now(), problem = $2 WHERE id = $1",
                       report_id, problem[:500])


async def apply_delivery(conn, report):
    """Move the message's status forward for a report (never back from delivered); returns the message."""
    sms_id, status = report["sms_id"], report["status"]
    at = report["reported_at"] or report["received_at"]
    if status == "delivered":
        await conn.execute(
            "UPDATE sms_messages SET status = 'delivered', delivered_at = coalesce(delivered_at, $2) WHERE id = $1",
            sms_id, at)
    elif status == "smsc_accepted":
        await conn.execute(
            "UPDATE sms_messages SET smsc_accepted_at = coalesce(smsc_accepted_at, $2) WHERE id = $1", sms_id, at)
    elif status in ("failed", "smsc_rejected"):
        await conn.execute(
            """UPDATE sms_messages SET status = 'undelivered', failed_at = coalesce(failed_at, $2), last_error = $3
               WHERE id = $1 AND status <> 'delivered'""", sms_id, at, f"{status} {report['detail']}".strip()[:500])
    await conn.execute("UPDATE sms_delivery_reports SET applied_at = now() WHERE id = $1", report["id"])
    return await conn.fetchrow("SELECT id, case_id, kind, status FROM sms_messages WHERE id = $1", sms_id)


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


CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"


async def give_driver_code(conn, case_id: UUID) -> str:
    """A 5-character code for the driver page (no 0/O, 1/I): random, looked up with the case."""
    code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(5))
    await conn.execute("UPDATE cases SET driver_code = $2 WHERE id = $1", case_id, code)
    return code
