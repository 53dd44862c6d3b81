"""Retention by data class on the real PostgreSQL (pipeline/retention/job.py), with a fake clock.

Rows of every class are written at known ages relative to PostgreSQL's now() (T0); the purge then
runs as of later moments (``at``), and each test checks exactly which rows went and which stayed.
"""

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from pipeline.cases.store import init_connection
from pipeline.db.migrate import migrate
from pipeline.lookups.owners import mask_phone
from pipeline.retention import job
from pipeline.tickets import chain
from schemas import events
from tests.privacy import no_phone_in

from .conftest import ROOT, Stack, wait_for

DAY = timedelta(days=1)
PHONE = "13800138000"
POLICY = job.Policy(batch_size=2)  # the defaults, in batches of two rows


@pytest.fixture
async def conn(database):
    c = await asyncpg.connect(database)
    try:
        await init_connection(c)
        await migrate(c)
        yield c
    finally:
        await c.close()


class Rows:
    """Writes rows of every class at ages relative to T0."""

    def __init__(self, conn, t0: datetime):
        self.conn, self.t0, self.n = conn, t0, 0

    async def sighting(self, received: timedelta, case_id=None, plate="浙A00001") -> str:
        self.n += 1
        event_id = f"e{self.n}"
        at = self.t0 + received
        await self.conn.execute("INSERT INTO sighting_ids VALUES ('cams', $1, $2)", event_id, at)
        await self.conn.execute(
            """INSERT INTO sightings (integrator, event_id, kind, plate, camera_id, taken_at, lat, lon, place, zone,
                                      evidence, case_id, received_at)
               VALUES ('cams', $1, 'VehicleObserved', $2, 'cam-1', $3, 30.4, 120.3, 'Wenyi Rd', 'z1', NULL, $4, $3)""",
            event_id, plate, at, case_id)
        return event_id

    async def case(self, state: str, closed: timedelta | None, plate: str = "浙A00001", opened: timedelta = -400 * DAY):
        case_id = uuid.uuid4()
        opened_at = self.t0 + opened
        violation = {"event_id": f"v-{case_id}", "integrator": "cams", "camera_id": "cam-1",
                     "taken_at": opened_at.isoformat(), "lat": 30.4, "lon": 120.3, "place": "Wenyi Rd",
                     "evidence_url": f"s3://cams/{case_id}.jpg"}
        await self.conn.execute(
            """INSERT INTO cases (id, plate, state, zone, place, camera_id, lat, lon, violation, latest_capture,
                                  window_seconds, detected_at, opened_at, closed_at, updated_at)
               VALUES ($1, $2, $3, 'z1', 'Wenyi Rd', 'cam-1', 30.4, 120.3, $4, $4, 600, $5, $5, $6, $5)""",
            case_id, plate, state, violation, opened_at, self.t0 + closed if closed is not None else None)
        sighting = await self.sighting(closed if closed is not None else -DAY, case_id, plate)
        sms = uuid.uuid4()
        await self.conn.execute(
            """INSERT INTO sms_messages (id, case_id, kind, phone, params, text, status, next_attempt_at, created_at)
               VALUES ($1, $2, 'warning', $3, '{"place": "Wenyi Rd"}', 'Move your car from Wenyi Rd', 'delivered', $4, $4)""",
            sms, case_id, PHONE, opened_at)
        await self.conn.execute(
            """INSERT INTO sms_delivery_reports (sms_id, status, received_at, applied_at)
               VALUES ($1, 'delivered', $2, $2)""", sms, self.t0 + (closed if closed is not None else -DAY))
        return case_id, sighting

    async def ticket(self, case_id, issued: timedelta, appeal_received: timedelta | None = None,
                     appeal_decided: timedelta | None = None) -> str:
        number = f"YH{self.n:012d}"
        self.n += 1
        async with self.conn.transaction():
            await self.conn.execute(
                """INSERT INTO tickets (number, case_id, plate, issued_at, deadline_at, place, zone, lat, lon, evidence)
                   SELECT $1, id, plate, $3, $3, place, zone, lat, lon, $4 FROM cases WHERE id = $2""",
                number, case_id, self.t0 + issued,
                [{"event_id": f"v-{case_id}", "camera_id": "cam-1", "taken_at": (self.t0 + issued).isoformat()}])
            await chain.record_issued(self.conn, "t.tickets", number)
        if appeal_received is None:
            return number
        appeal = uuid.uuid4()
        decided = appeal_decided is not None
        async with self.conn.transaction():
            await self.conn.execute(
                """INSERT INTO appeals (id, ticket_number, case_id, plate, channel, ground, statement, attachments,
                                        received_at, recorded_by, due_at, decided_at, outcome, decision_reason, decided_by)
                   SELECT $1, $2, $3, plate, 'driver_page', 'was_loading', $4, '["photo-1.jpg"]', $5, 'driver', $5,
                          $6, $7, $8, $9 FROM cases WHERE id = $3""",
                appeal, number, case_id, f"I was unloading, call me on {PHONE}", self.t0 + appeal_received,
                self.t0 + appeal_decided if decided else None, "upheld" if decided else None,
                "the photos show no loading" if decided else None, "officer:wang" if decided else None)
            await self.conn.execute(
                """INSERT INTO appeal_photos (id, appeal_id, position, content_type, sha256, data)
                   VALUES (gen_random_uuid(), $1, 1, 'image/jpeg', repeat('0', 64), '\\xffd8ffd9'::bytea)""", appeal)
            if decided:
                row = await self.conn.fetchrow("SELECT * FROM appeals WHERE id = $1", appeal)
                await chain.append(self.conn, "t.tickets", chain.appeal_message(row), number, appeal)
        return number


