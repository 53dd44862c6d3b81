"""Kafka authentication and ACLs, on the broker `scripts/services.sh` starts (SASL/SCRAM): each
integrator logs in as itself and may write only its own camera-events topic and read the camera
commands; the pipeline logs in as its own principal."""

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

from pipeline.demo import city
from pipeline.ingest import principals
from schemas import topics
from schemas.codec import encode

from .conftest import BASE, KAFKA, Stack, wait_for
from .test_integrators import run_cli

OURS = city.Camera("cam-acme-01", "文一西路与古墩路口", 30.28010, 120.06990)


def as_integrator(name: str, password: str) -> dict:
    return {**KAFKA, "sasl_plain_username": name, "sasl_plain_password": password}


async def test_an_integrator_logs_in_as_itself_and_may_write_only_its_own_camera_events(stack: Stack):
    """Writes its camera-events.NAME (decided as usual), reads camera-commands.NAME; nothing else."""
    assert BASE.kafka_sasl_username and KAFKA.get("security_protocol") == "SASL_PLAINTEXT", \
        "the broker of scripts/services.sh asks for a login: eval \"$(scripts/services.sh env)\""
    acme, rival = f"acme-{stack.id}", f"rival-{stack.id}"
    await stack.add_integrator(acme, cameras=(OURS,))
    await stack.add_integrator(rival)
    worker = stack.worker()
    password = await principals.grant(stack.settings, acme)
    await worker.ready()
    plate = (await stack.plates_with_phone(1))[0]

    producer = AIOKafkaProducer(acks="all", request_timeout_ms=10_000, **as_integrator(acme, password))
    await producer.start()
    try:
        await producer.send_and_wait(stack.topic(topics.CAMERA_EVENTS, acme), encode(stack.violation(plate, OURS)),
                                     key=plate.encode())
        case = await stack.wait_state(plate, "warned", timeout=30)
        assert case["camera_id"] == OURS.id
        forbidden = [stack.topic(topics.CAMERA_EVENTS, rival), stack.settings.topic(topics.CAMERA_EVENTS.name),
                     stack.topic(topics.CASE_EVENTS), stack.topic(topics.TICKETS), stack.topic(topics.CAR_PARK_STATUS)]
        for topic in forbidden:
            with pytest.raises(TopicAuthorizationFailedError):
                await producer.send_and_wait(topic, encode(stack.violation(plate, OURS)), key=plate.encode())
    finally:
        await producer.stop()

    commands = AIOKafkaConsumer(stack.topic(topics.CAMERA_COMMANDS, acme), group_id=acme,
                                auto_offset_reset="earliest", **as_integrator(acme, password))
    await commands.start()
    try:
        await commands.getmany(timeout_ms=1000)  # allowed: no error
    finally:
        await commands.stop()
    for topic in (stack.topic(topics.TICKETS), stack.topic(topics.CAMERA_COMMANDS, city.INTEGRATOR)):
        others = AIOKafkaConsumer(topic, group_id=None, auto_offset_reset="earliest", **as_integrator(acme, password))
        with pytest.raises(TopicAuthorizationFailedError):
            await others.start()
            try:
                async def refused():
                    await others.getmany(timeout_ms=500)
                    return False
                await wait_for(refused, 15, f"the broker to refuse reading {topic}")
            finally:
                await others.stop()

    for wrong in (as_integrator(acme, "not-the-password"), as_integrator(rival, password)):
        intruder = AIOKafkaProducer(request_timeout_ms=5000, **wrong)
        with pytest.raises(KafkaConnectionError):
            await intruder.start()
        await intruder.stop()

    await principals.withdraw(stack.settings, acme)
    gone = AIOKafkaProducer(request_timeout_ms=5000, **as_integrator(acme, password))
    with pytest.raises(KafkaConnectionError):
        await gone.start()
    await gone.stop()


async def test_integrators_add_makes_the_kafka_login_and_revoke_withdraws_it(stack: Stack):
    name = f"cli-{stack.id}"
    code, out = await run_cli(stack, "integrators", "add", name)
    assert code == 0, out
    lines = out.splitlines()
    assert any(line.startswith("pwk_") for line in lines)
    assert f"user {name}, topic {stack.topic(topics.CAMERA_EVENTS, name)}" in out
    password = lines[-1]
    producer = AIOKafkaProducer(request_timeout_ms=10_000, **as_integrator(name, password))
    await producer.start()
    try:
        await producer.send_and_wait(stack.topic(topics.CAMERA_EVENTS, name), b"{}", key=b"k")
    finally:
        await producer.stop()

    code, out = await run_cli(stack, "integrators", "revoke", name)
    assert code == 0 and "Kafka login" in out, out
    gone = AIOKafkaProducer(request_timeout_ms=5000, **as_integrator(name, password))
    with pytest.raises(KafkaConnectionError):
        await gone.start()
    await gone.stop()
