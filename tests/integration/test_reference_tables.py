"""The reference feed against the real PostgreSQL, without a worker: batches delivered again change
nothing, every worker forgets a changed plate, a plate's registrations are told apart by plate type
and retired rather than deleted, a contact update starts a new contact now and ends the old one,
cameras and car parks follow their rows (pipeline/reference/feed.py, pipeline/reference/tables.py)."""

import json

from pipeline.cases.service import Source
from pipeline.demo import city
from pipeline.lookups.owners import PostgresOwnerDirectory, mask_phone
from pipeline.reference import tables
from pipeline.reference.feed import ReferenceFeed
from schemas import topics

from .conftest import Stack


class Directory:
    """An owner directory that notes what it is told to forget."""

    def __init__(self):
        self.forgotten: list[str] = []

    def invalidate(self, plate: str) -> None:
        self.forgotten.append(plate)


POLICE = tables.Columns({"plates": {"plate": "hphm", "plate_type": "hpzl", "owner_id": "sfzmhm"}})


def feed(stack: Stack, owners=None, reloaded: list | None = None, columns=tables.Columns()) -> ReferenceFeed:
    async def reload(kinds):
        reloaded.append(sorted(kinds))
    return ReferenceFeed(stack.pool, {stack.settings.topic(k.topic.name): k for k in tables.KINDS}, columns,
                         stack.settings.topic(topics.DEAD_LETTERS.name), owners=owners,
                         reload=reload if reloaded is not None else None)


def message(stack: Stack, topic: topics.Topic, offset: int, key: str | bytes, row: dict | bytes | None):
    value = row if row is None or isinstance(row, bytes) else json.dumps(row, ensure_ascii=False).encode()
    key = key if isinstance(key, bytes) else key.encode()
    return value, Source(stack.settings.topic(topic.name), 0, offset, key, None, value)


def debezium_update(key: dict, before: dict, after: dict) -> tuple[bytes, bytes]:
    """(key, value) of a Debezium update of the police's vehicle table, without schemas."""
    return (json.dumps(key, ensure_ascii=False).encode(),
            json.dumps({"before": before, "after": after, "op": "u", "ts_ms": 1764500000123,
                        "source": {"connector": "postgresql", "schema": "public", "table": "vehicle"}},
                       ensure_ascii=False).encode())


async def owner_of(stack: Stack, owners: PostgresOwnerDirectory, plate: str, plate_type: str | None = None):
    async with stack.pool.acquire() as conn:
        return await owners.owner_for(plate, conn, plate_types=None if plate_type is None else (plate_type,))


async def contacts_of(stack: Stack, owner: str) -> list:
    return await stack.pool.fetch("""SELECT phone, language, valid_from, valid_to FROM contact_registry
                                      WHERE owner_id = $1 ORDER BY valid_from""", owner)


async def test_a_batch_delivered_again_does_not_take_a_row_back_to_an_older_value(stack: Stack):
    plate = (await stack.plates_with_phone(1))[0]
    owner = await stack.pool.fetchval("SELECT owner_id FROM plate_registry WHERE plate = $1", plate)
    first = [message(stack, topics.CONTACTS, 10, owner, {"owner_id": owner, "phone": "13900000001"})]
    second = [message(stack, topics.CONTACTS, 11, owner, {"owner_id": owner, "phone": "13900000002"})]
    worker = feed(stack)

    assert (await worker.handle(first))["applied"] == 1
    assert (await worker.handle(second))["applied"] == 1
    assert (await worker.handle(first))["already_applied"] == 1  # redelivered after a rebalance

    current = [r["phone"] for r in await contacts_of(stack, owner) if r["valid_to"] is None]
    assert [mask_phone(p) for p in current] == [mask_phone("13900000002")]


