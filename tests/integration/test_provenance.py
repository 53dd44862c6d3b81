"""Provenance, on the real Kafka and PostgreSQL: an integrator publishes only for its own cameras
(HTTP 403 naming the camera; on Kafka a dead letter), place, zone and position come from the camera
registry and never from the event, every sighting says which integrator sent it, and event ids are
unique per integrator. The registry is managed from the command line and the console, audited."""

import json
from datetime import UTC, datetime

from pipeline.demo import city
from schemas import topics
from schemas.codec import encode
from schemas.events import CarParkStatus

from .conftest import Stack, sleep_until, wait_for
from .console_helpers import ConsoleClient, add_operator, base_url
from .test_console_browser import browser_page  # noqa: F401 - a fixture
from .test_integrators import call, records, run_cli, url

OURS = city.Camera("cam-acme-01", "文一西路与古墩路口", 30.28010, 120.06990)
THEIRS = city.Camera("cam-other-01", "良睦路与荆长路口", 30.28600, 119.99100)


async def dead_letters(stack: Stack, n: int) -> list:
    async def enough():
        rows = await stack.pool.fetch("SELECT * FROM dead_letters ORDER BY id")
        return rows if len(rows) >= n else None
    return await wait_for(enough, 20, f"{n} dead letters")


async def test_an_integrator_publishes_only_for_its_own_cameras_over_http(stack: Stack):
    worker = stack.worker()
    acme = await stack.add_integrator("acme", cameras=(OURS,))
    await stack.add_integrator("rival", cameras=(THEIRS,))
    await worker.ready()
    plate, spare = await stack.plates_with_phone(2)
    events_url = url(worker, "/v1/camera-events")

    unknown = city.Camera("cam-nobody-99", "无名路", 30.27, 120.0)
    for camera, why in ((unknown, "is not registered: ask the operator"), (THEIRS, "is not registered to acme")):
        body = json.dumps([json.loads(encode(stack.violation(plate, OURS))),
                           json.loads(encode(stack.violation(spare, camera)))], ensure_ascii=False).encode()
        status, reply, _ = await call("POST", events_url, acme, body)
        assert status == 403, reply
        assert f"camera '{camera.id}' {why}" in reply["error"] and "nothing in this request was accepted" in reply["error"]
        assert "rival" not in reply["error"], "never says whose camera it is"

    status, reply, _ = await call("POST", events_url, acme, encode(stack.violation(plate, OURS)))
    assert (status, reply) == (202, {"accepted": 1, "rejected": []})
    published = await records(stack, topics.CAMERA_EVENTS, lambda rs: len(rs) >= 1, integrator="acme")
    assert [json.loads(r.value)["plate"] for r in published] == [plate], "the refused requests sent nothing"
    case = await stack.wait_state(plate, "warned", timeout=20)
    assert case["camera_id"] == OURS.id and case["place"] == OURS.place
    assert await stack.case_of(spare) is None

    async with stack.pool.acquire() as conn:
        await conn.execute("UPDATE car_parks SET integrator = 'rival' WHERE id = $1", city.CAR_PARKS[0][0])
    count = encode(CarParkStatus(car_park_id=city.CAR_PARKS[0][0], free_spaces=3, reported_at=datetime.now(UTC)))

    async def refused():  # the worker re-reads car-park owners every PW_REFERENCE_REFRESH_SECONDS
        answer = await call("POST", url(worker, "/v1/car-park-status"), acme, count)
        return answer if answer[0] == 403 else None
    status, reply, _ = await wait_for(refused, 20, "the car park's owner to be read")
    assert f"car park '{city.CAR_PARKS[0][0]}' is not registered to acme" in reply["error"]
    other_park = encode(CarParkStatus(car_park_id=city.CAR_PARKS[1][0], free_spaces=3, reported_at=datetime.now(UTC)))
    status, reply, _ = await call("POST", url(worker, "/v1/car-park-status"), acme, other_park)
    assert status == 202, "a car park without an owner takes any publisher's counts"


