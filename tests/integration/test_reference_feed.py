"""Reference data as streams, on the real broker: a data platform's Debezium change events and our own
JSON on the compacted reference topics reach the next decision; tombstones delete; bad messages are
dead letters and the stream goes on (pipeline/reference/)."""

import json
import secrets

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import TopicAuthorizationFailedError

from pipeline.demo import city
from pipeline.ingest import principals
from pipeline.lookups.owners import mask_phone
from schemas import topics

from pipeline.sms.kannel import read_fakesmsc_line

from .conftest import KAFKA, Stack, wait_for
from .test_sms_gateway import FAKESMSC_LOG, SmsCentre

POLICE_COLUMNS = json.dumps({"plates": {"plate": "hphm", "owner_id": "sfzmhm"}})


class Receivers(SmsCentre):
    def received(self) -> list[tuple[str, str]]:
        """(receiver, text) of each message the fake SMS centre got since the test started."""
        with self.log.open("rb") as f:
            f.seek(self.offset)
            lines = f.read().decode("utf-8", errors="replace").splitlines()
        return [got for got in map(read_fakesmsc_line, lines) if got]


def debezium(before, after, op: str, table: str) -> bytes:
    """A change event as Debezium's PostgreSQL connector writes it with the JSON converter."""
    return json.dumps({
        "schema": {"type": "struct", "name": f"police.public.{table}.Envelope", "optional": False, "fields": []},
        "payload": {"before": before, "after": after, "op": op, "ts_ms": 1764500000123,
                    "source": {"version": "3.0.0.Final", "connector": "postgresql", "name": "police",
                               "db": "registry", "schema": "public", "table": table, "txId": 771,
                               "lsn": 33990112, "snapshot": "false", "ts_ms": 1764500000000}},
    }, ensure_ascii=False).encode()


def debezium_key(**columns) -> bytes:
    return json.dumps({"schema": {"type": "struct", "optional": False, "fields": []}, "payload": columns},
                      ensure_ascii=False).encode()


async def send(stack: Stack, topic: topics.Topic, key: bytes, value: bytes | None) -> None:
    await stack.producer.send_and_wait(stack.settings.topic(topic.name), value, key=key)


async def owner_phone(stack: Stack, plate: str) -> str | None:
    return await stack.pool.fetchval(
        "SELECT c.phone FROM plate_registry p JOIN contact_registry c USING (owner_id) WHERE p.plate = $1", plate)


async def test_a_debezium_change_of_a_plates_owner_sends_the_next_warning_to_the_new_phone(stack: Stack):
    smsc = Receivers(FAKESMSC_LOG)
    worker = stack.worker(PW_SMS_GATEWAY="kannel", PW_REFERENCE_COLUMNS=POLICE_COLUMNS)
    await worker.ready()
    await stack.all_car_parks_free()
    plate = (await stack.plates_with_phone(1))[0]
    old_phone = await owner_phone(stack, plate)

    await stack.publish(stack.violation(plate, city.CAMERAS[0]))  # the worker looks the owner up: now in its cache
    first = await stack.wait_state(plate, "warned", timeout=20)
    await stack.publish(stack.departure(plate, city.CAMERAS[0]))
    await stack.wait_state(plate, "moved")

    new_owner, new_phone = f"fleet-{stack.id}", f"139{secrets.randbelow(10**8):08d}"
    await send(stack, topics.CONTACTS, debezium_key(owner_id=new_owner),
               debezium(None, {"owner_id": new_owner, "phone": new_phone}, "c", "contacts"))
    await send(stack, topics.PLATES, debezium_key(hphm=plate),
               debezium({"hphm": plate}, {"hphm": plate, "hpzl": "02", "sfzmhm": new_owner, "clpp": "大众"}, "u",
                        "vehicle"))

    async def changed():
        return await owner_phone(stack, plate) == new_phone
    await wait_for(changed, 20, "the Debezium update in plate_registry and contact_registry")
    await stack.publish(stack.violation(plate, city.CAMERAS[3]))

    async def second_case():
        row = await stack.case_of(plate)
        return row if row["id"] != first["id"] and row["state"] == "warned" else None
    case = await wait_for(second_case, 20, "the second case to be warned")
    sms = await stack.pool.fetchrow("SELECT phone, text FROM sms_messages WHERE case_id = $1", case["id"])
    to_new_phone = sms["phone"] == new_phone
    assert to_new_phone, f"the warning went to {mask_phone(sms['phone'])}, not {mask_phone(new_phone)}"

    async def at_the_centre():
        return [to for to, text in smsc.received() if text == sms["text"]]
    receivers = await wait_for(at_the_centre, 20, "the second warning at the SMS centre")
    reached = [to[-8:] == new_phone[-8:] for to in receivers]
    assert reached == [True], f"the SMS centre got it for {[mask_phone(to) for to in receivers]}"
    first_sms = await stack.pool.fetchval("SELECT phone FROM sms_messages WHERE case_id = $1", first["id"])
    to_old_phone = first_sms == old_phone and old_phone != new_phone
    assert to_old_phone, "the first warning went to the owner's phone before the change"


