"""The console's map in a real headless Chromium against a running worker (as test_console_browser.py):
cameras with a silent one flagged, zone shapes and the road segment, car parks coloured by fill, open
cases with their time left and a link to the case; at 1440, 820 and 390 px; every request the page makes
goes to the console itself unless the city configured a tile server (PW_MAP_TILES). Screenshots in
var/artifacts/console/8*.png."""

import asyncio
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from playwright.async_api import expect

from pipeline.demo import city
from schemas import events

from .conftest import ROOT, Stack, free_port
from .console_helpers import PASSWORD, add_operator, base_url
from .test_console_browser import WAIT_MS, browser_page, shot, too_wide  # noqa: F401 - browser_page is a fixture

SILENT = city.CAMERAS[1]
COUNTDOWN = re.compile(r"剩余 ([0-9]|10):[0-5][0-9]")
"""A warned case's label: its time left of a 10-minute window, counting down."""
PNG = (ROOT / "pipeline" / "console" / "static" / "leaflet" / "images" / "layers.png").read_bytes()
"""What the test's tile server answers for every tile."""


async def log_in(page, base: str, next_page: str) -> None:
    await page.goto(f"{base}/console/login?next={next_page}")
    await page.fill("input[name=name]", "li")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button.primary")


async def tile_server(port: int, asked: list[str]) -> web.AppRunner:
    """A city's tile server on loopback (another origin than the console's): every tile is one PNG."""
    async def tile(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.Response(body=PNG, content_type="image/png")

    app = web.Application()
    app.router.add_get("/{z}/{x}/{y}.png", tile)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def test_the_map_shows_cameras_zones_car_parks_and_open_cases_and_fetches_tiles_only_when_configured(
        stack: Stack, browser_page):
    page = browser_page
    tiles: list[str] = []
    tiles_port = free_port()
    runner = await tile_server(tiles_port, tiles)
    try:
        await the_map(stack, page, tiles_port, tiles)
    finally:
        await runner.cleanup()


async def the_map(stack: Stack, page, tiles_port: int, tiles: list[str]) -> None:
    # Two workers: one without tiles (the default), one with the city's tile server.
    worker = stack.worker(PW_WINDOW_SECONDS="600", PW_MAP_REFRESH_SECONDS="1", PW_MAP_SILENT_MIN_SECONDS="120")
    tiled = stack.worker(PW_WINDOW_SECONDS="600", PW_MAP_TILES=f"http://127.0.0.1:{tiles_port}/{{z}}/{{x}}/{{y}}.png",
                         PW_MAP_TILES_ATTRIBUTION="© 杭州市规划和自然资源局 <b>test</b>")
    await worker.ready()
    await tiled.ready()
    await add_operator(stack, "li", "viewer")
    now = datetime.now(UTC)
    # Car parks: the first full, the second filling, the last without a count, the rest with room.
    # One camera saw a car every 30 s until 10 minutes ago, then nothing: silent. The others saw one just now.
    passing = (await stack.plates_with_phone(40))[2:]
    others = [c for c in city.CAMERAS if c is not SILENT]
    await asyncio.gather(
        *(stack.publish(events.CarParkStatus(car_park_id=car_park_id, reported_at=now, free_spaces=(
            0 if i == 0 else max(1, capacity // 10) if i == 1 else capacity // 2)))
          for i, (car_park_id, *_rest, capacity) in enumerate(city.CAR_PARKS[:-1])),
        *(stack.publish(stack.observation(passing[i], SILENT, at=now - timedelta(seconds=870 - 30 * i))) for i in range(10)),
        *(stack.publish(stack.observation(passing[10 + i], camera)) for i, camera in enumerate(others)))
    first, second = await stack.plates_with_phone(2)
    await stack.publish(stack.violation(first, city.CAMERAS[0]))
    await stack.publish(stack.violation(second, city.CAMERAS[3]))
    case = await stack.wait_state(first, "warned", timeout=30)
    await stack.wait_state(second, "warned", timeout=30)
    base = base_url(worker)
    origin = urlsplit(base).netloc
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)

    async with aiohttp.ClientSession() as http, http.get(f"{base}/console/api/map", allow_redirects=False) as r:
        assert r.status == 401, "the map's data without a login"

    await page.set_viewport_size({"width": 1440, "height": 900})
    await log_in(page, base, "/console/map")
    await expect(page.locator("nav a.on")).to_have_text("地图", timeout=WAIT_MS)
    cameras = page.locator("#map path.pw-camera")
    await expect(cameras).to_have_count(len(city.CAMERAS), timeout=WAIT_MS)
    await expect(page.locator("#map path.pw-camera-silent")).to_have_count(1, timeout=WAIT_MS)
    await expect(page.locator("#map path.pw-zone")).to_have_count(len(city.ZONE_SHAPES))
    await expect(page.locator("#map path.pw-zone-road")).to_have_count(1)
    await expect(page.locator("#map path.pw-car-park")).to_have_count(len(city.CAR_PARKS))
    await expect(page.locator("#map path.pw-fill-full")).to_have_count(1, timeout=WAIT_MS)
    await expect(page.locator("#map path.pw-fill-filling")).to_have_count(1)
    await expect(page.locator("#map path.pw-fill-unknown")).to_have_count(1)
    await expect(page.locator("#map path.pw-case")).to_have_count(2)
    await expect(page.locator("#silent-cameras li[data-camera]")).to_have_count(1)
    await expect(page.locator(f"#silent-cameras li[data-camera='{SILENT.id}']")).to_contain_text("分钟前")
    label = page.locator(".pw-case-label", has_text=first)
    await expect(label.locator(".map-countdown")).to_have_text(COUNTDOWN, timeout=WAIT_MS)
    await shot(page, "80-map-1440")

    # The GeoJSON the page draws, and its time left counted on PostgreSQL's clock.
    before = await stack.pool.fetchval("SELECT now()")
    served = await (await page.request.get(f"{base}/console/api/map")).json()
    after = await stack.pool.fetchval("SELECT now()")
    kinds = [f["properties"]["layer"] for f in served["features"]]
    assert {k: kinds.count(k) for k in set(kinds)} == {"camera": 8, "zone": 3, "car_park": 20, "case": 2}
    assert served["summary"]["silent_cameras"] == 1
    read_at = datetime.fromisoformat(served["now"])
    # Read within PW_MAP_REFRESH_SECONDS (1) plus a read before this request, on PostgreSQL's clock; time left counted from it.
    assert before - timedelta(seconds=5) <= read_at <= after, (before, read_at, after)
    left = next(f["properties"] for f in served["features"] if f["properties"].get("plate") == first)
    assert abs(left["seconds_left"] - (case["deadline_at"] - read_at).total_seconds()) <= 0.5, left
    assert "phone" not in str(served)

    # A camera links to its cases (the case search by camera).
    cases_of_camera = next(f["properties"]["href"] for f in served["features"] if f["id"] == f"camera:{city.CAMERAS[0].id}")
    assert first in await (await page.request.get(f"{base}{cases_of_camera}")).text()

    # A case marker links to its case.
    await page.locator("#map path.pw-case").first.click(force=True)
    popup = page.locator(".leaflet-popup a.plate")
    await expect(popup).to_have_count(1)
    await expect(page.locator(".leaflet-popup")).to_have_css("opacity", "1")
    await expect(page.locator(".leaflet-popup .map-countdown")).to_have_text(COUNTDOWN)
    href = await popup.get_attribute("href")
    assert href.startswith("/console/cases/")
    await shot(page, "81-map-case-popup-1440")

    # A tablet and a phone: the map and the lists fit.
    for width, height, name in ((820, 1180, "82-map-820"), (390, 844, "82-map-390")):
        await page.set_viewport_size({"width": width, "height": height})
        await page.reload()
        await expect(page.locator("#map path.pw-case")).to_have_count(2, timeout=WAIT_MS)
        overflow = await page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the map page is {overflow} px wider than {width} px: {await too_wide(page)}"
        await shot(page, name)
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.locator("#map path.pw-case").first.click(force=True)
    await page.locator(".leaflet-popup a.plate").click()
    await expect(page.locator("#case-state")).to_have_attribute("data-state", "warned", timeout=WAIT_MS)

    # In English.
    await page.set_viewport_size({"width": 1440, "height": 900})
    await page.goto(f"{base}/console/lang?to=en&next=/console/map")
    await expect(page.locator("nav a.on")).to_have_text("Map", timeout=WAIT_MS)
    await expect(page.locator(f"#silent-cameras li[data-camera='{SILENT.id}']")).to_contain_text("min ago", timeout=WAIT_MS)
    await expect(page.locator("#map path.pw-case")).to_have_count(2, timeout=WAIT_MS)
    await shot(page, "84-map-english-1440")

    outside = [u for u in requests if urlsplit(u).netloc != origin]
    assert outside == [], f"the map fetched from outside the console: {outside[:5]}"
    assert tiles == []
    assert not [e for e in console_errors if "Content Security Policy" in e], console_errors

    # With PW_MAP_TILES the map draws the city's tiles (its host allowed in the page's CSP) and their attribution, as text.
    await page.goto(f"{base_url(tiled)}/console/map")  # the same session: cookies do not keep to a port
    await expect(page.locator("#map img.leaflet-tile-loaded").first).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator(".leaflet-control-attribution")).to_contain_text("© 杭州市规划和自然资源局 <b>test</b>")
    await expect(page.locator("#map path.pw-case")).to_have_count(2, timeout=WAIT_MS)
    assert tiles, "no tile was asked for"
    assert not [e for e in console_errors if "Content Security Policy" in e], console_errors
    await shot(page, "83-map-with-tiles")