async def test_on_kafka_the_topic_names_the_integrator_and_foreign_or_unknown_cameras_are_dead_letters(stack: Stack):
    await stack.add_integrator("acme", cameras=(OURS,))
    await stack.add_integrator("rival", cameras=(THEIRS,))
    worker = stack.worker()
    await worker.ready()
    plate, foreign, unknown, bare = await stack.plates_with_phone(4)

    await stack.publish(stack.violation(foreign, THEIRS), integrator="acme")
    await stack.publish(stack.violation(unknown, city.Camera("cam-nobody-99", "无名路", 30.27, 120.0)), integrator="acme")
    await stack.producer.send_and_wait(stack.settings.topic(topics.CAMERA_EVENTS.name),
                                       encode(stack.violation(bare, OURS)), key=bare.encode())
    await stack.publish(stack.violation(plate, OURS), integrator="acme")

    await stack.wait_state(plate, "warned", timeout=20)
    letters = await dead_letters(stack, 3)
    reasons = {r["source_topic"]: r["reason"] for r in letters}
    by_reason = sorted(r["reason"] for r in letters)
    assert any(f"camera '{THEIRS.id}' is not registered to acme" in r for r in by_reason), by_reason
    assert any("camera 'cam-nobody-99' is not registered" in r for r in by_reason), by_reason
    bare_topic = stack.settings.topic(topics.CAMERA_EVENTS.name)
    assert "names no integrator" in reasons[bare_topic] and f"{bare_topic}.<your integrator name>" in reasons[bare_topic]
    assert {e["field"] for r in letters for e in r["errors"]} == {"camera_id", "(topic)"}
    for lost in (foreign, unknown, bare):
        assert await stack.case_of(lost) is None
    published = await stack.consume(topics.DEAD_LETTERS, lambda ms: len(ms) >= 3)
    assert any(f"camera '{THEIRS.id}'" in m["reason"] for m in published)


async def test_zone_place_and_position_come_from_the_registry_never_from_the_event(stack: Stack):
    hospital = city.Camera("cam-hospital-01", "医院急救通道", 30.28010, 120.00520, zone="hospital")
    await stack.register_camera(hospital)
    worker = stack.worker()
    await worker.ready()
    pursued, exempt = await stack.plates_with_phone(2)

    lying = json.loads(encode(stack.violation(pursued, city.Camera(
        city.CAMERAS[0].id, "假地点", 30.0, 121.0, zone="hospital"))))
    assert lying["zone"] == "hospital" and lying["place"] == "假地点"
    await stack.producer.send_and_wait(stack.topic(topics.CAMERA_EVENTS), json.dumps(lying).encode(),
                                       key=pursued.encode())
    case = await stack.wait_state(pursued, "warned", timeout=20)
    registered = city.CAMERAS[0]
    assert (case["zone"], case["place"]) == (registered.zone, registered.place), "not the exempt zone it claimed"
    assert (case["lat"], case["lon"]) == (registered.lat, registered.lon)
    sighting = await stack.pool.fetchrow("SELECT * FROM sightings WHERE event_id = $1", lying["event_id"])
    assert (sighting["zone"], sighting["place"], sighting["integrator"]) == ("yuhang", registered.place, "demo")
    assert (sighting["lat"], sighting["lon"], sighting["reported_lat"], sighting["reported_lon"]) == \
        (registered.lat, registered.lon, 30.0, 121.0), "the camera's position; the event's is kept for the record"

    no_zone = json.loads(encode(stack.violation(exempt, hospital)))
    for field in ("zone", "place", "location"):
        no_zone.pop(field)
    await stack.producer.send_and_wait(stack.topic(topics.CAMERA_EVENTS), json.dumps(no_zone).encode(),
                                       key=exempt.encode())
    case = await stack.wait_state(exempt, "exempt", timeout=20)
    assert case["zone"] == "hospital" and case["place"] == hospital.place
    opened = await stack.consume(topics.CASE_EVENTS, lambda ms: sum(m["type"] == "CaseOpened" for m in ms) >= 2)
    positions = {m["plate"]: m["location"] for m in opened if m["type"] == "CaseOpened"}
    assert positions[pursued] == {"lat": registered.lat, "lon": registered.lon, "datum": "wgs84"}


