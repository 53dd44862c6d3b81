"""Kafka authentication and ACLs, on the broker `scripts/services.sh` starts (SASL/SCRAM): each
integrator logs in as itself and may write only its own camera-events topic and read the camera
commands; the pipeline logs in as its own principal."""

import asyncio
import json
import sys

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import GroupAuthorizationFailedError, KafkaConnectionError, TopicAuthorizationFailedError
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from pipeline import bootstrap
from pipeline.config import ROOT
from pipeline.demo import city
from pipeline.ingest import keys, principals
from schemas import topics
from schemas.codec import encode

from .conftest import BASE, KAFKA, Stack, wait_for
OURS = city.Camera("cam-acme-01", "文一西路与古墩路口", 30.28010, 120.06990)


async def run_cli_apart(stack: Stack, *args: str, **env: str) -> tuple[int, str, str]:
    """Run a command; its exit code, standard output and standard error (each on its own)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", *args, cwd=ROOT, env={**stack.env, "COLUMNS": "200", **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


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

    # Revoked in PostgreSQL while its Kafka login still works (a revoke that failed half way): its events
    # are refused, each a dead letter saying why.
    async with stack.pool.acquire() as conn:
        assert await keys.revoke(conn, acme)
    late = (await stack.plates_with_phone(2))[1]
    producer = AIOKafkaProducer(acks="all", request_timeout_ms=10_000, **as_integrator(acme, password))
    await producer.start()
    try:
        await producer.send_and_wait(stack.topic(topics.CAMERA_EVENTS, acme), encode(stack.violation(late, OURS)),
                                     key=late.encode())
    finally:
        await producer.stop()

    async def refused():
        return await stack.count("SELECT count(*) FROM dead_letters WHERE reason LIKE $1",
                                 f"integrator {acme} was revoked%") == 1
    await wait_for(refused, 30, "the revoked integrator's event refused")
    assert await stack.count("SELECT count(*) FROM cases WHERE plate = $1", late) == 0

    await principals.withdraw(stack.settings, acme)
    gone = AIOKafkaProducer(request_timeout_ms=5000, **as_integrator(acme, password))
    with pytest.raises(KafkaConnectionError):
        await gone.start()
    await gone.stop()


async def test_integrators_add_makes_the_kafka_login_and_revoke_withdraws_it(stack: Stack):
    name = f"cli-{stack.id}"
    code, out, err = await run_cli_apart(stack, "integrators", "add", name, "--produce-bytes-per-second", "50000")
    assert code == 0, err
    key, password = out.splitlines()  # the key, then the password: nothing else on standard output
    assert key.startswith("pwk_") and password and password not in err and key not in err
    assert f"user {name}, writes {stack.topic(topics.CAMERA_EVENTS, name)}, " \
           f"reads {stack.topic(topics.CAMERA_COMMANDS, name)} (consumer group {name}), " \
           "produce quota 50,000 bytes/s" in err.replace("\n", " ")
    producer = AIOKafkaProducer(request_timeout_ms=10_000, **as_integrator(name, password))
    await producer.start()
    try:
        await producer.send_and_wait(stack.topic(topics.CAMERA_EVENTS, name), b"{}", key=b"k")
    finally:
        await producer.stop()

    async def quota_on_the_broker():
        return (await principals.quotas(stack.settings, [name])).get(name) == 50_000
    await wait_for(quota_on_the_broker, 10, "the produce quota on the broker")
    code, out, err = await run_cli_apart(stack, "integrators", "list")
    assert code == 0 and "50,000 B/s" in out and "broker:" not in out, out + err
    code, out, err = await run_cli_apart(stack, "integrators", "list", "--json")
    [listed] = [json.loads(line) for line in out.splitlines() if json.loads(line)["name"] == name]
    assert listed["produce_bytes_per_second"] == listed["broker_produce_bytes_per_second"] == 50_000

    # A revoke that fails half way (the broker refuses the pipeline's login) says how to finish; run
    # again, it finishes.
    code, out, err = await run_cli_apart(stack, "integrators", "revoke", name, PW_KAFKA_SASL_PASSWORD="wrong")
    assert code == 1 and f"finish with `parkwarden integrators revoke {name}`" in err, err
    code, out, err = await run_cli_apart(stack, "integrators", "revoke", name)
    assert code == 0 and "revoked before" in err and "Kafka login" in err, err
    gone = AIOKafkaProducer(request_timeout_ms=5000, **as_integrator(name, password))
    with pytest.raises(KafkaConnectionError):
        await gone.start()
    await gone.stop()
    assert await principals.acls_of(stack.settings, name) == []


async def test_integrators_add_is_all_or_nothing_and_json_for_scripts(stack: Stack):
    name = f"half-{stack.id}"
    code, out, err = await run_cli_apart(stack, "integrators", "add", name, PW_KAFKA_SASL_PASSWORD="wrong")
    assert code == 1 and out == "" and "nothing was added" in err, err
    assert await stack.count("SELECT count(*) FROM integrators WHERE name = $1", name) == 0
    assert not await principals.has_login(stack.settings, name)

    code, out, err = await run_cli_apart(stack, "integrators", "add", name, "--json")
    assert code == 0, err
    made = json.loads(out)
    assert made["name"] == name and made["api_key"].startswith("pwk_")
    assert made["kafka"] | {"password": "…"} == {
        "user": name, "password": "…", "bootstrap": stack.settings.kafka_bootstrap,
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
        "writes": [stack.topic(topics.CAMERA_EVENTS, name)], "reads": [stack.topic(topics.CAMERA_COMMANDS, name)],
        "group": name, "produce_bytes_per_second": 1_048_576}
    producer = AIOKafkaProducer(request_timeout_ms=10_000, **as_integrator(name, made["kafka"]["password"]))
    await producer.start()
    try:
        await producer.send_and_wait(stack.topic(topics.CAMERA_EVENTS, name), b"{}", key=b"k")
    finally:
        await producer.stop()
    await principals.withdraw(stack.settings, name)


async def test_one_namespace_for_integrators_data_platforms_and_consumers(stack: Stack):
    """A name is one principal's: a consumer's name is no integrator's, nor a data platform's (reserved
    names: tests/unit/test_kafka_logins.py, where Kafka is replaced by a recorder)."""
    code, out, err = await run_cli_apart(stack, "integrators", "add", stack.settings.app_id)
    assert code == 1 and "reserved" in err and out == "", err
    code, out, err = await run_cli_apart(stack, "integrators", "kafka-login", f"nobody-{stack.id}")
    assert code == 1 and "no integrator named" in err
    consumer = f"office-{stack.id}"
    code, out, err = await run_cli_apart(stack, "consumers", "add", consumer, "--topics", "tickets")
    assert code == 0, err
    for args in (("integrators", "add", consumer), ("integrators", "kafka-login", consumer),
                 ("reference", "kafka-login", consumer, "--kind", "plates")):
        code, out, err = await run_cli_apart(stack, *args)
        assert code == 1 and out == "" and ("a consumer" in err or "taken" in err), (args, err)
    # the pipeline still logs in with its own password
    producer = AIOKafkaProducer(request_timeout_ms=10_000, **KAFKA)
    await producer.start()
    await producer.stop()
    await principals.withdraw(stack.settings, consumer)


async def test_a_city_system_reads_the_outputs_it_was_given_with_a_read_only_login(stack: Stack):
    office = f"penalty-{stack.id}"
    code, out, err = await run_cli_apart(stack, "consumers", "add", office, "--topics", "tickets,case-events")
    assert code == 0, err
    [password] = out.splitlines()
    assert f"reads {stack.topic(topics.TICKETS)}, {stack.topic(topics.CASE_EVENTS)} (consumer group {office})" in err
    await stack.producer.send_and_wait(stack.topic(topics.TICKETS), b'{"test": 1}', key=b"k")

    reader = AIOKafkaConsumer(stack.topic(topics.TICKETS), group_id=office, auto_offset_reset="earliest",
                              **as_integrator(office, password))
    await reader.start()
    try:
        async def got_one():
            return any(batch for batch in (await reader.getmany(timeout_ms=500)).values())
        await wait_for(got_one, 20, "the city system reading tickets")
        await reader.commit()
    finally:
        await reader.stop()

    refused_reads = [(stack.topic(topics.DEAD_LETTERS), office), (stack.topic(topics.CAMERA_EVENTS), office),
                     (stack.topic(topics.TICKETS), stack.settings.app_id)]
    for topic, group in refused_reads:
        other = AIOKafkaConsumer(topic, group_id=group, auto_offset_reset="earliest", **as_integrator(office, password))
        with pytest.raises((TopicAuthorizationFailedError, GroupAuthorizationFailedError)):
            await other.start()
            try:
                async def refused():
                    await other.getmany(timeout_ms=500)
                    return False
                await wait_for(refused, 15, f"the broker to refuse reading {topic} in {group}")
            finally:
                await other.stop()
    writer = AIOKafkaProducer(request_timeout_ms=10_000, **as_integrator(office, password))
    await writer.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await writer.send_and_wait(stack.topic(topics.TICKETS), b"{}", key=b"k")
    finally:
        await writer.stop()

    code, out, err = await run_cli_apart(stack, "consumers", "list")
    assert code == 0 and office in out and "tickets, case-events" in out
    code, out, err = await run_cli_apart(stack, "consumers", "revoke", office)
    assert code == 0, err
    gone = AIOKafkaConsumer(group_id=office, **as_integrator(office, password))
    with pytest.raises(KafkaConnectionError):
        await gone.start()
    await gone.stop()


async def test_topic_settings_change_only_the_keys_the_pipeline_sets(stack: Stack):
    """IncrementalAlterConfigs: a setting an operator gave a topic survives the workers' create_topics."""
    name = stack.topic(topics.CAMERA_EVENTS, city.INTEGRATOR)
    admin = bootstrap.admin_client(stack.settings, "test")
    resource = ConfigResource(ResourceType.TOPIC, name, incremental_configs=[
        ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([resource]).values():
        await asyncio.wrap_future(future)

    async def described():
        [future] = admin.describe_configs([ConfigResource(ResourceType.TOPIC, name)]).values()
        return await asyncio.wrap_future(future)

    async def retention_set():
        return (await described())["retention.ms"].value == "3600000"
    await wait_for(retention_set, 10, "the operator's retention on the topic")
    await bootstrap.create_topics(stack.settings, [city.INTEGRATOR])
    await asyncio.sleep(2)  # the broker's view of a topic's settings follows the cluster's metadata
    config = await described()
    assert config["retention.ms"].value == "3600000"
    assert config["message.timestamp.type"].value == "LogAppendTime"
