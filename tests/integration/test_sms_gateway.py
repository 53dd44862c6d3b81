"""Drivers' SMS through real gateways: Kannel (with its fake SMS centre standing in for the carrier)
and an HTTP provider (a test server of our own), with delivery reports and outages."""

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
import re
import json
from pathlib import Path
from uuid import uuid4

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from pipeline.cases import store
from pipeline.config import Settings
from pipeline.demo import city
from pipeline.sms.driver_page import mask_plate
from pipeline.sms.kannel import read_fakesmsc_line, report_signature
from schemas import topics

from tests.local_server import LocalServer
from tests.privacy import no_phone_in

from .conftest import ROOT, SHARED_KANNEL, Stack, free_port, sleep_until, wait_for

FAKESMSC_LOG = ROOT / "var" / "log" / "fakesmsc.log"


class SmsCentre:
    """Reads what Kannel's fake SMS centre received since this test started."""

    def __init__(self, log: Path):
        if not log.exists():
            pytest.fail(f"{log} not found: start Kannel with `scripts/services.sh start kannel`", pytrace=False)
        self.log = log
        self.offset = log.stat().st_size

    def texts(self) -> list[str]:
        with self.log.open("rb") as f:
            f.seek(self.offset)
            lines = f.read().decode("utf-8", errors="replace").splitlines()
        return [got[1] for got in map(read_fakesmsc_line, lines) if got]


@pytest.fixture
def smsc():
    return SmsCentre(FAKESMSC_LOG)


KANNEL_LOGS = [ROOT / "var" / "log" / name for name in
               ("bearerbox.log", "bearerbox.stdout.log", "smsbox.log", "smsbox.stdout.log")]


@pytest.fixture
def kannel_logs():
    """What Kannel's own logs gained during the test (the fake SMS centre, the carrier's stand-in, aside)."""
    start = {log: log.stat().st_size if log.exists() else 0 for log in KANNEL_LOGS}

    def gained() -> str:
        text = ""
        for log, offset in start.items():
            if log.exists():
                with log.open("rb") as f:
                    f.seek(offset)
                    text += f.read().decode("utf-8", errors="replace")
        return text
    return gained


@SHARED_KANNEL
async def test_warning_through_kannel_arrives_intact_in_chinese_and_its_delivery_is_recorded(stack: Stack, smsc,
                                                                                            kannel_logs):
    worker = stack.worker(PW_SMS_GATEWAY="kannel")
    await worker.ready()
    await stack.all_car_parks_free(free=17)
    plate = (await stack.plates_with_phone(1))[0]

    await stack.publish(stack.violation(plate, city.CAMERAS[2]))
    case = await stack.wait_state(plate, "warned", timeout=20)
    sms = await stack.pool.fetchrow("SELECT * FROM sms_messages WHERE case_id = $1", case["id"])

    arrived = await wait_for(lambda: _async([t for t in smsc.texts() if plate in t]), 20, "the SMS at the SMS centre")
    assert arrived == [sms["text"]], "the text reached the SMS centre exactly once and unchanged"
    assert "余17位" in arrived[0] and "驶离" in arrived[0]

    async def delivered():
        return await stack.pool.fetchrow("SELECT * FROM sms_messages WHERE id = $1 AND status = 'delivered'", sms["id"])
    row = await wait_for(delivered, 20, "the delivery report")
    assert row["delivered_at"] is not None and row["smsc_accepted_at"] is not None
    reports = [r["status"] for r in await stack.pool.fetch(
        "SELECT status FROM sms_delivery_reports WHERE sms_id = $1 ORDER BY id", sms["id"])]
    assert sorted(reports) == ["delivered", "smsc_accepted"], "Kannel's two reports may arrive in either order"

    # The warning is known to have reached the phone, so a car still there at the deadline is ticketed.
    case = await stack.case_of(plate)
    assert case["warning_delivered_at"] is not None
    await asyncio.sleep(max(0.0, (case["deadline_at"] - datetime.now(UTC)).total_seconds()))
    await stack.publish(stack.observation(plate, city.CAMERAS[2]))
    await stack.wait_state(plate, "ticketed", timeout=15)
    ticket_texts = await wait_for(lambda: _async([t for t in smsc.texts() if plate in t and "告知单" in t]), 20,
                                  "the ticket SMS at the SMS centre")
    assert len(ticket_texts) == 1
    phone = sms["phone"]
    no_phone_in(kannel_logs(), "Kannel's logs", phone)
    no_phone_in(worker.log_path.read_text(), "the worker's log", phone)