async def test_every_worker_forgets_the_plates_whose_owner_or_phone_changed(stack: Stack):
    plate = (await stack.plates_with_phone(1))[0]
    owner = await stack.pool.fetchval("SELECT owner_id FROM plate_registry WHERE plate = $1", plate)
    here, elsewhere = Directory(), Directory()
    applying, other = feed(stack, here), feed(stack, elsewhere)
    await other.forget_changed_elsewhere()  # a worker notes where it starts

    await applying.handle([message(stack, topics.CONTACTS, 0, owner, {"owner_id": owner, "phone": "13900000003"})])

    assert here.forgotten == [plate], "the worker that applied the change forgets at once"
    assert await other.forget_changed_elsewhere() == 1
    assert elsewhere.forgotten == [plate], "another worker forgets on its next reference round"
    assert await other.forget_changed_elsewhere() == 0


async def test_cameras_and_car_parks_follow_their_rows_and_the_worker_reads_them_again(stack: Stack):
    reloaded: list = []
    worker = feed(stack, reloaded=reloaded)
    camera = {"id": "cam-feed-01", "integrator": city.INTEGRATOR, "lat": 30.28, "lon": 120.0, "place": "文一西路",
              "zone": "yuhang", "commissioned_on": "2026-11-01"}
    stranger = {**camera, "id": "cam-feed-02", "integrator": "nobody"}

    counts = await worker.handle([message(stack, topics.CAMERAS, 0, "cam-feed-01", camera),
                                  message(stack, topics.CAMERAS, 1, "cam-feed-02", stranger),
                                  message(stack, topics.CAR_PARKS, 0, "cp-hcy-b1", None)])

    assert counts == {"applied": 2, "dead_letters": 1, "already_applied": 0}
    assert await stack.count("SELECT count(*) FROM cameras WHERE id = 'cam-feed-01' AND removed_at IS NULL") == 1
    reason = await stack.pool.fetchval("SELECT reason FROM dead_letters")
    assert "no integrator named 'nobody'" in reason
    assert await stack.count("SELECT count(*) FROM car_parks WHERE id = 'cp-hcy-b1'") == 0
    assert reloaded == [["cameras", "car-parks"]]
    assert await stack.count("SELECT count(*) FROM audit_log WHERE action = 'camera_added' AND actor = $1",
                             tables.REFERENCE_ACTOR) == 1

    await worker.handle([message(stack, topics.CAMERAS, 2, "cam-feed-01", None)])
    assert await stack.count("SELECT count(*) FROM cameras WHERE id = 'cam-feed-01' AND removed_at IS NOT NULL") == 1


async def test_a_debezium_update_keyed_by_plate_and_type_changes_that_registration_only(stack: Stack):
    plate = (await stack.plates_with_phone(1))[0]
    small_car_owner = await stack.pool.fetchval("SELECT owner_id FROM plate_registry WHERE plate = $1", plate)
    owners = PostgresOwnerDirectory(100, 300)
    worker = feed(stack, owners, columns=POLICE)
    await worker.handle([
        message(stack, topics.CONTACTS, 0, "fleet-a", {"owner_id": "fleet-a", "phone": "13911110001",
                                                      "owner_kind": "fleet", "contact_name": "调度 王"}),
        message(stack, topics.CONTACTS, 1, "fleet-b", {"owner_id": "fleet-b", "phone": "13922220002",
                                                      "owner_kind": "fleet", "contact_name": "调度 张"}),
        message(stack, topics.PLATES, 0, f"{plate}/01", {"plate": plate, "plate_type": "01", "owner_id": "fleet-a"})])
    assert (await owner_of(stack, owners, plate, "01")).owner_id == "fleet-a"  # now in the owner cache

    key, value = debezium_update({"hphm": plate, "hpzl": "01"}, {"hphm": plate, "hpzl": "01"},
                                 {"hphm": plate, "hpzl": "01", "sfzmhm": "fleet-b", "clpp": "解放"})
    counts = await worker.handle([message(stack, topics.PLATES, 1, key, value)])

    assert counts["applied"] == 1
    large, small = await owner_of(stack, owners, plate, "01"), await owner_of(stack, owners, plate, "02")
    assert (large.owner_id, mask_phone(large.phone)) == ("fleet-b", mask_phone("13922220002"))
    assert small.owner_id == small_car_owner, "the same number's small-car registration keeps its owner"
    assert (await owner_of(stack, owners, plate)).review_reason == "plate_type_ambiguous"


