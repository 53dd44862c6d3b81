"""The console in a real headless Chromium (Debian's, driven by Playwright) against a running worker:
log in, watch a case go from warned to ticketed without reloading, void the ticket with a reason,
find the audit entry; a driver appeals a ticket on the driver page and an officer decides it. Screenshots are kept in var/artifacts/console/ (install the browser with
`scripts/browser.sh install`)."""

import asyncio
import os
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import async_playwright, expect

from pipeline.demo import city
from tests.privacy import masked_phone_in

from .conftest import ROOT, Stack, wait_for
from .console_helpers import PASSWORD, ConsoleClient, add_operator, base_url, phone_of, plates_without_phone, ticketed_case

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "var" / "artifacts" / "console"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 30_000


@pytest.fixture
async def browser_page():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `scripts/browser.sh install`", pytrace=False)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pw-chromium-") as profile:
        async with async_playwright() as p:
            context = await p.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1366, "height": 768}, locale="zh-CN", timezone_id="Asia/Shanghai")
            page = context.pages[0] if context.pages else await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            try:
                yield page
            finally:
                await context.close()
            assert errors == [], f"JavaScript errors on the console: {errors}"


async def shot(page, name: str) -> None:
    await page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


async def test_an_operator_watches_a_case_go_from_warned_to_ticketed_live_and_voids_the_ticket(stack: Stack, browser_page):
    page = browser_page
    # A 15 s window and 3 s of lateness: the browser (slow on a busy machine) still finds the case
    # warned, and the capture at the deadline is decided before the case would go to rechecking.
    worker = stack.worker(PW_WINDOW_SECONDS="15", PW_LATENESS_SECONDS="3")
    await worker.ready()
    await add_operator(stack, "li", "supervisor")
    await stack.all_car_parks_free(free=25)
    plate = (await stack.plates_with_phone(1))[0]
    camera = city.CAMERAS[0]
    base = base_url(worker)

    # Log in.
    await page.goto(f"{base}/console/")
    await expect(page.locator("h1")).to_have_text("操作员登录")
    await page.fill("input[name=name]", "li")
    await page.fill("input[name=password]", PASSWORD)
    await shot(page, "01-login")
    await page.click("button.primary")
    await expect(page.locator(".top .who")).to_contain_text("li")
    await expect(page.locator("#live-status")).to_have_class("live-status ok", timeout=WAIT_MS)

    # A violation appears on the live overview, warned, with its time left, without a reload.
    await page.evaluate("window.stillTheSamePage = true")
    await stack.publish(stack.violation(plate, camera))
    row = page.locator(f"#open-cases tr[data-plate='{plate}']")
    await expect(row.locator(".badge")).to_have_text("已告知", timeout=WAIT_MS)
    await expect(row.locator(".countdown")).to_be_visible()
    assert await page.evaluate("window.stillTheSamePage === true"), "the live view reloaded"
    await shot(page, "02-live-warned")

    # The case page, live: warned, then ticketed when the car is still there after the deadline.
    await row.locator("a.plate").click()
    await expect(page.locator("#case-state")).to_have_attribute("data-state", "warned")
    await expect(page.locator("#live-status")).to_have_class("live-status ok", timeout=WAIT_MS)
    await page.evaluate("window.stillTheSamePage = true")
    await shot(page, "03-case-warned")
    case = await stack.case_of(plate)
    await asyncio.sleep(max(0.0, (case["deadline_at"] - datetime.now(UTC)).total_seconds()))
    await stack.publish(stack.observation(plate, camera))
    await expect(page.locator("#case-state")).to_have_attribute("data-state", "ticketed", timeout=WAIT_MS)
    assert await page.evaluate("window.stillTheSamePage === true"), "the case page reloaded"
    ticket = await stack.pool.fetchrow("SELECT * FROM tickets WHERE case_id = $1", case["id"])
    await expect(page.locator("#ticket .ticket")).to_have_text(ticket["number"])
    await expect(page.locator("#timeline")).to_contain_text("已告知 → 已开单")
    await expect(page.locator("#timeline")).to_contain_text("截止时车仍在原地")  # why, in Chinese
    phone = await phone_of(stack, plate)
    masked_phone_in(await page.content(), phone, "the case page in the browser")
    await shot(page, "04-case-ticketed")

    # Void the ticket with a reason; the audit entry is on the case page and in the audit log.
    reason = "车主出示残疾人停车证 (disabled permit shown)"
    await page.fill("#void-reason", reason)
    await page.click("#void-ticket button")
    await expect(page.locator("#confirm-void")).to_contain_text("车主将收到一条短信")
    await expect(page.locator("#void-reason-shown")).to_have_text(reason)
    await shot(page, "05a-void-confirm")
    await page.click("#void-confirm")
    await expect(page.locator(".notice.ok")).to_have_text("告知单已作废，已短信通知车主告知单撤销。")
    await expect(page.locator("#case-state .badge")).to_have_text("已作废")
    await expect(page.locator("#ticket .void-note")).to_contain_text(reason)
    operator_entry = page.locator("#timeline li.operator")
    await expect(operator_entry).to_contain_text("作废告知单")
    await expect(operator_entry).to_contain_text("operator:li")
    await expect(operator_entry).to_contain_text(reason)
    await shot(page, "05-ticket-voided")
    voided = await stack.pool.fetchrow("SELECT voided_at, void_reason FROM tickets WHERE number = $1", ticket["number"])
    assert voided["voided_at"] is not None and voided["void_reason"] == reason

    await page.click("nav >> text=操作记录")
    entry = page.locator("#audit tr[data-action='void_ticket']")
    await expect(entry).to_have_count(1)
    await expect(entry).to_contain_text(reason)
    await expect(entry).to_contain_text(ticket["number"])
    await shot(page, "06-audit-log")

    # The same console in English.
    await page.click("a.lang")
    await expect(page.locator("h1")).to_have_text("Audit log")
    await page.click("nav >> text=Live")
    await expect(page.locator("#recent")).to_contain_text(plate)
    await expect(page.locator(f"#recent tr[data-plate='{plate}']")).to_contain_text("voided")
    await shot(page, "07-live-english")
    await page.goto(f"{base}/console/cases/{case['id']}")
    await expect(page.locator("#timeline")).to_contain_text("voided the ticket")
    await expect(page.locator("#timeline")).to_contain_text("still at the place at the deadline")
    await shot(page, "08-case-english")
    await page.click("nav >> text=Whitelist & zones")
    await expect(page.locator("#zones tr[data-zone='hospital']")).to_be_visible()
    await shot(page, "09-rules-english")


