"""Reference data as streams, on the real broker: a data platform's Debezium change events and our own
JSON on the compacted reference topics reach the next decision; a contact update sends the next warning
to the new phone; tombstones retire registrations; bad messages are dead letters and the stream goes
on (pipeline/reference/)."""

import base64
import json
import secrets

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import TopicAuthorizationFailedError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cases.reasons import REASONS
from pipeline.demo import city
from pipeline.ingest import principals
from pipeline.cases.service import Source
from pipeline.lookups.owners import mask_phone
from pipeline.reference import decode, tables
from pipeline.reference.feed import ReferenceFeed
from pipeline.reference.tables import Columns
from schemas.codec import Rejected
from schemas import topics

from pipeline.sms.kannel import read_fakesmsc_line

from tests.privacy import dead_letters_text, no_phone_in
from tests.unit.test_reference_decode import hostile_message

from .conftest import KAFKA, SHARED_KANNEL, Stack, wait_for
from .test_sms_gateway import FAKESMSC_LOG, SmsCentre

PHONE, OWNER = "13812348000", "330106198801011234"
TELECOM_COLUMNS = json.dumps({"contacts": {"owner_id": "zjhm", "phone": "sjhm", "language": "yy"}})
"""A telecom operator's subscriber table: 证件号码 (the owner's id), 手机号码, 语言."""


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


async def owner_and_phone(stack: Stack, plate: str) -> tuple[str, str]:
    row = await stack.pool.fetchrow("""SELECT p.owner_id, c.phone FROM plate_registry p JOIN contact_registry c
                                         USING (owner_id) WHERE p.plate = $1 AND c.valid_to IS NULL""", plate)
    return row["owner_id"], row["phone"]


@SHARED_KANNEL
async def test_a_debezium_contact_update_ends_the_old_phone_and_the_next_warning_goes_to_the_new_one(stack: Stack):
    smsc = Receivers(FAKESMSC_LOG)
    worker = stack.worker(PW_SMS_GATEWAY="kannel", PW_REFERENCE_COLUMNS=TELECOM_COLUMNS)
    await worker.ready()
    await stack.all_car_parks_free()
    plate = (await stack.plates_with_phone(1))[0]
    owner, old_phone = await owner_and_phone(stack, plate)

    await stack.publish(stack.violation(plate, city.CAMERAS[0]))  # the worker looks the owner up: now in its cache
    first = await stack.wait_state(plate, "warned", timeout=20)
    await stack.publish(stack.departure(plate, city.CAMERAS[0]))
    await stack.wait_state(plate, "moved")

    new_phone = f"139{secrets.randbelow(10**4):04d}{(int(old_phone[-4:]) + 1) % 10**4:04d}"
    assert mask_phone(new_phone) != mask_phone(old_phone)
    await send(stack, topics.CONTACTS, debezium_key(zjhm=owner),
               debezium({"zjhm": owner}, {"zjhm": owner, "sjhm": new_phone, "yy": "zh", "khmc": "张三"}, "u",
                        "subscriber"))

    async def changed():
        rows = await stack.pool.fetch("SELECT phone, valid_to FROM contact_registry WHERE owner_id = $1 "
                                      "ORDER BY valid_from", owner)
        return rows if len(rows) == 2 else None
    rows = await wait_for(changed, 20, "the Debezium update in contact_registry")
    assert [(mask_phone(r["phone"]), r["valid_to"] is None) for r in rows] == [
        (mask_phone(old_phone), False), (mask_phone(new_phone), True)], "the old phone ended, the new one started"
    await stack.publish(stack.violation(plate, city.CAMERAS[3]))

    async def second_case():
        row = await stack.case_of(plate)
        return row if row["id"] != first["id"] and row["state"] == "warned" else None
    case = await wait_for(second_case, 20, "the second case to be warned")
    sms = await stack.pool.fetchrow("SELECT phone, text FROM sms_messages WHERE case_id = $1", case["id"])
    assert mask_phone(sms["phone"]) == mask_phone(new_phone)

    async def at_the_centre():
        return [to for to, text in smsc.received() if text == sms["text"]]
    receivers = await wait_for(at_the_centre, 20, "the second warning at the SMS centre")
    assert [mask_phone(to[-11:]) for to in receivers] == [mask_phone(new_phone)]
    first_sms = await stack.pool.fetchval("SELECT phone FROM sms_messages WHERE case_id = $1", first["id"])
    assert mask_phone(first_sms) == mask_phone(old_phone), "the first warning went to the phone before the change"