async def test_tombstones_delete_and_bad_messages_become_dead_letters_while_the_stream_goes_on(stack: Stack):
    worker = stack.worker()
    await worker.ready()
    gone, renamed = await stack.plates_with_phone(2)
    car_park = {"id": f"cp-{stack.id}", "name": "测试停车场", "short_name": "测试", "lat": 30.28, "lon": 120.0,
                "capacity": 50}

    await send(stack, topics.PLATES, b"not-a-plate", b"{not json")
    await send(stack, topics.CONTACTS, b"o-1", debezium(None, {"owner_id": "o-1", "phone": "1"}, "t", "contacts"))
    await send(stack, topics.CONTACTS, b"o-2", json.dumps({"owner_id": "o-2", "phone": "call me"}).encode())
    await send(stack, topics.PLATES, gone.encode(), None)  # a tombstone: the plate leaves the registry
    await send(stack, topics.PLATES, debezium_key(plate=renamed), debezium({"plate": renamed}, None, "d", "vehicle"))
    await send(stack, topics.CAR_PARKS, car_park["id"].encode(), json.dumps(car_park, ensure_ascii=False).encode())

    async def deleted_and_added():
        plates = await stack.count("SELECT count(*) FROM plate_registry WHERE plate = ANY($1)", [gone, renamed])
        parks = await stack.count("SELECT count(*) FROM car_parks WHERE id = $1", car_park["id"])
        return plates == 0 and parks == 1
    await wait_for(deleted_and_added, 20, "the tombstone and the Debezium delete applied, the car park added")
    letters = await stack.pool.fetch("SELECT source_topic, reason FROM dead_letters ORDER BY source_topic, id")
    assert [(r["source_topic"].removeprefix(stack.prefix), r["reason"].split(":")[0]) for r in letters] == [
        ("reference.contacts", "unknown Debezium op 't'"),
        ("reference.contacts", "invalid ContactRecord"),
        ("reference.plates", "not JSON"),
    ]
    assert "phone" in letters[1]["reason"]

    await stack.publish(stack.violation(gone))
    await stack.wait_state(gone, "review")
    assert stack.handset_lines() == [], "no SMS for a plate deleted from the registry"


async def test_a_data_platform_login_may_write_only_the_reference_topics_it_was_given(stack: Stack):
    platform = f"police-dp-{stack.id}"
    password = await principals.grant(stack.settings, platform, principals.feed_bindings(stack.settings,
                                                                                         [topics.PLATES]))
    worker = stack.worker()
    await worker.ready()
    plate = (await stack.plates_with_phone(1))[0]
    producer = AIOKafkaProducer(acks="all", request_timeout_ms=10_000,
                                **{**KAFKA, "sasl_plain_username": platform, "sasl_plain_password": password})
    await producer.start()
    try:
        await producer.send_and_wait(stack.settings.topic(topics.PLATES.name), key=debezium_key(plate=plate),
                                     value=debezium({"plate": plate}, None, "d", "vehicle"))
        for forbidden in (topics.CONTACTS, topics.CAMERAS, topics.CAR_PARKS, topics.CASE_EVENTS):
            with pytest.raises(TopicAuthorizationFailedError):
                await producer.send_and_wait(stack.settings.topic(forbidden.name), b"{}", key=b"x")
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(stack.topic(topics.CAMERA_EVENTS), b"{}", key=plate.encode())
    finally:
        await producer.stop()
        await principals.withdraw(stack.settings, platform)

    async def deleted():
        return await stack.count("SELECT count(*) FROM plate_registry WHERE plate = $1", plate) == 0
    await wait_for(deleted, 20, "the data platform's delete applied")