async def test_a_driver_appeals_on_the_driver_page_and_an_officer_voids_the_ticket_in_the_queue(stack: Stack, browser_page):
    page = browser_page
    worker = stack.worker(PW_DRIVER_PAGE="true", PW_LATENESS_SECONDS="3")
    await worker.ready()
    await add_operator(stack, "li", "supervisor")
    await stack.all_car_parks_free(free=25)
    plate = (await stack.plates_with_phone(1))[0]
    _, case, ticket = await ticketed_case(stack, plate)
    code = await stack.pool.fetchval("SELECT driver_code FROM cases WHERE id = $1", case["id"])
    base = base_url(worker)

    # The driver: ticket number, plate and the code from the SMS; the evidence; the appeal.
    await page.goto(f"{base}/d/ticket")
    await page.fill("input[name=number]", ticket["number"])
    await page.fill("input[name=plate]", plate)
    await page.fill("input[name=code]", code)
    await shot(page, "10-driver-ticket-form")
    await page.click("button")
    await expect(page.locator("#ticket-status")).to_contain_text("有效")
    await expect(page.locator("#captures li")).to_have_count(2)
    await expect(page.locator("#verification-code")).not_to_have_text("–")
    await shot(page, "11-driver-ticket-evidence")
    await page.select_option("select[name=ground]", "emergency_avoidance")
    await page.fill("textarea[name=statement]", "为避让救护车临时停靠")
    await page.fill("textarea[name=attachments]", "https://photos.example.com/ambulance.jpg")
    await page.click("#appeal-form button")
    await expect(page.locator("#status")).to_contain_text("申诉处理中")
    await expect(page.locator("#appeal-status")).to_contain_text("紧急避险")
    await shot(page, "12-driver-appeal-filed")

    # The officer: the queue, the appeal beside the evidence, the decision.
    await page.goto(f"{base}/console/login")
    await page.fill("input[name=name]", "li")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button.primary")
    await page.click("nav >> text=申诉")
    row = page.locator("#appeals-open tr[data-appeal]")
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text(ticket["number"])
    await expect(row).to_contain_text("紧急避险")
    await shot(page, "13-appeals-queue")
    exported = await page.request.get(f"{base}/console/appeals?format=csv")
    body = await exported.body()
    assert exported.ok and body.startswith("\ufeff".encode()) and ticket["number"] in body.decode("utf-8-sig")
    await row.locator("a.ticket").click()
    await expect(page.locator("#appeal-statement")).to_have_text("为避让救护车临时停靠")
    await expect(page.locator("#appeal-evidence #evidence li")).to_have_count(2)
    await shot(page, "14-appeal-with-evidence")
    assert await page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth"), await too_wide(page)
    assert await page.evaluate("(e => e.scrollWidth <= e.clientWidth)(document.querySelector('#appeal-evidence'))"), \
        "the warning's text is cut off beside the appeal"
    await page.fill("#decision-reason", "医院证实救护车当时经过")
    await page.click("#void")
    await expect(page.locator(".notice.ok")).to_contain_text("申诉已处理")
    await expect(page.locator("#appeal-outcome")).to_have_attribute("data-outcome", "voided")
    await shot(page, "15-appeal-decided")
    voided = await stack.pool.fetchrow("SELECT voided_at, void_reason FROM tickets WHERE number = $1", ticket["number"])
    assert voided["voided_at"] is not None and voided["void_reason"] == "appeal allowed: 医院证实救护车当时经过"


