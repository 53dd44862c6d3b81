"""The optional driver page (``PW_DRIVER_PAGE=true``): the link in the SMS (``/d/<code>``) shows the
case as it is now (``driver_status.say``: every state has its words), the time left ticking down,
what happens at the deadline, and the three nearest car parks with live free spaces, each with its
address, walking time, a navigation link for the phone's map app and a ``tel:`` link. Once the
case has a ticket, the same page shows the ticket (``pipeline.appeals.driver``). Mobile-first, no
login: it shows no phone number and only part of the plate.

    GET  /d                   the form (a code typed by hand); POST /d sends it on to /d/<code>
    GET  /d/<code>            the case
    GET  /d/<code>/state.json what the page says, as a version: an open page polls it and reloads on a change

The code is the only key, so it must not be guessable: 10 random characters, unique
(``store.give_driver_code``), travelling in the path or a POST body, never in a query string.
A case shows until it has been closed for ``PW_DRIVER_CODE_GRACE_HOURS`` (a ticketed case for as
long as its ticket is kept), and is looked up at most ``PW_DRIVER_PAGE_LOOKUPS_PER_MINUTE`` times a
minute per client address on each worker (429 with Retry-After above it), on the web side's own
connections. An unknown, mistyped or expired code gets the same answer. Pages are Jinja templates
with autoescaping (``templates/driver_*.html``), like the console's.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import prcoords
from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape

from pipeline.appeals import grounds
from pipeline.cases.store import CODE_ALPHABET, DRIVER_CODE_LENGTH
from pipeline.client_limits import client_key
from pipeline.ingest import database
from pipeline.ingest.ratelimit import LocalBuckets, retry_after_header
from pipeline.lookups.carparks import NearestCarPark, nearest_free
from pipeline.sms import driver_status
from pipeline.sms.driver_status import AppealFacts, TicketFacts

HERE = Path(__file__).parent
TEMPLATES = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
CODE_PATH = "{code:[0-9A-Za-z]{%d}}" % DRIVER_CODE_LENGTH
WALKING_M_PER_MINUTE = 75
"""An unhurried walk; the route is taken as 1.3 times the straight line (``WALKING_DETOUR``)."""
WALKING_DETOUR = 1.3
STATE_POLLS_PER_MINUTE = 12
"""An open page asks /state.json every 10 s: a budget of its own, apart from code lookups."""
PARK_STATES = {"detected", "warned", "checking"}


def mask_plate(plate: str) -> str:
    return plate[:2] + "*" * (len(plate) - 4) + plate[-2:]


def read_code(text: str) -> str | None:
    """The code as a driver may type it (any case, with spaces or dashes), or None if it cannot be one."""
    code = text.strip().upper().replace(" ", "").replace("-", "")
    if len(code) != DRIVER_CODE_LENGTH or any(c not in CODE_ALPHABET for c in code):
        return None
    return code


def amap_navigation(lat: float, lon: float, name: str) -> str:
    """AMap's URI API link that opens the phone's map app (or amap.com) walking to a place given in
    WGS-84: AMap takes GCJ-02, so the coordinates are converted (prcoords)."""
    gcj = prcoords.wgs_gcj(prcoords.Coords(lat, lon))
    return "https://uri.amap.com/navigation?" + urlencode(
        {"to": f"{gcj.lon:.6f},{gcj.lat:.6f},{name}", "mode": "walk", "coordinate": "gaode", "callnative": 1,
         "src": "parkwarden"})


@dataclass(frozen=True)
class ParkView:
    name: str
    address: str | None
    phone: str | None
    tel: str | None
    free: int
    counted: str
    distance: str
    walk_minutes: int
    navigate: str


def park_view(p: NearestCarPark, tz: ZoneInfo) -> ParkView:
    park = p.car_park
    tel = "".join(ch for ch in park.phone if ch.isdigit() or ch == "+") if park.phone else None
    walk = max(1, math.ceil(p.distance_m * WALKING_DETOUR / WALKING_M_PER_MINUTE))
    return ParkView(park.name, park.address, park.phone, tel or None, p.free_spaces,
                    f"{p.counted_at.astimezone(tz):%H:%M}", f"{p.distance_m:,.0f} m", walk,
                    amap_navigation(park.lat, park.lon, park.name))


def afterwards(settings) -> driver_status.Afterwards:
    zh, _, en = settings.notice_payment.partition("|")
    return driver_status.Afterwards(timedelta(days=settings.appeal_window_days), settings.reconsideration_days,
                                    settings.lawsuit_months, (zh.strip(), en.strip() or zh.strip()))


async def situation(conn, code: str, grace: timedelta):
    """The case a driver-page code was given for, with its ticket and appeal and PostgreSQL's now;
    None for an unknown code, or a case without a ticket closed longer than ``grace`` ago."""
    return await conn.fetchrow(
        """SELECT c.id, c.plate, c.state, c.place, c.lat, c.lon, c.deadline_at, c.caution, now() AS now,
                  t.number, t.issued_at, t.voided_at, t.void_reason,
                  a.id AS appeal_id, a.received_at, a.due_at, a.decided_at, a.outcome, a.decision_reason
             FROM cases c LEFT JOIN tickets t ON t.case_id = c.id
                  LEFT JOIN appeals a ON a.ticket_number = t.number
            WHERE c.driver_code = $1
              AND (c.closed_at IS NULL OR c.closed_at > now() - $2::interval OR t.number IS NOT NULL)""",
        code, grace)


def said_of(row, tz: ZoneInfo, after: driver_status.Afterwards) -> driver_status.Said:
    ticket = TicketFacts(row["number"], row["issued_at"], row["voided_at"], row["void_reason"]) if row["number"] else None
    appeal = (AppealFacts(grounds.reference(row["number"]), row["received_at"], row["due_at"], row["decided_at"],
                          row["outcome"], row["decision_reason"]) if row["appeal_id"] else None)
    return driver_status.say(row["state"], row["deadline_at"], row["now"], tz, after, row["caution"], ticket, appeal)


class DriverPage:
    """What the driver-page routes share: the settings, the limits, the templates, the lookups."""

    def __init__(self, runtime):
        self.runtime = runtime
        settings = self.settings = runtime.settings
        self.tz = ZoneInfo(settings.timezone)
        self.grace = timedelta(hours=settings.driver_code_grace_hours)
        self.after = afterwards(settings)
        self.lookups = LocalBuckets(settings.driver_page_lookups_per_minute / 60, settings.driver_page_lookup_burst)
        self.polls = LocalBuckets(STATE_POLLS_PER_MINUTE / 60, STATE_POLLS_PER_MINUTE)
        self.ticket_context = None
        """Set by ``pipeline.appeals.driver``: (code, situation row) -> the ticket part of the page."""

    def render(self, name: str, status: int = 200, headers: dict | None = None, **context) -> web.Response:
        html = TEMPLATES.get_template(name).render(authority=self.settings.sms_signature, **context)
        return web.Response(text=html, content_type="text/html", status=status,
                            headers={**SECURITY_HEADERS, **(headers or {})})

    def form(self, status: int = 200, error: str | None = None, headers: dict | None = None) -> web.Response:
        return self.render("driver_form.html", status, headers, error=error)

    def limited(self, request: web.Request, buckets: LocalBuckets | None = None) -> web.Response | None:
        """A 429 when this client address has used up its lookups, else None."""
        wait = (buckets or self.lookups).take(client_key(request, self.settings.trusted_proxy_networks))
        if wait <= 0:
            return None
        retry = retry_after_header(wait)
        return self.form(429, f"查询过于频繁，请{retry}秒后再试 Too many lookups: try again in {retry} s.",
                         {"Retry-After": retry})

    async def lookup(self, request: web.Request, buckets: LocalBuckets | None = None):
        """(code, situation row) for the code in the path, or the answer to send instead."""
        refused = self.limited(request, buckets)
        if refused is not None:
            return refused
        code = read_code(request.match_info["code"])
        if code is None:
            return self.form(404, "未找到，请核对查询码 Not found: check the code.")
        await self.runtime.ready.wait()
        try:
            async with database.connection(self.runtime.web_pool) as conn:
                row = await situation(conn, code, self.grace)
        except database.DatabaseAway:
            return self.form(503, "系统繁忙，请稍后再试 Busy: try again in a minute.", {"Retry-After": "30"})
        if row is None:
            return self.form(404, "未找到，请核对查询码 Not found: check the code.")
        return code, row

    def local(self, value) -> str:
        if value is None:
            return "–"
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return f"{value.astimezone(self.tz):%Y-%m-%d %H:%M}"

    async def ticket_page(self, code: str, row, status: int = 200, notice: str | None = None,
                          error: str | None = None, form: dict | None = None) -> web.Response:
        context = await self.ticket_context(code, row) if self.ticket_context else {}
        return self.case_page(code, row, context | {"form": form or {}}, status, notice, error)

    def case_page(self, code: str, row, ticket_context: dict | None = None, status: int = 200,
                  notice: str | None = None, error: str | None = None) -> web.Response:
        said = said_of(row, self.tz, self.after)
        now = row["now"]
        left = ""
        if said.countdown_to:
            seconds = max(0, int((said.countdown_to - now).total_seconds()))
            left = f"{seconds // 60}:{seconds % 60:02d}"
        parks = []
        if said.key in PARK_STATES:
            parks = [park_view(p, self.tz) for p in nearest_free(self.runtime.car_parks, row["lat"], row["lon"], 3)]
        return self.render("driver_case.html", status, code=code, plate=mask_plate(row["plate"]), place=row["place"],
                           said=said, now=now, now_local=f"{now.astimezone(self.tz):%H:%M:%S}", left=left,
                           show_parks=said.key in PARK_STATES, parks=parks, phone=self.after.phone,
                           local=self.local, notice=notice, error=error, **(ticket_context or {}))


def register(app, runtime) -> DriverPage:
    driver = DriverPage(runtime)

    async def form(request: web.Request) -> web.Response:
        return driver.form()

    async def typed(request: web.Request) -> web.Response:
        data = await request.post()
        code = read_code(str(data.get("code", "")))
        if code is None:
            return driver.form(400, f"查询码为{DRIVER_CODE_LENGTH}位字母数字 The code has {DRIVER_CODE_LENGTH} "
                                    "letters/digits.")
        raise web.HTTPSeeOther(f"/d/{code}")

    async def case(request: web.Request) -> web.Response:
        found = await driver.lookup(request)
        if isinstance(found, web.Response):
            return found
        code, row = found
        if row["number"]:
            return await driver.ticket_page(code, row)
        return driver.case_page(code, row)

    async def state(request: web.Request) -> web.Response:
        found = await driver.lookup(request, driver.polls)
        if isinstance(found, web.Response):
            return web.json_response({"error": "not found" if found.status == 404 else "try later"},
                                     status=found.status, headers={"Cache-Control": "no-store"})
        _, row = found
        said = said_of(row, driver.tz, driver.after)
        return web.json_response({"version": said.version, "key": said.key,
                                  "deadline_at": said.countdown_to.isoformat() if said.countdown_to else None},
                                 headers={"Cache-Control": "no-store"})

    r = app.web.web_app.router
    r.add_static("/d/static", HERE / "static")
    r.add_get("/d", form)
    r.add_post("/d", typed)
    r.add_get(f"/d/{CODE_PATH}", case)
    r.add_get(f"/d/{CODE_PATH}/state.json", state)
    return driver
