"""FileGateway (pipeline/sms/gateway.py): one line per message id, never the full phone number."""

import asyncio
import json
from uuid import UUID

import pytest

from pipeline.sms.gateway import Accepted, FileGateway, OutgoingSms

pytestmark = pytest.mark.unit

PHONE = "13812348000"


def sms(n: int, phone: str = PHONE) -> OutgoingSms:
    return OutgoingSms(UUID(int=n), phone, f"【杭州城管】浙A1234{n}在文一西路违停，请于10:52前驶离。")


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def test_given_a_message_sent_twice_when_the_gateway_writes_then_the_file_has_one_line(tmp_path):
    gateway = FileGateway(tmp_path / "sms" / "outbox.jsonl")

    first = await gateway.send(sms(1))
    again = await gateway.send(sms(1))

    assert isinstance(first, Accepted)
    assert again == first
    assert [row["id"] for row in lines(gateway.path)] == [str(UUID(int=1))]


async def test_given_two_worker_processes_on_one_file_when_both_send_the_same_message_then_it_is_written_once(
        tmp_path):
    path = tmp_path / "outbox.jsonl"
    worker_a, worker_b = FileGateway(path), FileGateway(path)

    accepted_a = await worker_a.send(sms(1))
    accepted_b = await worker_b.send(sms(1))
    await worker_b.send(sms(2))
    await worker_a.send(sms(2))
    await worker_a.send(sms(3))
    await worker_b.send(sms(3))

    assert accepted_b == accepted_a
    assert [row["id"] for row in lines(path)] == [str(UUID(int=n)) for n in (1, 2, 3)]


async def test_given_a_restarted_worker_when_it_resends_an_accepted_message_then_nothing_is_appended(tmp_path):
    path = tmp_path / "outbox.jsonl"
    accepted = await FileGateway(path).send(sms(1))

    again = await FileGateway(path).send(sms(1))

    assert again.gateway_ref == accepted.gateway_ref
    assert again.at == accepted.at
    assert len(lines(path)) == 1


async def test_given_concurrent_sends_of_the_same_message_when_gathered_then_one_line_is_written(tmp_path):
    path = tmp_path / "outbox.jsonl"
    workers = [FileGateway(path) for _ in range(3)]

    await asyncio.gather(*(w.send(sms(n)) for w in workers for n in (1, 2, 1, 2)))

    assert sorted(row["id"] for row in lines(path)) == [str(UUID(int=1)), str(UUID(int=2))]


async def test_given_messages_sent_when_the_file_is_read_then_it_never_contains_the_full_phone_number(tmp_path):
    gateway = FileGateway(tmp_path / "outbox.jsonl")

    await gateway.send(sms(1))
    await gateway.send(sms(2, phone="+8613912345678"))

    content = gateway.path.read_text(encoding="utf-8")
    assert PHONE not in content
    assert "13912345678" not in content
    assert [row["to"] for row in lines(gateway.path)] == ["138****8000", "861******5678"]
    assert lines(gateway.path)[0]["text"] == sms(1).text