KANNEL_PORTS = {"PW_KANNEL_ADMIN_PORT": "43010", "PW_KANNEL_SMSBOX_PORT": "43011", "PW_KANNEL_SENDSMS_PORT": "43013",
                "PW_FAKESMSC_PORT": "43014"}


class PrivateKannel:
    """A Kannel of this test's own (bearerbox, fakesmsc, smsbox from scripts/services.sh, under the
    test's folder, on ports of its own), so that its SMS-centre link can be taken down and up."""

    def __init__(self, var_dir: Path):
        self.env = {**os.environ, "PW_VAR_DIR": str(var_dir), **KANNEL_PORTS}

    def services(self, *args: str) -> None:
        subprocess.run([str(ROOT / "scripts" / "services.sh"), *args], env=self.env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)

    def worker_env(self) -> dict:
        return {"PW_SMS_GATEWAY": "kannel",
                "PW_KANNEL_SENDSMS_URL": f"http://127.0.0.1:{KANNEL_PORTS['PW_KANNEL_SENDSMS_PORT']}/cgi-bin/sendsms",
                "PW_KANNEL_STATUS_URL": f"http://127.0.0.1:{KANNEL_PORTS['PW_KANNEL_ADMIN_PORT']}/status.xml?password=pw-status"}


@pytest.fixture
def private_kannel(tmp_path):
    kannel = PrivateKannel(tmp_path / "kannel")
    kannel.services("start", "kannel")
    try:
        yield kannel
    finally:
        kannel.services("stop", "kannel")


