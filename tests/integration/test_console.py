"""The operators' console on a real worker (Kafka, PostgreSQL): login, roles, CSRF, search, the case
timeline, operator actions with their audit entries and Kafka outputs, /metrics, /healthz and /readyz,
and the command-line view."""

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from html import unescape
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import aiohttp
from argon2 import PasswordHasher

from bench.console_size import Explaining
from pipeline.console import auth, queries
from pipeline.console.listing import encode_cursor
from pipeline.demo import city
from schemas import topics

from tests.local_server import TcpProxy
from tests.privacy import masked_phone_in

from .conftest import ROOT, Stack, sleep_until, wait_for
from .console_helpers import (
    PASSWORD,
    ConsoleClient,
    add_operator,
    base_url,
    phone_of,
    plates_without_phone,
    ticketed_case,
    warned_case,
)


async def console_for(stack: Stack, **worker_env):
    """A worker and a console client; 3 s of lateness so that a capture published at the deadline
    decides the case before it goes to rechecking, even on a busy machine."""
    worker = stack.worker(**{"PW_LATENESS_SECONDS": "3", **worker_env})
    await worker.ready()
    await add_operator(stack, "li", "supervisor")
    await add_operator(stack, "wang", "viewer")
    return worker, ConsoleClient(base_url(worker))


async def audit_rows(stack: Stack, action: str):
    return await stack.pool.fetch("SELECT * FROM audit_log WHERE action = $1 ORDER BY id", action)


# ── login, roles, CSRF ──────────────────────────────────────────────────────────────────────


async def test_every_console_page_and_api_needs_a_login_and_the_cookie_is_httponly_and_strict(stack: Stack):
    worker, client = await console_for(stack)
    try:
        for path in ("/console/", "/console/cases?plate=浙A", "/console/audit", "/console/rules",
                     f"/console/cases/{'0' * 8}-0000-0000-0000-{'0' * 12}"):
            status, _ = await client.page(path)
            assert status == 303, path
        for path in ("/console/api/overview", "/console/live/stream"):
            status, _ = await client.page(path)
            assert status == 401, path
        status, _, _ = await client.post("/console/rules/whitelist", {"plate": "浙A12345", "reason": "police car"})
        assert status == 401

        wrong = await client.login("li", "not the password")
        assert wrong.status == 401 and "pw_session" not in wrong.cookies

        ok = await client.login("li")
        assert ok.status == 303
        cookie = ok.cookies["pw_session"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/console"
        status, html = await client.page("/console/")
        assert status == 200 and "li" in html
        status, body = await client.page("/console/api/overview")
        assert status == 200 and "open_cases" in json.loads(body)

        status, _, location = await client.post("/console/logout", {})
        assert status == 303 and location == "/console/login"
        assert await stack.count("SELECT count(*) FROM operator_sessions") == 0
        status, _ = await client.page("/console/")
        assert status == 303
    finally:
        await client.close()


async def test_a_name_with_too_many_failed_logins_is_refused_for_a_while_and_others_are_not(stack: Stack):
    worker, client = await console_for(stack, PW_CONSOLE_LOGIN_MAX_FAILURES="3", PW_CONSOLE_LOGIN_LOCK_MINUTES="15")
    other = ConsoleClient(base_url(worker))
    try:
        for _ in range(3):
            assert (await client.login("li", "guess")).status == 401
        refused = await client.login("li")  # even the right password, while the name is locked
        assert refused.status == 429
        assert 14 * 60 <= int(refused.headers["Retry-After"]) <= 15 * 60
        status, html = await client.page("/console/")
        assert status == 303, "no session was started"
        assert (await other.login("wang")).status == 303, "another name is not locked"
        assert (await other.login("nobody", "guess")).status == 401

        async with stack.pool.acquire() as conn:  # an administrator resets the password
            await auth.add_operator(conn, "li", "supervisor", PASSWORD, replace=True)
        assert (await client.login("li")).status == 303
    finally:
        await client.close()
        await other.close()


async def test_failed_logins_from_elsewhere_never_lock_an_operator_out_and_concurrent_guesses_stop_at_the_limit(
        stack: Stack):
    worker, operator = await console_for(stack, PW_CONSOLE_LOGIN_MAX_FAILURES="3", PW_CONSOLE_LOGIN_CONCURRENCY="10",
                                         PW_CONSOLE_LOGIN_PER_ADDRESS_PER_MINUTE="100")
    stranger = ConsoleClient(base_url(worker), address="127.0.0.2")
    try:
        guesses = await asyncio.gather(*(stranger.login("li", f"guess {i}") for i in range(10)))
        assert sorted(r.status for r in guesses) == [401] * 3 + [429] * 7, "at most 3 guesses, even all at once"
        assert (await stranger.login("li")).status == 429, "from that address, even the right password waits"
        assert (await operator.login("li")).status == 303, "the operator's own address is not locked out"
    finally:
        await stranger.close()
        await operator.close()


async def test_logins_from_one_address_beyond_its_limit_are_refused_before_any_password_check(stack: Stack):
    worker, operator = await console_for(stack, PW_CONSOLE_LOGIN_PER_ADDRESS_PER_MINUTE="2")
    stranger = ConsoleClient(base_url(worker), address="127.0.0.3")
    try:
        answers = [await stranger.login(f"nobody{i}", "guess") for i in range(5)]  # a new name each time
        assert [r.status for r in answers] == [401, 401, 429, 429, 429]
        assert 1 <= int(answers[-1].headers["Retry-After"]) <= 30
        assert await stack.count("SELECT count(*) FROM login_failures") == 2, "no database work for the refused"
        assert (await operator.login("li")).status == 303, "another address has its own limit"
        lines = set((await read_metrics(worker)).splitlines())
        assert 'parkwarden_console_logins_total{outcome="address_limited"} 3.0' in lines
        assert 'parkwarden_console_logins_total{outcome="wrong_password"} 2.0' in lines
    finally:
        await stranger.close()
        await operator.close()


async def test_bad_logins_are_checked_off_the_event_loop_and_those_beyond_the_bound_are_refused_at_once(stack: Stack):
    worker, _ = await console_for(stack, PW_CONSOLE_LOGIN_CONCURRENCY="2", PW_CONSOLE_LOGIN_MAX_FAILURES="1000",
                                  PW_CONSOLE_LOGIN_PER_ADDRESS_PER_MINUTE="1000")
    slow = await asyncio.to_thread(PasswordHasher(time_cost=12).hash, PASSWORD)  # 4 times the default work
    await stack.pool.execute("UPDATE operators SET password_hash = $1 WHERE name = 'li'", slow)
    base = base_url(worker)
    answered: list = []
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz") as r:  # its PostgreSQL and Kafka clients are ready
            assert r.status == 200

        async def guess(i: int) -> None:
            async with http.post(f"{base}/console/login", data={"name": "li", "password": f"guess {i}"},
                                 allow_redirects=False) as r:
                await r.read()
                answered.append(r.status)

        logins = [asyncio.create_task(guess(i)) for i in range(30)]
        try:
            async def beyond_the_bound_answered():
                return len(answered) >= 28
            await wait_for(beyond_the_bound_answered, 60, "the logins beyond the bound to be answered at once")
            async with http.get(f"{base}/healthz") as r:  # while two passwords are being checked
                assert r.status == 200
                answered.append("healthz")
            await asyncio.gather(*logins)
        finally:
            for task in logins:
                task.cancel()
    assert sorted(map(str, answered)) == ["401"] * 2 + ["503"] * 28 + ["healthz"]
    assert answered.index("healthz") < answered.index(401), "the worker answered while it checked passwords"
    lines = set((await read_metrics(worker)).splitlines())
    assert 'parkwarden_console_logins_total{outcome="busy"} 28.0' in lines
    assert 'parkwarden_console_logins_total{outcome="wrong_password"} 2.0' in lines


async def read_metrics(worker) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base_url(worker)}/metrics") as r:
            assert r.status == 200
            return await r.text()


