"""The restore drill: the database goes back to a point in time T while Kafka and the SMS centre keep
what happened after it; `parkwarden after-restore` and the workers started on the restored database
redo nothing twice and lose nothing (pipeline/restore.py, README "Backups and restore").

The restored database is a pg_dump of the test's database taken at T, restored with pg_restore into a
database of its own on the shared server (point-in-time recovery of the shared server itself is not
possible in a test; `./dev pgrestore` shows the PITR mechanics on the Patroni pair). A dump is a
consistent snapshot, as a point-in-time recovery is.
"""

import asyncio
import json
import os
import random
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import replace

import asyncpg

from pipeline import restore
from pipeline.cases.store import init_connection
from pipeline.db import migrate as migrations
from pipeline.demo import city
from pipeline.restore import identity
from pipeline.tickets import chain
from schemas import topics

from .conftest import ADMIN_URL, KAFKA, ROOT, SHARED_KANNEL, Stack, drop_database, wait_for
from .test_sms_gateway import smsc  # noqa: F401 - the fixture: what the fake SMS centre received

PLATES = 6


async def _warned(pool, plates: list[str]) -> bool:
    """Every plate has a warned case whose warning the gateway accepted and whose outputs left the outbox."""
    warned = await pool.fetchval(
        """SELECT count(*) FROM cases c JOIN sms_messages s ON s.case_id = c.id AND s.kind = 'warning'
           WHERE c.plate = ANY($1::text[]) AND c.state = 'warned' AND s.accepted_at IS NOT NULL""", plates)
    return warned == len(plates) and await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def _read_all(stack: Stack, topic: str) -> list[tuple[str, bytes]]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **KAFKA)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(stack.settings.topic_partitions)]
        ends = await consumer.end_offsets(partitions)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        got = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got.extend((topic, r.value) for r in records)
        return got
    finally:
        await consumer.stop()


async def _ticketed(pool, plate: str):
    """The plate's ticket, once its ticket SMS was accepted and every output left the outbox."""
    return await pool.fetchrow(
        """SELECT t.number, t.issued_at, t.case_id, s.id AS sms_id, s.accepted_at FROM tickets t
           JOIN sms_messages s ON s.case_id = t.case_id AND s.kind = 'ticket'
           WHERE t.plate = $1 AND s.accepted_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM outbox)""", plate)


async def _cautioned(pool, plate: str):
    """The plate's caution SMS, accepted, with every output out of the outbox."""
    return await pool.fetchrow(
        """SELECT s.id AS sms_id, s.accepted_at FROM sms_messages s JOIN cases c ON c.id = s.case_id
           WHERE c.plate = $1 AND s.kind = 'caution' AND s.accepted_at IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM outbox)""", plate)


