"""Issue 10's rules on the real stack: the driver's window from delivery, one case per stay, and the
zone rules (first-offence warning notices, tickets confirmed by an officer). The officer's evidence
bounds on a review case are in test_console.py."""

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import aiohttp

from pipeline.config import Settings
from pipeline.demo import city
from schemas import topics

from .conftest import Stack, sleep_until, wait_for
from .console_helpers import ConsoleClient, add_operator, base_url, ticketed_case
from .test_sms_gateway import Provider, provider_env

CAMERA = city.CAMERAS[0]
LIANGZHU = city.CAMERAS[4]  # in the demo's first-offence zone


async def test_a_warning_delivered_after_it_was_accepted_gets_the_whole_window_from_delivery(stack: Stack):
    async with Provider(failures=0) as provider:
        env = provider_env(provider, PW_LATENESS_SECONDS="1")
        worker = stack.worker(**env)
        await worker.ready()
        await add_operator(stack, "li", "supervisor")
        plate = (await stack.plates_with_phone(1))[0]
        violation = stack.violation(plate, CAMERA)
        await stack.publish(violation)
        warned = await stack.wait_state(plate, "warned", timeout=30)
        first_deadline = warned["deadline_at"]
        assert first_deadline == warned["warned_at"] + timedelta(seconds=stack.window)
        sms_id = await stack.pool.fetchval("SELECT id FROM sms_messages WHERE case_id = $1", warned["id"])

        # The phone gets the warning 3 s or so after the gateway accepted it (its report has whole seconds).
        await sleep_until(warned["warned_at"] + timedelta(seconds=3))
        delivered_at = datetime.now(UTC).replace(microsecond=0)
        assert delivered_at > warned["warned_at"] + timedelta(seconds=2)
        async with aiohttp.ClientSession() as http:
            answer = await http.post(f"{base_url(worker)}/sms/provider-report",
                                     json={"id": str(sms_id), "status": "delivered", "at": delivered_at.isoformat()},
                                     headers={"X-Report-Token": env["PW_SMS_REPORT_TOKEN"]})
            assert answer.status == 200

        async def moved():
            case = await stack.case_of(plate)
            return case if case["warning_delivered_at"] is not None else None
        case = await wait_for(moved, 15, "the delivery to be applied")
        # Whole seconds: the phone may have had it at any moment of that second, so its end counts
        # (no later than the report's arrival).
        arrived = await stack.pool.fetchval("SELECT min(received_at) FROM sms_delivery_reports WHERE sms_id = $1", sms_id)
        counted = min(delivered_at + timedelta(seconds=1), arrived)
        real_deadline = counted + timedelta(seconds=stack.window)
        assert case["deadline_at"] == real_deadline, "the deadline moves to delivered + window"
        assert case["wake_at"] == real_deadline + timedelta(seconds=1)
        assert case["warned_at"] == warned["warned_at"] and case["warning_delivered_at"] == counted

        # Still there after the deadline counted from acceptance, but before the driver's own (less the 1 s of
        # tolerance): no ticket.
        await sleep_until(first_deadline + timedelta(seconds=0.2))
        too_soon = stack.observation(plate, CAMERA, at=first_deadline + timedelta(seconds=0.2))
        assert too_soon.taken_at < real_deadline - timedelta(seconds=1)
        await stack.publish(too_soon)
        await sleep_until(real_deadline + timedelta(seconds=0.2))
        assert (await stack.case_of(plate))["state"] == "warned"
        fresh = stack.observation(plate, CAMERA)
        await stack.publish(fresh)
        case = await stack.wait_state(plate, "ticketed", timeout=20)

        ticket = await stack.pool.fetchrow("SELECT * FROM tickets WHERE case_id = $1", case["id"])
        assert [e["event_id"] for e in ticket["evidence"]] == [violation.event_id, fresh.event_id]
        assert ticket["deadline_at"] == real_deadline

        client = ConsoleClient(base_url(worker))
        try:
            await client.login("li")
            _, html = await client.page(f"/console/cases/{case['id']}")
        finally:
            await client.close()
        tz = ZoneInfo(Settings().timezone)
        for dd, at in (("warned-at", case["warned_at"]), ("delivered-at", counted), ("deadline-at", real_deadline)):
            shown = html.split(f'id="{dd}">')[1].split("</dd>")[0]
            assert at.astimezone(tz).strftime("%H:%M:%S") in shown, (dd, shown)
        assert "自送达起算" in html