async def test_a_viewer_cannot_act_and_a_post_without_the_csrf_token_is_refused(stack: Stack):
    worker, supervisor = await console_for(stack)
    viewer = ConsoleClient(base_url(worker))
    try:
        await stack.all_car_parks_free()
        plate = (await stack.plates_with_phone(1))[0]
        _, case, ticket = await ticketed_case(stack, plate)
        void = f"/console/tickets/{ticket['number']}/void"

        await viewer.login("wang")
        status, html = await viewer.page(f"/console/cases/{case['id']}")
        assert status == 200 and 'id="void-ticket"' not in html
        status, _, _ = await viewer.post(void, {"reason": "I should not be able to"})
        assert status == 403

        await supervisor.login("li")
        status, html = await supervisor.page(f"/console/cases/{case['id']}")
        assert 'id="void-ticket"' in html
        status, _, _ = await supervisor.post(void, {"reason": "driver had a permit"}, csrf=False)
        assert status == 403
        status, _, _ = await supervisor.post(void, {"reason": "driver had a permit", "csrf": "forged"}, csrf=False)
        assert status == 403
        status, _, _ = await supervisor.post(void, {"reason": "driver had a permit"},
                                             headers={"Origin": "http://evil.example"})
        assert status == 403
        assert (await stack.pool.fetchrow("SELECT voided_at FROM tickets WHERE number = $1", ticket["number"]))[0] is None
        assert await audit_rows(stack, "void_ticket") == []

        status, html, _ = await supervisor.post(void, {"reason": "  "})
        assert status == 409 and "至少 3 个字" in html

        # First a confirmation step that says the owner will be told; nothing is voided yet.
        status, html, _ = await supervisor.post(void, {"reason": "driver had a disabled permit"})
        assert status == 200 and 'id="confirm-void"' in html and "车主将收到一条短信" in html
        assert (await stack.pool.fetchrow("SELECT voided_at FROM tickets WHERE number = $1", ticket["number"]))[0] is None

        status, _, location = await supervisor.post(void, {"reason": "driver had a disabled permit", "confirmed": "yes"})
        assert status == 303 and location.startswith(f"/console/cases/{case['id']}")
        voided = await stack.pool.fetchrow("SELECT voided_at, void_reason FROM tickets WHERE number = $1", ticket["number"])
        assert voided["voided_at"] is not None and voided["void_reason"] == "driver had a disabled permit"
        [entry] = await audit_rows(stack, "void_ticket")
        assert entry["actor"] == "operator:li" and entry["case_id"] == case["id"]
        assert entry["detail"]["reason"] == "driver had a disabled permit"

        status, html = await supervisor.page(location)
        assert "告知单已作废，已短信通知车主告知单撤销" in html and "driver had a disabled permit" in html
        assert "operator:li" in html and 'data-voided="yes"' in html
        status, _, _ = await supervisor.post(void, {"reason": "again", "confirmed": "yes"})
        assert status == 409

        # The owner gets one SMS saying the notice is withdrawn, and only one.
        async def sent():
            rows = await stack.pool.fetch("SELECT status, text FROM sms_messages WHERE case_id = $1 "
                                          "AND kind = 'ticket_withdrawn'", case["id"])
            return rows if rows and rows[0]["status"] not in ("pending", "sending") else None

        [withdrawal] = await wait_for(sent, 20, "the withdrawal SMS to leave")
        assert ticket["number"] in withdrawal["text"] and "已撤销" in withdrawal["text"]
        texts = [line for line in stack.sms_file.read_text().splitlines() if ticket["number"] in line and "已撤销" in line]
        assert len(texts) == 1, "one withdrawal SMS"
        status, html = await supervisor.page(f"/console/cases?plate={plate}")
        assert 'data-voided="yes"' in html, "the search results say voided, not ticketed"

        # Exports: CSV with a BOM for Excel, each one audited; the shift summary counts by zone.
        async def csv_of(path: str) -> list[str]:
            async with supervisor.http.get(f"{supervisor.base}{path}") as r:
                assert r.status == 200 and r.content_type == "text/csv"
                assert "attachment" in r.headers["Content-Disposition"]
                body = await r.read()
            assert body.startswith("\ufeff".encode()), "a BOM, so that Excel reads UTF-8"
            return body.decode("utf-8-sig").splitlines()

        cases_csv = await csv_of(f"/console/cases?plate={plate}&format=csv")
        assert cases_csv[0].startswith("plate,state,ticket") and f"{plate},voided,{ticket['number']}" in cases_csv[1]
        audit_csv = await csv_of("/console/audit?format=csv")
        assert any("void_ticket" in line and "driver had a disabled permit" in line for line in audit_csv)
        status, html = await supervisor.page("/console/summary")
        assert status == 200 and 'data-zone="yuhang"' in html
        summary_csv = await csv_of("/console/summary?format=csv")
        assert summary_csv[0] == "zone,warnings,moved,tickets,cautions,voids,appeals_decided"
        assert "yuhang,1,0,1,0,1,0" in summary_csv
        exports = await audit_rows(stack, "export")
        assert [e["detail"]["what"] for e in exports] == ["cases", "audit", "summary"]
        assert all(e["actor"] == "operator:li" for e in exports)
        phone = await phone_of(stack, plate)
        assert not any(phone in text for text in (*cases_csv, *audit_csv)), "no phone in an export"
    finally:
        await viewer.close()
        await supervisor.close()