async def test_the_same_event_id_from_two_integrators_is_two_sightings(stack: Stack):
    await stack.add_integrator("acme", cameras=(OURS,))
    await stack.add_integrator("rival", cameras=(THEIRS,))
    worker = stack.worker()
    await worker.ready()
    plate, marker = await stack.plates_with_phone(2)

    first = stack.observation(plate, OURS)
    second = stack.observation(plate, THEIRS).model_copy(update={"event_id": first.event_id})
    await stack.publish(first, integrator="acme")
    await stack.publish(second, integrator="rival")
    await stack.publish(first, integrator="acme")  # a replay is still one sighting
    await stack.publish(stack.violation(marker, OURS), integrator="acme")
    await stack.wait_state(marker, "warned", timeout=20)

    async def both():
        rows = await stack.pool.fetch("SELECT integrator, camera_id FROM sightings WHERE event_id = $1 "
                                      "ORDER BY integrator", first.event_id)
        return rows if len(rows) == 2 else None
    rows = await wait_for(both, 20, "both integrators' sightings")
    assert [(r["integrator"], r["camera_id"]) for r in rows] == [("acme", OURS.id), ("rival", THEIRS.id)]
    assert await stack.count("SELECT count(*) FROM sightings WHERE event_id = $1", first.event_id) == 2


async def test_a_ticket_s_evidence_says_which_integrator_sent_each_capture(stack: Stack):
    await stack.add_integrator("acme", cameras=(OURS,))
    worker = stack.worker()
    await worker.ready()
    plate = (await stack.plates_with_phone(1))[0]
    await stack.publish(stack.violation(plate, OURS), integrator="acme")
    case = await stack.wait_state(plate, "warned", timeout=20)
    await sleep_until(case["deadline_at"])
    await stack.publish(stack.observation(plate, OURS), integrator="acme")
    await stack.wait_state(plate, "ticketed", timeout=20)
    [issued] = await stack.consume(topics.TICKETS, lambda ms: len(ms) >= 1)
    assert [(e["integrator"], e["camera_id"], e["lat"], e["lon"]) for e in issued["evidence"]] == \
        [("acme", OURS.id, OURS.lat, OURS.lon)] * 2