async def test_an_sms_centre_outage_turns_the_health_strip_red_flags_the_case_and_readyz_says_degraded(
        stack: Stack, browser_page, private_kannel):
    page = browser_page
    worker = stack.worker(PW_WINDOW_SECONDS="600", **private_kannel.worker_env())
    await worker.ready()
    await add_operator(stack, "li", "supervisor")
    await stack.all_car_parks_free(free=25)
    plate = (await stack.plates_with_phone(1))[0]
    base = base_url(worker)

    async def readyz() -> dict:
        async with aiohttp.ClientSession() as http, http.get(f"{base}/readyz") as r:
            assert r.status == 200, "a degraded worker is still ready"
            return await r.json()

    async def metric(name: str) -> str:
        async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as r:
            return "\n".join(line for line in (await r.text()).splitlines() if line.startswith(name))

    await page.goto(f"{base}/console/login")
    await page.fill("input[name=name]", "li")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button.primary")
    strip = page.locator("#health-strip")
    await expect(strip.locator("#health-smsc_link")).to_have_attribute("data-level", "ok", timeout=WAIT_MS)
    await expect(strip.locator("#health-sms_gateway")).to_have_attribute("data-level", "ok")
    await expect(strip.locator("a.h")).to_have_count(7)
    assert (await readyz())["health"]["smsc_link"]["level"] == "ok"
    await shot(page, "20-health-green")

    # The SMS centre stops answering: Kannel says so, the strip turns red without a reload.
    private_kannel.services("stop", "fakesmsc")
    await expect(strip.locator("#health-smsc_link")).to_have_attribute("data-level", "bad", timeout=WAIT_MS)
    await expect(strip.locator("#health-smsc_link")).to_have_attribute("href", "/console/health#smsc_link")
    ready = await readyz()
    assert ready["ready"] is True and ready["status"] == "degraded" and "smsc_link" in ready["degraded"]
    assert ready["health"]["smsc_link"]["links"][0]["status"] == "re-connecting"
    assert 'parkwarden_smsc_link_up{smsc="FAKE"} 0.0' in await metric("parkwarden_smsc_link_up")
    assert 'parkwarden_health{component="smsc_link"} 2.0' in await metric("parkwarden_health{")

    # A warning Kannel queues is accepted, never delivered: its case carries the red banner.
    await stack.publish(stack.violation(plate, city.CAMERAS[0]))
    case = await stack.wait_state(plate, "warned", timeout=20)
    await page.goto(f"{base}/console/cases/{case['id']}")
    await expect(page.locator("#health-banner")).to_contain_text("短信中心无应答")
    await expect(page.locator("#delivered-at")).to_have_text("–")
    await expect(strip.locator("#health-delivery_reports")).to_contain_text("1")
    await shot(page, "21-health-red-case-banner")
    await strip.locator("#health-smsc_link").click()
    await expect(page.locator("#health tr#smsc_link")).to_have_attribute("data-level", "bad")
    await expect(page.locator("#delivery_reports-list")).to_contain_text(plate)
    masked_phone_in(await page.content(), await phone_of(stack, plate), "the health page")
    await shot(page, "22-health-page-red")

    # The link comes back: the queued warning is delivered, the strip turns green, readyz is ready again.
    private_kannel.services("start", "fakesmsc")
    await expect(strip.locator("#health-smsc_link")).to_have_attribute("data-level", "ok", timeout=WAIT_MS)
    await expect(strip.locator("#health-delivery_reports")).to_contain_text("0", timeout=WAIT_MS)
    await page.goto(f"{base}/console/cases/{case['id']}")
    await expect(page.locator("#delivered-at")).not_to_have_text("–", timeout=WAIT_MS)
    await expect(page.locator("#health-banner")).to_have_count(0)
    assert (await readyz())["health"]["smsc_link"]["level"] == "ok"
    await shot(page, "23-health-green-again")