# ── search and the case page ────────────────────────────────────────────────────────────────


async def test_cases_are_found_by_plate_ticket_camera_zone_and_time_and_the_page_shows_the_whole_timeline(stack: Stack):
    worker, client = await console_for(stack)
    try:
        await stack.all_car_parks_free()
        ticketed_plate, warned_plate = await stack.plates_with_phone(2)
        await client.login("li")

        async def found(query: str) -> set[str]:
            status, html = await client.page(f"/console/cases?{query}")
            assert status == 200
            return {p for p in (ticketed_plate, warned_plate) if f'data-plate="{p}"' in html}

        violation, case, ticket = await ticketed_case(stack, ticketed_plate, city.CAMERAS[0])
        _, other = await warned_case(stack, warned_plate, city.CAMERAS[3])
        assert await found("state=warned") == {warned_plate}  # first, while its window runs

        assert await found(f"plate={ticketed_plate[:5]}") >= {ticketed_plate}
        assert await found(f"plate={ticketed_plate}") == {ticketed_plate}
        assert await found(f"ticket={ticket['number']}") == {ticketed_plate}
        assert await found(f"camera={city.CAMERAS[3].id}") == {warned_plate}
        assert await found("zone=yuhang") == {ticketed_plate, warned_plate}
        assert await found("zone=hospital") == set()
        local = datetime.now(UTC).astimezone(ZoneInfo(stack.settings.timezone))
        hour_ago, hour_ahead = (local - timedelta(hours=1)), (local + timedelta(hours=1))
        assert await found(f"since={hour_ago:%Y-%m-%dT%H:%M}&until={hour_ahead:%Y-%m-%dT%H:%M}") == \
            {ticketed_plate, warned_plate}
        assert await found(f"since={hour_ahead:%Y-%m-%dT%H:%M}") == set()
        status, _ = await client.page(f"/console/cases?q={ticket['number']}")
        assert status == 303

        status, html = await client.page(f"/console/cases/{case['id']}")
        assert status == 200
        phone = await phone_of(stack, ticketed_plate)
        masked_phone_in(html, phone, "the case page")
        assert violation.evidence.image_url in html
        assert ticket["number"] in html
        for words in ("违停抓拍", "车辆抓拍", "驶离提醒", "告知单通知", "已发现 → 已告知", "已告知 → 已开单",
                      "截止时车仍在原地"):  # the machine's reason, in the console's Chinese
            assert words in html, words
        assert "still at the place at the deadline" not in html
        assert 'id="close-case"' not in html, "a ticketed case is not closed, its ticket is voided"
    finally:
        await client.close()


# ── operator actions ────────────────────────────────────────────────────────────────────────


async def test_closing_a_case_cancels_it_and_publishes_case_closed(stack: Stack):
    worker, client = await console_for(stack)
    try:
        plate = (await stack.plates_with_phone(1))[0]
        await client.login("li")
        _, case = await warned_case(stack, plate)
        status, _, location = await client.post(f"/console/cases/{case['id']}/close", {"reason": "plate misread"})
        assert status == 303
        closed = await stack.case_of(plate)
        assert closed["state"] == "cancelled" and closed["reason"] == "plate misread"
        events = await stack.consume(topics.CASE_EVENTS, lambda ms: any(m["type"] == "CaseClosed" for m in ms))
        assert [(m["outcome"], m["reason"]) for m in events if m["type"] == "CaseClosed"] == \
            [("cancelled", "plate misread")]
        [entry] = await audit_rows(stack, "close_case")
        assert entry["actor"] == "operator:li" and entry["detail"]["from"] == "warned"
        await sleep_until(case["deadline_at"] + timedelta(seconds=4))  # past the old deadline and its lateness:
        # the pipeline leaves a cancelled case alone
        assert (await stack.case_of(plate))["state"] == "cancelled"
        assert await stack.count("SELECT count(*) FROM tickets") == 0
    finally:
        await client.close()