async def test_tombstones_retire_and_bad_messages_become_dead_letters_while_the_stream_goes_on(stack: Stack):
    worker = stack.worker()
    await worker.ready()
    gone, renamed = await stack.plates_with_phone(2)
    car_park = {"id": f"cp-{stack.id}", "name": "测试停车场", "short_name": "测试", "lat": 30.28, "lon": 120.0,
                "capacity": 50}

    await send(stack, topics.PLATES, b"not-a-plate", b"{not json")
    await send(stack, topics.CONTACTS, b"o-1", debezium(None, {"owner_id": "o-1", "phone": "1"}, "t", "contacts"))
    await send(stack, topics.CONTACTS, b"o-2", json.dumps({"owner_id": "o-2", "phone": "call me"}).encode())
    await send(stack, topics.CAMERAS, b"cam-far-future", debezium(None, {  # once stopped the feed (issue 15)
        "id": "cam-far-future", "integrator": city.INTEGRATOR, "lat": 30.28, "lon": 120.0, "place": "未来路",
        "zone": "yuhang", "commissioned_on": 99_999_999}, "c", "cameras"))
    await send(stack, topics.CONTACTS, OWNER.encode(), json.dumps(
        {"owner_id": OWNER, "phone": PHONE, "language": "fr", "note": f"call {PHONE}"}).encode())
    await send(stack, topics.PLATES, gone.encode(), None)  # a tombstone: the registration (gone, 02) is retired
    await send(stack, topics.PLATES, debezium_key(plate=renamed), debezium({"plate": renamed}, None, "d", "vehicle"))
    await send(stack, topics.CAR_PARKS, car_park["id"].encode(), json.dumps(car_park, ensure_ascii=False).encode())

    async def retired_and_added():
        plates = await stack.count("SELECT count(*) FROM plate_registry WHERE plate = ANY($1) AND retired_at IS NULL",
                                   [gone, renamed])
        parks = await stack.count("SELECT count(*) FROM car_parks WHERE id = $1", car_park["id"])
        return plates == 0 and parks == 1
    await wait_for(retired_and_added, 20, "the tombstone and the Debezium delete applied, the car park added")
    assert await stack.count("SELECT count(*) FROM plate_registry WHERE plate = ANY($1)", [gone, renamed]) == 2, \
        "retired registrations stay on record"
    await wait_for(lambda: stack.count("SELECT count(*) >= 5 FROM dead_letters"), 20, "the five dead letters")
    letters = await stack.pool.fetch("SELECT source_topic, reason FROM dead_letters ORDER BY source_topic, reason")
    assert [(r["source_topic"].removeprefix(stack.prefix), r["reason"].split(":")[0]) for r in letters] == [
        ("reference.cameras", "after.commissioned_on"),
        ("reference.contacts", "invalid ContactRecord"),
        ("reference.contacts", "invalid ContactRecord"),
        ("reference.contacts", "unknown Debezium op 't'"),
        ("reference.plates", "not JSON"),
    ]
    assert {"language", "phone"} == {r["reason"].split(": ")[1] for r in letters[1:3]}
    await no_personal_data_in_dead_letters(stack, worker)

    await stack.publish(stack.violation(gone))
    case = await stack.wait_state(gone, "review")
    assert case["reason"] == REASONS["not_registered"]
    assert stack.handset_lines() == [], "no SMS for a retired registration"


