"""A driver on a phone (390x844, zh-CN, headless Chromium driven by Playwright) follows the SMS link:
warning -> page (the countdown ticks, car parks to walk to) -> moved (the page updates by itself);
warning -> ticket -> the ticket's page with the evidence -> the notice (PDF) -> an appeal with a
photo -> the decision -> a void. Screenshots are kept in var/artifacts/driver/ (README: the driver's
journey); install the browser with `scripts/browser.sh install`."""

import io
import re
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from pipeline.demo import city, photos
from schemas import events
from tests.local_server import free_port

from .conftest import ROOT, Stack, sleep_until, wait_for
from .console_helpers import ConsoleClient, add_operator, base_url
from .test_evidence_images import captured

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "var" / "artifacts" / "driver"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 30_000
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True,
         "locale": "zh-CN", "timezone_id": "Asia/Shanghai"}


@pytest.fixture
async def phone():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `scripts/browser.sh install`", pytrace=False)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pw-chromium-") as profile:
        async with async_playwright() as p:
            context = await p.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, **PHONE)
            page = context.pages[0] if context.pages else await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            try:
                yield page
            finally:
                await context.close()
            assert errors == [], f"JavaScript errors on the driver page: {errors}"


async def shot(page, name: str) -> None:
    await page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


async def fits_the_phone(page) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide: it scrolls sideways on a 390 px phone"


async def link_in_sms(stack: Stack, plate: str, words: str) -> str:
    async def sent():
        return [line["text"] for line in stack.handset_lines() if plate in line["text"] and words in line["text"]]
    text = (await wait_for(sent, 30, f"the SMS with {words!r}"))[0]
    return re.search(r" (http://\S+/d/[2-9A-Z]{10})$", text).group(1)


def phone_photo() -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (1200, 900), (200, 200, 190))
    ImageDraw.Draw(image).rectangle((300, 300, 900, 700), fill=(230, 30, 30))  # an ambulance, roughly
    exif = Image.Exif()
    exif[0x0110] = "PhoneModel X"
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    return out.getvalue()


async def test_a_driver_follows_the_sms_link_moves_in_time_and_the_page_says_so_by_itself(stack: Stack, phone):
    page = phone
    worker = stack.worker(PW_DRIVER_PAGE="true", PW_WINDOW_SECONDS="60")
    await worker.ready()
    await stack.all_car_parks_free(free=25)
    plate = (await stack.plates_with_phone(1))[0]
    await stack.publish(stack.violation(plate, city.CAMERAS[0]))
    await stack.wait_state(plate, "warned", timeout=20)
    link = await link_in_sms(stack, plate, "驶离")
    link = re.sub(r"^http://[^/]+", base_url(worker), link)

    await page.goto(link)
    await expect(page.locator("#status")).to_have_attribute("data-key", "warned")
    await expect(page.locator("#headline")).to_contain_text("前驶离")
    await expect(page.locator("#status")).to_contain_text("后仍在原处，将开具违停告知单")
    first = await page.locator("#countdown").text_content()
    await page.wait_for_timeout(2500)
    second = await page.locator("#countdown").text_content()
    assert first != second, f"the countdown ticks ({first} then {second})"
    parks = page.locator("#parks li.park")
    await expect(parks).to_have_count(3)
    navigate = await parks.first.locator("a", has_text="导航").get_attribute("href")
    assert navigate.startswith("https://uri.amap.com/navigation?") and "mode=walk" in navigate
    await expect(parks.first).to_contain_text("步行约")
    await expect(page.locator("#parks a[href^='tel:']").first).to_be_visible()
    await fits_the_phone(page)
    await shot(page, "01-warned")

    await page.evaluate("window.stillTheSamePage = true")
    await stack.publish(stack.departure(plate, city.CAMERAS[0]))
    await expect(page.locator("#status")).to_have_attribute("data-key", "moved", timeout=WAIT_MS)
    await expect(page.locator("#headline")).to_contain_text("已驶离，无需处理")
    await expect(page.locator("#parks")).to_have_count(0)
    await shot(page, "02-moved")