async def test_a_review_case_is_ticketed_only_with_a_fresh_capture_or_warned_again_once_a_phone_is_known(stack: Stack):
    # A fresh capture counts from the deadline (less 1 s of tolerance) to 8 s after it.
    worker, client = await console_for(stack, PW_CAPTURE_BOUND_SECONDS="8")
    try:
        first, second = await plates_without_phone(stack, 2)
        camera = city.CAMERAS[1]
        seen = datetime.now(UTC) - timedelta(seconds=30)
        await stack.publish(stack.violation(first, camera, at=seen))
        review = await stack.wait_state(first, "review")
        await client.login("li")
        page = f"/console/cases/{review['id']}"

        status, html = await client.page(page)
        assert 'id="resolve-review"' in html and "暂无可用的新抓拍" in html
        status, html, _ = await client.post(f"{page}/review", {"resolution": "ticket", "evidence": "nothing",
                                                               "reason": "officer on site"})
        assert status == 409 and await stack.count("SELECT count(*) FROM tickets") == 0

        status, _, _ = await client.post(f"{page}/review", {"resolution": "request_recheck", "reason": "confirm it"})
        assert status == 303
        commands = await stack.consume(topics.CAMERA_COMMANDS, lambda ms: len(ms) >= 1)
        assert commands[0]["camera_id"] == camera.id and commands[0]["plate"] == first

        too_early = stack.observation(first, camera, at=seen + timedelta(seconds=1))
        fresh = stack.observation(first, camera, at=seen + timedelta(seconds=stack.window + 1))
        too_late = stack.observation(first, camera, at=seen + timedelta(seconds=stack.window + 8 + 2))
        for capture in (too_early, fresh, too_late):
            await stack.publish(capture)
        await wait_for(lambda: _offered(client, page, fresh.event_id), what="the fresh capture offered as evidence")
        status, html = await client.page(page)
        offered = html.split('name="evidence"')[1].split("</select>")[0]
        assert too_early.event_id not in offered and too_late.event_id not in offered

        status, html, _ = await client.post(f"{page}/review", {"resolution": "ticket", "evidence": too_early.event_id,
                                                               "reason": "officer on site"})
        assert status == 409 and "抓拍早于驶离期限" in html
        status, html, _ = await client.post(f"{page}/review", {"resolution": "ticket", "evidence": too_late.event_id,
                                                               "reason": "officer on site"})
        assert status == 409 and "抓拍距驶离期限过久" in html, "not any capture one window after the violation"
        status, _, _ = await client.post(f"{page}/review", {"resolution": "ticket", "evidence": fresh.event_id,
                                                            "reason": "officer on site"})
        assert status == 303
        ticket = await stack.pool.fetchrow("SELECT * FROM tickets WHERE case_id = $1", review["id"])
        assert [e["event_id"] for e in ticket["evidence"]] == [review["violation"]["event_id"], fresh.event_id]
        assert (await stack.case_of(first))["state"] == "ticketed"
        issued = await stack.consume(topics.TICKETS, lambda ms: len(ms) >= 1)
        assert [m["ticket_number"] for m in issued] == [ticket["number"]]
        assert await stack.count("SELECT count(*) FROM sms_messages") == 0, "no phone, no SMS"

        # The second car: no phone at first; once the registry has one, the officer warns again.
        await stack.publish(stack.violation(second, camera))
        other = await stack.wait_state(second, "review")
        status, html, _ = await client.post(f"/console/cases/{other['id']}/review",
                                            {"resolution": "warn_again", "reason": "phone now on record"})
        assert status == 409 and "仍无登记手机号" in html
        await stack.pool.execute(
            """INSERT INTO contact_registry (owner_id, phone)
               SELECT owner_id, '13900001234' FROM plate_registry WHERE plate = $1""", second)
        status, _, location = await client.post(f"/console/cases/{other['id']}/review",
                                                {"resolution": "warn_again", "reason": "phone now on record"})
        assert status == 303
        warned = await stack.wait_state(second, "warned")
        assert warned["id"] != other["id"] and location.startswith(f"/console/cases/{warned['id']}")
        assert (await stack.pool.fetchrow("SELECT state FROM cases WHERE id = $1", other["id"]))["state"] == "cancelled"
        assert len(stack.handset_lines()) == 1
    finally:
        await client.close()


async def _offered(client: ConsoleClient, page: str, event_id: str) -> bool:
    _, html = await client.page(page)
    return f'value="{city.INTEGRATOR}/{event_id}"' in html


async def test_whitelisted_plates_and_exempt_zones_are_not_pursued(stack: Stack):
    worker, client = await console_for(stack, PW_REFERENCE_REFRESH_SECONDS="0.5")
    try:
        whitelisted, other = await stack.plates_with_phone(2)
        await client.login("li")
        status, _, _ = await client.post("/console/rules/whitelist", {"plate": whitelisted, "reason": "fire brigade car"})
        assert status == 303
        status, html, _ = await client.post("/console/rules/whitelist", {"plate": "XX1", "reason": "nonsense"})
        assert status == 409
        status, _, _ = await client.post("/console/rules/zones/hospital/exempt", {"reason": "ambulance drill today"})
        assert status == 303
        await asyncio.sleep(3)  # the worker re-reads zones and the whitelist every 0.5 s here

        await stack.publish(stack.violation(whitelisted))
        case = await stack.wait_state(whitelisted, "exempt")
        assert "fire brigade car" in case["reason"]
        hospital = city.Camera("cam-hospital-test", "医院急救通道", 30.2801, 120.0052, zone="hospital")
        await stack.register_camera(hospital)
        await stack.publish(stack.violation(other, hospital))
        case = await stack.wait_state(other, "exempt")
        assert "ambulance drill today" in case["reason"]

        status, _, _ = await client.post("/console/rules/whitelist/remove", {"plate": whitelisted, "reason": "drill over"})
        assert status == 303
        status, _, _ = await client.post("/console/rules/zones/hospital/lift", {"reason": "drill over"})
        assert status == 303
        actions = [r["action"] for r in await stack.pool.fetch(
            "SELECT action FROM audit_log WHERE actor = 'operator:li' ORDER BY id")]
        assert actions == ["whitelist_add", "zone_exempt", "whitelist_remove", "zone_exemption_lifted"]
        status, html = await client.page("/console/audit")
        assert html.count("operator:li") == 4 and "ambulance drill today" in html
    finally:
        await client.close()