async def no_personal_data_in_dead_letters(stack: Stack, worker) -> None:
    """The table, the DeadLetter messages on Kafka and the worker's log hold neither the phone nor the owner id."""
    rows = await stack.pool.fetch("SELECT key, reason, errors::text AS errors, raw, raw_sha256 FROM dead_letters")
    stored = dead_letters_text(rows)
    published = json.dumps(await stack.consume(topics.DEAD_LETTERS, lambda ms: len(ms) >= len(rows)),
                           ensure_ascii=False)
    published += " ".join(base64.b64decode(m["raw_base64"]).decode()
                          for m in json.loads(published) if m.get("raw_base64"))
    for text, where in ((stored, "the dead_letters table"), (published, "the dead-letters topic"),
                        (worker.log_path.read_text(), "the worker's log")):
        no_phone_in(text, where, PHONE)
        if OWNER[-8:] in text:
            raise AssertionError(f"an owner id reached {where}")
    assert all(r["raw_sha256"] is not None for r in rows), "each keeps the hash of the bytes it masked"


async def test_a_batch_of_hostile_reference_messages_applies_its_good_ones_and_dead_letters_the_rest(stack: Stack):
    """Arbitrary JSON and Debezium envelopes (hypothesis) for every kind, around one good message per kind,
    in one batch through the feed on the real PostgreSQL: nothing raises, the good ones are applied, each
    refused one is a dead letter without personal data."""
    hostile: list[tuple] = []

    @settings(max_examples=50, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(tables.KINDS).flatmap(lambda kind: hostile_message(kind).map(lambda m: (kind, *m))))
    def collect(message):
        hostile.append(message)

    collect()
    camera = city.CAMERAS[0]
    good = [
        (tables.BY_NAME["plates"], "浙A9G00D".encode(), {"plate": "浙A9G00D", "owner_id": OWNER}),
        (tables.BY_NAME["contacts"], OWNER.encode(), {"owner_id": OWNER, "phone": PHONE}),
        (tables.BY_NAME["car-parks"], b"cp-good", {"id": "cp-good", "name": "好停车场", "short_name": "好",
                                                   "lat": 30.28, "lon": 120.0, "capacity": 9}),
        (tables.BY_NAME["cameras"], b"cam-good", {"id": "cam-good", "integrator": city.INTEGRATOR, "lat": camera.lat,
                                                  "lon": camera.lon, "place": "好路", "zone": camera.zone,
                                                  "commissioned_on": "2026-01-02"}),
    ]
    messages = hostile[:len(hostile) // 2] + [(k, key, json.dumps(v).encode()) for k, key, v in good] \
        + hostile[len(hostile) // 2:]
    feed = ReferenceFeed(stack.pool, {stack.settings.topic(k.topic.name): k for k in tables.KINDS}, Columns(),
                         stack.settings.topic(topics.DEAD_LETTERS.name))
    batch = [(value, Source(stack.settings.topic(kind.topic.name), 0, offset, key, None, value))
             for offset, (kind, key, value) in enumerate(messages)]

    counts = await feed.handle(batch)

    assert counts["applied"] + counts["dead_letters"] == len(batch)
    assert await stack.count("SELECT count(*) FROM plate_registry WHERE plate = '浙A9G00D' AND owner_id = $1",
                             OWNER) == 1
    assert await stack.count("SELECT count(*) FROM contact_registry WHERE owner_id = $1 AND phone = $2 "
                             "AND valid_to IS NULL", OWNER, PHONE) == 1
    assert await stack.count("SELECT count(*) FROM car_parks WHERE id = 'cp-good' AND capacity = 9") == 1
    assert await stack.count("SELECT count(*) FROM cameras WHERE id = 'cam-good' AND removed_at IS NULL") == 1
    refused = {offset for offset, (kind, key, value) in enumerate(messages)
               if isinstance(decode.decode(kind, key, value, Columns()), Rejected)}
    kept = {r["offset"] for r in await stack.pool.fetch('SELECT "offset" FROM dead_letters')}
    assert refused <= kept and len(kept) == counts["dead_letters"], "every refused message is a dead letter"
    rows = await stack.pool.fetch("SELECT key, reason, errors::text AS errors, raw FROM dead_letters")
    no_phone_in(dead_letters_text(rows), "the dead letters", PHONE)


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

    async def retired():
        return await stack.count("SELECT count(*) FROM plate_registry WHERE plate = $1 AND retired_at IS NULL",
                                 plate) == 0
    await wait_for(retired, 20, "the data platform's delete applied")