class LossyLink(LocalServer):
    """Stands between the worker and Kannel's sendsms port and loses the answer to the first request.

    ``forward_first``: the first request reaches Kannel (which queues the SMS) but its answer never
    comes back; otherwise the first request is lost on the way. Later requests pass both ways.
    """

    def __init__(self, kannel_url: str, forward_first: bool, hold_first: bool = False):
        super().__init__()
        self.kannel_url = kannel_url
        self.forward_first = forward_first
        self.requests = 0
        self.first_arrived = asyncio.Event()
        self.release_first = asyncio.Event()
        self.closing = asyncio.Event()
        if not hold_first:
            self.release_first.set()

    async def never_answer(self) -> None:
        """Keep the first request unanswered for as long as the test runs (the worker gives up long before)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closing.wait(), 30)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        first = self.requests == 1
        if first:
            self.first_arrived.set()
            await self.release_first.wait()  # with hold_first: until the test says so
        if first and not self.forward_first:
            await self.never_answer()  # this request never reaches Kannel
            return web.Response(status=504)
        async with self.session.get(f"{self.kannel_url}?{request.query_string}") as answer:
            body, status = await answer.text(), answer.status
        if first:
            await self.never_answer()
        return web.Response(text=body, status=status)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/cgi-bin/sendsms", self.handle)

    async def __aenter__(self):
        self.session = aiohttp.ClientSession()
        return await super().__aenter__()

    async def __aexit__(self, *exc):
        self.closing.set()  # else closing the server waits for the held requests' 30 s
        self.release_first.set()
        await super().__aexit__(*exc)
        await self.session.close()


@SHARED_KANNEL
@pytest.mark.parametrize("reached_kannel", [True, False], ids=["answer-lost", "request-lost"])
async def test_warning_whose_gateway_answer_was_lost_reaches_the_phone_once(stack: Stack, smsc, reached_kannel):
    async with LossyLink(Settings().kannel_sendsms_url, forward_first=reached_kannel) as link:
        worker = stack.worker(PW_SMS_GATEWAY="kannel", PW_KANNEL_SENDSMS_URL=f"http://127.0.0.1:{link.port}/cgi-bin/sendsms",
                              PW_SMS_RETRY_SECONDS="0.5", PW_SMS_REPORT_WAIT_SECONDS="2", PW_WINDOW_SECONDS="120")
        # The long window keeps the case warned when we look: a window that starts at the first report
        # (before the message is settled) could otherwise already have ended, leaving 'warned' for one tick.
        await worker.ready()
        await stack.all_car_parks_free()
        plate = (await stack.plates_with_phone(1))[0]
        await stack.publish(stack.violation(plate))

        async def in_doubt():
            return await stack.count("SELECT count(*) FROM sms_messages WHERE status = 'sending'") == 1
        await wait_for(in_doubt, 20, "the warning to be in doubt (sent, no answer)")
        case = await stack.wait_state(plate, "warned", timeout=30)
        sms = await stack.pool.fetchrow("SELECT * FROM sms_messages WHERE case_id = $1", case["id"])
        if reached_kannel:
            assert link.requests == 1, "Kannel's delivery report settled it: no second request"
            assert sms["attempts"] == 1
            first_report = await stack.pool.fetchval(
                "SELECT min(received_at) FROM sms_delivery_reports WHERE sms_id = $1", sms["id"])
            assert case["warned_at"] == first_report, "the window starts when the report showed the driver had it"
        else:
            assert link.requests == 2, "no report came, so the warning was sent again"
            assert sms["attempts"] == 2
        await wait_for(lambda: _async([t for t in smsc.texts() if plate in t]), 20, "the SMS at the SMS centre")
        await asyncio.sleep(1)
        assert sum(plate in t for t in smsc.texts()) == 1, "the warning reached the SMS centre exactly once"


@SHARED_KANNEL
async def test_worker_killed_while_kannel_had_its_warning_is_settled_by_the_reports_kannel_retries(
        stack: Stack, smsc):
    """The worker dies after handing the warning to Kannel and before any answer or report: Kannel
    keeps trying the report URL, the worker restarted at the same address (after the message's
    in-doubt time has passed) listens before it would send anything again, gets the reports, and
    the warning counts as sent (not sent twice)."""
    async with LossyLink(Settings().kannel_sendsms_url, forward_first=True, hold_first=True) as link:
        port = free_port()
        # A long window: the case is warned from the first report, ~30 s back, and must still be warned
        # when we look (with the stack's 4 s window it passes on to rechecking at the next tick).
        env = {"PW_SMS_GATEWAY": "kannel", "PW_KANNEL_SENDSMS_URL": f"http://127.0.0.1:{link.port}/cgi-bin/sendsms",
               "PW_SMS_IN_DOUBT_SECONDS": "8", "PW_SESSION_TIMEOUT_SECONDS": "6", "PW_WINDOW_SECONDS": "300"}
        doomed = stack.worker("doomed", web_port=port, **env)
        await doomed.ready()
        await stack.all_car_parks_free()
        plate = (await stack.plates_with_phone(1))[0]
        await stack.publish(stack.violation(plate))

        await asyncio.wait_for(link.first_arrived.wait(), 30)
        doomed.kill()  # SIGKILL: the warning is marked 'sending'; nobody will record Kannel's answer
        link.release_first.set()  # now Kannel takes it; its reports find no one at the URL, for now
        await wait_for(lambda: _async([t for t in smsc.texts() if plate in t]), 20, "the SMS at the SMS centre")
        sending_since = await stack.pool.fetchval("SELECT sending_since FROM sms_messages WHERE status = 'sending'")
        await sleep_until(sending_since + timedelta(seconds=10))  # in doubt for longer than 8 s when it starts

        successor = stack.worker("successor", web_port=port, **env)
        await successor.ready()
        case = await stack.wait_state(plate, "warned", timeout=60)
        sms = await stack.pool.fetchrow("SELECT * FROM sms_messages WHERE case_id = $1", case["id"])
        assert sms["gateway_ref"] == "in-doubt:reported", "settled by the reports Kannel tried again"
        first_report = await stack.pool.fetchval(
            "SELECT min(received_at) FROM sms_delivery_reports WHERE sms_id = $1", sms["id"])
        assert sms["accepted_at"] == first_report == case["warned_at"], "the window starts at the first report"
        assert link.requests == 1, "the warning was not sent again"
        await asyncio.sleep(1)
        assert sum(plate in t for t in smsc.texts()) == 1, "the warning reached the SMS centre exactly once"


class SilentKannel(LocalServer):
    """Kannel's sendsms that accepts every message and reports nothing: the test plays the reports."""

    def __init__(self):
        super().__init__()
        self.report_urls: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.report_urls.append(request.query["dlr-url"])
        return web.Response(text="0: Accepted for delivery", status=202)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/cgi-bin/sendsms", self.handle)