# ── live view, metrics, health ──────────────────────────────────────────────────────────────


async def test_the_live_stream_sends_the_open_cases_as_they_change(stack: Stack):
    worker, client = await console_for(stack)
    try:
        await client.login("wang")
        async with client.http.get(f"{client.base}/console/live/stream") as stream:
            assert stream.status == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
            plate = (await stack.plates_with_phone(1))[0]
            await stack.publish(stack.violation(plate))

            async def next_update() -> dict:
                while True:
                    line = (await stream.content.readline()).decode()
                    if line.startswith("data: "):
                        return json.loads(line[6:])

            async def shows_plate():
                update = await asyncio.wait_for(next_update(), 10)
                return plate in update["sections"].get("open-cases", "")
            await wait_for(shows_plate, 30, "the live stream to show the new open case")
    finally:
        await client.close()


async def test_metrics_show_events_lag_per_partition_deadlines_sms_dead_letters_and_open_cases(stack: Stack):
    worker = stack.worker(PW_WINDOW_SECONDS="300")  # the case stays warned while we look
    await worker.ready()
    plate = (await stack.plates_with_phone(1))[0]
    await stack.publish(stack.violation(plate))
    await stack.wait_state(plate, "warned", timeout=20)
    await stack.publish_raw(b"{not json")
    await wait_for(lambda: stack.count("SELECT count(*) FROM dead_letters"), what="the dead letter")

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base_url(worker)}/metrics") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            text = await r.text()
    camera_events = stack.topic(topics.CAMERA_EVENTS)
    lines = set(text.splitlines())
    assert f'parkwarden_events_in_total{{topic="{camera_events}"}} 2.0' in lines
    for partition in range(stack.settings.topic_partitions):
        assert any(line.startswith(f'parkwarden_consumer_lag{{partition="{partition}",topic="{camera_events}"}}')
                   for line in lines), partition
    assert 'parkwarden_open_cases{state="warned"} 1.0' in lines
    assert 'parkwarden_sms_messages{kind="warning",status="accepted"} 1.0' in lines
    assert "parkwarden_dead_letters_today 1.0" in lines
    assert "parkwarden_deadline_lag_seconds 0.0" in lines
    assert "parkwarden_database_up 1.0" in lines and "parkwarden_kafka_up 1.0" in lines
    assert any(line.startswith('parkwarden_stage_seconds_count{stage="decide"}') for line in lines)
    assert any(line.startswith('parkwarden_recent_latency_seconds{quantile="0.5",stage="capture_to_warning"}')
               for line in lines)


async def test_what_the_live_page_and_metrics_read_every_second_never_reads_a_whole_table(stack: Stack):
    from pipeline.cases import watermarks
    from pipeline.console import queries

    now, tz = datetime.now(UTC), ZoneInfo(stack.settings.timezone)
    async with stack.pool.acquire() as conn:
        await conn.execute("SET enable_seqscan = off")  # a whole-table read remains only where no index serves
        try:
            explaining = Explaining(conn)
            counts = await queries.counts(explaining, now, tz)
            drive_away = await queries.drive_away_rate(explaining, now - timedelta(hours=24), tz)
            await queries.overview(explaining, now, counts, drive_away)
            await queries.recent_latency(explaining, now, timedelta(minutes=5))
            await watermarks.lag(explaining, stack.topic(topics.CAMERA_EVENTS))
        finally:
            await conn.execute("RESET enable_seqscan")
    assert len(explaining.plans) >= 9
    whole_table = [(sql.split()[:12], plan) for sql, plan in explaining.plans
                   for table in ("cases", "sightings", "sms_messages", "tickets", "dead_letters", "sms_delivery_reports")
                   if f"Seq Scan on {table} " in plan]
    assert whole_table == []


async def test_metrics_answer_only_allowed_addresses_or_the_token_and_faust_own_views_are_not_served(stack: Stack):
    worker = stack.worker(PW_METRICS_ALLOW="127.0.0.2", PW_METRICS_TOKEN="a-scrape-token")
    await worker.ready()
    base = base_url(worker)
    async with aiohttp.ClientSession() as here, aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as allowed:
        async def status(http: aiohttp.ClientSession, path: str, **headers) -> int:
            async with http.get(f"{base}{path}", headers=headers, allow_redirects=False) as r:
                await r.read()
                return r.status

        assert await status(here, "/metrics") == 403
        assert await status(here, "/metrics", Authorization="Bearer not-the-token") == 403
        assert await status(here, "/metrics", Authorization="Bearer a-scrape-token") == 200
        assert await status(allowed, "/metrics") == 200
        for path in ("/router", "/router/", "/table", "/table/", "/graph", "/graph/", "/assignment/", "/performance/"):
            assert await status(here, path) == 404, path
        assert await status(here, "/healthz") == 200


async def test_readyz_fails_while_postgresql_is_unreachable_and_recovers(stack: Stack):
    pg_port = urlsplit(stack.db_url).port
    proxy = TcpProxy("127.0.0.1", pg_port)
    await proxy.start()
    try:
        worker = stack.worker(PW_DATABASE_URL=stack.db_url.replace(f":{pg_port}/", f":{proxy.port}/"))
        await worker.ready()
        async with aiohttp.ClientSession() as http:
            async def probe(path):
                async with http.get(f"{base_url(worker)}{path}") as r:
                    return r.status, await r.json()

            status, body = await probe("/readyz")
            assert status == 200 and body["postgres"]["ok"] and body["kafka"]["ok"]
            await proxy.stop()
            status, body = await probe("/readyz")
            assert status == 503 and not body["postgres"]["ok"] and body["kafka"]["ok"]
            status, body = await probe("/healthz")
            assert status == 200 and not body["postgres"]["ok"], "liveness reports PostgreSQL but does not fail on it"
            await proxy.start()

            async def ready_again():
                return (await probe("/readyz"))[0] == 200
            await wait_for(ready_again, 30, "readyz to recover with PostgreSQL")
    finally:
        await proxy.stop()