async def test_the_review_queue_is_oldest_first_with_due_times_claims_and_a_bulk_close(stack: Stack, browser_page):
    page = browser_page
    worker = stack.worker(PW_REVIEW_SLA_MINUTES="0.1")  # due 6 s after going to review
    await worker.ready()
    await add_operator(stack, "li", "supervisor")
    await add_operator(stack, "zhao", "supervisor")
    older, newer = await plates_without_phone(stack, 2)
    now = datetime.now(UTC)
    await stack.publish(stack.violation(older, city.CAMERAS[1], at=now - timedelta(seconds=90)))
    first = await stack.wait_state(older, "review")
    await stack.publish(stack.violation(newer, city.CAMERAS[2]))
    second = await stack.wait_state(newer, "review")
    base = base_url(worker)
    await asyncio.sleep(max(0.0, (first["closed_at"] + timedelta(seconds=6.5) - datetime.now(UTC)).total_seconds()))

    await page.set_viewport_size({"width": 1440, "height": 900})
    await page.goto(f"{base}/console/login?next=/console/review")
    await page.fill("input[name=name]", "li")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button.primary")
    rows = page.locator("#review-queue tr[data-case]")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0)).to_have_attribute("data-plate", older)  # oldest first
    await expect(page.locator("#review-reasons li")).to_have_count(1)
    await expect(page.locator("#review-reasons li b")).to_have_text("2")
    await expect(rows.nth(0).locator(".due .badge")).to_have_text("已超时")

    # Claimed by li: another officer sees who has it and cannot take it.
    await rows.nth(0).locator("button[value=claim]").click()
    await expect(rows.nth(0).locator(".who-has")).to_have_text("li")
    await shot(page, "30-review-queue-claimed")
    other = ConsoleClient(base)
    try:
        await other.login("zhao")
        await other.page("/console/review")
        status, html, _ = await other.post(f"/console/review/{first['id']}/claim", {"action": "claim"})
        assert status == 409 and "li 已认领此案件" in html
    finally:
        await other.close()

    # No phone: no "warn again", only what can work; a case in review shows no closed time.
    await rows.nth(1).locator("a.plate").click()
    await expect(page.locator("#no-phone")).to_be_visible()
    await expect(page.locator("#resolve-review button[value=warn_again]")).to_have_count(0)
    await expect(page.locator("#resolve-review button[value=request_recheck]")).to_be_visible()
    await expect(page.locator("#closed-at")).to_have_text("–")
    await shot(page, "31-review-case-no-phone")

    # Both closed with one reason, each audited.
    await page.goto(f"{base}/console/review")
    await page.check(f"#review-queue input[value='{first['id']}']")
    await page.check(f"#review-queue input[value='{second['id']}']")
    await page.fill("#bulk-reason", "外省车辆，无法联系车主")
    await page.click("#bulk-close")
    await expect(page.locator(".notice.ok")).to_contain_text("已撤销 2 件")
    await expect(page.locator("#review-queue tr[data-case]")).to_have_count(0)
    await shot(page, "32-review-queue-closed")
    closed = await stack.pool.fetch("SELECT state FROM cases WHERE id = ANY($1::uuid[])", [first["id"], second["id"]])
    assert [r["state"] for r in closed] == ["cancelled", "cancelled"]
    assert await stack.count("SELECT count(*) FROM audit_log WHERE action = 'close_case'") == 2


async def test_dead_letters_are_listed_masked_filtered_and_one_is_replayed_once_its_cause_is_fixed(stack: Stack, browser_page):
    page = browser_page
    worker = stack.worker()
    await worker.ready()
    await add_operator(stack, "li", "supervisor")
    await stack.all_car_parks_free(free=25)
    plate = (await stack.plates_with_phone(1))[0]
    phone = await phone_of(stack, plate)
    new_camera = city.Camera("cam-test-new-01", city.CAMERAS[0].place, city.CAMERAS[0].lat, city.CAMERAS[0].lon)
    # Unusable bytes carrying a phone number, and an event from a camera nobody registered yet.
    await stack.publish_raw(f'{{"type": "ViolationDetected", "owner_phone": "{phone}", "x": "\x01"}}'.encode() + b"\xff")
    await stack.publish(stack.violation(plate, new_camera))

    async def two():
        return await stack.count("SELECT count(*) FROM dead_letters") >= 2 or None
    await wait_for(two, 30, "two dead letters")
    base = base_url(worker)

    await page.goto(f"{base}/console/login")
    await page.fill("input[name=name]", "li")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button.primary")
    await page.click("#dead-letters-tile")
    rows = page.locator("#dead-letters tr[data-dead-letter]")
    await expect(rows).to_have_count(2)
    await expect(rows.first).to_contain_text(city.INTEGRATOR)
    html = await page.content()
    masked_phone_in(html, phone, "the dead letters page")
    raw = page.locator("#dead-letters pre.raw", has_text="owner_phone")
    await expect(raw).to_contain_text("\\x01")
    await expect(raw).to_contain_text("\\xff")
    await shot(page, "40-dead-letters")

    # Filtered by reason; the refused event is replayed after its camera is registered.
    await page.fill("#dead-filter input[name=reason]", "cam-test-new-01")
    await page.click("#dead-filter button")
    await expect(rows).to_have_count(1)
    await stack.register_camera(new_camera)
    await asyncio.sleep(2.5)  # the workers re-read the registry every 2 s
    await rows.first.locator("summary").click()
    await rows.first.locator("textarea[name=reason]").fill("摄像头已登记 (camera registered)")
    await rows.first.locator("button.danger").click()
    await expect(page.locator(".notice.ok")).to_contain_text("已重放")
    await shot(page, "41-dead-letter-replayed")
    case = await stack.wait_state(plate, "warned", timeout=30)
    assert case["camera_id"] == new_camera.id
    assert await stack.count("SELECT count(*) FROM audit_log WHERE action = 'replay_dead_letter'") == 1
    await expect(page.locator("#dead-letters .replayed")).to_contain_text("operator:li")

    # A reference feed's dead letter is not replayed from here (it may keep only a masked copy).
    feed_letter = await stack.pool.fetchval(
        """INSERT INTO dead_letters (source_topic, partition, "offset", key, reason, errors, raw, received_at)
           VALUES ($1, 0, 0, NULL, 'bad row', '[]', '{"plate": "x"}', now()) RETURNING id""", f"{stack.prefix}plates")
    await page.goto(f"{base}/console/dead-letters")
    await expect(page.locator(f"#dead-letters tr[data-dead-letter='{feed_letter}'] details.replay")).to_have_count(0)
    client = ConsoleClient(base)
    try:
        await client.login("li")
        await client.page("/console/dead-letters")
        status, html, _ = await client.post(f"/console/dead-letters/{feed_letter}/replay", {"reason": "try it anyway"})
        assert status == 409 and "不能重放" in html
    finally:
        await client.close()
    assert await stack.count("SELECT count(*) FROM audit_log WHERE action = 'replay_dead_letter'") == 1


