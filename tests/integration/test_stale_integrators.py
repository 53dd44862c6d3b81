"""One integrator cannot hold the city's decisions (issue 15, must 7), on the real Kafka and PostgreSQL.

A case waits for the topics that can change it: its own, and every integrator's within the stale
limit. An integrator read further behind than ``PW_INTEGRATOR_STALE_SECONDS`` is marked stale (audit,
/metrics, a banner on the console's live page) and the others' cars are decided on time without
it, each case saying so; a case near one of its cameras still waits for it. Its dead letters keep at
most ``PW_DEAD_LETTER_RAW_BYTES_PER_DAY`` raw bytes a day.
"""

import hashlib
from dataclasses import replace
from datetime import timedelta

import aiohttp

from pipeline.demo import city
from schemas import topics

from .conftest import Stack, sleep_until, wait_for
from .console_helpers import ConsoleClient, add_operator, base_url

FAR = city.Camera("cam-flood-far", "良睦路与荆长路口", 30.28600, 119.99100)
"""The stale integrator's camera far from the others' cars (about 1 km and more)."""
NEAR = replace(city.CAMERAS[1], id="cam-flood-near")
"""Its camera at the place of one car: that car's case waits for it."""


async def _stuck(stack: Stack, topic: str, plates: list[str]) -> None:
    """The integrator's topic 20 minutes behind on the partitions carrying ``plates``, as a consumer
    that stopped reading it leaves it: a message on each that is not recorded."""
    for plate in plates:
        await stack.publish_raw(b"{flood", key=plate.encode(), integrator="flood")

    async def recorded():  # the watermarks move after the batch's dead letters are kept
        return await stack.count("SELECT coalesce(sum(next_offset), 0) FROM partition_watermarks WHERE topic = $1",
                                 topic) >= len(plates) or None
    await wait_for(recorded, 30, "the flood's messages to be read")
    await stack.pool.execute(
        "UPDATE partition_watermarks SET next_offset = 0, read_to = now() - interval '20 minutes' "
        "WHERE topic = $1 AND next_offset > 0", topic)


async def _stays(stack: Stack, plate: str, camera: city.Camera):
    """The car is warned and still there at its deadline (a capture taken then)."""
    case = await stack.wait_state(plate, "warned", timeout=30)
    await sleep_until(case["deadline_at"] + timedelta(milliseconds=200))
    await stack.publish(stack.observation(plate, camera))
    return case


async def test_an_integrator_far_behind_holds_only_the_cars_near_its_cameras(stack: Stack):
    await stack.add_integrator("flood", cameras=(FAR, NEAR))
    await add_operator(stack, "li", "viewer")
    worker = stack.worker(PW_INTEGRATOR_STALE_SECONDS="3")
    await worker.ready()
    flood = stack.topic(topics.CAMERA_EVENTS, "flood")
    ours, near_flood = await stack.plates_with_phone(2)
    await _stuck(stack, flood, [ours, near_flood])

    await stack.publish(stack.violation(ours, city.CAMERAS[0]))
    await stack.publish(stack.violation(near_flood, city.CAMERAS[1]))
    await _stays(stack, near_flood, city.CAMERAS[1])
    case = await _stays(stack, ours, city.CAMERAS[0])

    ticketed = await stack.wait_state(ours, "ticketed", timeout=20)
    assert ticketed["closed_at"] - case["wake_at"] < timedelta(seconds=6), "decided on time, the flood 20 min behind"
    decided_without = await stack.pool.fetchval(
        "SELECT detail FROM audit_log WHERE case_id = $1 AND action = 'decided_without'", ticketed["id"])
    assert decided_without == {"topics": [flood], "integrators": ["flood"]}, "the case records it went on without it"

    stale = await stack.pool.fetchrow("SELECT * FROM stale_topics WHERE topic = $1", flood)
    assert stale["integrator"] == "flood" and stale["behind_seconds"] > 20 * 60 - 5
    marked = await stack.pool.fetch("SELECT detail FROM audit_log WHERE action = 'integrator_stale'")
    assert [m["detail"]["integrator"] for m in marked] == ["flood"], "one audit row, whichever worker saw it"
    async with aiohttp.ClientSession() as http, http.get(f"{base_url(worker)}/metrics") as r:
        metrics = await r.text()
    assert any(line.startswith('parkwarden_integrator_stale_seconds{integrator="flood"}') for line in metrics.splitlines())
    console = ConsoleClient(base_url(worker))
    try:
        await console.login("li")
        _, live = await console.page("/console/?lang=en")
    finally:
        await console.close()
    assert 'id="stale-integrators"' in live and "flood" in live

    near = await stack.case_of(near_flood)
    await sleep_until(near["wake_at"] + timedelta(seconds=3))
    near = await stack.case_of(near_flood)
    assert near["state"] == "warned", "a car near the stale integrator's camera waits for it: it may hold the answer"
    await stack.pool.execute(
        "UPDATE partition_watermarks SET next_offset = 1, read_to = now() WHERE topic = $1 AND next_offset = 0", flood)
    assert (await stack.wait_state(near_flood, "ticketed", timeout=20))["id"] == near["id"]

    async def caught_up():
        return await stack.pool.fetchval("SELECT detail FROM audit_log WHERE action = 'integrator_current'")
    assert (await wait_for(caught_up, 10, "the flood to be current again"))["integrator"] == "flood"
    assert await stack.count("SELECT count(*) FROM stale_topics") == 0


async def test_a_flooding_integrator_s_dead_letters_keep_at_most_the_day_s_raw_bytes(stack: Stack):
    await stack.add_integrator("flood", cameras=(FAR,))
    worker = stack.worker(PW_DEAD_LETTER_RAW_BYTES_PER_DAY="3000")
    await worker.ready()
    flood = stack.topic(topics.CAMERA_EVENTS, "flood")
    junk = [bytes([65 + i]) * 1000 for i in range(5)]
    for raw in junk:
        await stack.publish_raw(raw, key=b"k", integrator="flood")
    await stack.publish_raw(b"x" * 1000, key=b"k")  # the demo integrator's own day is not touched

    async def all_kept():
        rows = await stack.pool.fetch("SELECT * FROM dead_letters ORDER BY source_topic, \"offset\"")
        return rows if len(rows) == 6 else None
    rows = await wait_for(all_kept, 30, "6 dead letters")
    flooded = [r for r in rows if r["source_topic"] == flood]
    assert [bytes(r["raw"]) for r in flooded[:2]] == junk[:2], "within the day's 3000 bytes: kept whole"
    for row, raw in zip(flooded[2:], junk[2:]):
        assert bytes(row["raw"]) == b"" and row["key"] is None
        assert f"1000 bytes not kept, sha256 {hashlib.sha256(raw).hexdigest()}" in row["reason"]
        assert "JSON" in row["reason"], "the reason stays"
    ours = [r for r in rows if r["source_topic"] != flood]
    assert bytes(ours[0]["raw"]) == b"x" * 1000
    day = await stack.pool.fetchrow("SELECT kept, dropped FROM dead_letter_raw_bytes WHERE source_topic = $1", flood)
    assert (day["kept"], day["dropped"]) == (2002, 3003)
    published = await stack.consume(topics.DEAD_LETTERS, lambda ms: len(ms) >= 6)
    dropped = [m for m in published if m["source_topic"] == flood and m["raw_size"] == 0]
    assert len(dropped) == 3 and all(m["raw_base64"] == "" for m in dropped), "nor are the bytes published"