@SHARED_KANNEL
async def test_workers_on_a_database_restored_to_a_point_in_time_redo_nothing_and_lose_nothing(stack: Stack, smsc):
    env = {"PW_SMS_GATEWAY": "kannel", "PW_WINDOW_SECONDS": "300"}  # warnings only, but in the ticket zone
    camera = replace(city.CAMERAS[2], id=f"cam-drill-{stack.id}", place=f"演练路{stack.id[:6]}号")
    await stack.register_camera(camera)  # a place of its own: the SMS centre is shared with other tests
    ticket_zone = f"drill-{stack.id[:8]}"  # a 4 s window: one car there is ticketed after T
    await stack.pool.execute("INSERT INTO zones (id, name, window_seconds) VALUES ($1, $1, 4)", ticket_zone)
    ticket_camera = replace(city.CAMERAS[3], id=f"cam-drill-t-{stack.id}", place=f"罚单路{stack.id[:6]}号",
                            zone=ticket_zone, lat=29.5, lon=121.5)  # outside the city's zone shapes
    await stack.register_camera(ticket_camera)
    caution_zone = f"drill-c-{stack.id[:8]}"  # the same, but a first offence there is cautioned
    await stack.pool.execute("INSERT INTO zones (id, name, window_seconds, first_offence_months) VALUES ($1, $1, 4, 12)",
                             caution_zone)
    caution_camera = replace(ticket_camera, id=f"cam-drill-c-{stack.id}", place=f"警告路{stack.id[:6]}号",
                             zone=caution_zone, lat=29.6)
    await stack.register_camera(caution_camera)
    worker = stack.worker(**env)
    await worker.ready()
    rows = await stack.pool.fetch("SELECT p.plate FROM plate_registry p JOIN contact_registry c USING (owner_id)")
    plates = random.Random(stack.id).sample(sorted(r["plate"] for r in rows), 2 * PLATES + 2)  # apart from other tests'
    ticketed, cautioned = plates.pop(), plates.pop()
    before, after = plates[:PLATES], plates[PLATES:]

    for plate in before:
        await stack.publish(stack.violation(plate, camera))
    await wait_for(lambda: _warned(stack.pool, before), 40, "the warnings before T")

    # T: PostgreSQL's clock, then a consistent copy of the database (the restore target), the worker running.
    restored_to = await stack.pool.fetchval("SELECT clock_timestamp()")
    dump = stack.tmp / "at-t.dump"
    subprocess.run(["pg_dump", "-Fc", "-f", str(dump), stack.db_url], check=True)

    for plate in after:
        await stack.publish(stack.violation(plate, camera))
    await stack.publish(stack.violation(ticketed, ticket_camera))
    await stack.publish(stack.violation(cautioned, caution_camera))
    await wait_for(lambda: _warned(stack.pool, after), 40, "the warnings after T")
    deadline = await wait_for(lambda: stack.pool.fetchval(
        "SELECT deadline_at FROM cases WHERE plate = $1 AND deadline_at IS NOT NULL", ticketed), 40, "its warning")
    await asyncio.sleep(max(0.0, (deadline - await stack.pool.fetchval("SELECT now()")).total_seconds()))
    await stack.publish(stack.observation(ticketed, ticket_camera))  # still there at the deadline
    await stack.publish(stack.observation(cautioned, caution_camera))
    issued = await wait_for(lambda: _ticketed(stack.pool, ticketed), 40, "the ticket after T and its SMS")
    caution = await wait_for(lambda: _cautioned(stack.pool, cautioned), 40, "the caution after T and its SMS")
    original = {r["plate"]: r for r in await stack.pool.fetch(
        """SELECT c.plate, c.id, s.id AS sms_id, s.accepted_at FROM cases c
           JOIN sms_messages s ON s.case_id = c.id AND s.kind = 'warning' WHERE c.plate = ANY($1::text[])""", after)}
    worker.stop()  # the disaster: the database is lost; Kafka and the SMS centre keep what they had

    restored_db = f"{stack.db_name}_restored"
    restored_url = stack.db_url + "_restored"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{restored_db}"')
    await admin.close()
    try:
        subprocess.run(["pg_restore", "--no-owner", "-d", restored_url, str(dump)], check=True)
        restored = {**stack.env, **env, "PW_DATABASE_URL": restored_url}
        done = subprocess.run([sys.executable, "-m", "pipeline", "after-restore", "--to", restored_to.isoformat(),
                               "--margin", "30", "--settle", "1"], env=restored, cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert f"({PLATES + 4} messages to replay)" in done.stderr, done.stderr
        assert "1 ticket" in done.stderr and "1 tickets to issue again as they were" in done.stderr, done.stderr
        assert "NOT reconciled" not in done.stderr, done.stderr

        pool = await asyncpg.create_pool(restored_url, min_size=1, max_size=2, init=init_connection)
        try:
            assert await pool.fetchval("SELECT count(*) FROM cases WHERE plate = ANY($1::text[])", after) == 0, \
                "the restored database is from before the second violations"
            decided = {r["id"] for r in await stack.pool.fetch(
                "SELECT id FROM cases WHERE plate = ANY($1::text[])", [ticketed, cautioned])}
            assert {r["case_id"] for r in await pool.fetch(
                "SELECT case_id FROM published_before_restore WHERE type = 'CaseClosed'")} == decided, \
                "the ticketed and the cautioned car's CaseClosed read back naming their case: the end waits for them"
            stack.env["PW_DATABASE_URL"] = restored_url
            # Its deadline loop comes round late, as on a loaded machine: the reconciliation waits for it.
            await stack.worker("after-restore", **env, PW_TICK_SECONDS="3").ready()
            await wait_for(lambda: _warned(pool, plates), 40, "every violation's case, warned, on the restored database")
            again = await wait_for(lambda: _ticketed(pool, ticketed), 40, "the ticket, on the restored database")
            caution_again = await wait_for(lambda: _cautioned(pool, cautioned), 40, "the caution, on the restored database")
            assert tuple(caution_again) == tuple(caution), "the caution SMS recorded as it was accepted"
            await asyncio.sleep(3)  # time for anything sent or published twice to show
            assert (again["number"], again["issued_at"], again["sms_id"], again["accepted_at"]) == \
                (issued["number"], issued["issued_at"], issued["sms_id"], issued["accepted_at"]), \
                "the replay issued the same ticket, its SMS accepted when it was"
            serial = int(issued["number"][-6:])
            assert await pool.fetchval("SELECT last_value FROM ticket_serial") >= serial, \
                "the next new ticket takes a number past those issued after T"
            async with pool.acquire() as conn:
                on_topic = [json.loads(v) for _, v in await _read_all(stack, stack.topic(topics.TICKETS))]
                compared = await chain.compare_with_published(conn, [link for m in on_topic if (link := chain.published_link(m))])
                verdict = await chain.verify(conn)
            assert compared.problems == [] and compared.matched >= 1, compared
            assert verdict.intact, verdict.problems
            await wait_for(lambda: pool.fetchval(
                """SELECT (SELECT count(*) FROM restores WHERE done_at IS NOT NULL) = 1
                          AND NOT EXISTS (SELECT 1 FROM published_before_restore)
                          AND NOT EXISTS (SELECT 1 FROM sms_sent_before_restore)
                          AND NOT EXISTS (SELECT 1 FROM tickets_issued_before_restore)"""), 30,
                "the reconciliation to end and its records to be deleted")

            replayed = {r["plate"]: r for r in await pool.fetch(
                """SELECT c.plate, c.id, s.id AS sms_id, s.accepted_at FROM cases c
                   JOIN sms_messages s ON s.case_id = c.id AND s.kind = 'warning' WHERE c.plate = ANY($1::text[])""",
                after)}
            assert await pool.fetchval("SELECT count(*) FROM cases WHERE plate = ANY($1::text[])", plates) == 2 * PLATES
        finally:
            await pool.close()

        texts = [t for t in smsc.texts() if camera.place in t]
        assert {p: sum(p in t for t in texts) for p in plates} == {p: 1 for p in plates}, \
            "each warning reached the SMS centre once"
        assert sum(ticketed in t for t in smsc.texts()) == 2, \
            "the ticketed car's warning and ticket reached the SMS centre once each"
        assert sum(cautioned in t for t in smsc.texts()) == 2, \
            "the cautioned car's warning and caution reached the SMS centre once each"
        assert sum(issued["number"] in t and ticketed in t for t in smsc.texts()) == 1, \
            "the ticket SMS, with its number, reached the SMS centre once"  # (other tests' first tickets share it)
        outputs = [o for topic in (topics.CASE_EVENTS, topics.TICKETS) for o in await _read_all(stack, stack.topic(topic))]
        published = Counter(identity(t, v) for t, v in outputs)
        assert [i for i, n in published.items() if n > 1] == [], "nothing was published twice on the output topics"
        kinds = Counter(json.loads(v)["type"] for _, v in outputs)
        assert kinds["CaseOpened"] == kinds["WarningSent"] == 2 * PLATES + 2
        assert kinds["TicketIssued"] == 1 and kinds["SmsSent"] == 2
        assert {p: (r["id"], r["sms_id"], r["accepted_at"]) for p, r in replayed.items()} == \
            {p: (r["id"], r["sms_id"], r["accepted_at"]) for p, r in original.items()}, \
            "the replay made the same cases and warnings, accepted when they were"
    finally:
        for w in stack.workers:
            w.stop()
        await drop_database(restored_db)


async def test_a_reconciliation_ends_once_the_replay_has_made_again_what_kafka_had_not_after_a_time(database):
    """After a restore, the caution Kafka had (its SmsSent and CaseClosed) is made again by the replay only when
    the deadline loop comes round, which may be late. Until then, and until its SMS is recorded and the outbox
    rows made by then are relayed, the reconciliation stays on whatever ``--settle`` said; ended earlier, the
    caution would be sent and published again (the drill failed so, once in CI)."""
    conn = await asyncpg.connect(database)
    try:
        await migrations.migrate(conn)
        restore_id = await conn.fetchval(
            """INSERT INTO restores (restored_to, margin_seconds, actor, summary, replay_to, settle_seconds)
               VALUES (now() - interval '1 minute', 30, 'test', '{}', '{}', 0) RETURNING id""")  # caught up, settled
        cautioned, moved = uuid.uuid4(), uuid.uuid4()
        for case_id, plate in ((cautioned, "浙A10001"), (moved, "浙A10002")):
            await conn.execute(  # as restored: warned before T, its deadline (after T) past
                """INSERT INTO cases (id, plate, state, zone, place, camera_id, lat, lon, violation, window_seconds,
                                      detected_at, opened_at, updated_at, warned_at, deadline_at, wake_at)
                   VALUES ($1, $2, 'warned', 'z', 'p', 'cam', 30.2, 120.1, '{}', 4, now() - interval '40 seconds',
                           now() - interval '40 seconds', now(), now() - interval '35 seconds',
                           now() - interval '31 seconds', now() - interval '30 seconds')""", case_id, plate)
        caution = restore.sms_id_for(cautioned, "caution")
        await conn.execute("""INSERT INTO sms_sent_before_restore (sms_id, case_id, kind, accepted_at, restore_id)
                              VALUES ($1, $2, 'caution', now() - interval '29 seconds', $3)""", caution, cautioned, restore_id)

        async def on() -> bool:
            async with conn.transaction():
                return await restore.settle(conn)

        assert await on(), "on while the cautioned case is still warned: its caution is not made again yet"
        await conn.execute("""INSERT INTO published_before_restore (identity, topic, partition, "offset", restore_id,
                                                                    case_id, type)
                              VALUES ($1, 'case-events', 0, 7, $2, $3, 'CaseClosed')""",
                           f"case-events|CaseClosed|{moved}", restore_id, moved)
        async with conn.transaction():  # the deadline loop comes round: cautioned, its SMS queued
            await conn.execute("UPDATE cases SET state = 'cautioned', closed_at = now() WHERE id = $1", cautioned)
            await conn.execute("""INSERT INTO sms_messages (id, case_id, kind, phone, params, next_attempt_at, created_at)
                                  VALUES ($1, $2, 'caution', '+8613800000000', '{}', now(), now())""", caution, cautioned)
        assert await on(), "on while the caution is pending"
        async with conn.transaction():  # recorded as accepted then, not sent; its SmsSent in the outbox
            await conn.execute("UPDATE sms_messages SET status = 'accepted' WHERE id = $1", caution)
            await conn.execute("INSERT INTO outbox (topic, value) VALUES ('case-events', '{}')")
        assert await on(), "on while a case Kafka shows closed is still open"
        await conn.execute("UPDATE cases SET state = 'moved', closed_at = now() WHERE id = $1", moved)
        assert await on(), "on while the outbox rows made until then are not relayed"
        await conn.execute("DELETE FROM outbox")
        assert not await on(), "ended"
        assert await conn.fetchval("SELECT done_at IS NOT NULL FROM restores WHERE id = $1", restore_id)
        assert await conn.fetchval("SELECT count(*) FROM sms_sent_before_restore") == 0
        assert await conn.fetchval("SELECT count(*) FROM published_before_restore") == 0
    finally:
        await conn.close()


async def test_after_restore_refuses_when_kafka_no_longer_has_events_the_restored_database_lacks(stack: Stack):
    from confluent_kafka import TopicPartition

    from pipeline import bootstrap
    from schemas.codec import encode

    topic = stack.topic(topics.CAMERA_EVENTS)
    plate = (await stack.plates_with_phone(1))[0]
    sent = [await stack.producer.send_and_wait(topic, encode(stack.violation(plate)), key=plate.encode())
            for _ in range(3)]
    partition = sent[0].partition
    # The restored database recorded the first event only; retention then deleted the first three.
    await stack.pool.execute("INSERT INTO partition_watermarks (topic, partition, next_offset, read_to) "
                             "VALUES ($1, $2, 1, '-infinity')", topic, partition)
    admin = bootstrap.admin_client(stack.settings, "test")
    for future in admin.delete_records([TopicPartition(topic, partition, 3)], request_timeout=30).values():
        await asyncio.wrap_future(future)

    done = subprocess.run([sys.executable, "-m", "pipeline", "after-restore", "--to",
                           (await stack.pool.fetchval("SELECT now()")).isoformat()],
                          env=stack.env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1
    assert f"{topic}:{partition} (offsets 1 to 2)" in done.stderr and "retention.ms" in done.stderr, done.stderr
    assert await stack.count("SELECT count(*) FROM restores") == 0, "nothing recorded, no offset moved"


def test_backup_says_what_the_server_lacks_and_leaves_nothing_behind(tmp_path):
    """The shared server has no `host replication` line (scripts/services/pg_hba.conf) and no WAL archive."""
    done = subprocess.run([sys.executable, "-m", "pipeline", "backup", str(tmp_path / "backups")],
                          env={**os.environ, "PW_DATABASE_URL": ADMIN_URL}, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1
    assert "archive_mode is off" in done.stderr
    assert "pg_basebackup failed" in done.stderr and "REPLICATION attribute" in done.stderr, done.stderr
    assert list((tmp_path / "backups").iterdir()) == [], "no half-made backup left"