# ── the command line ────────────────────────────────────────────────────────────────────────


async def test_status_and_case_on_the_command_line_with_the_phone_masked(stack: Stack):
    worker = stack.worker(PW_LATENESS_SECONDS="3")
    await worker.ready()
    await stack.all_car_parks_free()
    plate = (await stack.plates_with_phone(1))[0]
    _, case, ticket = await ticketed_case(stack, plate)
    env = {**os.environ, "PW_DATABASE_URL": stack.db_url, "COLUMNS": "160"}

    def parkwarden(*args) -> str:
        done = subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    status = parkwarden("status")
    assert "tickets issued today" in status and "outbox backlog" in status and "accepted" in status
    phone = await phone_of(stack, plate)
    for key in (plate, ticket["number"]):
        timeline = parkwarden("case", key)
        assert ticket["number"] in timeline and "ticketed" in timeline
        masked_phone_in(timeline, phone, "`parkwarden case`")


async def test_zone_exempt_at_some_hours_is_pursued_outside_them(stack: Stack):
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    hour = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")).hour
    worker, client = await console_for(stack, PW_REFERENCE_REFRESH_SECONDS="0.5")
    try:
        exempt_now, pursued_now = await stack.plates_with_phone(2)
        await client.login("li")
        status, _, _ = await client.post("/console/rules/zones/hospital/exempt",
                                         {"reason": "night deliveries", "from_hour": "25", "until_hour": "3"})
        assert status == 409, "hours outside 0-24 are refused"
        status, _, _ = await client.post("/console/rules/zones/hospital/exempt", {
            "reason": "ambulances at this hour", "from_hour": str(hour), "until_hour": str(hour + 1)})
        assert status == 303
        status, _, _ = await client.post("/console/rules/zones/yuhang/exempt", {
            "reason": "night only", "from_hour": str((hour + 1) % 24), "until_hour": str((hour + 2) % 24 or 24)})
        assert status == 303
        await asyncio.sleep(3)

        hospital = city.Camera("cam-hospital-test", "医院急救通道", 30.2801, 120.0052, zone="hospital")
        await stack.register_camera(hospital)
        await stack.publish(stack.violation(exempt_now, hospital))
        case = await stack.wait_state(exempt_now, "exempt")
        assert "ambulances at this hour" in case["reason"]
        await stack.publish(stack.violation(pursued_now, city.CAMERAS[0]))
        await stack.wait_state(pursued_now, "warned", timeout=20)
        _, html = await client.page("/console/rules")
        assert f"{hour:02d}–{hour + 1:02d}" in html
    finally:
        await client.close()


async def test_a_whitelist_entry_and_a_zone_exemption_stop_applying_at_their_end_without_anyone_acting(stack: Stack):
    worker, client = await console_for(stack)
    try:
        await stack.all_car_parks_free()
        plate, other = await stack.plates_with_phone(2)
        await client.login("li")
        await client.page("/console/rules")
        tz = ZoneInfo(stack.settings.timezone)
        ends = datetime.now(UTC) + timedelta(seconds=8)
        status, _, _ = await client.post("/console/rules/whitelist", {
            "plate": plate, "reason": "ambulance on loan", "valid_until": f"{ends.astimezone(tz):%Y-%m-%dT%H:%M:%S}"})
        assert status == 303
        status, html = await client.page("/console/rules")
        assert 'data-status="expiring"' in html and "operator:li" in html
        status, html, _ = await client.post("/console/rules/whitelist", {
            "plate": other, "reason": "backwards", "valid_from": "2026-12-07T10:00", "valid_until": "2026-12-07T09:00"})
        assert status == 409 and "结束须晚于开始" in html

        await asyncio.sleep(2.5)  # the workers re-read the rules every 2 s
        await stack.publish(stack.violation(plate, city.CAMERAS[0]))
        assert (await stack.wait_state(plate, "exempt"))["state"] == "exempt"

        await sleep_until(ends + timedelta(seconds=2.5))
        await stack.publish(stack.violation(plate, city.CAMERAS[4]))  # elsewhere: a new case
        async def warned():
            return await stack.count("SELECT count(*) FROM cases WHERE plate = $1 AND state = 'warned'", plate) or None
        await wait_for(warned, 20, "the plate's next violation to be pursued once its whitelist entry ended")
        status, html = await client.page("/console/rules")
        assert 'data-status="expired"' in html
    finally:
        await client.close()


async def test_a_zone_exemption_with_an_end_stops_applying_at_its_end_without_anyone_acting(stack: Stack):
    worker, client = await console_for(stack)
    try:
        await stack.all_car_parks_free()
        exempt, pursued = await stack.plates_with_phone(2)
        hospital = city.Camera("cam-hospital-test", "医院急救通道", 30.2801, 120.0052, zone="hospital")
        await stack.register_camera(hospital)
        await client.login("li")
        await client.page("/console/rules")
        tz = ZoneInfo(stack.settings.timezone)
        ends = datetime.now(UTC) + timedelta(seconds=8)
        status, _, _ = await client.post("/console/rules/zones/hospital/exempt", {
            "reason": "road works at the gate", "ends": f"{ends.astimezone(tz):%Y-%m-%dT%H:%M:%S}"})
        assert status == 303
        status, html = await client.page("/console/rules")
        zone_row = html[html.index('<tr data-zone="hospital">'):]
        zone_row = zone_row[:zone_row.index("</tr>")]
        assert 'data-status="expiring"' in zone_row and "road works at the gate" in zone_row and "operator:li" in zone_row

        await asyncio.sleep(2.5)  # the workers re-read the rules every 2 s
        await stack.publish(stack.violation(exempt, hospital))
        case = await stack.wait_state(exempt, "exempt")
        assert "road works at the gate" in case["reason"]

        await sleep_until(ends + timedelta(seconds=2.5))  # nobody lifts it
        await stack.publish(stack.violation(pursued, hospital))
        await stack.wait_state(pursued, "warned", timeout=20)
        status, html = await client.page("/console/rules")
        zone_row = html[html.index('<tr data-zone="hospital">'):]
        assert 'data-status="expired"' in zone_row[:zone_row.index("</tr>")]
        assert [r["action"] for r in await stack.pool.fetch(
            "SELECT action FROM audit_log WHERE actor = 'operator:li' ORDER BY id")] == ["zone_exempt"], \
            "the exemption ended by itself, no one lifted it"
    finally:
        await client.close()