async def sighting_ids_held(conn) -> set[str]:
    return {r["event_id"] for r in await conn.fetch("SELECT event_id FROM sightings")}


async def personal_data_of(conn, case_id) -> dict:
    """What a case still holds, without showing any phone number."""
    sms = await conn.fetchrow("SELECT phone, text, params FROM sms_messages WHERE case_id = $1", case_id)
    appeal = await conn.fetchrow("SELECT statement, attachments FROM appeals WHERE case_id = $1", case_id)
    case = await conn.fetchrow("SELECT violation, latest_capture FROM cases WHERE id = $1", case_id)
    return {
        "sightings": await conn.fetchval("SELECT count(*) FROM sightings WHERE case_id = $1", case_id),
        "phone": "full" if sms["phone"] == PHONE else "masked" if sms["phone"] == mask_phone(PHONE) else "other",
        "text": sms["text"] is not None,
        "reports": await conn.fetchval(
            "SELECT count(*) FROM sms_delivery_reports r JOIN sms_messages m ON m.id = r.sms_id WHERE m.case_id = $1",
            case_id),
        "appeal_text": None if appeal is None else bool(appeal["statement"] or appeal["attachments"] or await conn.fetchval(
            "SELECT count(*) FROM appeal_photos p JOIN appeals a ON a.id = p.appeal_id WHERE a.case_id = $1", case_id)),
        "removed": await conn.fetchval("SELECT personal_data_removed_at IS NOT NULL FROM cases WHERE id = $1", case_id),
        "captures": case["latest_capture"] is not None or "evidence_url" in case["violation"],
    }


HELD = {"phone": "full", "text": True, "removed": False, "captures": True}
GONE = {"sightings": 0, "phone": "masked", "text": False, "reports": 0, "removed": True, "captures": False}