async def test_a_driver_gets_a_ticket_sees_the_photos_keeps_the_notice_appeals_with_a_photo_and_is_told(
        stack: Stack, phone, tmp_path):
    page = phone
    tls = photos.make_ca(tmp_path / "ca")  # the cameras' images, on the demo's HTTPS image server
    port = free_port()
    server = await photos.serve(tls, "127.0.0.1", port)
    try:
        worker = stack.worker(PW_DRIVER_PAGE="true", PW_LATENESS_SECONDS="3", PW_EVIDENCE_CA_FILE=str(tls.ca_file),
                              PW_EVIDENCE_HOSTS=f"{city.INTEGRATOR}=localhost", PW_EVIDENCE_POLL_SECONDS="0.2")
        await worker.ready()
        await add_operator(stack, "li", "supervisor")
        await stack.all_car_parks_free(free=25)
        plate = (await stack.plates_with_phone(1))[0]
        camera, images = city.CAMERAS[0], f"https://localhost:{port}"
        await stack.publish(captured(stack, events.ViolationDetected, plate, images, camera)[0])
        case = await stack.wait_state(plate, "warned", timeout=20)
        await sleep_until(case["deadline_at"] + timedelta(seconds=1))
        await stack.publish(captured(stack, events.VehicleObserved, plate, images, camera)[0])
        case = await stack.wait_state(plate, "ticketed", timeout=20)
        ticket = await stack.pool.fetchrow("SELECT * FROM tickets WHERE case_id = $1", case["id"])

        async def both_stored():
            return await stack.pool.fetchval("SELECT count(*) FROM evidence_fetches WHERE case_id = $1 "
                                             "AND state = 'stored'", case["id"]) == 2
        await wait_for(both_stored, 30, "both evidence images fetched")
        link = re.sub(r"^http://[^/]+", base_url(worker), await link_in_sms(stack, plate, "告知单"))

        # The ticket SMS's link: the ticket, its evidence with both photos, the notice.
        await page.goto(link)
        await expect(page.locator("#status")).to_have_attribute("data-key", "ticketed")
        await expect(page.locator("#headline")).to_contain_text(f"已开具告知单{ticket['number']}")
        await expect(page.locator("#captures li")).to_have_count(2)
        for n in (1, 2):  # each thumbnail shows the image as the camera took it (loaded, not broken)
            thumb = page.locator(f'img.thumb[src$="/evidence/{n}"]')
            await expect(thumb).to_have_count(1)
            assert await thumb.evaluate("i => i.complete && i.naturalWidth > 0"), f"evidence image {n} not shown"
    finally:
        await server.cleanup()
    await expect(page.locator("#verification-code")).not_to_have_text("–")
    await fits_the_phone(page)
    await shot(page, "03-ticket")
    pdf = await page.request.get(base_url(worker) + await page.locator("#notice-pdf").get_attribute("href"))
    assert pdf.ok and pdf.headers["content-type"] == "application/pdf" and (await pdf.body()).startswith(b"%PDF")

    # The appeal, with a photo from the phone.
    photo = tmp_path / "IMG_0042.JPG"
    photo.write_bytes(phone_photo())
    await page.select_option("#ground", "emergency_avoidance")
    await page.fill("#statement", "为避让救护车临时停靠")
    await page.set_input_files("#photos", str(photo))
    await shot(page, "04-appeal-form")
    await page.click("#appeal-form button")
    await expect(page.locator("#status")).to_have_attribute("data-key", "under_appeal")
    assert page.url == link, "post, redirect, get: a reload does not file again"
    await expect(page.locator("#headline")).to_contain_text(f"SS{ticket['number']}")
    await expect(page.locator("#appeal-photos img")).to_have_count(1)
    await page.reload()
    await expect(page.locator("#status")).to_have_attribute("data-key", "under_appeal")
    await fits_the_phone(page)
    await shot(page, "05-appeal-filed")

    # The decision (an officer upholds the ticket): the page changes by itself and says what is left.
    appeal_id = await stack.pool.fetchval("SELECT id FROM appeals WHERE ticket_number = $1", ticket["number"])
    officer = ConsoleClient(base_url(worker))
    try:
        await officer.login("li")
        status, _, _ = await officer.post(f"/console/appeals/{appeal_id}/decide",
                                          {"outcome": "upheld", "reason": "现场无救护车通行记录"})
        assert status == 303
        await expect(page.locator("#status")).to_have_attribute("data-key", "appeal_upheld", timeout=WAIT_MS)
        await expect(page.locator("#status")).to_contain_text("行政复议")
        await expect(page.locator("#status")).to_contain_text("行政诉讼")
        await shot(page, "06-appeal-upheld")

        # Then the ticket is voided: no appeal window in the future, nothing to do.
        status, _, _ = await officer.post(f"/console/tickets/{ticket['number']}/void",
                                          {"reason": "复核发现标志不清", "confirmed": "yes"})
        assert status == 303
    finally:
        await officer.close()
    await expect(page.locator("#status")).to_have_attribute("data-key", "voided", timeout=WAIT_MS)
    await expect(page.locator("#headline")).to_contain_text("已撤销，无需处理")
    await expect(page.locator("#ticket-status")).to_contain_text("已撤销")
    assert "申诉期" not in await page.locator("main").inner_text()
    await shot(page, "07-voided")