# ── the tickets list, sorting, paging, exports ──────────────────────────────────────────────


def rows_of(html: str, attribute: str) -> list[str]:
    """The values of ``attribute`` on a list's rows, in page order."""
    return re.findall(rf'<tr {attribute}="([^"]+)"', html)


class Recorder:
    """Stands in for a connection: records the statement a list's query sends, answers no rows."""

    def __init__(self):
        self.sent: list[tuple[str, tuple]] = []

    async def fetch(self, sql: str, *args):
        self.sent.append((sql, args))
        return []


async def plan_of(stack: Stack, reading) -> str:
    """PostgreSQL's plan for the statement ``reading(conn)`` sends, with whole-table reads and sorts
    discouraged (the test's tables are tiny: the planner would rightly read and sort them whole), so
    that the plan shows whether an index can give the page in order, as it must on a big table."""
    recorder = Recorder()
    await reading(recorder)
    sql, args = recorder.sent[-1]
    async with stack.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off")
        return "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *args))


async def clone_tickets(stack: Stack, number: str, n: int, zone: str) -> list[str]:
    """``n`` copies of a ticket (and its case) with the same issue time: ties for the paging."""
    numbers = []
    async with stack.pool.acquire() as conn:
        for i in range(n):
            case_id = uuid.uuid4()
            copy = f"{number[:-3]}{900 + i}"
            await conn.execute(
                """INSERT INTO cases SELECT (jsonb_populate_record(NULL::cases, to_jsonb(c) || jsonb_build_object(
                       'id', $2::uuid, 'driver_code', NULL))).* FROM cases c WHERE c.id = (
                       SELECT case_id FROM tickets WHERE number = $1)""", number, case_id)
            await conn.execute(
                """INSERT INTO tickets SELECT (jsonb_populate_record(NULL::tickets, to_jsonb(t) || jsonb_build_object(
                       'number', $2::text, 'case_id', $3::uuid, 'zone', $4::text))).* FROM tickets t
                   WHERE t.number = $1""", number, copy, case_id, zone)
            numbers.append(copy)
    return numbers


