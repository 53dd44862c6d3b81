"""No lost event, no blind decision (issue 8): messages an agent cannot use, a database that
refuses writes, a row that cannot be decided. Each test failed on the code before its fix."""

import asyncio
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg

from schemas import topics

from .conftest import ADMIN_URL, Stack, sleep_until, wait_for


async def test_a_tombstone_and_a_keyless_message_are_dead_letters_and_cost_no_event_taken_with_them(stack: Stack):
    plates = await stack.plates_with_phone(7)
    camera_events = stack.topic(topics.CAMERA_EVENTS)
    # All published before the worker starts, so that they reach it in one batch.
    await stack.producer.send_and_wait(camera_events, None, key=plates[0].encode())
    await stack.producer.send_and_wait(camera_events, stack.violation(plates[0]).model_dump_json().encode(), key=None)
    for plate in plates[1:]:
        await stack.publish(stack.violation(plate))
    worker = stack.worker()
    await worker.ready()

    for plate in plates[1:]:
        await stack.wait_state(plate, "warned", timeout=30)
    letters = await stack.pool.fetch("SELECT reason, errors FROM dead_letters ORDER BY \"offset\", partition")
    reasons = sorted(r["reason"] for r in letters)
    assert len(reasons) == 2, reasons
    assert any(r.startswith("empty message (no value)") for r in reasons), reasons
    assert any(r.startswith("no key") for r in reasons), reasons
    published = await stack.consume(topics.DEAD_LETTERS, lambda ms: len(ms) >= 2)
    assert {m["source_topic"] for m in published} == {camera_events}
    assert await stack.case_of(plates[0]) is None, "the keyless violation opened no case"


async def test_a_database_that_turns_read_only_mid_run_delays_events_and_loses_none(stack: Stack):
    """A failover leaves the workers connected to a read-only server for a while (SQLSTATE 25006):
    the events wait, they do not become dead letters, and every one is decided once it is back."""
    worker = stack.worker()
    await worker.ready()
    plates = await stack.plates_with_phone(12)
    await stack.publish(stack.violation(plates[0]))
    await stack.wait_state(plates[0], "warned", timeout=30)

    await read_only(stack, True)
    try:
        for plate in plates[1:]:
            await stack.publish(stack.violation(plate))

        async def waiting():
            return "not taking writes" in worker.log_path.read_text(errors="replace")
        await wait_for(waiting, 30, "the worker to wait for a writable database")
        await asyncio.sleep(2)
    finally:
        await read_only(stack, False)

    for plate in plates[1:]:
        await stack.wait_state(plate, "warned", timeout=60)
    assert await stack.count("SELECT count(*) FROM dead_letters") == 0
    assert await stack.count("SELECT count(*) FROM cases") == len(plates)


async def test_an_event_postgresql_refuses_for_its_own_reason_is_a_dead_letter_and_the_rest_goes_on(stack: Stack):
    worker = stack.worker()
    await worker.ready()
    plates = await stack.plates_with_phone(2)
    bad = stack.violation(plates[0])  # the place is the camera's (registry): a NUL in the image URL, then
    bad = bad.model_copy(update={"evidence": bad.evidence.model_copy(update={"image_url": "https://img.test/a\x00.jpg"})})
    await stack.publish(bad)
    await stack.publish(stack.violation(plates[1]))
    await stack.wait_state(plates[1], "warned", timeout=30)

    async def dead():
        return await stack.pool.fetchrow("SELECT reason, raw FROM dead_letters")
    letter = await wait_for(dead, 30, "the refused event's dead letter")
    assert "22021" in letter["reason"] or "22P05" in letter["reason"], letter["reason"]
    assert bad.event_id.encode() in letter["raw"]
    assert await stack.case_of(plates[0]) is None


async def read_only(stack: Stack, on: bool) -> None:
    """Make the test's database read-only (or writable again) and drop the workers' connections to
    it, as a failover to a standby does; they reconnect to what is there."""
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        setting = "SET default_transaction_read_only = on" if on else "RESET default_transaction_read_only"
        await admin.execute(f'ALTER DATABASE "{stack.db_name}" {setting}')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 "
                            "AND application_name LIKE 'parkwarden:%'", stack.db_name)
    finally:
        await admin.close()


