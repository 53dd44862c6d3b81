"""The reference feed against the real PostgreSQL, without a worker: batches delivered again change
nothing, every worker forgets a changed plate, cameras and car parks follow their rows
(pipeline/reference/feed.py, pipeline/reference/tables.py)."""

import json

from pipeline.cases.service import Source
from pipeline.demo import city
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


def feed(stack: Stack, owners=None, reloaded: list | None = None) -> ReferenceFeed:
    async def reload(kinds):
        reloaded.append(sorted(kinds))
    return ReferenceFeed(stack.pool, {stack.settings.topic(k.topic.name): k for k in tables.KINDS}, tables.Columns(),
                         stack.settings.topic(topics.DEAD_LETTERS.name), owners=owners,
                         reload=reload if reloaded is not None else None)


def message(stack: Stack, topic: topics.Topic, offset: int, key: str, row: dict | None):
    value = None if row is None else json.dumps(row, ensure_ascii=False).encode()
    return value, Source(stack.settings.topic(topic.name), 0, offset, key.encode(), None, value)


async def test_a_batch_delivered_again_does_not_take_a_row_back_to_an_older_value(stack: Stack):
    plate = (await stack.plates_with_phone(1))[0]
    owner = await stack.pool.fetchval("SELECT owner_id FROM plate_registry WHERE plate = $1", plate)
    first = [message(stack, topics.CONTACTS, 10, owner, {"owner_id": owner, "phone": "13900000001"})]
    second = [message(stack, topics.CONTACTS, 11, owner, {"owner_id": owner, "phone": "13900000002"})]
    worker = feed(stack)

    assert (await worker.handle(first))["applied"] == 1
    assert (await worker.handle(second))["applied"] == 1
    assert (await worker.handle(first))["already_applied"] == 1  # redelivered after a rebalance

    phone = await stack.pool.fetchval("SELECT phone FROM contact_registry WHERE owner_id = $1", owner)
    assert phone == "13900000002"


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