async def test_a_forged_delivery_report_is_refused_and_changes_nothing_while_kannels_own_is_applied(stack: Stack):
    async with SilentKannel() as kannel:
        worker = stack.worker(PW_SMS_GATEWAY="kannel", PW_WINDOW_SECONDS="120",
                              PW_KANNEL_SENDSMS_URL=f"http://127.0.0.1:{kannel.port}/cgi-bin/sendsms")
        await worker.ready()
        plate = (await stack.plates_with_phone(1))[0]
        await stack.publish(stack.violation(plate))
        case = await stack.wait_state(plate, "warned", timeout=20)
        sms = await stack.pool.fetchrow("SELECT * FROM sms_messages WHERE case_id = $1", case["id"])
        base = f"http://127.0.0.1:{worker.env['PW_WEB_PORT']}"
        secret = stack.env["PW_SMS_REPORT_SECRET"]

        async with aiohttp.ClientSession() as http:
            for forged_sig in (None, "", report_signature("not-the-workers-secret", sms["id"]),
                               report_signature(secret, uuid4()), "0" * 64):  # the last but one: another message's
                for status in ("16", "1"):  # rejected by the SMS centre -> review; delivered -> ticketable
                    query = {"id": str(sms["id"]), "status": status, "at": "1790000000"}
                    if forged_sig is not None:
                        query["sig"] = forged_sig
                    answer = await http.get(f"{base}/sms/delivery-report", params=query)
                    assert answer.status == 403, (forged_sig, status)
            provider = await http.post(f"{base}/sms/provider-report", json={"id": str(sms["id"]), "status": "failed"},
                                       headers={"X-Report-Token": "change-me"})
            assert provider.status == 404, "no HTTP provider configured, so no provider report endpoint"

            assert await stack.count("SELECT count(*) FROM sms_delivery_reports") == 0
            assert (await stack.case_of(plate))["state"] == "warned"
            assert (await stack.pool.fetchval("SELECT status FROM sms_messages WHERE id = $1", sms["id"])) == "accepted"

            [report_url] = kannel.report_urls  # Kannel fills in %d (its status), %T (time), %A (answer)
            genuine = report_url.replace("%d", "16").replace("%T", "1790000000").replace("%A", "rejected")
            assert (await http.get(genuine)).status == 200
    await stack.wait_state(plate, "review", timeout=15)


