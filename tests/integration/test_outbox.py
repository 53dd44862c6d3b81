"""The outbox on the real Kafka and PostgreSQL: a message Kafka refuses never holds up the others.

A dead letter is cut to a size any broker takes (the table keeps every byte); a row the broker
refuses for good is set aside with its reason, shown by `parkwarden status`, /metrics and the
console, and the rows around it are published once each."""

import base64
import json
from collections import Counter

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import topics

from .conftest import BASE, Stack, wait_for
from .console_helpers import ticketed_case

UNKNOWN_FIELDS = 4800


async def everything_on(stack: Stack, topic: str) -> list[bytes]:
    """Every message on a topic, read to its end: once the outbox is empty, all it published."""
    consumer = AIOKafkaConsumer(bootstrap_servers=BASE.kafka_bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(stack.settings.topic_partitions)]
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