async def too_wide(page) -> list[str]:
    """The outermost elements that reach past the right edge of the screen."""
    return await page.evaluate("""() => Array.from(document.querySelectorAll('body *'))
        .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5
                     && !(e.parentElement && e.parentElement.getBoundingClientRect().right > window.innerWidth + 0.5))
        .slice(0, 5).map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className)""")


async def test_the_console_fits_a_phone_a_tablet_and_a_desktop_and_live_updates_keep_keyboard_focus(stack: Stack, browser_page):
    page = browser_page
    worker = stack.worker(PW_WINDOW_SECONDS="600")
    await worker.ready()
    await add_operator(stack, "li", "supervisor")
    await stack.all_car_parks_free(free=25)
    first, second = await stack.plates_with_phone(2)
    await stack.publish(stack.violation(first, city.CAMERAS[0]))
    await stack.wait_state(first, "warned", timeout=20)
    base = base_url(worker)
    async with aiohttp.ClientSession() as http, http.get(f"{base}/favicon.ico") as r:
        assert r.status == 200 and r.content_type == "image/svg+xml"

    await page.goto(f"{base}/console/login")
    await page.fill("input[name=name]", "li")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button.primary")
    await expect(page.locator("#live-status")).to_have_class("live-status ok", timeout=WAIT_MS)
    for width, height in ((390, 844), (820, 1180), (1440, 900)):
        await page.set_viewport_size({"width": width, "height": height})
        await shot(page, f"50-live-{width}")
        overflow = await page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{width} px: the page is {overflow} px wider than the screen: {await too_wide(page)}"
        logout = await page.locator(".top button.link").bounding_box()
        assert logout and logout["x"] + logout["width"] <= width, f"{width} px: log out is cut off"
        for link in await page.locator(".top nav a").all():
            box = await link.bounding_box()
            assert box["height"] < 40, f"{width} px: a menu item wraps into a column"
    await expect(page.locator("#tiles")).to_have_attribute("aria-live", "polite")
    await expect(page.locator("#health-strip")).to_have_attribute("aria-live", "polite")
    assert await page.locator("link[rel=icon]").count() == 1

    # An operator tabbed to an open case: updates re-render the list but leave focus on that link.
    link = page.locator(f"#open-cases tr[data-plate='{first}'] a.plate")
    await link.focus()
    updates = int(await page.evaluate("document.body.dataset.updates || '0'"))
    await stack.publish(stack.violation(second, city.CAMERAS[3]))
    await expect(page.locator(f"#open-cases tr[data-plate='{second}']")).to_be_visible(timeout=WAIT_MS)
    assert int(await page.evaluate("document.body.dataset.updates")) > updates
    focused = await page.evaluate("document.activeElement.closest('tr') && document.activeElement.closest('tr').dataset.plate")
    assert focused == first, "the focused open-case link lost focus on a live update"
    await page.keyboard.press("Enter")
    await expect(page.locator("#case-state")).to_have_attribute("data-state", "warned")
    await page.set_viewport_size({"width": 390, "height": 844})
    await shot(page, "51-case-390")
    overflow = await page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the case page is {overflow} px wider than a phone: {await too_wide(page)}"