async def test_a_worker_refuses_to_start_when_reports_could_be_forged_or_could_not_arrive(stack: Stack):
    refusals = [
        ({"PW_SMS_GATEWAY": "kannel", "PW_SMS_REPORT_SECRET": ""}, "PW_SMS_REPORT_SECRET"),
        ({"PW_SMS_GATEWAY": "http", "PW_SMS_HTTP_URL": "http://127.0.0.1:9/send", "PW_SMS_HTTP_TOKEN": "t",
          "PW_SMS_REPORT_TOKEN": ""}, "PW_SMS_REPORT_TOKEN"),
        ({"PW_SMS_GATEWAY": "kannel", "PW_KANNEL_SENDSMS_URL": "http://kannel.city.example:13013/cgi-bin/sendsms"},
         "PW_SMS_REPORT_BASE_URL"),
    ]
    for i, (env, variable) in enumerate(refusals):
        worker = stack.worker(f"refused{i}", **env)
        exit_code = await asyncio.to_thread(worker.proc.wait, 60)
        assert exit_code != 0
        assert variable in worker.log_path.read_text(), worker.log_path.read_text()[-2000:]


class Provider(LocalServer):
    """An HTTP SMS provider of our own: fails the first ``failures`` requests with 503."""

    def __init__(self, failures: int):
        super().__init__()
        self.failures = failures
        self.requests: list[dict] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"key": request.headers.get("Idempotency-Key"), "auth": request.headers.get("Authorization"),
                              "id": body["id"], "text": body["text"]})
        if len(self.requests) <= self.failures:
            return web.json_response({"error": "busy"}, status=503)
        return web.json_response({"message_id": f"p-{len(self.requests)}"})

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/send", self.handle)


def provider_env(provider: Provider, **extra) -> dict:
    return {"PW_SMS_GATEWAY": "http", "PW_SMS_HTTP_URL": f"http://127.0.0.1:{provider.port}/send",
            "PW_SMS_HTTP_TOKEN": "test-token", "PW_SMS_REPORT_TOKEN": "report-secret-for-tests",
            "PW_SMS_RETRY_SECONDS": "0.2", **extra}


async def test_http_provider_that_stays_down_past_the_retry_horizon_sends_the_case_to_review(stack: Stack):
    async with Provider(failures=1000) as provider:
        worker = stack.worker(**provider_env(provider, PW_SMS_RETRY_HORIZON_SECONDS="2", PW_SMS_RETRY_MAX_SECONDS="0.5"))
        await worker.ready()
        plate = (await stack.plates_with_phone(1))[0]
        await stack.publish(stack.violation(plate))
        case = await stack.wait_state(plate, "review", timeout=30)

    assert len(provider.requests) >= 3, "tried again and again while it was down"
    assert len({r["key"] for r in provider.requests}) == 1, "retries carry the same idempotency key"
    assert provider.requests[0]["auth"] == "Bearer test-token"
    assert case["reason"].startswith("warning failed: the SMS gateway did not take the message within 2 s")
    sms = await stack.pool.fetchrow("SELECT * FROM sms_messages WHERE case_id = $1", case["id"])
    assert sms["status"] == "failed" and sms["attempts"] == len(provider.requests) and "503" in sms["last_error"]
    assert await stack.count("SELECT count(*) FROM tickets") == 0