async def test_the_tickets_list_filters_sorts_pages_and_exports_and_every_list_sorts_by_a_known_column_only(
        stack: Stack):
    worker, client = await console_for(stack, PW_CONSOLE_PAGE_SIZE="3")
    try:
        await stack.all_car_parks_free()
        first, second = sorted(await stack.plates_with_phone(2))
        (_, case1, ticket1), (_, case2, ticket2) = await asyncio.gather(
            ticketed_case(stack, first, city.CAMERAS[0]), ticketed_case(stack, second, city.CAMERAS[3]))
        await client.login("li")
        await client.page(f"/console/cases/{case2['id']}")
        void = f"/console/tickets/{ticket2['number']}/void"
        assert (await client.post(void, {"reason": "wrong plate read", "confirmed": "yes"}))[0] == 303
        await client.page(f"/console/tickets/{ticket1['number']}/appeal")
        status, _, _ = await client.post(f"/console/tickets/{ticket1['number']}/appeal", {
            "ground": "emergency_avoidance", "statement": "避让救护车", "attachments": "", "plate": first})
        assert status == 303

        # The list: number, plate, zone, issue time, status (voided too), appeal state, a link to the case.
        status, html = await client.page("/console/tickets")
        assert status == 200 and 'href="/console/tickets"' in html
        assert set(rows_of(html, "data-ticket")) == {ticket1["number"], ticket2["number"]}
        assert f'data-ticket="{ticket2["number"]}" data-status="voided" data-appeal="none"' in html
        assert f'data-ticket="{ticket1["number"]}" data-status="issued" data-appeal="open"' in html
        assert f'href="/console/cases/{case1["id"]}"' in html and "已作废" in html

        async def listed(query: str) -> list[str]:
            status, html = await client.page(f"/console/tickets?{query}")
            assert status == 200, query
            return rows_of(html, "data-ticket")

        assert await listed("status=voided") == [ticket2["number"]]
        assert await listed("appeal=open") == [ticket1["number"]]
        assert await listed("zone=liangzhu") == []
        local = datetime.now(UTC).astimezone(ZoneInfo(stack.settings.timezone))
        assert await listed(f"since={local + timedelta(hours=1):%Y-%m-%dT%H:%M}") == []
        assert len(await listed(f"since={local - timedelta(hours=1):%Y-%m-%dT%H:%M}&zone=yuhang")) == 2
        by_plate = await listed("sort=plate&dir=asc")
        assert by_plate == [ticket1["number"], ticket2["number"]]
        assert await listed("sort=plate&dir=desc") == by_plate[::-1]
        status, html = await client.page("/console/tickets?zone=yuhang&sort=plate&dir=asc")
        header = re.search(r'<a class="sort on" data-sort="plate" href="([^"]+)"', html).group(1)
        assert "zone=yuhang" in header and "dir=desc" in header, "a header keeps the filters and turns the order round"

        # An unknown sort key is refused naming the parameter, on every list.
        for path, parameter in (("/console/tickets?sort=phone", "sort"), ("/console/cases?plate=浙&sort=phone", "sort"),
                                ("/console/appeals?decided_sort=statement", "decided_sort"),
                                ("/console/audit?sort=detail", "sort"), ("/console/tickets?dir=up", "dir"),
                                ("/console/tickets?status=lost", "status"), ("/console/tickets?after=xyz", "after"),
                                (f"/console/tickets?before={encode_cursor('no time', 'x')}", "before")):
            status, text = await client.page(path)
            assert status == 400 and text.startswith(f"{parameter}:"), (path, text)

        # The export follows the filters and the sort; UTF-8 with a BOM, no phone, audited.
        async with client.http.get(f"{client.base}/console/tickets?zone=yuhang&sort=plate&dir=desc&format=csv") as r:
            assert r.status == 200 and r.content_type == "text/csv"
            body = await r.read()
        assert body.startswith("\ufeff".encode())
        lines = body.decode("utf-8-sig").splitlines()
        assert lines[0] == "ticket,plate,zone,place,issued_at,status,voided_at,appeal,case"
        assert [line.split(",")[0] for line in lines[1:]] == [ticket2["number"], ticket1["number"]]
        assert lines[1].split(",")[5] == "voided" and lines[2].split(",")[7] == "open"
        for plate in (first, second):
            phone = await phone_of(stack, plate)
            assert phone not in body.decode("utf-8-sig")
        [export] = await audit_rows(stack, "export")
        assert export["actor"] == "operator:li" and export["detail"]["what"] == "tickets"
        assert export["detail"]["rows"] == 2
        assert export["detail"]["criteria"] == {"zone": "yuhang", "sort": "plate", "dir": "desc"}

        # Sorting the other lists by a column header.
        status, html = await client.page("/console/cases?zone=yuhang&sort=plate&dir=desc")
        assert rows_of(html, "data-plate") == [second, first]
        status, html = await client.page("/console/audit?sort=action&dir=desc")
        actions = rows_of(html, "data-action")
        assert actions == sorted(actions, reverse=True) and actions[0] == "void_ticket" and "export" in actions
        status, html = await client.page("/console/appeals?sort=plate&dir=desc")
        assert status == 200 and ticket1["number"] in html and 'data-sort="plate"' in html

        # Paging: more rows than a page, many with the same issue time (and zone): walked forwards and
        # backwards, each ticket comes exactly once, in the list's order.
        copies = await clone_tickets(stack, ticket1["number"], 7, "hospital")
        everything = {ticket1["number"], ticket2["number"], *copies}
        for sort in ({}, {"sort": "zone", "dir": "asc"}, {"sort": "issued_at", "dir": "asc"}, {"sort": "appeal"}):
            async with stack.pool.acquire() as conn:
                whole = (await queries.tickets(conn, queries.TicketFilter(), queries.TICKETS.order(sort), 100)).rows
                pages, cursor = [], None
                while True:
                    page = await queries.tickets(conn, queries.TicketFilter(), queries.TICKETS.order(
                        {**sort, **({"after": cursor} if cursor else {})}), 3)
                    pages.append([r["number"] for r in page.rows])
                    if page.after is None:
                        break
                    cursor = page.after
                assert [len(p) for p in pages] == [3, 3, 3], sort
                walked = [n for p in pages for n in p]
                assert walked == [r["number"] for r in whole] and set(walked) == everything, sort
                backwards, cursor = [], page.before
                while cursor:
                    page = await queries.tickets(conn, queries.TicketFilter(), queries.TICKETS.order(
                        {**sort, "before": cursor}), 3)
                    backwards.insert(0, [r["number"] for r in page.rows])
                    cursor = page.before
                assert backwards == pages[:-1], sort

        # The same through the pages' links (3 a page here), which keep the filter and the sort.
        def link(html: str, name: str) -> str | None:
            found = re.search(rf'<a class="{name}"[^>]* href="([^"]+)"', html)
            return unescape(found.group(1)) if found else None

        path, seen, pages = "/console/tickets?zone=hospital&sort=plate&dir=desc", [], []
        while path:
            status, html = await client.page(path)
            assert status == 200, path
            pages.append(path)
            seen += rows_of(html, "data-ticket")
            assert "zone=hospital" in link(html, "export-csv") and "after" not in link(html, "export-csv")
            path = link(html, "next-page")
            assert path is None or ("zone=hospital" in path and "sort=plate" in path and "dir=desc" in path)
        assert len(pages) == 3 and len(seen) == 7 and set(seen) == set(copies), seen
        status, html = await client.page(link(html, "prev-page"))
        assert rows_of(html, "data-ticket") == seen[3:6], "back one page: the same rows"

        # A deep page reads its own rows from an index (the keyset condition is the index's), whatever
        # the table's size: no sort of the whole table, no scan of the rows before the page.
        cursor = encode_cursor("2026-12-07 10:00:00+00", "YH261207000001")
        for reading, index in (
                (lambda c: queries.tickets(c, queries.TicketFilter(), queries.TICKETS.order({"after": cursor}), 100),
                 "tickets_issued_number"),
                (lambda c: queries.search(c, queries.Criteria(zone="yuhang"), queries.CASES.order(
                    {"after": encode_cursor("2026-12-07 10:00:00+00", str(case1["id"]))}), 100), "cases_detected_id"),
                (lambda c: queries.audit_entries(c, True, queries.AUDIT.order(
                    {"after": encode_cursor("2026-12-07 10:00:00+00", "12")}), 100), "_at_id_idx")):
            plan = await plan_of(stack, reading)
            assert index in plan and "Index Cond: (ROW(" in plan, plan
            assert not re.search(r"(^|->  )(Incremental )?Sort ", plan, re.M), plan  # (a Merge Append's Sort Key is fine)
    finally:
        await client.close()