async def test_operators_manage_the_registry_from_the_command_line_audited(stack: Stack, tmp_path):
    await stack.add_integrator("acme")
    code, out = await run_cli(stack, "cameras", "add", OURS.id, "--integrator", "acme", "--lat", str(OURS.lat),
                              "--lon", str(OURS.lon), "--place", OURS.place, "--zone", "yuhang",
                              "--direction", "ne", "--commissioned", "2026-11-01")
    assert code == 0 and "added" in out, out
    code, out = await run_cli(stack, "cameras", "add", OURS.id, "--integrator", "acme", "--lat", "30", "--lon", "120",
                              "--place", "x", "--zone", "yuhang")
    assert code == 1 and "registered already" in out and "--replace" in out
    code, out = await run_cli(stack, "cameras", "add", "cam-x", "--integrator", "nobody", "--lat", "30", "--lon", "120",
                              "--place", "x", "--zone", "yuhang")
    assert code == 1 and "no integrator named 'nobody'" in out

    good = tmp_path / "cameras.csv"
    good.write_text("id,integrator,lat,lon,place,zone,direction,commissioned_on\n"
                    f"cam-acme-02,acme,30.281,120.07,古墩路北,yuhang,S,2026-10-01\n"
                    f"{OURS.id},acme,{OURS.lat},{OURS.lon},{OURS.place},yuhang,NE,2026-11-01\n", encoding="utf-8")
    code, out = await run_cli(stack, "cameras", "import", str(good))
    assert code == 0 and "1 added, 0 updated, 1 unchanged" in out, out
    bad = tmp_path / "cameras.jsonl"
    bad.write_text(json.dumps({"id": "cam-acme-03", "integrator": "acme", "lat": 30.2, "lon": 120.1, "place": "p",
                               "zone": "yuhang", "commissioned_on": "2026-10-01"}) + "\n"
                   + json.dumps({"id": "cam-acme-04", "integrator": "acme", "lat": 95, "lon": 120.1, "place": "p",
                                 "zone": "Yuhang!", "commissioned_on": "2026-10-01"}) + "\n", encoding="utf-8")
    code, out = await run_cli(stack, "cameras", "import", str(bad))
    assert code == 1 and "line 2" in out and "nothing was imported" in out
    assert await stack.count("SELECT count(*) FROM cameras WHERE id = 'cam-acme-03'") == 0

    code, out = await run_cli(stack, "cameras", "list", "--integrator", "acme", "--json")
    listed = [json.loads(line) for line in out.splitlines()]
    assert [c["id"] for c in listed] == ["cam-acme-01", "cam-acme-02"] and listed[0]["direction"] == "NE"
    code, out = await run_cli(stack, "cameras", "remove", "cam-acme-02", "--reason", "taken down")
    assert code == 0, out
    code, out = await run_cli(stack, "cameras", "remove", "cam-acme-02")
    assert code == 1 and "no registered camera" in out
    actions = [(r["action"], r["detail"]["camera"]["id"]) for r in await stack.pool.fetch(
        "SELECT action, detail FROM audit_log WHERE actor LIKE 'cli:%' ORDER BY id")]
    assert actions == [("camera_added", OURS.id), ("camera_added", "cam-acme-02"), ("camera_removed", "cam-acme-02")]


async def test_supervisors_register_and_remove_cameras_in_the_console_audited(stack: Stack):
    worker = stack.worker()
    await stack.add_integrator("acme")
    await add_operator(stack, "li", "supervisor")
    await add_operator(stack, "wang", "viewer")
    await worker.ready()
    form = {"id": OURS.id, "integrator": "acme", "lat": str(OURS.lat), "lon": str(OURS.lon), "place": OURS.place,
            "zone": "yuhang", "direction": "E", "commissioned_on": "2026-11-01", "reason": "new crossing camera"}

    viewer = ConsoleClient(base_url(worker))
    try:
        await viewer.login("wang")
        status, html = await viewer.page("/console/cameras")
        assert status == 200 and city.CAMERAS[0].id in html and 'id="camera-add"' not in html
        status, _, _ = await viewer.post("/console/cameras", form)
        assert status == 403
    finally:
        await viewer.close()

    client = ConsoleClient(base_url(worker))
    try:
        await client.login("li")
        await client.page("/console/cameras")
        status, html, _ = await client.post("/console/cameras", {**form, "lat": "95"})
        assert status == 409 and "lat, lon" in html
        status, _, location = await client.post("/console/cameras", form)
        assert status == 303 and "camera_added" in location
        status, html = await client.page("/console/cameras")
        assert f'data-camera="{OURS.id}"' in html and "acme" in html
        status, _, _ = await client.post(f"/console/cameras/{OURS.id}/remove", {"reason": "moved to another pole"})
        assert status == 303
        status, html = await client.page("/console/audit")
        assert "camera_added" in html and "camera_removed" in html
    finally:
        await client.close()
    rows = await stack.pool.fetch("SELECT actor, action, detail FROM audit_log WHERE actor = 'operator:li' ORDER BY id")
    assert [(r["action"], r["detail"]["reason"]) for r in rows] == [("camera_added", "new crossing camera"),
                                                                    ("camera_removed", "moved to another pole")]
    assert await stack.count("SELECT count(*) FROM cameras WHERE id = $1 AND removed_at IS NOT NULL", OURS.id) == 1