async def test_http_provider_that_recovers_warns_once_and_its_delivery_report_is_recorded(stack: Stack):
    async with Provider(failures=2) as provider:
        worker = stack.worker(**provider_env(provider))
        await worker.ready()
        plate = (await stack.plates_with_phone(1))[0]
        await stack.publish(stack.violation(plate))
        case = await stack.wait_state(plate, "warned", timeout=30)
        sms = await stack.pool.fetchrow("SELECT * FROM sms_messages WHERE case_id = $1", case["id"])
        assert [r["id"] for r in provider.requests] == [str(sms["id"])] * 3

        url = f"http://127.0.0.1:{worker.env['PW_WEB_PORT']}/sms/provider-report"
        async with aiohttp.ClientSession() as http:
            refused = await http.post(url, json={"id": str(sms["id"]), "status": "delivered"})
            assert refused.status == 401
            wrong = await http.post(url, json={"id": str(sms["id"]), "status": "delivered"},
                                    headers={"X-Report-Token": "change-me"})
            assert wrong.status == 401
            kannels = await http.get(f"http://127.0.0.1:{worker.env['PW_WEB_PORT']}/sms/delivery-report",
                                     params={"id": str(sms["id"]), "status": "1"})
            assert kannels.status == 404, "no Kannel configured, so no Kannel report endpoint"
            report = {"id": str(sms["id"]), "status": "delivered", "at": "2026-11-26T10:43:00+08:00"}
            accepted = await http.post(url, json=report, headers={"X-Report-Token": "report-secret-for-tests"})
            assert accepted.status == 200
    async def delivered():
        return await stack.pool.fetchrow(
            "SELECT status, accepted_at, delivered_at FROM sms_messages WHERE id = $1 AND status = 'delivered'", sms["id"])
    row = await wait_for(delivered, 10, "the delivery report to be applied")
    assert row["delivered_at"] == row["accepted_at"], "a delivery time before the acceptance counts as the acceptance"


async def test_a_delivery_moves_the_deadline_from_no_earlier_than_the_report_allows_and_is_published(stack: Stack):
    """Issue 15, must 9 and 20. The SMS centre's time in whole seconds counts as the end of that second; a
    time after the report's arrival counts as its arrival; one before the acceptance (a slow SMS-centre
    clock) as the acceptance. Each first delivery is published on case-events with the deadline in force."""
    async with Provider(failures=0) as provider:
        worker = stack.worker(**provider_env(provider), PW_WINDOW_SECONDS="60")
        await worker.ready()
        plates = await stack.plates_with_phone(3)
        for plate in plates:
            await stack.publish(stack.violation(plate))
        cases = [await stack.wait_state(plate, "warned", timeout=30) for plate in plates]
        sms = [await stack.pool.fetchrow("SELECT * FROM sms_messages WHERE case_id = $1", c["id"]) for c in cases]
        await asyncio.sleep(2.5)
        whole_second = (sms[0]["accepted_at"] + timedelta(seconds=1)).replace(microsecond=0)
        reported = [whole_second, datetime.now(UTC) + timedelta(minutes=5), sms[2]["accepted_at"] - timedelta(minutes=6)]
        url = f"http://127.0.0.1:{worker.env['PW_WEB_PORT']}/sms/provider-report"
        async with aiohttp.ClientSession() as http:
            for message, at in zip(sms, reported):
                answer = await http.post(url, json={"id": str(message["id"]), "status": "delivered", "at": at.isoformat()},
                                         headers={"X-Report-Token": "report-secret-for-tests"})
                assert answer.status == 200

        async def applied():
            rows = await stack.pool.fetch(
                """SELECT s.delivered_at, c.deadline_at, (SELECT min(received_at) FROM sms_delivery_reports r
                                                          WHERE r.sms_id = s.id) AS arrived
                   FROM sms_messages s JOIN cases c ON c.id = s.case_id
                   WHERE s.id = ANY($1::uuid[]) AND s.delivered_at IS NOT NULL ORDER BY array_position($1::uuid[], s.id)""",
                [m["id"] for m in sms])
            return rows if len(rows) == 3 else None
        rows = await wait_for(applied, 15, "the three delivery reports to be applied")
    window = timedelta(seconds=60)
    assert rows[0]["delivered_at"] == whole_second + timedelta(seconds=1), "rounded up to the end of its second"
    assert rows[1]["delivered_at"] == rows[1]["arrived"], "no later than the report's arrival"
    assert rows[2]["delivered_at"] == sms[2]["accepted_at"], "no earlier than the acceptance"
    assert [row["deadline_at"] for row in rows] == [row["delivered_at"] + window for row in rows]

    published = await stack.consume(
        topics.CASE_EVENTS, lambda ms: sum(m["type"] == "WarningDelivered" for m in ms) >= 3)
    delivered = {m["case_id"]: m for m in published if m["type"] == "WarningDelivered"}
    for case, row in zip(cases, rows):
        m = delivered[str(case["id"])]
        assert datetime.fromisoformat(m["delivered_at"]) == row["delivered_at"]
        assert datetime.fromisoformat(m["deadline_at"]) == row["deadline_at"]
    assert [delivered[str(c["id"])]["deadline_moved"] for c in cases] == [True, True, False]