async def test_each_class_goes_exactly_when_its_retention_ends_and_the_ticket_record_still_verifies(conn):
    t0 = await conn.fetchval("SELECT now()")
    rows = Rows(conn, t0)
    unlinked_old = await rows.sighting(-3 * DAY)
    unlinked_new = await rows.sighting(DAY)
    unlinked_far = await rows.sighting(10 * DAY)  # beyond the partitions made ahead: the default partition
    open_case, open_sighting = await rows.case("warned", None)
    review_case, _ = await rows.case("review", -300 * DAY)
    moved_old, _ = await rows.case("moved", -10 * DAY)
    moved_new, _ = await rows.case("moved", -DAY)
    ticketed, _ = await rows.case("ticketed", -5 * DAY)
    ticket = await rows.ticket(ticketed, -5 * DAY, appeal_received=-4 * DAY, appeal_decided=-DAY)
    appealed, _ = await rows.case("ticketed", -300 * DAY)
    await rows.ticket(appealed, -300 * DAY, appeal_received=-290 * DAY)  # never decided
    cautioned, _ = await rows.case("cautioned", -250 * DAY)
    await conn.execute("INSERT INTO operators (name, role, password_hash) VALUES ('li', 'viewer', 'x')")
    await conn.execute(
        """INSERT INTO operator_sessions (token_sha256, operator, csrf_token, created_at, seen_at, expires_at)
           VALUES ('\\x01', 'li', 'c', $1, $1, $1::timestamptz - interval '2 days'), ('\\x02', 'li', 'c', $1, $1, $1::timestamptz + interval '1 day')""",
        t0)
    await conn.execute(
        """INSERT INTO login_failures (name, address, failed_at, last_at)
           VALUES ('li', '10.0.0.1', ARRAY[$1::timestamptz - interval '8 days'], $1::timestamptz - interval '8 days'),
                  ('li', '10.0.0.2', ARRAY[$1::timestamptz - interval '1 hour'], $1::timestamptz - interval '1 hour')""", t0)
    await conn.execute(
        """INSERT INTO dead_letters (source_topic, partition, "offset", key, reason, raw, received_at)
           VALUES ('t.camera-events.cams', 0, 1, '\\x41', 'bad', '\\x7b7d', $1::timestamptz - interval '20 days'),
                  ('t.camera-events.cams', 0, 2, '\\x41', 'bad', '\\x7b7d', $1::timestamptz - interval '1 day')""", t0)
    for age, note in ((800, "very old"), (40, f"owner called from {PHONE}"), (1, f"owner called from {PHONE}")):
        await conn.execute("INSERT INTO audit_log (at, case_id, actor, action, detail) VALUES ($1, NULL, 'operator:li', "
                           "'noted', $2)", t0 - age * DAY, {"note": note, "age": age})
    audit_before = await conn.fetchval("SELECT count(*) FROM audit_log")

    # T0: sessions, login failures, dead letters' raw bytes and the audit log's phone numbers past their time
    done = await job.run(conn, POLICY, t0)
    assert done["operator_sessions"] == {"sessions": 1} and done["login_failures"] == {"login_failures": 1}
    assert await conn.fetchval("SELECT array_agg(token_sha256) FROM operator_sessions") == [b"\x02"]
    assert await conn.fetchval("SELECT array_agg(address) FROM login_failures") == ["10.0.0.2"]
    assert [(r["offset"], r["raw"], r["key"]) for r in await conn.fetch(
        'SELECT "offset", raw, key FROM dead_letters ORDER BY "offset"')] == [(1, b"", None), (2, b"{}", b"A")]
    notes = {r["age"]: r["note"] for r in await conn.fetch(
        "SELECT (detail->>'age')::int AS age, detail->>'note' AS note FROM audit_log WHERE action = 'noted'")}
    assert notes[40] == f"owner called from {mask_phone(PHONE)}" and notes[800] == "very old"
    assert notes[1].endswith(PHONE[-4:]) and "*" not in notes[1], "a day-old entry is not masked yet"
    assert {r["action"]: r["detail"] for r in await conn.fetch(
        "SELECT action, detail FROM audit_log WHERE actor = 'retention'")}["retention:audit_log"]["masked"] == 1
    assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE actor = 'retention'") == len(done) == 9
    assert await sighting_ids_held(conn) >= {unlinked_old, unlinked_new, unlinked_far}
    for case in (open_case, review_case, moved_old, moved_new, ticketed, appealed):
        assert (await personal_data_of(conn, case)).items() >= HELD.items()
    assert done["delivery_reports"] == {"delivery_reports": 2}, "applied 300 days ago (the cautioned case's went with it)"
    assert [(await personal_data_of(conn, case))["reports"] for case in (review_case, appealed, moved_old)] == [0, 0, 1]
    assert (await personal_data_of(conn, cautioned)).items() >= GONE.items(), "cautioned 250 days ago (> 210)"

    # T0 + 2 days: the unlinked sightings whose whole day is 36 h old are gone, a partition at a time
    done = await job.run(conn, POLICY, t0 + 2 * DAY)
    held = await sighting_ids_held(conn)
    assert unlinked_old not in held and {unlinked_new, unlinked_far, open_sighting} <= held
    assert "sightings_unlinked_before" in done["unlinked_sightings"]["partitions_dropped"]

    # T0 + 9 days: the day of the far sighting gets its partition, and the default partition's row moves in
    await job.run(conn, POLICY, t0 + 9 * DAY)
    part = await conn.fetchval("SELECT tableoid::regclass::text FROM sightings WHERE event_id = $1", unlinked_far)
    assert part == f"sightings_unlinked_{(t0 + 10 * DAY).astimezone(UTC):%Y%m%d}"
    assert unlinked_new not in await sighting_ids_held(conn)
    assert await conn.fetchval("SELECT count(*) FROM sighting_ids WHERE event_id = $1", unlinked_old) == 0, \
        "its dedupe key went after 8 days"
    assert await conn.fetchval("SELECT count(*) FROM sighting_ids WHERE event_id = $1", open_sighting) == 1, \
        "a case's sighting keeps its dedupe key"

    # T0 + 25 days: the case moved 10 days before T0 is 35 days closed: its personal data goes
    await job.run(conn, POLICY, t0 + 25 * DAY)
    assert unlinked_far not in await sighting_ids_held(conn)
    assert (await personal_data_of(conn, moved_old)).items() >= GONE.items()
    assert (await personal_data_of(conn, moved_new)).items() >= HELD.items()
    assert await conn.fetchval('SELECT raw FROM dead_letters WHERE "offset" = 2') == b""

    # T0 + 208 days: the ticket's appeal was decided at T0 - 1 day: 209 days, its evidence is still held
    await job.run(conn, POLICY, t0 + 208 * DAY)
    assert (await personal_data_of(conn, ticketed)).items() >= {**HELD, "appeal_text": True, "sightings": 1}.items()
    # T0 + 210 days: 211 days since the decision: phone, texts, sightings and the appeal's free text go
    await job.run(conn, POLICY, t0 + 210 * DAY)
    assert (await personal_data_of(conn, ticketed)).items() >= {**GONE, "appeal_text": False}.items()
    assert (await personal_data_of(conn, appealed)).items() >= {**HELD, "appeal_text": True}.items(), \
        "an undecided appeal holds its ticket's evidence"
    verdict = await chain.verify(conn)
    assert verdict.intact and verdict.links == 3, verdict.problems
    assert await conn.fetchval("SELECT evidence FROM tickets WHERE number = $1", ticket) != []

    # T0 + 800 days: the audit log's months older than 24 months are dropped; open cases keep everything
    done = await job.run(conn, POLICY, t0 + 800 * DAY)
    ages = {r["age"] for r in await conn.fetch("SELECT (detail->>'age')::int AS age FROM audit_log WHERE action = 'noted'")}
    assert ages == set() and done["audit_log"]["entries"] >= audit_before
    assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE at = $1", t0 + 800 * DAY) == 9
    for case in (open_case, review_case):
        assert (await personal_data_of(conn, case)).items() >= {**HELD, "sightings": 1}.items()
    assert (await chain.verify(conn)).intact
    no_phone_in(json.dumps([dict(r) for r in await conn.fetch("SELECT phone, text FROM sms_messages "
                                                             "WHERE case_id <> ALL($1::uuid[])", [open_case, review_case, appealed, moved_new])],
                           ensure_ascii=False), "the purged SMS rows")