async def test_a_car_seen_again_at_the_place_after_its_ticket_is_evidence_for_that_case_and_gets_no_new_warning(
        stack: Stack):
    worker = stack.worker(PW_LATENESS_SECONDS="2")
    await worker.ready()
    stays, leaves = await stack.plates_with_phone(2)

    _, ticketed, _ = await ticketed_case(stack, stays, CAMERA)
    left_violation = stack.violation(leaves, CAMERA)
    await stack.publish(left_violation)
    first = await stack.wait_state(leaves, "warned", timeout=20)
    await stack.publish(stack.departure(leaves, CAMERA))
    await stack.wait_state(leaves, "moved", timeout=20)

    # The cameras keep reporting both plates at the place.
    again = stack.violation(stays, CAMERA)
    back = stack.violation(leaves, CAMERA)
    await stack.publish(again)
    await stack.publish(back)

    async def linked():
        return await stack.pool.fetchval("SELECT case_id FROM sightings WHERE event_id = $1", again.event_id)
    assert await wait_for(linked, 20, "the new detection linked to the ticketed case") == ticketed["id"]
    new_stay = await wait_for(lambda: _newer_case(stack, leaves, first["id"]), 20, "a new case after the car left")
    assert new_stay["state"] in ("detected", "warned"), "after a departure the car is on a new stay"

    assert await stack.count("SELECT count(*) FROM cases WHERE plate = $1", stays) == 1
    assert await stack.count("SELECT count(*) FROM sms_messages WHERE case_id = $1", ticketed["id"]) == 2, \
        "the warning and the ticket notice, nothing more"
    note = await stack.pool.fetchrow("SELECT * FROM audit_log WHERE case_id = $1 AND action = 'evidence'", ticketed["id"])
    assert note["detail"]["cause"] == again.event_id and "same stay" in note["detail"]["note"]
    assert await stack.count("SELECT count(*) FROM tickets") == 1


async def _newer_case(stack: Stack, plate: str, than):
    return await stack.pool.fetchrow("SELECT * FROM cases WHERE plate = $1 AND id <> $2", plate, than)


async def test_a_first_offence_gets_a_warning_notice_and_a_zone_that_confirms_tickets_waits_for_an_officer(
        stack: Stack):
    worker = stack.worker(PW_LATENESS_SECONDS="2", PW_REFERENCE_REFRESH_SECONDS="0.5")
    await worker.ready()
    await add_operator(stack, "li", "supervisor")
    first, repeat, confirmed, rejected = await stack.plates_with_phone(4)
    await _ticket_last_month(stack, repeat)

    client = ConsoleClient(base_url(worker))
    try:
        await client.login("li")
        _, html = await client.page("/console/rules")
        status, _, _ = await client.post("/console/rules/zones/yuhang/rules", {
            "first_offence_months": "", "new_camera_days": "", "confirm_tickets": "yes",
            "reason": "trial of officer confirmation"})
        assert status == 303
        await asyncio.sleep(1.5)  # the workers reload zones every 0.5 s

        plates = {first: LIANGZHU, repeat: LIANGZHU, confirmed: CAMERA, rejected: CAMERA}
        warned = {}
        for plate, camera in plates.items():
            await stack.publish(stack.violation(plate, camera))
        for plate in plates:
            warned[plate] = await stack.wait_state(plate, "warned", timeout=20)
        await sleep_until(max(c["deadline_at"] for c in warned.values()))
        for plate, camera in plates.items():
            await stack.publish(stack.observation(plate, camera))

        cautioned = await stack.wait_state(first, "cautioned", timeout=20)
        assert "first-offence warning notice" in cautioned["reason"]
        await stack.wait_state(repeat, "ticketed", timeout=20)
        pending = {plate: await stack.wait_state(plate, "to_confirm", timeout=20) for plate in (confirmed, rejected)}
        assert await stack.count("SELECT count(*) FROM tickets WHERE plate = ANY($1)", [first, confirmed, rejected]) == 0

        _, queue = await client.page("/console/confirm")
        assert all(f'data-case="{c["id"]}"' in queue for c in pending.values())
        assert queue.count('class="capture"') == 4, "both captures of each, side by side"
        status, _, location = await client.post(f"/console/cases/{pending[confirmed]['id']}/confirm",
                                                 {"decision": "confirm", "reason": "both captures checked",
                                                  "from": "queue"})
        assert status == 303 and location.startswith("/console/confirm")
        status, _, _ = await client.post(f"/console/cases/{pending[rejected]['id']}/confirm",
                                         {"decision": "reject", "reason": "plate misread"})
        assert status == 303
        status, html, _ = await client.post(f"/console/cases/{pending[rejected]['id']}/confirm",
                                            {"decision": "confirm", "reason": "changed my mind"})
        assert status == 409, "a rejected ticket never takes effect"
        _, live = await client.page("/console/")
        assert live.split('id="cautions-today"><b>')[1].startswith("1<")
    finally:
        await client.close()

    assert (await stack.case_of(confirmed))["state"] == "ticketed"
    rejected_case = await stack.case_of(rejected)
    assert rejected_case["state"] == "rejected" and "plate misread" in rejected_case["reason"]
    ticket = await stack.pool.fetchrow("SELECT * FROM tickets WHERE plate = $1", confirmed)
    issued = await stack.consume(topics.TICKETS, lambda ms: len(ms) >= 2)
    assert sorted(m["plate"] for m in issued) == sorted([repeat, confirmed])
    assert ticket["number"] in {m["ticket_number"] for m in issued}

    async def texts():
        lines = stack.handset_lines()
        return lines if len(lines) >= 7 else None  # 4 warnings, 1 warning notice, 2 tickets
    by_plate = {}
    for line in await wait_for(texts, 20, "the SMS"):
        by_plate.setdefault(next(p for p in plates if p in line["text"]), []).append(line["text"])
    assert "首次违停" in by_plate[first][1] and "不罚款" in by_plate[first][1]
    assert ticket["number"] in by_plate[confirmed][1]
    assert len(by_plate[rejected]) == 1, "no ticket notice for a rejected ticket"
    assert [r["action"] for r in await stack.pool.fetch(
        "SELECT action FROM audit_log WHERE actor = 'operator:li' ORDER BY id")] == \
        ["zone_rules", "confirm_ticket", "reject_ticket"]