async def test_a_tombstone_retires_a_registration_and_an_upsert_brings_it_back(stack: Stack):
    plate = (await stack.plates_with_phone(1))[0]
    owners = PostgresOwnerDirectory(100, 300)
    worker = feed(stack, owners)
    assert (await owner_of(stack, owners, plate)).found

    await worker.handle([message(stack, topics.PLATES, 0, plate, None)])

    assert (await owner_of(stack, owners, plate)).review_reason == "not_registered"
    retired = await stack.pool.fetchrow("SELECT owner_id, retired_at FROM plate_registry WHERE plate = $1", plate)
    assert retired["retired_at"] is not None, "kept for the cases already decided under it"

    await worker.handle([message(stack, topics.PLATES, 1, plate, {"plate": plate, "owner_id": retired["owner_id"],
                                                                  "vehicle_colour": "H"})])
    assert (await owner_of(stack, owners, plate)).found
    assert await stack.count("SELECT count(*) FROM plate_registry WHERE plate = $1 AND retired_at IS NULL "
                             "AND vehicle_colour = 'H'", plate) == 1


async def test_a_contact_update_ends_the_old_phone_now_and_keeps_the_same_phone_in_place(stack: Stack):
    plate = (await stack.plates_with_phone(1))[0]
    owner = await stack.pool.fetchval("SELECT owner_id FROM plate_registry WHERE plate = $1", plate)
    old_phone = (await contacts_of(stack, owner))[0]["phone"]
    owners = PostgresOwnerDirectory(100, 300)
    worker = feed(stack, owners)

    await worker.handle([message(stack, topics.CONTACTS, 0, owner, {"owner_id": owner, "phone": old_phone,
                                                                    "language": "en"})])
    rows = await contacts_of(stack, owner)
    assert [(mask_phone(r["phone"]), r["language"], r["valid_to"]) for r in rows] == [
        (mask_phone(old_phone), "en", None)], "the same phone: one contact, its language updated in place"

    await worker.handle([message(stack, topics.CONTACTS, 1, owner, {"owner_id": owner, "phone": "13933330003"})])
    old, new = await contacts_of(stack, owner)
    assert (mask_phone(old["phone"]), mask_phone(new["phone"])) == (mask_phone(old_phone), mask_phone("13933330003"))
    assert old["valid_to"] == new["valid_from"] and new["valid_to"] is None, "the old phone ends as the new starts"
    answer = await owner_of(stack, owners, plate)
    assert (mask_phone(answer.phone), answer.language) == (mask_phone("13933330003"), None)

    await worker.handle([message(stack, topics.CONTACTS, 2, owner, None)])
    assert (await owner_of(stack, owners, plate)).review_reason == "no_valid_contact"
    assert len(await contacts_of(stack, owner)) == 2, "an ended contact stays on record"


async def test_an_opt_out_is_added_never_removed_and_one_batch_may_change_an_owner_twice(stack: Stack):
    plate = (await stack.plates_with_phone(1))[0]
    owner = await stack.pool.fetchval("SELECT owner_id FROM plate_registry WHERE plate = $1", plate)
    owners = PostgresOwnerDirectory(100, 300)
    worker = feed(stack, owners)

    counts = await worker.handle([
        message(stack, topics.CONTACTS, 0, owner, {"owner_id": owner, "phone": "13944440004"}),
        message(stack, topics.CONTACTS, 1, owner, {"owner_id": owner, "phone": "13955550005", "sms_opt_out": True}),
        message(stack, topics.CONTACTS, 2, owner, None),
        message(stack, topics.CONTACTS, 3, owner, {"owner_id": owner, "phone": "13955550005"})])

    assert counts == {"applied": 4, "dead_letters": 0, "already_applied": 0}
    phones = [(mask_phone(r["phone"]), r["valid_to"] is None) for r in await contacts_of(stack, owner)]
    assert phones[-1] == (mask_phone("13955550005"), True) and [live for _, live in phones].count(True) == 1
    assert await stack.count("SELECT count(*) FROM sms_opt_out WHERE phone = '13955550005' AND source = 'feed'") == 1
    assert (await owner_of(stack, owners, plate)).review_reason == "sms_opt_out"
