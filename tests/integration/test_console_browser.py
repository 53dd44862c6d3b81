"""The console in a real headless Chromium (Debian's, driven by Playwright) against a running worker:
log in, watch a case go from warned to ticketed without reloading, void the ticket with a reason,
find the audit entry; a driver appeals a ticket on the driver page and an officer decides it. Screenshots are kept in var/artifacts/console/ (install the browser with
`scripts/browser.sh install`)."""

import asyncio
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from pipeline.demo import city
from tests.privacy import masked_phone_in

from .conftest import ROOT, Stack
from .console_helpers import PASSWORD, add_operator, base_url, phone_of, ticketed_case

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
    await expect(page.locator(".notice.ok")).to_have_text("告知单已作废。")
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
    await expect(page.locator("#recent")).to_contain_text("ticketed")
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
    await row.locator("a.ticket").click()
    await expect(page.locator("#appeal-statement")).to_have_text("为避让救护车临时停靠")
    await expect(page.locator("#appeal-evidence #evidence li")).to_have_count(2)
    await shot(page, "14-appeal-with-evidence")
    await page.fill("#decision-reason", "医院证实救护车当时经过")
    await page.click("#void")
    await expect(page.locator(".notice.ok")).to_contain_text("申诉已处理")
    await expect(page.locator("#appeal-outcome")).to_have_attribute("data-outcome", "voided")
    await shot(page, "15-appeal-decided")
    voided = await stack.pool.fetchrow("SELECT voided_at, void_reason FROM tickets WHERE number = $1", ticket["number"])
    assert voided["voided_at"] is not None and voided["void_reason"] == "appeal allowed: 医院证实救护车当时经过"