async def test_a_new_integrator_s_topic_is_read_without_restarting_the_workers(stack: Stack):
    worker = stack.worker()
    await worker.ready()
    await stack.add_integrator("latecomer", cameras=(OURS,))
    plate = (await stack.plates_with_phone(1))[0]
    await stack.publish(stack.violation(plate, OURS), integrator="latecomer")
    case = await stack.wait_state(plate, "warned", timeout=60)
    assert case["source_topic"] == stack.topic(topics.CAMERA_EVENTS, "latecomer")


async def test_a_due_case_waits_for_its_partition_in_every_integrator_s_camera_events_topic(stack: Stack):
    """The answer to a case may come from another integrator's camera: on that integrator's topic, in
    the same partition (the plate's key picks it). The case is decided only once every camera-events
    topic is read past its wake time there (pipeline/cases/watermarks.py)."""
    from uuid import uuid4

    from pipeline.cases import store, watermarks
    from pipeline.cases.machine import Case, Sighting, State

    base = stack.settings.topic(topics.CAMERA_EVENTS.name)
    ours, theirs = topics.camera_events_of(base, "acme"), topics.camera_events_of(base, "rival")
    async with stack.pool.acquire() as conn:
        now = await conn.fetchval("SELECT now()")
        seen = Sighting("evt-held-0001", OURS.id, now, OURS.lat, OURS.lon, OURS.place, None, "acme")
        case = Case(uuid4(), "浙A12345", State.WARNED, "yuhang", OURS.place, seen, now, warned_at=now,
                    deadline_at=now, wake_at=now)
        await store.insert_case(conn, case, 600, now, source_partition=2, source_topic=ours)
        await watermarks.recorded(conn, {(ours, 2): (10, now), (theirs, 2): (4, now.replace(year=now.year - 1))})

        async def claimed() -> list:
            async with conn.transaction():
                return [r["id"] for r in (await store.claim_due_cases(conn, base, 10))[1]]
        assert await claimed() == [], "held: the rival's topic is not read past the wake time on partition 2"
        await watermarks.current_as_of(conn, {(theirs, 2): 5}, now)
        assert await claimed() == [case.id]


async def test_a_supervisor_registers_a_camera_in_the_browser(stack: Stack, browser_page):
    from playwright.async_api import expect

    from .console_helpers import PASSWORD
    from .test_console_browser import WAIT_MS, shot

    page = browser_page
    worker = stack.worker()
    await stack.add_integrator("acme")
    await add_operator(stack, "li", "supervisor")
    await worker.ready()
    await page.goto(f"{base_url(worker)}/console/login")
    await page.fill("input[name=name]", "li")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button.primary")
    await expect(page.locator(".top .who")).to_contain_text("li", timeout=WAIT_MS)
    await page.click("nav a[href='/console/cameras']")
    await expect(page.locator(f"#cameras tr[data-camera='{city.CAMERAS[0].id}']")).to_contain_text(city.INTEGRATOR)
    form = page.locator("#camera-add")
    await form.locator("input[name=id]").fill(OURS.id)
    await form.locator("select[name=integrator]").select_option("acme")
    await form.locator("input[name=place]").fill(OURS.place)
    await form.locator("input[name=zone]").fill("yuhang")
    await form.locator("input[name=lat]").fill(str(OURS.lat))
    await form.locator("input[name=lon]").fill(str(OURS.lon))
    await form.locator("select[name=direction]").select_option("NE")
    await form.locator("input[name=commissioned_on]").fill("2026-11-01")
    await form.locator("textarea[name=reason]").fill("new crossing camera")
    await shot(page, "10-cameras-register")
    await form.locator("button.primary").click()
    await expect(page.locator(".notice.ok")).to_have_text("摄像头已登记。", timeout=WAIT_MS)
    await expect(page.locator(f"#cameras tr[data-camera='{OURS.id}']")).to_contain_text("acme")
    await shot(page, "11-cameras-registered")
    assert await stack.count("SELECT count(*) FROM audit_log WHERE actor = 'operator:li' AND action = 'camera_added'") == 1
