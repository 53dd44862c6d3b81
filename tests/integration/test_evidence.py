"""Evidence that outlives what needs it, joined on who produced it, and a ticket record that cannot be
re-sealed unseen (issue 15, musts 3-5), on the real PostgreSQL and Kafka."""

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from pipeline import bootstrap
from pipeline.outbox import OutboxRelay
from pipeline.retention import job
from pipeline.tickets import chain
from pipeline.tickets.pack import Terms, evidence_pack
from schemas import events, topics

from .conftest import ROOT, Stack
from .console_helpers import ConsoleClient, add_operator, base_url, plates_without_phone

IMAGE_SHA256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PW_DATABASE_URL": stack.db_url, "PW_TOPIC_PREFIX": stack.prefix},
                          timeout=60)


async def pack_of(stack: Stack, number: str) -> dict:
    async with stack.pool.acquire() as conn:
        return await evidence_pack(conn, number, Terms.of(stack.settings))


async def test_a_warned_again_cars_violation_stays_while_its_tickets_appeal_is_open_after_the_30_day_purge(stack):
    """warn again -> ticket -> appeal -> purge at +31 days: the violation's sighting belongs to the
    cancelled review case, yet the ticket names it; it stays (image hash, integrator, received time)
    until the ticket's own retention ends."""
    worker = stack.worker(PW_LATENESS_SECONDS="3")
    await worker.ready()
    await add_operator(stack, "li", "supervisor")
    client = ConsoleClient(base_url(worker))
    try:
        await client.login("li")
        plate = (await plates_without_phone(stack, 1))[0]
        violation = stack.violation(plate).model_copy(update={"evidence": events.Evidence(
            image_url="https://evidence.test/violation.jpg", sha256=IMAGE_SHA256)})
        await stack.publish(violation)
        review = await stack.wait_state(plate, "review")
        await stack.pool.execute("""INSERT INTO contact_registry (owner_id, phone)
                                    SELECT owner_id, '13900001234' FROM plate_registry WHERE plate = $1""", plate)
        status, _, _ = await client.post(f"/console/cases/{review['id']}/review",
                                         {"resolution": "warn_again", "reason": "phone now on record"})
        assert status == 303
        warned = await stack.wait_state(plate, "warned")
        await asyncio.sleep(max(0.0, (warned["deadline_at"] - datetime.now(UTC)).total_seconds()))
        await stack.publish(stack.observation(plate))
        ticketed = await stack.wait_state(plate, "ticketed", timeout=20)
        ticket = await stack.pool.fetchrow("SELECT * FROM tickets WHERE case_id = $1", ticketed["id"])
        assert ticket["evidence"][0]["event_id"] == violation.event_id
        status, _, _ = await client.post(f"/console/tickets/{ticket['number']}/appeal",
                                         {"plate": plate, "ground": "warning_not_received", "statement": "",
                                          "attachments": ""})
        assert status == 303
    finally:
        await client.close()
        worker.stop()

    async with stack.pool.acquire() as conn:
        now = await conn.fetchval("SELECT now()")
        await job.run(conn, job.Policy(), at=now + timedelta(days=31))
        assert await conn.fetchval("SELECT personal_data_removed_at FROM cases WHERE id = $1", review["id"]), \
            "the cancelled review case is purged"
        kept = await conn.fetchrow("SELECT * FROM sightings WHERE integrator = $1 AND event_id = $2",
                                   "demo", violation.event_id)
    assert kept is not None, "the ticket's violation capture was purged while its appeal was open"
    capture = (await pack_of(stack, ticket["number"]))["captures"][0]
    assert (capture["image_sha256"], capture["integrator"]) == (IMAGE_SHA256, "demo") and capture["received_at"]

    async with stack.pool.acquire() as conn:
        await conn.execute("UPDATE appeals SET decided_at = now(), outcome = 'upheld', decision_reason = 'x', "
                           "decided_by = 'operator:li' WHERE ticket_number = $1", ticket["number"])
        await job.run(conn, job.Policy(), at=now + timedelta(days=211))
        assert await conn.fetchval("SELECT count(*) FROM sightings WHERE event_id = $1", violation.event_id) == 0, \
            "once the ticket's own retention ends, its evidence goes too"


