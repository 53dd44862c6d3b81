"""The outbox relay's judgement of Kafka's answers (pipeline/outbox.py), on a fake broker: what is
published, what is set aside for good, what waits for the next round."""

import asyncio
from types import SimpleNamespace

import pytest
from aiokafka import errors as kafka

from pipeline.outbox import OutboxRelay, refusal, topic_problem

pytestmark = pytest.mark.unit


class FakeBroker:
    """Topics it has, answers it gives per message value, and whether it answers at all."""

    def __init__(self, *topics: str, max_size: int = 1000):
        self.topics = set(topics)
        self.max_size = max_size
        self.answers: dict[bytes, Exception] = {}
        self.send_errors: dict[bytes, Exception] = {}
        self.away = False
        self.log: list[tuple[str, bytes]] = []
        self.producers: list["FakeProducer"] = []
        self.metadata_asked = 0


class FakeProducer:
    def __init__(self, broker: FakeBroker):
        self.broker = broker
        self.client = self
        self.stopped = False

    async def start(self) -> None:
        self.broker.producers.append(self)

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, value: bytes, key: bytes | None = None):
        assert not self.stopped
        if value in self.broker.send_errors:
            raise self.broker.send_errors[value]
        if topic not in self.broker.topics:
            raise kafka.UnknownTopicOrPartitionError()
        if len(value) > self.broker.max_size:
            raise kafka.MessageSizeTooLargeError(f"The message is {len(value)} bytes")
        answer = asyncio.get_running_loop().create_future()
        if value in self.broker.answers:
            answer.set_exception(self.broker.answers[value])
        else:
            self.broker.log.append((topic, value))
            answer.set_result(None)
        return answer

    async def fetch_all_metadata(self):
        self.broker.metadata_asked += 1
        if self.broker.away:
            raise kafka.KafkaConnectionError("no broker")
        return SimpleNamespace(topics=lambda: set(self.broker.topics))


def relay_on(broker: FakeBroker) -> OutboxRelay:
    return OutboxRelay(pool=None, new_producer=lambda: FakeProducer(broker))


def rows(*messages: tuple[str, bytes]) -> list[dict]:
    return [{"id": i, "topic": topic, "key": b"k", "value": value} for i, (topic, value) in enumerate(messages, 1)]


async def test_a_row_too_large_to_send_is_set_aside_and_the_rows_around_it_are_published():
    broker = FakeBroker("case-events")
    relay = relay_on(broker)

    result = await relay.publish(rows(("case-events", b"a"), ("case-events", b"x" * 2000), ("case-events", b"c")))

    assert result.published == [1, 3]
    assert list(result.set_aside) == [2] and "MessageSizeTooLargeError" in result.set_aside[2]
    assert result.waiting == 0 and broker.log == [("case-events", b"a"), ("case-events", b"c")]


async def test_rows_in_a_record_batch_the_broker_refuses_are_suspects_until_each_is_tried_alone():
    broker = FakeBroker("tickets")
    broker.answers = {b"b": kafka.MessageSizeTooLargeError(), b"c": kafka.MessageSizeTooLargeError()}
    relay = relay_on(broker)

    batch = await relay.publish(rows(("tickets", b"a"), ("tickets", b"b"), ("tickets", b"c")))

    assert batch.published == [1] and batch.set_aside == {}
    assert [r["id"] for r in batch.suspects] == [2, 3]
    assert broker.producers[0].stopped, "a refused batch leaves the idempotent producer out of step"
    del broker.answers[b"c"]  # c was only in the same record batch as b
    guilty, innocent = rows(("tickets", b"b"), ("tickets", b"c"))
    assert list((await relay.publish([guilty])).set_aside) == [guilty["id"]]
    assert (await relay.publish([innocent])).published == [innocent["id"]]
    assert len(broker.producers) == 3


async def test_a_failure_that_is_not_the_rows_fault_keeps_it_for_a_fresh_producer():
    broker = FakeBroker("tickets")
    broker.answers = {b"b": kafka.OutOfOrderSequenceNumber()}
    relay = relay_on(broker)

    result = await relay.publish(rows(("tickets", b"a"), ("tickets", b"b")))

    assert result.published == [1] and result.set_aside == {} and result.suspects == []
    assert result.waiting == 1
    del broker.answers[b"b"]
    assert (await relay.publish(rows(("tickets", b"b")))).published == [1]
    assert len(broker.producers) == 2


async def test_when_sending_fails_for_a_passing_reason_the_rows_sent_are_settled_and_the_rest_wait():
    broker = FakeBroker("tickets")
    broker.send_errors = {b"b": kafka.KafkaTimeoutError()}
    relay = relay_on(broker)

    result = await relay.publish(rows(("tickets", b"a"), ("tickets", b"b"), ("tickets", b"c")))

    assert result.published == [1] and result.set_aside == {} and result.waiting == 2
    assert broker.log == [("tickets", b"a")], "nothing after the row that waits goes ahead of it"


async def test_a_topic_the_answering_broker_does_not_have_is_set_aside_but_not_while_the_broker_is_away():
    broker = FakeBroker("tickets")
    relay = relay_on(broker)
    batch = rows(("tickets", b"a"), ("gone", b"b"), ("gone", b"c"), ("tickets", b"d"))

    broker.away = True
    waiting = await relay.publish(batch)
    assert waiting.published == [1] and waiting.set_aside == {} and waiting.waiting == 3

    broker.away = False
    result = await relay.publish(batch[1:])
    assert result.published == [4]
    assert sorted(result.set_aside) == [2, 3] and "unknown topic 'gone'" in result.set_aside[2]
    assert broker.metadata_asked == 2, "asked once per batch about a topic found missing"


async def test_an_invalid_topic_name_is_set_aside_without_asking_kafka():
    broker = FakeBroker("tickets")
    relay = relay_on(broker)

    result = await relay.publish(rows(("no such topic!", b"a"), ("tickets", b"b")))

    assert "invalid topic name" in result.set_aside[1] and result.published == [2]
    assert broker.metadata_asked == 0


@pytest.mark.parametrize("name, legal", [("pw.case-events", True), ("a_b.C-9", True), ("x" * 249, True),
                                         ("x" * 250, False), ("", False), ("..", False), ("bad topic", False),
                                         ("案件", False)])
def test_topic_names_are_checked_against_kafkas_rule(name, legal):
    assert (topic_problem(name) is None) == legal


@pytest.mark.parametrize("error, for_good", [
    (kafka.MessageSizeTooLargeError(), True), (kafka.RecordListTooLargeError(), True),
    (kafka.InvalidTopicError(), True), (kafka.TopicAuthorizationFailedError("t"), True),
    (kafka.NotLeaderForPartitionError(), False), (kafka.KafkaTimeoutError(), False),
    (kafka.OutOfOrderSequenceNumber(), False), (kafka.KafkaConnectionError(), False), (RuntimeError("x"), False),
])
def test_only_errors_that_waiting_cannot_fix_set_a_row_aside(error, for_good):
    assert (refusal(error) is not None) == for_good
