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
from collections import Counter
from dataclasses import replace

import asyncpg

from pipeline.cases.store import init_connection
from pipeline.demo import city
from pipeline.restore import identity
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


@SHARED_KANNEL
async def test_workers_on_a_database_restored_to_a_point_in_time_redo_nothing_and_lose_nothing(stack: Stack, smsc):
    env = {"PW_SMS_GATEWAY": "kannel", "PW_WINDOW_SECONDS": "300"}  # warnings only: no deadline in the drill
    camera = replace(city.CAMERAS[2], id=f"cam-drill-{stack.id}", place=f"演练路{stack.id[:6]}号")
    await stack.register_camera(camera)  # a place of its own: the SMS centre is shared with other tests
    worker = stack.worker(**env)
    await worker.ready()
    rows = await stack.pool.fetch("SELECT p.plate FROM plate_registry p JOIN contact_registry c USING (owner_id)")
    plates = random.Random(stack.id).sample(sorted(r["plate"] for r in rows), 2 * PLATES)  # apart from other tests'
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
    await wait_for(lambda: _warned(stack.pool, after), 40, "the warnings after T")
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
                               "--margin", "30"], env=restored, cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert f"({PLATES} messages to replay)" in done.stderr, done.stderr

        pool = await asyncpg.create_pool(restored_url, min_size=1, max_size=2, init=init_connection)
        try:
            assert await pool.fetchval("SELECT count(*) FROM cases WHERE plate = ANY($1::text[])", after) == 0, \
                "the restored database is from before the second violations"
            stack.env["PW_DATABASE_URL"] = restored_url
            await stack.worker("after-restore", **env).ready()
            await wait_for(lambda: _warned(pool, plates), 40, "every violation's case, warned, on the restored database")
            await asyncio.sleep(3)  # time for anything sent or published twice to show

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
        outputs = await _read_all(stack, stack.topic(topics.CASE_EVENTS))
        published = Counter(identity(t, v) for t, v in outputs)
        assert [i for i, n in published.items() if n > 1] == [], "nothing was published twice on case-events"
        kinds = Counter(json.loads(v)["type"] for _, v in outputs)
        assert kinds["CaseOpened"] == kinds["WarningSent"] == 2 * PLATES
        assert {p: (r["id"], r["sms_id"], r["accepted_at"]) for p, r in replayed.items()} == \
            {p: (r["id"], r["sms_id"], r["accepted_at"]) for p, r in original.items()}, \
            "the replay made the same cases and warnings, accepted when they were"
    finally:
        for w in stack.workers:
            w.stop()
        await drop_database(restored_db)


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
