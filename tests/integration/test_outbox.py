"""The outbox on the real Kafka and PostgreSQL: a message Kafka refuses never holds up the others.

A dead letter is cut to a size any broker takes (the table keeps every byte); a row the broker
refuses for good is set aside with its reason, shown by `parkwarden status`, /metrics and the
console, and the rows around it are published once each."""

import base64
import json
import os
import re
import subprocess
import sys
from collections import Counter

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from schemas import topics

from .conftest import KAFKA, ROOT, Stack, wait_for
from .console_helpers import ConsoleClient, add_operator, base_url, ticketed_case

UNKNOWN_FIELDS = 4800


async def everything_on(stack: Stack, topic: str, partitions: int | None = None) -> list[bytes]:
    """Every message on a topic, read to its end: once the outbox is empty, all it published."""
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **KAFKA)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(partitions or stack.settings.topic_partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        values: list[bytes] = []
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                values.extend(r.value for r in records)
        return values
    finally:
        await consumer.stop()


async def outbox_empty(stack: Stack) -> bool:
    return await stack.count("SELECT count(*) FROM outbox") == 0


def oversized_violation(stack: Stack, plate: str) -> bytes:
    """A camera event of about 900 KiB that Kafka takes, with thousands of misspelt fields: its
    dead letter, were it to carry all the bytes and all the errors, would be over the broker's 1 MiB."""
    event = json.loads(stack.violation(plate).model_dump_json())
    event.update({f"note_{i:05d}": "x" * 170 for i in range(UNKNOWN_FIELDS)})
    return json.dumps(event).encode()


async def test_an_oversized_malformed_event_is_dead_lettered_whole_and_the_ticket_after_it_still_goes_out(stack: Stack):
    worker = stack.worker(PW_LATENESS_SECONDS="3")
    await worker.ready()
    await stack.all_car_parks_free()
    plate = (await stack.plates_with_phone(1))[0]
    raw = oversized_violation(stack, "浙A00000")
    assert 850 * 1024 < len(raw) < 1000 * 1024

    await stack.publish_raw(raw, key=b"cam-noisy")
    _, case, ticket = await ticketed_case(stack, plate)

    issued = await stack.consume(topics.TICKETS, lambda ms: any(m["case_id"] == str(case["id"]) for m in ms))
    assert [m["ticket_number"] for m in issued] == [ticket["number"]]
    case_events = await stack.consume(
        topics.CASE_EVENTS, lambda ms: any(m["type"] == "CaseClosed" and m["case_id"] == str(case["id"]) for m in ms))
    case_events = [m for m in case_events if m["type"] != "SmsSent"]  # the ticket SMS's, when it is read too
    assert [m["type"] for m in case_events] == ["CaseOpened", "WarningSent", "CaseClosed"]
    assert case_events[-1]["outcome"] == "ticketed"

    letter = await stack.pool.fetchrow("SELECT * FROM dead_letters")
    assert letter["raw"] == raw, "the table keeps every byte"
    assert len(letter["errors"]) == UNKNOWN_FIELDS
    published = await stack.consume(topics.DEAD_LETTERS, lambda ms: len(ms) >= 1)
    assert len(published) == 1
    sent = published[0]
    assert sent["raw_size"] == len(raw) and sent["raw_truncated"] is True
    assert base64.b64decode(sent["raw_base64"]) == raw[:64 * 1024]
    assert len(sent["errors"]) == 20 and sent["errors_omitted"] == UNKNOWN_FIELDS - 20
    assert sent["errors"][0]["field"] == "note_00000"

    await wait_for(lambda: outbox_empty(stack), what="the outbox to empty")
    assert await stack.count("SELECT count(*) FROM outbox_set_aside") == 0
    for t in (topics.TICKETS, topics.CASE_EVENTS, topics.DEAD_LETTERS):
        twice = [v for v, n in Counter(await everything_on(stack, stack.topic(t))).items() if n > 1]
        assert twice == [], f"published twice on {t.name}"


def parkwarden(stack: Stack, *args) -> str:
    env = {**os.environ, "PW_DATABASE_URL": stack.db_url, "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


async def test_rows_kafka_refuses_for_good_are_set_aside_with_the_reason_and_the_others_go_out_once(stack: Stack):
    small = stack.prefix + "small-messages"  # a topic whose broker-side limit is 4 KiB
    admin = AIOKafkaAdminClient(**KAFKA)
    await admin.start()
    await admin.create_topics([NewTopic(small, 1, 1, topic_configs={"max.message.bytes": "4096"})])
    case_events = stack.topic(topics.CASE_EVENTS)
    rows = [
        (case_events, b"plate-a", b'{"n": 1}'),
        (case_events, b"plate-a", b"x" * (1100 * 1024)),  # over the producer's 1 MiB: refused before it leaves
        (stack.prefix + "no such topic!", b"plate-b", b'{"n": 3}'),
        (small, b"plate-c", b"y" * 8000),  # over the topic's limit: the broker refuses it
        (small, b"plate-c", b'{"n": 5}'),
        (case_events, b"plate-a", b'{"n": 6}'),
    ]
    ids = [await stack.pool.fetchval("INSERT INTO outbox (topic, key, value) VALUES ($1, $2, $3) RETURNING id", *r)
           for r in rows]

    worker = stack.worker()
    await worker.ready()
    await wait_for(lambda: outbox_empty(stack), what="the outbox to empty")

    aside = {r["id"]: r for r in await stack.pool.fetch("SELECT * FROM outbox_set_aside")}
    assert sorted(aside) == [ids[1], ids[2], ids[3]]
    assert "MessageSizeTooLargeError" in aside[ids[1]]["reason"]
    assert aside[ids[1]]["value"] == rows[1][2], "a set-aside row keeps all its bytes"
    assert "invalid topic name" in aside[ids[2]]["reason"]
    assert "TooLarge" in aside[ids[3]]["reason"]
    assert await everything_on(stack, case_events) == [b'{"n": 1}', b'{"n": 6}'], "in order, each once"
    assert await everything_on(stack, small, partitions=1) == [b'{"n": 5}']

    status = parkwarden(stack, "status")
    assert re.search(r"outbox set aside \(refused by Kafka\) +3 \(see `parkwarden outbox list`\)", status), status
    listed = parkwarden(stack, "outbox", "list")
    assert str(ids[3]) in listed and small in listed and "invalid topic name" in listed
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base_url(worker)}/metrics") as r:
            assert "parkwarden_outbox_set_aside 3.0" in (await r.text()).splitlines()
    await add_operator(stack, "li", "viewer")
    console = ConsoleClient(base_url(worker))
    try:
        await console.login("li")
        _, html = await console.page("/console/")
        assert 'id="outbox-set-aside"' in html and "<b>3</b><span>Kafka 拒收的输出" in html
    finally:
        await console.close()

    await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, small, {"max.message.bytes": "1048588"})])
    await admin.close()
    assert f"back in the outbox: {ids[3]}" in parkwarden(stack, "outbox", "retry", str(ids[3]))
    await wait_for(lambda: outbox_empty(stack), what="the outbox to empty again")
    assert await stack.count("SELECT count(*) FROM outbox_set_aside") == 2
    assert await everything_on(stack, small, partitions=1) == [b'{"n": 5}', b"y" * 8000]