async def test_the_tickets_list_filters_sorts_by_a_column_header_pages_and_exports(stack: Stack, browser_page):
    page = browser_page
    worker = stack.worker(PW_LATENESS_SECONDS="3", PW_CONSOLE_PAGE_SIZE="2")
    await worker.ready()
    await add_operator(stack, "li", "supervisor")
    await stack.all_car_parks_free(free=25)
    plates = sorted(await stack.plates_with_phone(3))
    made = await asyncio.gather(*(ticketed_case(stack, p, c) for p, c in zip(plates, city.CAMERAS[:3])))
    numbers = {p: t["number"] for p, (_, _, t) in zip(plates, made)}
    await stack.pool.execute("UPDATE tickets SET voided_at = now(), void_reason = 'wrong plate read' WHERE number = $1",
                             numbers[plates[1]])
    base = base_url(worker)
    await page.goto(f"{base}/console/login")
    await page.fill("input[name=name]", "li")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button.primary")

    await page.click("nav a[href='/console/tickets']")
    await expect(page.locator("h1")).to_have_text("告知单列表")
    rows = page.locator("#tickets tbody tr")
    await expect(rows).to_have_count(2)  # two a page here
    await expect(page.locator("#tickets th[aria-sort=descending] a")).to_have_attribute("data-sort", "issued_at")
    await shot(page, "60-tickets")

    # Sort by plate: a click on the header sorts ascending, a second one descending; pages keep the order.
    await page.click("#tickets a[data-sort=plate]")
    await expect(page.locator("#tickets th[aria-sort=ascending] a")).to_have_attribute("data-sort", "plate")
    await expect(rows.locator(".plate")).to_have_text(plates[:2])
    await expect(page.locator(f"#tickets tr[data-ticket='{numbers[plates[1]]}'] .badge")).to_have_text("已作废")
    await page.click("#tickets-pager .next-page")
    await expect(rows.locator(".plate")).to_have_text(plates[2:])
    await page.click("#tickets a[data-sort=plate]")  # again: the other way round, from the first page
    await expect(page.locator("#tickets th[aria-sort=descending] a")).to_have_attribute("data-sort", "plate")
    await expect(rows.locator(".plate")).to_have_text(plates[::-1][:2])
    await shot(page, "61-tickets-sorted-by-plate")

    # Filter: voided only; the export follows the filter and the sort.
    await page.select_option("#ticket-filters select[name=status]", "voided")
    await page.click("#ticket-filters button")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-status", "voided")
    exported = await page.request.get(f"{base}/console/tickets?status=voided&sort=plate&dir=desc&format=csv")
    body = await exported.body()
    assert exported.ok and body.startswith("\ufeff".encode())
    assert [line.split(",")[0] for line in body.decode("utf-8-sig").splitlines()[1:]] == [numbers[plates[1]]]
    href = await page.locator("#tickets-pager .export-csv").get_attribute("href")
    assert "status=voided" in href and "format=csv" in href

    # The audit log sorted by action, on a phone: the table scrolls inside its card.
    await page.goto(f"{base}/console/audit?all=1")
    await page.click("#audit a[data-sort=action]")
    await expect(page.locator("#audit th[aria-sort=ascending] a")).to_have_attribute("data-sort", "action")
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(f"{base}/console/tickets")
    await shot(page, "62-tickets-390")
    overflow = await page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the tickets page is {overflow} px wider than a phone: {await too_wide(page)}"