async def test_one_worker_purges_at_a_time(conn, database):
    other = await asyncpg.connect(database)
    try:
        await other.execute("SELECT pg_advisory_lock($1)", job.LOCK)  # another worker's purge
        assert await job.run(conn, POLICY) is None
        await other.execute("SELECT pg_advisory_unlock($1)", job.LOCK)
        assert set(await job.run(conn, POLICY)) >= {"unlinked_sightings", "closed_cases", "decided_cases", "audit_log"}
    finally:
        await other.close()


async def test_status_says_what_is_held_per_class_and_when_the_next_goes(conn):
    t0 = await conn.fetchval("SELECT now()")
    rows = Rows(conn, t0)
    await rows.case("moved", -10 * DAY)
    await rows.case("moved", -2 * DAY)
    await rows.case("warned", None)
    held = {h.name: h for h in await job.status(conn, job.Policy())}
    closed = held["closed_cases"]
    assert (closed.rows, closed.oldest, closed.next_at) == (2, t0 - 10 * DAY, t0 + 20 * DAY)
    assert held["open_cases"].rows == 1 and held["open_cases"].next_at is None
    assert held["delivery_reports"].rows == 3
    assert held["unlinked_sightings"].rows == 0 and held["unlinked_sightings"].next_at is None


async def test_retention_on_the_command_line(conn, database):
    t0 = await conn.fetchval("SELECT now()")
    case_id, _ = await Rows(conn, t0).case("moved", -40 * DAY)
    env = {**os.environ, "PW_DATABASE_URL": database}

    def parkwarden(*args) -> str:
        done = subprocess.run([sys.executable, "-m", "pipeline", "retention", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    status = parkwarden("status")
    line = next(line for line in status.splitlines() if line.startswith("closed_cases"))
    assert line.split()[1] == "1" and f"{(t0 - 40 * DAY).astimezone(UTC):%Y-%m-%d}" in line
    ran = parkwarden("run")
    assert '"cases": 1' in ran.split("closed_cases:")[1].splitlines()[0]
    assert (await personal_data_of(conn, case_id)).items() >= GONE.items()
    no_phone_in(status + ran, "the command's output")


async def test_a_replayed_event_is_still_recorded_once(conn):
    from pipeline.cases import store
    from pipeline.cases.machine import Sighting

    event = events.VehicleObserved(event_id="event-0001", plate="浙A00001", camera_id="cam-1",
                                   taken_at=datetime.now(UTC), location=events.Location(lat=30.4, lon=120.3))
    sighting = Sighting("event-0001", "cam-1", event.taken_at, 30.4, 120.3, "Wenyi Rd", None, "cams")
    now = await conn.fetchval("SELECT now()")
    assert await store.add_sighting(conn, event.type, event, sighting, "z1", now) is True
    assert await store.add_sighting(conn, event.type, event, sighting, "z1", now + DAY) is False
    assert await conn.fetchval("SELECT count(*) FROM sightings WHERE event_id = 'event-0001'") == 1


async def test_workers_run_the_purge_one_at_a_time(stack: Stack):
    """Two workers: each runs the purge loop, the advisory lock lets one at a time through."""
    async with stack.pool.acquire() as c:
        t0 = await c.fetchval("SELECT now()")
        case_id, _ = await Rows(c, t0).case("moved", -40 * DAY)
    for w in (stack.worker("w1"), stack.worker("w2")):
        await w.ready()

    async def purged():
        async with stack.pool.acquire() as c:
            return (await personal_data_of(c, case_id))["removed"]
    await wait_for(purged, 60, "a worker's purge to remove the closed case's personal data")
    entries = await stack.pool.fetch(
        "SELECT at, detail FROM audit_log WHERE actor = 'retention' AND action = 'retention:closed_cases' ORDER BY id")
    assert sum(e["detail"]["cases"] for e in entries) == 1, "purged once, by one of them"