async def test_a_case_that_cannot_be_decided_goes_to_review_and_the_cases_due_with_it_are_ticketed(stack: Stack):
    """A ticket PostgreSQL refuses for one car (here a trigger stands in for a value the table
    refuses) used to roll back the whole deadline claim, every half second, for every car."""
    plates = await stack.plates_with_phone(3)
    refused = plates[0]
    await stack.pool.execute(f"""
        CREATE FUNCTION refuse_ticket() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'ticket refused for the test' USING ERRCODE = '22023'; END $$;
        CREATE TRIGGER refuse_ticket BEFORE INSERT ON tickets FOR EACH ROW
            WHEN (NEW.plate = '{refused}') EXECUTE FUNCTION refuse_ticket();""")
    worker = stack.worker(PW_WINDOW_SECONDS="6")
    await worker.ready()
    for plate in plates:
        await stack.publish(stack.violation(plate))
    warned = [await stack.wait_state(plate, "warned", timeout=30) for plate in plates]
    await sleep_until(max(c["deadline_at"] for c in warned))
    for plate in plates:
        await stack.publish(stack.observation(plate))

    for plate in plates[1:]:
        await stack.wait_state(plate, "ticketed", timeout=30)
    case = await stack.wait_state(refused, "review", timeout=30)
    assert "could not decide" in case["reason"] and "22023" in case["reason"], case["reason"]
    assert await stack.count("SELECT count(*) FROM tickets") == 2


async def test_a_delivery_report_that_cannot_be_applied_is_set_aside_and_the_reports_behind_it_are_applied(
        stack: Stack):
    """A report PostgreSQL refuses to apply (a trigger stands in for a value the table refuses) used to
    roll back the whole claim of reports, every round, so no report behind it was ever applied."""
    worker = stack.worker(PW_WINDOW_SECONDS="600")
    await worker.ready()
    plates = await stack.plates_with_phone(2)
    for plate in plates:
        await stack.publish(stack.violation(plate))
    cases = [await stack.wait_state(plate, "warned", timeout=30) for plate in plates]
    refused, applied = [await stack.pool.fetchval("SELECT id FROM sms_messages WHERE case_id = $1 AND kind = 'warning'",
                                                  c["id"]) for c in cases]
    await stack.pool.execute(f"""
        CREATE FUNCTION refuse_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'delivery refused for the test' USING ERRCODE = '22023'; END $$;
        CREATE TRIGGER refuse_delivery BEFORE UPDATE ON sms_messages FOR EACH ROW
            WHEN (NEW.id = '{refused}' AND NEW.status = 'delivered') EXECUTE FUNCTION refuse_delivery();""")
    for sms_id in (refused, applied):  # the refused one first: it comes first in every claim
        await stack.pool.execute(
            """INSERT INTO sms_delivery_reports (sms_id, status, detail, reported_at, received_at)
               VALUES ($1, 'delivered', '', now(), now())""", sms_id)

    async def delivered():
        return await stack.pool.fetchval("SELECT status = 'delivered' FROM sms_messages WHERE id = $1", applied)
    await wait_for(delivered, 30, "the report behind the refused one to be applied")
    case = await stack.case_of(plates[1])
    assert case["warning_delivered_at"] is not None
    problem = await stack.pool.fetchval("SELECT problem FROM sms_delivery_reports WHERE sms_id = $1", refused)
    assert problem and "22023" in problem, problem


# ── no worker freezes (issue 9) ───────────────────────────────────────────────────────────────


async def test_a_pool_too_small_for_the_worker_s_loops_is_refused_at_start_with_what_to_set(stack: Stack):
    """With 4 connections and 4 parallel transactions the old worker could wait on itself forever."""
    worker = stack.worker(PW_DB_POOL_SIZE="4", PW_DB_PARALLEL_TRANSACTIONS="4")
    code = await asyncio.to_thread(worker.proc.wait, 60)
    assert code != 0
    assert "raise PW_DB_POOL_SIZE to at least 13" in worker.log_path.read_text(errors="replace")