async def test_evidence_is_looked_up_by_integrator_and_event_id_not_by_event_id_alone(stack):
    """Another integrator reusing a ticket's event id changes nothing the pack, notice, driver page or
    appeal screen show (all read the pack)."""
    async with stack.pool.acquire() as conn:
        case_id = await conn.fetchval(
            """INSERT INTO cases (id, plate, state, zone, place, camera_id, lat, lon, violation, window_seconds,
                                  detected_at, opened_at, closed_at, updated_at, reason)
               VALUES (gen_random_uuid(), '浙A12345', 'ticketed', 'yuhang', '文一西路', 'cam-1', 30.28, 120.0, '{}', 600,
                       now(), now(), now(), now(), 'still at the place at the deadline') RETURNING id""")
        for integrator, sha, received in (("acme", IMAGE_SHA256, "2026-11-26T02:42:02Z"),
                                          ("other", "0" * 64, "2026-11-27T09:00:00Z")):
            await conn.execute(
                """INSERT INTO sightings (integrator, event_id, kind, plate, camera_id, taken_at, lat, lon, place,
                                          zone, evidence, received_at, case_id)
                   VALUES ($1, 'cam-1:0001', 'ViolationDetected', '浙A12345', 'cam-1', now(), 30.28, 120.0,
                           '文一西路', 'yuhang', $2, $3::text::timestamptz, $4)""",
                integrator, {"image_url": "https://e.test/1.jpg", "sha256": sha}, received,
                case_id if integrator == "acme" else None)
        capture = {"event_id": "cam-1:0001", "integrator": "acme", "camera_id": "cam-1",
                   "taken_at": "2026-11-26T02:42:00+00:00", "lat": 30.28, "lon": 120.0, "place": "文一西路",
                   "evidence_url": "https://e.test/1.jpg"}
        await conn.execute(
            """INSERT INTO tickets (number, case_id, plate, issued_at, deadline_at, place, zone, lat, lon, evidence)
               VALUES ('YH261126000001', $1, '浙A12345', now(), now(), '文一西路', 'yuhang', 30.28, 120.0, $2)""",
            case_id, [capture, capture])
    pack = await pack_of(stack, "YH261126000001")
    for shown in pack["captures"]:
        assert (shown["integrator"], shown["image_sha256"]) == ("acme", IMAGE_SHA256)
        assert shown["received_at"].startswith("2026-11-26T10:42:02")


async def test_a_chain_re_sealed_in_sql_verifies_alone_but_not_against_the_heads_on_the_tickets_topic(stack):
    async with stack.pool.acquire() as conn:
        numbers = []
        for n in range(3):
            case_id = await conn.fetchval(
                """INSERT INTO cases (id, plate, state, zone, place, camera_id, lat, lon, violation, window_seconds,
                                      detected_at, opened_at, updated_at)
                   VALUES (gen_random_uuid(), $1, 'ticketed', 'yuhang', '文一西路', 'cam-1', 30.28, 120.0, '{}', 600,
                           now(), now(), now()) RETURNING id""", f"浙A1234{n}")
            number = f"YH26112600000{n}"
            async with conn.transaction():
                await conn.execute(
                    """INSERT INTO tickets (number, case_id, plate, issued_at, deadline_at, place, zone, lat, lon,
                                            evidence, reason)
                       VALUES ($1, $2, $3, now(), now(), '文一西路', 'yuhang', 30.28, 120.0, '[]', 'still there')""",
                    number, case_id, f"浙A1234{n}")
                await chain.record_issued(conn, stack.settings.topic(topics.TICKETS.name), number)
            numbers.append(number)
        relay = OutboxRelay(stack.pool, lambda: bootstrap.build_producer(stack.settings))
        try:
            await relay.relay_once(conn)
        finally:
            await relay.close()
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0

        # The application's role cannot change a sealed link, nor empty the record.
        for sql in ("UPDATE ticket_chain SET body = body WHERE seq = 2", "TRUNCATE ticket_chain",
                    "UPDATE ticket_chain SET hash = hash WHERE seq = 2"):
            try:
                await conn.execute(sql)
            except Exception as exc:  # noqa: BLE001 - which refusal is checked below
                assert "permission denied" in str(exc) or "append-only" in str(exc), sql
            else:
                raise AssertionError(f"{sql} was allowed")

    ok = cli(stack, "tickets", "verify", "--against-kafka")
    assert ok.returncode == 0 and "matches the 3 link(s) published on tickets" in ok.stdout, ok.stdout + ok.stderr

    # The owner grants itself the rights back, changes the second ticket's place and re-seals every link.
    async with stack.pool.acquire() as conn, conn.transaction():
        await conn.execute("GRANT UPDATE ON ticket_chain, ticket_chain_head TO CURRENT_USER")
        await conn.execute("ALTER TABLE ticket_chain DISABLE TRIGGER ticket_chain_link_sealed")
        await conn.execute("UPDATE tickets SET place = '别处' WHERE number = $1", numbers[1])
        prev = chain.GENESIS
        for link in await conn.fetch("SELECT seq, ticket_number FROM ticket_chain ORDER BY seq"):
            row = await conn.fetchrow("SELECT * FROM tickets WHERE number = $1", link["ticket_number"])
            body = chain.canonical(chain.record_of(chain.issued_message(row)))
            digest = chain.link_hash(link["seq"], prev, body)
            await conn.execute("UPDATE ticket_chain SET body = $2, prev = $3, hash = $4 WHERE seq = $1",
                               link["seq"], body, prev, digest)
            prev = digest
        await conn.execute("UPDATE ticket_chain_head SET hash = $1", prev)
        await conn.execute("ALTER TABLE ticket_chain ENABLE TRIGGER ticket_chain_link_sealed")

    alone = cli(stack, "tickets", "verify")
    assert alone.returncode == 0 and "intact" in alone.stdout, "re-sealed: the database alone cannot tell"
    against = cli(stack, "tickets", "verify", "--against-kafka")
    assert against.returncode == 1, against.stdout + against.stderr
    assert f"link 2 (TicketIssued {numbers[1]}): the database's hash" in against.stderr, against.stderr
    assert "published on tickets" in against.stderr

    messages = await stack.consume(topics.TICKETS, lambda ms: len(ms) >= 3)
    assert messages[0]["reason"] == "still there", "the decision's reason is published and chained"