async def _ticket_last_month(stack: Stack, plate: str) -> None:
    """A ticket for ``plate`` a month ago (a closed case with its ticket, as the pipeline leaves them)."""
    month_ago = datetime.now(UTC) - timedelta(days=30)
    cam = LIANGZHU
    violation = {"event_id": f"old-{plate}", "camera_id": cam.id, "taken_at": month_ago.isoformat(), "lat": cam.lat,
                 "lon": cam.lon, "place": cam.place}
    await stack.pool.execute(
        """WITH c AS (
             INSERT INTO cases (id, plate, state, zone, place, camera_id, lat, lon, violation, window_seconds,
                                detected_at, opened_at, closed_at, reason, updated_at)
             VALUES (gen_random_uuid(), $1, 'ticketed', $2, $3, $4, $5, $6, $7, 600, $8, $8, $8, 'still at the place', $8)
             RETURNING id)
           INSERT INTO tickets (number, case_id, plate, issued_at, deadline_at, place, zone, lat, lon, evidence)
           SELECT 'YH-OLD-1', id, $1, $8, $8, $3, $2, $5, $6, '[]' FROM c""",
        plate, cam.zone, cam.place, cam.id, cam.lat, cam.lon, violation, month_ago)


async def test_a_camera_in_its_first_days_gives_a_warning_notice_by_its_registered_commissioning_date(stack: Stack):
    """The new-camera rule reads the camera registry: the same zone, the same car staying, a ticket from a
    camera commissioned long ago and a warning notice from one commissioned last week."""
    from pipeline.cameras import registry

    await stack.pool.execute("UPDATE zones SET new_camera_days = 30 WHERE id = 'yuhang'")
    new = city.Camera("cam-new-crossing", "文一西路新路口", CAMERA.lat + 0.01, CAMERA.lon, zone="yuhang")
    async with stack.pool.acquire() as conn:
        await registry.add(conn, registry.camera({
            "id": new.id, "integrator": city.INTEGRATOR, "lat": new.lat, "lon": new.lon, "place": new.place,
            "zone": new.zone, "commissioned_on": (datetime.now(UTC) - timedelta(days=7)).date().isoformat()}),
            "test")
    worker = stack.worker(PW_LATENESS_SECONDS="1")
    await worker.ready()
    old_camera_plate, new_camera_plate = await stack.plates_with_phone(2)
    cameras = {old_camera_plate: CAMERA, new_camera_plate: new}
    for plate, camera in cameras.items():
        await stack.publish(stack.violation(plate, camera))
    warned = [await stack.wait_state(plate, "warned", timeout=20) for plate in cameras]
    await sleep_until(max(c["deadline_at"] for c in warned))
    for plate, camera in cameras.items():
        await stack.publish(stack.observation(plate, camera))

    await stack.wait_state(old_camera_plate, "ticketed", timeout=20)
    cautioned = await stack.wait_state(new_camera_plate, "cautioned", timeout=20)
    assert "cam-new-crossing" in cautioned["reason"] and "first 30 days" in cautioned["reason"]
    assert await stack.count("SELECT count(*) FROM tickets WHERE plate = $1", new_camera_plate) == 0