async def test_a_loop_that_makes_no_progress_fails_readyz_and_is_logged_until_it_moves(stack: Stack):
    worker = stack.worker(PW_STALL_SECONDS="2", PW_DB_LOCK_TIMEOUT_SECONDS="60")
    await worker.ready()
    base = f"http://127.0.0.1:{worker.env['PW_WEB_PORT']}"
    async with aiohttp.ClientSession() as http:
        async def readyz():
            async with http.get(f"{base}/readyz") as r:
                return r.status, await r.json()

        async def ready():
            return (await readyz())[0] == 200
        await wait_for(ready, 30, "readyz to answer 200")
        async with stack.pool.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE cases IN ACCESS EXCLUSIVE MODE")  # the deadline tick waits on it

            async def stalled():
                status, body = await readyz()
                return body if status == 503 and "decide_due_cases" in body.get("stalled", []) else None
            body = await wait_for(stalled, 30, "readyz to report the stalled deadline loop")
            assert body["postgres"]["ok"], body

            async def logged():
                return "no progress for 2.0s in" in worker.log_path.read_text(errors="replace")
            await wait_for(logged, 30, "the stall to be logged")
        await wait_for(ready, 30, "readyz to recover once the lock is gone")


# ── decisions wait for their input ─────────────────────────────────────────────────────────────


async def test_an_answer_in_kafka_while_nobody_reads_the_partition_is_waited_for_not_decided_blind(stack: Stack):
    """The worker reading the plate's partition dies while the case waits for the camera's answer,
    and the answer reaches Kafka before answer_by; the other worker's deadline tick must not close
    the case as unconfirmed before the partition is read again (the group notices the death after
    the session timeout, 10 s, well after answer_by)."""
    first = stack.worker("first")
    await first.ready()
    plate = (await stack.plates_with_phone(1))[0]
    await stack.publish(stack.violation(plate))
    case = await stack.wait_state(plate, "rechecking", timeout=40)

    first.kill()
    await stack.publish(stack.observation(plate))  # the camera answers at once, taken after the deadline
    second = stack.worker("second")
    held = await wait_for(lambda: held_on_metrics(second), 60, "/metrics to show the decision held")
    assert held["parkwarden_decisions_held"] == 1
    closed = await wait_for(lambda: closed_case(stack, plate), 90, "the case to be decided")
    assert closed["state"] == "ticketed", (closed["state"], closed["reason"])
    assert closed["closed_at"] > case["wake_at"]


async def held_on_metrics(worker) -> dict | None:
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{worker.env['PW_WEB_PORT']}/metrics") as r:
                text = await r.text()
    except aiohttp.ClientError:
        return None
    held = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("parkwarden_decisions_held{"))
    return {"parkwarden_decisions_held": held} if held else None


async def closed_case(stack: Stack, plate: str):
    row = await stack.case_of(plate)
    return row if row and row["state"] not in ("detected", "warned", "rechecking") else None


async def test_our_own_backlog_is_not_the_camera_s_lateness(stack: Stack):
    """Violations that waited in Kafka for us longer than the allowed report delay are warned
    (the window starts at acceptance); one the camera itself sent late goes to review."""
    plates = await stack.plates_with_phone(2)
    await stack.publish(stack.violation(plates[0]))
    late = stack.violation(plates[1], at=datetime.now(UTC) - timedelta(seconds=20))
    await asyncio.sleep(6)  # nobody reads: our backlog grows past the allowed delay
    await stack.publish(late)
    worker = stack.worker(PW_MAX_REPORT_DELAY_SECONDS="4")
    await worker.ready()

    await stack.wait_state(plates[0], "warned", timeout=30)
    reviewed = await stack.wait_state(plates[1], "review", timeout=30)
    assert "too late to warn" in reviewed["reason"]