async def test_undelivered_warning_sends_the_case_to_review_not_to_a_ticket(stack: Stack):
    async with Provider(failures=0) as provider:
        worker = stack.worker(**provider_env(provider))
        await worker.ready()
        plate = (await stack.plates_with_phone(1))[0]
        await stack.publish(stack.violation(plate))
        case = await stack.wait_state(plate, "warned", timeout=30)
        sms_id = await stack.pool.fetchval("SELECT id FROM sms_messages WHERE case_id = $1", case["id"])
        async with aiohttp.ClientSession() as http:
            await http.post(f"http://127.0.0.1:{worker.env['PW_WEB_PORT']}/sms/provider-report",
                            json={"id": str(sms_id), "status": "failed", "detail": "absent subscriber"},
                            headers={"X-Report-Token": "report-secret-for-tests"})
        await stack.wait_state(plate, "review")
        await asyncio.sleep(stack.window + 2)
    assert await stack.count("SELECT count(*) FROM tickets") == 0


async def test_a_phone_gets_no_more_than_the_daily_limit(stack: Stack):
    worker = stack.worker(PW_SMS_DAILY_LIMIT_PER_PHONE="1")
    await worker.ready()
    plate = (await stack.plates_with_phone(1))[0]

    await stack.publish(stack.violation(plate, city.CAMERAS[0]))
    await stack.wait_state(plate, "warned", timeout=20)
    await stack.publish(stack.violation(plate, city.CAMERAS[4]))  # the car moved and parked badly again
    case = await stack.wait_state(plate, "review", timeout=20)
    assert "daily limit" in case["reason"]
    assert len(stack.handset_lines()) == 1


async def _async(value):
    return value


async def test_driver_page_when_switched_on_shows_time_left_and_three_free_car_parks_for_the_code_in_the_sms(stack: Stack):

    worker = stack.worker(PW_DRIVER_PAGE="true")
    await worker.ready()
    await stack.all_car_parks_free(free=9)
    plate = (await stack.plates_with_phone(1))[0]
    await stack.publish(stack.violation(plate, city.CAMERAS[0]))
    await stack.wait_state(plate, "warned", timeout=20)
    text = (await _wait_lines(stack))[0]["text"]
    code = re.search(r" http://\S+/d/([2-9A-Z]{10})$", text).group(1)

    async with aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{worker.env['PW_WEB_PORT']}"
        response = await http.get(f"{base}/d/{code.lower()}")
        page = await response.text()
        assert response.status == 200
        assert "剩余时间" in page and city.CAMERAS[0].place in page
        assert page.count("9 空位") == 3, "three nearest car parks with their live free spaces"
        assert plate not in page, "the page shows only part of the plate"
        unknown = await http.get(f"{base}/d/{'Z' * 10 if code != 'Z' * 10 else 'Y' * 10}")
        assert unknown.status == 404
    worker.stop()
    off = stack.worker("off")
    await off.ready()
    async with aiohttp.ClientSession() as http:
        switched_off = await http.get(f"http://127.0.0.1:{off.env['PW_WEB_PORT']}/d")
        assert switched_off.status == 404, "the driver page is off by default"


async def _wait_lines(stack: Stack) -> list[dict]:
    async def check():
        return stack.handset_lines()
    return await wait_for(check, 20, "the warning at the handset")



async def _warned_with_codes(stack: Stack, worker, n: int) -> tuple[list[str], list[str]]:
    """``n`` violations warned with the driver page on: their plates and the codes in their SMS."""
    await worker.ready()
    plates = await stack.plates_with_phone(n)
    for plate, camera in zip(plates, city.CAMERAS):
        await stack.publish(stack.violation(plate, camera))
    for plate in plates:
        await stack.wait_state(plate, "warned", timeout=20)
    texts = [line["text"] for line in stack.handset_lines()]
    return plates, [re.search(r"/d/([2-9A-Z]+)$", next(t for t in texts if plate in t)).group(1) for plate in plates]


async def test_driver_codes_are_at_least_ten_characters_and_unique_drawn_again_on_a_collision(stack: Stack):
    plates, codes = await _warned_with_codes(stack, stack.worker(PW_DRIVER_PAGE="true"), 2)
    assert len(set(codes)) == 2 and all(len(c) >= 10 for c in codes), codes

    second = await stack.case_of(plates[1])
    async with stack.pool.acquire() as conn, conn.transaction():
        draws = iter([codes[0], codes[0], "QQQQQQQQQQ"])
        given = await store.give_driver_code(conn, second["id"], lambda: next(draws))
        assert given == "QQQQQQQQQQ", "a code already given is drawn again"
        assert await conn.fetchval("SELECT driver_code FROM cases WHERE id = $1", second["id"]) == "QQQQQQQQQQ", \
            "the caller's transaction goes on"
    with pytest.raises(asyncpg.UniqueViolationError):
        await stack.pool.execute("UPDATE cases SET driver_code = $1 WHERE id = $2", codes[0], second["id"])


async def test_a_driver_code_shows_nothing_once_its_case_has_been_closed_longer_than_the_grace(stack: Stack):
    [plate], [code] = await _warned_with_codes(stack, stack.worker(PW_DRIVER_PAGE="true"), 1)
    lookup = f"http://127.0.0.1:{stack.workers[0].env['PW_WEB_PORT']}/d/{code}"
    async with aiohttp.ClientSession() as http:
        await stack.pool.execute("UPDATE cases SET state = 'moved', closed_at = now() - interval '71 hours' "
                                 "WHERE plate = $1", plate)
        async with http.get(lookup) as within_grace:
            assert within_grace.status == 200, "closed, within the grace (72 h by default)"
        await stack.pool.execute("UPDATE cases SET closed_at = now() - interval '73 hours' WHERE plate = $1", plate)
        async with http.get(lookup) as expired:
            page = await expired.text()
    assert expired.status == 404 and mask_plate(plate) not in page and "Not found" in page, \
        "an expired code shows nothing"


async def test_driver_page_lookups_are_limited_per_address_with_retry_after(stack: Stack):
    worker = stack.worker(PW_DRIVER_PAGE="true", PW_DRIVER_PAGE_LOOKUP_BURST="3", PW_DRIVER_PAGE_LOOKUPS_PER_MINUTE="1")
    [plate], [code] = await _warned_with_codes(stack, worker, 1)
    lookup = f"http://127.0.0.1:{worker.env['PW_WEB_PORT']}/d/{code}"
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.get(lookup) as allowed:
                assert allowed.status == 200
        async with http.get(lookup) as limited:
            page = await limited.text()
    assert limited.status == 429 and int(limited.headers["Retry-After"]) > 0
    assert mask_plate(plate) not in page, "over the limit the page shows nothing of the case"
