"""The operators' console on each worker's web server (Faust's aiohttp application), plus /metrics,
/healthz and /readyz.

Views are thin: read the request, check the session, ask ``queries`` or ``actions``, render a
template. Live pages get their updates as server-sent events: the server re-renders the parts
of the page that changed and the browser swaps them in (``static/console.js``), so the page
never reloads and there is one renderer (the templates).

Every /console page and API needs a logged-in operator (a session cookie, HttpOnly,
SameSite=Strict); every POST needs the session's CSRF token; actions need a supervisor. A login
passes the limits in ``auth`` (per address, at most N at once, per name and address) before its
password is checked, off the event loop. /metrics answers the addresses in ``PW_METRICS_ALLOW``
(loopback by default) or a bearer token; Faust's own views (``FAUST_WEB``) are not served.
"""

import asyncio
import contextlib
import csv
import functools
import io
import hmac
import ipaddress
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client import CONTENT_TYPE_LATEST

from pipeline import bootstrap
from pipeline.cases import reasons, store, watermarks
from pipeline.cases.store import case_from_row, init_connection
from pipeline.client_limits import client_key
from pipeline.console import actions, auth, health, listing, metrics, queries
from pipeline.console.actions import Refused
from pipeline.console.i18n import DEFAULT, LANGUAGES, Words
from pipeline.evidence import store as evidence_images
from pipeline.cases.machine import Sighting
from schemas import topics

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
LANG_COOKIE = "pw_lang"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


FAUST_WEB = {"web_router_enabled": False, "web_tables_enabled": False, "web_stats_enabled": False,
             "web_graph_enabled": False, "web_metrics_enabled": False}
"""Faust app settings: none of Faust's own web views (/router, /table, /graph, the statistics at /
and /assignment/, /performance) is served; they would show the cluster's layout to anyone. Faust
then answers only ``{"status": "OK"}`` at ``/``."""
DEAD_LETTER_PAGE = 100
EXPORT_LIMIT = 50_000
SLOW_REFRESH_SECONDS = 60.0
"""How often the 24-hour drive-away rate and the list of cameras are re-read."""
TOTALS_SECONDS = 15.0
"""How often today's totals and the open cases by state are re-counted (``queries.day_totals``: a
million rows each at a province's size); the live page says so under its tiles."""
STALE_SECONDS = 10.0
"""A figure past its refresh interval but read less than this longer ago is shown at once while it
is re-read behind (``metrics.Refreshed``): no page nor scrape waits for a slow count. Older than that
(a worker idle for a while), the request waits for the read. After an operator's action the figures
are read afresh (``Console.invalidate``), so the page shows what the action did."""


def register(app, runtime) -> "Console":
    """Add the console, /metrics, /healthz and /readyz to the Faust app's web server."""
    console = Console(runtime)
    web_app = app.web.web_app
    web_app.middlewares.append(console_headers)
    r = web_app.router
    r.add_get("/console", to_console)
    r.add_get("/console/", console.live)
    r.add_get("/console/login", console.login_page)
    r.add_post("/console/login", console.login)
    r.add_post("/console/logout", console.logout)
    r.add_get("/console/lang", console.language)
    r.add_get("/console/live/stream", console.live_stream)
    r.add_get("/console/api/overview", console.overview_json)
    r.add_get("/console/cases", console.search)
    r.add_get("/console/cases/{case_id}", console.case)
    r.add_get("/console/cases/{case_id}/stream", console.case_stream)
    r.add_post("/console/cases/{case_id}/close", console.close_case)
    r.add_post("/console/cases/{case_id}/review", console.resolve_review)
    r.add_get("/console/confirm", console.confirm_queue)
    r.add_get("/console/review", console.review_queue)
    r.add_get("/console/dead-letters", console.dead_letters)
    r.add_post("/console/dead-letters/{id:[0-9]+}/replay", console.replay_dead_letter)
    r.add_post("/console/review/close", console.review_close)
    r.add_post("/console/review/{case_id}/claim", console.review_claim)
    r.add_get("/console/evidence/{sha256:[0-9a-f]{64}}", console.evidence_image)
    r.add_post("/console/cases/{case_id}/confirm", console.confirm_or_reject)
    r.add_get("/console/tickets", console.tickets)
    r.add_post("/console/tickets/{number}/void", console.void_ticket)
    r.add_get("/console/audit", console.audit)
    r.add_get("/console/summary", console.summary)
    r.add_get("/console/health", console.health_page)
    r.add_get("/console/health/stream", console.health_stream)
    r.add_get("/console/rules", console.rules)
    r.add_post("/console/rules/whitelist", console.whitelist_add)
    r.add_post("/console/rules/whitelist/remove", console.whitelist_remove)
    r.add_post("/console/rules/zones/{zone}/{change:exempt|lift}", console.zone_change)
    r.add_post("/console/rules/zones/{zone}/rules", console.zone_rules)
    r.add_static("/console/static", HERE / "static")
    r.add_get("/favicon.ico", favicon)
    r.add_get("/metrics", console.metrics)
    r.add_get("/healthz", console.healthz)
    r.add_get("/readyz", console.readyz)
    web_app.on_shutdown.append(console.on_shutdown)
    web_app.on_cleanup.append(console.on_cleanup)
    app.sensors.add(metrics.StageSensor(console.worker_metrics))
    return console


@web.middleware
async def console_headers(request: web.Request, handler):
    response = await handler(request)
    if request.path.startswith("/console") and not response.prepared:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


async def favicon(request: web.Request) -> web.Response:
    """Browsers ask for /favicon.ico whatever the page says: the console's icon, not a 404."""
    return web.FileResponse(HERE / "static" / "favicon.svg", headers={"Content-Type": "image/svg+xml",
                                                                       "Cache-Control": "max-age=86400"})


async def to_console(request: web.Request) -> web.Response:
    raise web.HTTPSeeOther("/console/")


def safe_next(target: str | None) -> str:
    """Only ever send an operator back into the console (no open redirect)."""
    if not target or not target.startswith("/console") or target.startswith("//") or "\\" in target:
        return "/console/"
    return target


def guarded(act: bool = False, api: bool = False):
    """Require a session; on POST also the session's CSRF token (and, with ``act``, a supervisor).
    After a POST the console's figures are read afresh (``Console.invalidate``)."""

    def wrap(handler):
        @functools.wraps(handler)
        async def guarded_handler(self: "Console", request: web.Request):
            session = await self.session_of(request)
            if session is None:
                if api or request.method != "GET":
                    raise web.HTTPUnauthorized(text="log in first: /console/login")
                raise web.HTTPSeeOther(f"/console/login?next={quote(request.path_qs)}")
            request["session"] = session
            if request.method == "GET" and not api:
                request["health"] = await health_for_page(self)
            if request.method != "POST":
                return await handler(self, request)
            try:
                form = await request.post()
                request["form"] = form
                if not auth.csrf_matches(session.csrf_token, form.get("csrf") or request.headers.get("X-CSRF-Token")) \
                        or not same_origin(request):
                    return self.message(request, 403, "error.forbidden", "refused.csrf")
                if act and not session.operator.can_act:
                    return self.message(request, 403, "error.forbidden", "refused.supervisors_only")
                return await handler(self, request)
            finally:
                getattr(self, "console", self).invalidate()

        return guarded_handler

    return wrap


async def health_for_page(pages) -> "health.Health | None":
    """The health strip's figures for a page (any page class that holds the ``console``)."""
    console = getattr(pages, "console", pages)
    try:
        async with asyncio.timeout(5):
            return await console.health.get()
    except Exception as exc:  # noqa: BLE001 - a page still shows without its strip
        log.warning("console: health not read: %s", type(exc).__name__)
        return None


def same_origin(request: web.Request) -> bool:
    """A browser's Origin header, when present, must name this server."""
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host


class Console:
    def __init__(self, runtime):
        self.runtime = runtime
        self.settings = s = runtime.settings
        self.tz = ZoneInfo(s.timezone)
        self.camera_events = s.topic(topics.CAMERA_EVENTS.name)
        self.closing = asyncio.Event()
        self.worker_metrics = metrics.WorkerMetrics()
        inputs = lambda: [self.camera_events, s.topic(topics.CAR_PARK_STATUS.name),  # noqa: E731
                          *(topics.camera_events_of(self.camera_events, n) for n in sorted(runtime.integrators))]
        self.kafka = metrics.KafkaProbe(s.kafka_bootstrap, s.app_id, inputs, options=bootstrap.kafka_client_options(s))
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self.login_addresses = auth.AddressLimiter(s.console_login_per_address_per_minute)
        self.password_checks = auth.PasswordChecks(s.console_login_concurrency)
        self._address_limited_pages: dict[str, bytes] = {}
        every, slow = s.console_refresh_seconds, max(s.console_refresh_seconds, SLOW_REFRESH_SECONDS)
        self._reads = asyncio.Semaphore(max(1, s.console_db_pool_size - 1))
        """Figures read behind take at most this many of the pool's connections: one is left for pages."""
        self.live_counts = metrics.Refreshed(every, self._read_live_counts, STALE_SECONDS)
        self.totals = metrics.Refreshed(max(every, TOTALS_SECONDS), self._read_totals, TOTALS_SECONDS + STALE_SECONDS)
        self.counts = metrics.Refreshed(0, self._read_counts)
        self.live_view = metrics.Refreshed(every, self._read_overview, STALE_SECONDS)
        self.drive_away = metrics.Refreshed(slow, self._read_drive_away, slow)
        self.latency = metrics.Refreshed(every, self._read_latency, STALE_SECONDS)
        self.input_read = metrics.Refreshed(every, self._read_input, STALE_SECONDS)
        self.consumer_lag = metrics.Refreshed(every, self.kafka.lag)
        self.cameras = metrics.Refreshed(slow, self._read_cameras, slow)
        self.health_reader = health.HealthReader(
            s.kannel_status_url.get_secret_value() if s.kannel_status_url and s.sms_gateway == "kannel" else None)
        self.health = metrics.Refreshed(every, self._read_health, STALE_SECONDS)
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                                     autoescape=select_autoescape(default=True, default_for_string=True))
        self.templates.filters.update(clock=self._clock, when=self._when, left=_time_left, duration=_duration, age=_age)

    # ── plumbing ────────────────────────────────────────────────────────────────────────────

    async def db(self) -> asyncpg.Pool:
        """The console's own small pool (apart from the pipeline's), opened on first use."""
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self.settings.database_url.get_secret_value(), min_size=0,
                        max_size=self.settings.console_db_pool_size, init=init_connection)
        return self._pool

    @contextlib.asynccontextmanager
    async def reading(self):
        """A connection for a figure's read (``_reads`` of them at a time)."""
        pool = await self.db()
        async with self._reads, pool.acquire() as conn:
            yield conn

    def invalidate(self) -> None:
        """After an operator's action: the next page reads the figures afresh (it waits for them)."""
        for figure in (self.live_counts, self.totals, self.live_view, self.input_read, self.health):
            figure.invalidate()

    async def desk(self) -> actions.Desk:
        try:
            await asyncio.wait_for(self.runtime.ready.wait(), 10)
        except TimeoutError:
            raise web.HTTPServiceUnavailable(text="the worker is still starting") from None
        s = self.settings
        return actions.Desk(await self.db(), bootstrap.output_topics(s), s.rules, s.ticket_prefix, self.tz,
                            self.runtime.zones.window_seconds, self.runtime.service.effects.carry_out,
                            self.runtime.service.effects.owner_of)

    async def on_shutdown(self, _app) -> None:
        self.closing.set()

    async def on_cleanup(self, _app) -> None:
        self.password_checks.close()
        await self.kafka.close()
        await self.health_reader.close()
        if self._pool is not None:
            await self._pool.close()

    async def session_of(self, request: web.Request) -> auth.Session | None:
        pool = await self.db()
        async with pool.acquire() as conn:
            return await auth.session_for(conn, request.cookies.get(auth.COOKIE), datetime.now(UTC))

    def words(self, request: web.Request) -> Words:
        lang = request.cookies.get(LANG_COOKIE, DEFAULT)
        return Words(lang if lang in LANGUAGES else DEFAULT)

    def render_text(self, template: str, t: Words, **context) -> str:
        return self.templates.get_template(template).render(t=t, now=datetime.now(UTC), **context)

    def render(self, request: web.Request, template: str, status: int = 200, **context) -> web.Response:
        t = self.words(request)
        context.setdefault("health", request.get("health"))
        text = self.render_text(template, t, session=request.get("session"), here=request.path_qs, **context)
        return web.Response(text=text, content_type="text/html", status=status)

    def message(self, request: web.Request, status: int, title_key: str, message_key: str, **params) -> web.Response:
        t = self.words(request)
        return self.render(request, "message.html", status, title=t(title_key), message=t(message_key, **params))

    def _clock(self, at: datetime | None) -> str:
        return at.astimezone(self.tz).strftime("%H:%M:%S") if at else ""

    def _when(self, at: datetime | None) -> str:
        if at is None:
            return ""
        local = at.astimezone(self.tz)
        today = datetime.now(self.tz).date()
        return local.strftime("%H:%M:%S") if local.date() == today else local.strftime("%Y-%m-%d %H:%M:%S")

    # ── login ───────────────────────────────────────────────────────────────────────────────

    async def login_page(self, request: web.Request) -> web.Response:
        if await self.session_of(request):
            raise web.HTTPSeeOther(safe_next(request.query.get("next")))
        return self.render(request, "login.html", title=self.words(request)("login.title"),
                           next=safe_next(request.query.get("next")), name="")

    async def login(self, request: web.Request) -> web.Response:
        address = client_key(request, self.settings.trusted_proxy_networks)
        wait = self.login_addresses.take(address)
        if wait:
            self.worker_metrics.logins.labels("address_limited").inc()
            return self._address_limited(self.words(request).lang, max(1, int(-(-wait // 1))))
        form = await request.post()
        if not same_origin(request):
            return self.message(request, 403, "error.forbidden", "refused.csrf")
        name, password = str(form.get("name", "")).strip().lower(), str(form.get("password", ""))
        limit = auth.LoginLimit(self.settings.console_login_max_failures,
                                timedelta(minutes=self.settings.console_login_lock_minutes))
        try:
            async with self.password_checks.slot() as slot:
                pool = await self.db()
                async with pool.acquire() as conn:
                    started = await auth.log_in(conn, name, password, address, datetime.now(UTC),
                                                timedelta(hours=self.settings.console_session_hours),
                                                slot.matches, limit)
        except auth.LoginBusy:
            return self._login_refused(request, 503, "busy", 1, "login.busy", form)
        except auth.TooManyFailures as refused:
            log.warning("console: login for %r from %s refused: too many failures", name[:32], address)
            return self._login_refused(request, 429, "locked", refused.retry_after, "login.locked", form)
        if started is None:
            self.worker_metrics.logins.labels("wrong_password").inc()
            log.warning("console: failed login for %r from %s", name[:32], address)
            return self.render(request, "login.html", 401, title=self.words(request)("login.title"),
                               error=self.words(request)("login.failed"),
                               next=safe_next(str(form.get("next", ""))), name=name)
        self.worker_metrics.logins.labels("accepted").inc()
        token, session = started
        log.info("console: %s logged in (%s)", session.operator.name, session.operator.role)
        response = web.HTTPSeeOther(safe_next(str(form.get("next", ""))))
        response.set_cookie(auth.COOKIE, token, path=auth.COOKIE_PATH, httponly=True, samesite="Strict",
                            secure=self.settings.console_secure_cookie,
                            max_age=int(self.settings.console_session_hours * 3600))
        raise response

    def _address_limited(self, lang: str, retry_after: int) -> web.Response:
        """The answer to an address over its login limit: the cheapest there is (a page rendered once
        per language), as it may come hundreds of times a second."""
        if lang not in self._address_limited_pages:
            t = Words(lang)
            self._address_limited_pages[lang] = self.render_text(
                "login.html", t, title=t("login.title"), error=t("login.address_limited"), next="/console/",
                name="", session=None, here="/console/login").encode()
        return web.Response(body=self._address_limited_pages[lang], status=429, content_type="text/html",
                            charset="utf-8", headers={"Retry-After": str(retry_after)})

    def _login_refused(self, request: web.Request, status: int, outcome: str, retry_after: float, words: str,
                       form=None) -> web.Response:
        """A login refused before its password was checked, with ``Retry-After``."""
        self.worker_metrics.logins.labels(outcome).inc()
        seconds = max(1, int(-(-retry_after // 1)))
        t = self.words(request)
        response = self.render(request, "login.html", status, title=t("login.title"),
                               error=t(words, minutes=-(-seconds // 60), seconds=seconds),
                               next=safe_next(str(form.get("next", "")) if form else None),
                               name=str(form.get("name", "")).strip().lower() if form else "")
        response.headers["Retry-After"] = str(seconds)
        return response

    @guarded()
    async def logout(self, request: web.Request) -> web.Response:
        pool = await self.db()
        async with pool.acquire() as conn:
            await auth.log_out(conn, request.cookies.get(auth.COOKIE))
        response = web.HTTPSeeOther("/console/login")
        response.del_cookie(auth.COOKIE, path=auth.COOKIE_PATH)
        raise response

    async def language(self, request: web.Request) -> web.Response:
        lang = request.query.get("to", DEFAULT)
        response = web.HTTPSeeOther(safe_next(request.query.get("next")))
        response.set_cookie(LANG_COOKIE, lang if lang in LANGUAGES else DEFAULT, path="/console",
                            samesite="Strict", max_age=365 * 24 * 3600)
        raise response

    # ── live overview ───────────────────────────────────────────────────────────────────────

    async def overview(self) -> dict:
        """The live overview, read at most once per refresh interval per worker, whoever asks."""
        return await self.live_view.get()

    async def _read_overview(self) -> dict:
        counts, drive_away = await self.counts.get(), await self.drive_away.get()
        async with self.reading() as conn:
            live = await queries.overview(conn, datetime.now(UTC), counts, drive_away)
        read = await self.input_read.get()
        live["input"] = held_for_input(read["partitions"])
        live["stale_limit"] = round(self.settings.integrator_stale_seconds)
        live["totals_every"] = round(self.totals.seconds)
        live["stale_integrators"] = [
            {"integrator": r["integrator"], "topic": r["topic"], "since": self._when(r["since"]),
             "behind_seconds": round(r["behind_seconds"])}
            for r in read["stale"]]
        return live

    async def _read_input(self) -> dict:
        """How far each camera-events partition is read, the decisions held for it, and the stale integrators."""
        async with self.reading() as conn:
            return await watermarks.input_read(conn, self.camera_events)

    async def _read_live_counts(self) -> dict:
        async with self.reading() as conn:
            return await queries.live_counts(conn, datetime.now(UTC))

    async def _read_totals(self) -> dict:
        async with self.reading() as conn:
            return await queries.day_totals(conn, datetime.now(UTC), self.tz)

    async def _read_counts(self) -> dict:
        """``queries.counts``: the live counts (every refresh) with today's totals (every ``TOTALS_SECONDS``)."""
        return queries.with_totals(await self.live_counts.get(), await self.totals.get())

    async def _read_drive_away(self) -> dict:
        async with self.reading() as conn:
            return await queries.drive_away_rate(conn, datetime.now(UTC) - timedelta(hours=24), self.tz)

    async def _read_latency(self) -> dict:
        async with self.reading() as conn:
            return await queries.recent_latency(conn, datetime.now(UTC), metrics.LATENCY_WINDOW)

    async def _read_health(self) -> health.Health:
        """Every health figure, once per refresh interval: the strip, /readyz and /metrics share it."""
        counts, read = await self.counts.get(), await self.input_read.get()
        async with self._reads:
            return await self.health_reader.read(await self.db(), counts, read["partitions"],
                                                 self.settings.sms_gateway in ("kannel", "http"))

    def strip_section(self, t: Words, current: "health.Health | None") -> dict[str, str]:
        return {"health-strip": self.render_text("_health.html", t, health=current)}

    @guarded()
    async def health_page(self, request: web.Request) -> web.Response:
        """Each health component with its threshold and its list: the messages awaiting a report, the
        held decisions, the outbox's oldest rows, the last hour's dead letters."""
        t = self.words(request)
        pool = await self.db()
        async with pool.acquire() as conn:
            lists = await queries.health_lists(conn)
        return self.render(request, "health.html", title=t("health.title"), nav="health", lists=lists,
                           thresholds=health.THRESHOLDS)

    @guarded(api=True)
    async def health_stream(self, request: web.Request) -> web.StreamResponse:
        t = self.words(request)

        async def sections():
            return self.strip_section(t, await self.health.get())

        return await self.stream(request, sections)

    async def _read_cameras(self) -> list[str]:
        async with self.reading() as conn:
            return await queries.cameras(conn)

    def live_sections(self, t: Words, live: dict) -> dict[str, str]:
        return {"tiles": self.render_text("_tiles.html", t, live=live),
                "open-cases": self.render_text("_open_cases.html", t, live=live),
                "recent": self.render_text("_recent.html", t, live=live),
                "car-parks": self.render_text("_car_parks.html", t, live=live),
                "drive-away": self.render_text("_drive_away.html", t, live=live)}

    @guarded()
    async def live(self, request: web.Request) -> web.Response:
        return self.render(request, "live.html", title=self.words(request)("live.title"), nav="live",
                           live=await self.overview(), live_page=True)

    @guarded(api=True)
    async def overview_json(self, request: web.Request) -> web.Response:
        live = await self.overview()
        return web.json_response(live, dumps=lambda v: json.dumps(v, default=json_default, ensure_ascii=False))

    @guarded(api=True)
    async def live_stream(self, request: web.Request) -> web.StreamResponse:
        t = self.words(request)

        async def sections():
            return {**self.live_sections(t, await self.overview()), **self.strip_section(t, await self.health.get())}

        return await self.stream(request, sections)

    async def stream(self, request: web.Request, sections, changed=None, every=None) -> web.StreamResponse:
        """Server-sent events: an ``update`` with the page parts that changed, whenever they change.

        ``changed()`` (optional) is a cheap check run every interval; the parts are rendered only
        when it returns something new. ``every()`` (optional) renders parts checked every interval
        regardless (the health strip). The stream ends when the session does or the worker stops.
        """
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no",
                                               **SECURITY_HEADERS})
        await response.prepare(request)
        sent: dict[str, str] = {}
        last_change = object()
        last_write = last_session_check = time.monotonic()
        token = request.cookies.get(auth.COOKIE)
        try:
            await response.write(b"retry: 2000\n\n")
            while not self.closing.is_set():
                marker = await changed() if changed else None
                parts = dict(await every()) if every else {}
                if changed is None or marker != last_change:
                    last_change = marker
                    parts.update(await sections())
                fresh = {k: v for k, v in parts.items() if sent.get(k) != v}
                if fresh:
                    sent.update(fresh)
                    payload = json.dumps({"now": datetime.now(UTC).isoformat(), "sections": fresh},
                                         ensure_ascii=False)
                    await response.write(f"event: update\ndata: {payload}\n\n".encode())
                    last_write = time.monotonic()
                if time.monotonic() - last_write > 15:
                    await response.write(b": still here\n\n")
                    last_write = time.monotonic()
                if time.monotonic() - last_session_check > 15:
                    pool = await self.db()
                    async with pool.acquire() as conn:
                        if await auth.session_for(conn, token, datetime.now(UTC)) is None:
                            break
                    last_session_check = time.monotonic()
                try:
                    await asyncio.wait_for(self.closing.wait(), self.settings.console_refresh_seconds)
                except TimeoutError:
                    pass
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("console: live stream ended: %s", type(exc).__name__)
        return response

    # ── search and case pages ───────────────────────────────────────────────────────────────

    @guarded()
    async def search(self, request: web.Request) -> web.Response:
        t = self.words(request)
        q = request.query
        form = {k: q.get(k, "").strip() for k in ("plate", "ticket", "camera", "zone", "state", "since", "until")}
        order = order_of(queries.CASES, q)
        pool = await self.db()
        async with pool.acquire() as conn:
            if q.get("q", "").strip():
                found = await queries.find_cases(conn, q["q"])
                if len(found) == 1:
                    raise web.HTTPSeeOther(f"/console/cases/{found[0]}")
                form["plate"] = q["q"].strip()
            error, results = None, None
            try:
                criteria = queries.Criteria(plate=form["plate"], ticket=form["ticket"], camera=form["camera"],
                                            zone=form["zone"], state=form["state"] if form["state"] in queries.STATES else "",
                                            since=self._local_time(form["since"]), until=self._local_time(form["until"]))
                if q.get("format") == "csv":
                    rows = (await listed(queries.search(conn, criteria, order.first(), EXPORT_LIMIT), order)).rows
                    return await self.export(request, conn, "cases", {**form, **order.first().params()}, [
                        ("plate", "state", "ticket", "detected_at", "place", "camera", "zone", "reason"),
                        *[(r["plate"], "voided" if r["voided_at"] else r["state"], r["ticket_number"] or "",
                           self._when(r["detected_at"]), r["place"], r["camera_id"], r["zone"],
                           queries.scrub(r["reason"] or "")) for r in rows]])
                if not criteria.empty or "q" in q:
                    results = await listed(queries.search(conn, criteria, order, self.settings.console_page_size), order)
            except ValueError:
                error = t("search.bad_time")
            zones, cameras = await queries.zones(conn), await self.cameras.get()
        links = listing.Links("/console/cases", {k: v for k, v in form.items() if v}, results) if results else None
        return self.render(request, "cases.html", title=t("search.title"), nav="cases", form=form,
                           results=results.rows if results else None, links=links,
                           limit=self.settings.console_page_size,
                           zones=zones, cameras=cameras, states=queries.STATES, error=error)

    @guarded()
    async def tickets(self, request: web.Request) -> web.Response:
        """Tickets issued in a period, filtered by zone, status and appeal, sorted and paged; or as CSV."""
        t, q = self.words(request), request.query
        form = {k: q.get(k, "").strip() for k in ("since", "until", "zone", "status", "appeal")}
        order = order_of(queries.TICKETS, q)
        for name, allowed in (("status", queries.TICKET_STATUSES), ("appeal", queries.APPEAL_STATES)):
            if form[name] and form[name] not in allowed:
                raise web.HTTPBadRequest(text=f"{name}: one of {', '.join(allowed)}")
        error = None
        try:
            since, until = self._local_time(form["since"]), self._local_time(form["until"])
        except ValueError:
            error, since, until = t("search.bad_time"), None, None
        criteria = queries.TicketFilter(since, until, form["zone"], form["status"], form["appeal"])
        pool = await self.db()
        async with pool.acquire() as conn:
            if q.get("format") == "csv":
                rows = (await listed(queries.tickets(conn, criteria, order.first(), EXPORT_LIMIT), order)).rows
                return await self.export(request, conn, "tickets", {**form, **order.first().params()}, [
                    ("ticket", "plate", "zone", "place", "issued_at", "status", "voided_at", "appeal", "case"),
                    *[(r["number"], r["plate"], r["zone"], r["place"], self._when(r["issued_at"]), r["status"],
                       self._when(r["voided_at"]), r["appeal"], str(r["case_id"])) for r in rows]])
            page = await listed(queries.tickets(conn, criteria, order, self.settings.console_page_size), order)
            zones = await queries.zones(conn)
        return self.render(request, "tickets.html", title=t("tickets.title"), nav="tickets", form=form,
                           tickets=page.rows, links=listing.Links("/console/tickets", {k: v for k, v in form.items() if v},
                                                                  page),
                           zones=zones, statuses=queries.TICKET_STATUSES, appeals=queries.APPEAL_STATES, error=error)

    def _local_time(self, text: str) -> datetime | None:
        """A ``datetime-local`` form value, read in the city's time zone."""
        if not text:
            return None
        return datetime.fromisoformat(text).replace(tzinfo=self.tz)

    async def case_file(self, case_id: UUID) -> queries.CaseFile | None:
        pool = await self.db()
        async with pool.acquire() as conn:
            file = await queries.case_file(conn, case_id, datetime.now(UTC))
            if file is not None:
                file.photos = await evidence_images.status_of(
                    conn, case_id, [e["event_id"] for e in (file.case["violation"], file.case["fresh_capture"]) if e])
        if file is not None and file.case["state"] == "review":
            case = case_from_row(file.case)
            captures = [e for e in file.timeline if e["kind"] == "capture" and e["what"] != "VehicleDeparted"]
            departures = [e["at"] for e in file.timeline if e["what"] == "VehicleDeparted"]
            usable = {(s.integrator, s.event_id) for s in actions.usable_evidence(
                case, [Sighting(e["event_id"], e["camera_id"], e["at"], e["lat"], e["lon"], integrator=e["integrator"])
                       for e in captures],
                departures, self.settings.rules, timedelta(seconds=file.case["window_seconds"]), datetime.now(UTC))}
            file.fresh_captures = [e for e in captures if (e["integrator"], e["event_id"]) in usable]
            file.evidence_bounds = actions.evidence_bounds(case, self.settings.rules,
                                                           timedelta(seconds=file.case["window_seconds"]))
            async with pool.acquire() as conn:
                file.owner_has_phone = (await self.runtime.service.effects.owner_of(conn, case, fresh=True)).found
                file.claim = await queries.claim_of(conn, case_id)
        if file is not None and file.case["state"] == "to_confirm":
            file.pair = {**queries.evidence_pair(file.case), "photos": file.photos}
        return file

    def case_sections(self, t: Words, session: auth.Session, file: queries.CaseFile,
                      current: "health.Health | None" = None) -> dict[str, str]:
        return {"case-head": self.render_text("_case_head.html", t, file=file, session=session, health=current),
                "case-actions": self.render_text("_case_actions.html", t, file=file, session=session),
                "timeline": self.render_text("_timeline.html", t, file=file, session=session)}

    def _case_id(self, request: web.Request) -> UUID:
        try:
            return UUID(request.match_info["case_id"])
        except ValueError:
            raise web.HTTPNotFound() from None

    @guarded()
    async def case(self, request: web.Request) -> web.Response:
        return await self.case_page(request, self._case_id(request))

    async def case_page(self, request: web.Request, case_id: UUID, status: int = 200, error: str | None = None,
                        notice: str | None = None) -> web.Response:
        t = self.words(request)
        file = await self.case_file(case_id)
        if file is None:
            return self.message(request, 404, "error.not_found", "case.unknown")
        done = request.query.get("done")
        if notice is None and done:
            notice = t(f"done.{done}") if f"done.{done}" in _DONE_KEYS else None
        return self.render(request, "case.html", status, title=t("case.title", plate=file.case["plate"]),
                           nav="cases", file=file, error=error, notice=notice, live_page=True)

    @guarded(api=True)
    async def case_stream(self, request: web.Request) -> web.StreamResponse:
        case_id = self._case_id(request)
        t, session = self.words(request), request["session"]

        async def changed():
            pool = await self.db()
            async with pool.acquire() as conn:
                return await queries.case_version(conn, case_id)

        async def sections():
            file = await self.case_file(case_id)
            return self.case_sections(t, session, file, await self.health.get()) if file else {}

        async def changed_or_health():
            current = await self.health.get()
            return await changed(), current.gateway_down, current.sms_centre_down

        async def strip():
            return self.strip_section(t, await self.health.get())

        return await self.stream(request, sections, changed_or_health, strip)

    # ── actions ─────────────────────────────────────────────────────────────────────────────

    def _reason(self, request: web.Request) -> str:
        return str(request["form"].get("reason", ""))

    async def _act_on_case(self, request: web.Request, case_id: UUID, action, *args) -> web.Response:
        session = request["session"]
        try:
            done = await action(await self.desk(), session.operator, *args, self._reason(request), datetime.now(UTC))
        except Refused as refused:
            t = self.words(request)
            return await self.case_page(request, case_id, 409, error=t(f"refused.{refused.key}", **refused.params))
        log.info("console: %s did %s on case %s", session.operator.actor, action.__name__, case_id)
        target = done.get("case_id", case_id)
        raise web.HTTPSeeOther(f"/console/cases/{target}?done={_DONE_NAME[action.__name__]}")

    @guarded(act=True)
    async def close_case(self, request: web.Request) -> web.Response:
        case_id = self._case_id(request)
        return await self._act_on_case(request, case_id, actions.close_case, case_id)

    @guarded(act=True)
    async def resolve_review(self, request: web.Request) -> web.Response:
        case_id = self._case_id(request)
        resolution = request["form"].get("resolution")
        if resolution == "warn_again":
            return await self._act_on_case(request, case_id, actions.warn_again, case_id)
        if resolution == "request_recheck":
            return await self._act_on_case(request, case_id, actions.request_recheck, case_id)
        if resolution == "ticket":
            return await self._act_on_case(request, case_id, actions.ticket_on_review, case_id,
                                           str(request["form"].get("evidence", "")))
        if resolution == "close":
            return await self._act_on_case(request, case_id, actions.close_case, case_id)
        raise web.HTTPBadRequest(text="resolution must be warn_again, request_recheck, ticket or close")

    @guarded()
    async def confirm_queue(self, request: web.Request) -> web.Response:
        """Tickets waiting for an officer's confirmation, with both captures side by side."""
        t = self.words(request)
        pool = await self.db()
        async with pool.acquire() as conn:
            total, waiting = await queries.to_confirm(conn)
            for c in waiting:
                c["photos"] = await evidence_images.status_of(conn, c["id"], [e.event_id for e in c["captures"]])
        return self.render(request, "confirm.html", title=t("confirm.title"), nav="confirm", total=total,
                           waiting=waiting, done=request.query.get("done"))

    @guarded()
    async def review_queue(self, request: web.Request) -> web.Response:
        return await self.review_page(request)

    async def review_page(self, request: web.Request, status: int = 200, error: str | None = None,
                          notice: str | None = None) -> web.Response:
        """Cases waiting for review as a queue: oldest first, age and due time, a count per reason,
        who has claimed each; a supervisor claims one, or closes several with one reason."""
        t = self.words(request)
        pool = await self.db()
        async with pool.acquire() as conn:
            queue = await queries.review_queue(conn, timedelta(minutes=self.settings.review_sla_minutes))
        by_reason: dict[str, int] = {}
        for c in queue:
            c["reason_key"] = reasons_key(c["reason"])
            by_reason[c["reason_key"]] = by_reason.get(c["reason_key"], 0) + 1
        examples = {c["reason_key"]: c["reason"] for c in reversed(queue)}
        done = request.query.get("done")
        if notice is None and done == "closed":
            notice = t("review.closed", n=request.query.get("n", "0"), left=request.query.get("left", "0"))
        if "health" not in request:
            request["health"] = await health_for_page(self)
        return self.render(request, "review.html", status, title=t("review.title"), nav="review", queue=queue,
                           by_reason=sorted(by_reason.items(), key=lambda kv: -kv[1]), examples=examples,
                           sla=self.settings.review_sla_minutes, error=error, notice=notice)

    @guarded()
    async def dead_letters(self, request: web.Request) -> web.Response:
        return await self.dead_letters_page(request)

    async def dead_letters_page(self, request: web.Request, status: int = 200, error: str | None = None) -> web.Response:
        """Dead letters, newest first, filtered by source, integrator, reason, field and time; the raw
        bytes escaped and phones masked; a supervisor replays one once its cause is fixed."""
        t, q = self.words(request), request.query
        form = {k: q.get(k, "").strip() for k in ("source", "integrator", "reason", "field", "since", "until")}
        try:
            since, until = self._local_time(form["since"]), self._local_time(form["until"])
        except ValueError:
            since = until = None
            error = error or t("search.bad_time")
        before = int(q["before"]) if q.get("before", "").isdigit() else None
        pool = await self.db()
        async with pool.acquire() as conn:
            rows = await queries.dead_letters(conn, queries.DeadLetterFilter(
                form["source"], form["integrator"], form["reason"], form["field"], since, until),
                self.camera_events, DEAD_LETTER_PAGE, before)
            sources = await queries.dead_letter_sources(conn)
        for row in rows:
            row["replayable"] = self.replayable(row["source_topic"])
        if "health" not in request:
            request["health"] = await health_for_page(self)
        done = request.query.get("done")
        return self.render(request, "dead_letters.html", status, title=t("dead.title"), nav="dead", rows=rows,
                           form=form, sources=sources, page=DEAD_LETTER_PAGE, error=error,
                           notice=t("done.replayed", id=q.get("id", "")) if done == "replayed" else None)

    def replayable(self, topic: str) -> bool:
        """Dead letters from the camera events (any integrator's topic) and car-park status may be replayed."""
        return topic == self.camera_events or topic.startswith(self.camera_events + ".") or \
            topic == self.settings.topic(topics.CAR_PARK_STATUS.name)

    @guarded(act=True)
    async def replay_dead_letter(self, request: web.Request) -> web.Response:
        dead_letter_id, session = int(request.match_info["id"]), request["session"]
        try:
            await actions.replay_dead_letter(await self.desk(), session.operator, dead_letter_id, self.replayable,
                                             self._reason(request), datetime.now(UTC))
        except Refused as refused:
            return await self.dead_letters_page(request, 409, self.words(request)(f"refused.{refused.key}", **refused.params))
        log.info("console: %s replayed dead letter %d", session.operator.actor, dead_letter_id)
        raise web.HTTPSeeOther(f"/console/dead-letters?done=replayed&id={dead_letter_id}")

    @guarded(act=True)
    async def review_claim(self, request: web.Request) -> web.Response:
        case_id, session = self._case_id(request), request["session"]
        action = actions.release_review if request["form"].get("action") == "release" else actions.claim_review
        try:
            await action(await self.desk(), session.operator, case_id, datetime.now(UTC))
        except Refused as refused:
            return await self.review_page(request, 409, error=self.words(request)(f"refused.{refused.key}", **refused.params))
        raise web.HTTPSeeOther("/console/review")

    @guarded(act=True)
    async def review_close(self, request: web.Request) -> web.Response:
        form, session = request["form"], request["session"]
        try:
            ids = [UUID(str(v)) for v in form.getall("case", [])]
        except ValueError:
            raise web.HTTPBadRequest(text="case: not a case id") from None
        try:
            done = await actions.close_reviews(await self.desk(), session.operator, ids, self._reason(request),
                                               datetime.now(UTC))
        except Refused as refused:
            return await self.review_page(request, 409, error=self.words(request)(f"refused.{refused.key}", **refused.params))
        log.info("console: %s closed %d review cases", session.operator.actor, len(done["closed"]))
        raise web.HTTPSeeOther(f"/console/review?done=closed&n={len(done['closed'])}&left={len(done['left'])}")

    @guarded()
    async def evidence_image(self, request: web.Request) -> web.Response:
        """An evidence image as fetched and stored (pipeline/evidence), by its SHA-256, for a logged-in operator."""
        pool = await self.db()
        async with pool.acquire() as conn:
            kept = await evidence_images.image(conn, request.match_info["sha256"])
        if kept is None:
            raise web.HTTPNotFound()
        return web.Response(body=kept["data"], content_type=kept["content_type"],
                            headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"})

    @guarded(act=True)
    async def confirm_or_reject(self, request: web.Request) -> web.Response:
        case_id = self._case_id(request)
        decision = request["form"].get("decision")
        if decision not in ("confirm", "reject"):
            raise web.HTTPBadRequest(text="decision must be confirm or reject")
        action = actions.confirm_ticket if decision == "confirm" else actions.reject_ticket
        session = request["session"]
        try:
            await action(await self.desk(), session.operator, case_id, self._reason(request), datetime.now(UTC))
        except Refused as refused:
            t = self.words(request)
            return await self.case_page(request, case_id, 409, error=t(f"refused.{refused.key}", **refused.params))
        log.info("console: %s did %s on case %s", session.operator.actor, action.__name__, case_id)
        back = "/console/confirm" if request["form"].get("from") == "queue" else f"/console/cases/{case_id}"
        raise web.HTTPSeeOther(f"{back}?done={_DONE_NAME[action.__name__]}")

    @guarded(act=True)
    async def void_ticket(self, request: web.Request) -> web.Response:
        """Two steps: the form asks for a reason, then a page asks to confirm (saying the owner will be
        told); only the confirmed POST voids. The case page then says how the owner was told."""
        number = request.match_info["number"].upper()
        pool = await self.db()
        ticket = await pool.fetchrow("SELECT t.case_id, t.plate, t.voided_at FROM tickets t WHERE t.number = $1", number)
        if ticket is None:
            return self.message(request, 404, "error.not_found", "refused.no_ticket")
        t, session = self.words(request), request["session"]
        try:
            if request["form"].get("confirmed") != "yes":
                actions.check_voidable(dict(ticket))
                reason = actions.check_reason(self._reason(request))
                request["health"] = await health_for_page(self)
                return self.render(request, "confirm_void.html", title=t("void.title"), nav="cases", number=number,
                                   plate=ticket["plate"], reason=reason, case_id=ticket["case_id"])
            done = await actions.void_ticket(await self.desk(), session.operator, number, self._reason(request),
                                             datetime.now(UTC))
        except Refused as refused:
            return await self.case_page(request, ticket["case_id"], 409,
                                        error=t(f"refused.{refused.key}", **refused.params))
        log.info("console: %s voided ticket %s (owner told: %s)", session.operator.actor, number, done["owner_told"])
        raise web.HTTPSeeOther(f"/console/cases/{ticket['case_id']}?done=void_ticket_{done['owner_told']}")

    # ── audit log and rules ─────────────────────────────────────────────────────────────────

    @guarded()
    async def audit(self, request: web.Request) -> web.Response:
        operators_only = request.query.get("all") != "1"
        order = order_of(queries.AUDIT, request.query)
        keep = {} if operators_only else {"all": "1"}
        pool = await self.db()
        async with pool.acquire() as conn:
            if request.query.get("format") == "csv":
                entries = (await listed(queries.audit_entries(conn, operators_only, order.first(), EXPORT_LIMIT), order)).rows
                return await self.export(request, conn, "audit", {"all": not operators_only, **order.first().params()}, [
                    ("at", "actor", "action", "plate", "ticket", "reason"),
                    *[(self._when(a["at"]), a["actor"], a["action"], a["plate"] or "",
                       a["detail"].get("ticket_number", ""), a["detail"].get("reason") or a["detail"].get("note") or "")
                      for a in entries]])
            page = await listed(queries.audit_entries(conn, operators_only, order, self.settings.console_page_size), order)
        return self.render(request, "audit.html", title=self.words(request)("audit.title"), nav="audit",
                           entries=page.rows, operators_only=operators_only, links=listing.Links("/console/audit", keep, page))

    @guarded()
    async def summary(self, request: web.Request) -> web.Response:
        """A shift's summary by zone for a chosen period (default: since local midnight), as a page or CSV."""
        t, q = self.words(request), request.query
        form = {k: q.get(k, "").strip() for k in ("since", "until")}
        error = None
        try:
            since = self._local_time(form["since"]) or queries.local_midnight(datetime.now(UTC), self.tz)
            until = self._local_time(form["until"]) or datetime.now(UTC)
        except ValueError:
            error, since, until = t("search.bad_time"), queries.local_midnight(datetime.now(UTC), self.tz), datetime.now(UTC)
        pool = await self.db()
        async with pool.acquire() as conn:
            rows = await queries.shift_summary(conn, since, until)
            if q.get("format") == "csv":
                return await self.export(request, conn, "summary", {"since": since.isoformat(), "until": until.isoformat()},
                                         [("zone", *queries.SUMMARY), *[(r["zone"], *(r[k] for k in queries.SUMMARY))
                                                                        for r in rows]])
        return self.render(request, "summary.html", title=t("summary.title"), nav="summary", rows=rows,
                           columns=queries.SUMMARY, form=form, since=since, until=until, error=error)

    async def export(self, request: web.Request, conn, what: str, criteria: dict, rows: list[tuple]) -> web.Response:
        """A CSV download (UTF-8 with a BOM, so that Excel reads the Chinese), recorded in the audit log."""
        out = io.StringIO()
        out.write("\ufeff")
        csv.writer(out).writerows(rows)
        session = request["session"]
        await store.audit(conn, datetime.now(UTC), None, session.operator.actor, "export",
                          {"what": what, "rows": len(rows) - 1, "criteria": {k: v for k, v in criteria.items() if v}})
        name = f"parkwarden-{what}-{datetime.now(self.tz):%Y%m%d-%H%M%S}.csv"
        return web.Response(body=out.getvalue().encode("utf-8"), content_type="text/csv", charset="utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @guarded()
    async def rules(self, request: web.Request) -> web.Response:
        return await self.rules_page(request)

    async def rules_page(self, request: web.Request, status: int = 200, error: str | None = None) -> web.Response:
        t = self.words(request)
        done = request.query.get("done")
        pool = await self.db()
        async with pool.acquire() as conn:
            whitelist, zones = await queries.whitelist(conn), await queries.zones(conn)
            outside = await queries.cameras_outside_zones(conn)
        return self.render(request, "rules.html", status, title=t("rules.title"), nav="rules", whitelist=whitelist,
                           zones=zones, outside=outside, default_window=self.settings.window_seconds,
                           city_rules=self.settings.zone_defaults, error=error,
                           notice=t(f"done.{done}") if f"done.{done}" in _DONE_KEYS else None)

    async def _act_on_rules(self, request: web.Request, action, *args, period: tuple[str, str] | None = None) -> web.Response:
        """``period``: the names of the form's start and end fields (local times, either may be empty)."""
        session = request["session"]
        try:
            kwargs = {}
            if period:
                form = request["form"]
                try:
                    start, end = (self._local_time(str(form.get(f, "")).strip()) for f in period)
                except ValueError:
                    raise Refused("bad_period") from None
                kwargs = dict(zip(("valid_from", "valid_until") if period[0] == "valid_from" else ("starts", "ends"),
                                  (start, end)))
            await action(await self.desk(), session.operator, *args, self._reason(request), datetime.now(UTC), **kwargs)
        except Refused as refused:
            t = self.words(request)
            return await self.rules_page(request, 409, error=t(f"refused.{refused.key}", **refused.params))
        log.info("console: %s did %s", session.operator.actor, action.__name__)
        raise web.HTTPSeeOther(f"/console/rules?done={_DONE_NAME[action.__name__]}")

    @guarded(act=True)
    async def whitelist_add(self, request: web.Request) -> web.Response:
        return await self._act_on_rules(request, actions.whitelist_plate, str(request["form"].get("plate", "")),
                                        period=("valid_from", "valid_until"))

    @guarded(act=True)
    async def whitelist_remove(self, request: web.Request) -> web.Response:
        return await self._act_on_rules(request, actions.unwhitelist_plate, str(request["form"].get("plate", "")))

    @guarded(act=True)
    async def zone_change(self, request: web.Request) -> web.Response:
        zone = request.match_info["zone"]
        if request.match_info["change"] != "exempt":
            return await self._act_on_rules(request, actions.lift_zone_exemption, zone)
        form = request["form"]
        start, until = str(form.get("from_hour", "")).strip(), str(form.get("until_hour", "")).strip()
        if not start and not until:
            hours = None
        elif start.isdigit() and until.isdigit():
            hours = (int(start), int(until))
        else:
            hours = (-1, -1)  # refused by the action, with the form's message
        return await self._act_on_rules(request, actions.exempt_zone, zone, hours, period=("starts", "ends"))

    @guarded(act=True)
    async def zone_rules(self, request: web.Request) -> web.Response:
        form = request["form"]
        try:
            rules = actions.checked_zone_rules(str(form.get("first_offence_months", "")),
                                               str(form.get("new_camera_days", "")), str(form.get("confirm_tickets", "")))
        except Refused as refused:
            t = self.words(request)
            return await self.rules_page(request, 409, error=t(f"refused.{refused.key}", **refused.params))
        return await self._act_on_rules(request, actions.set_zone_rules, request.match_info["zone"], rules)

    # ── metrics and health ──────────────────────────────────────────────────────────────────

    async def metrics(self, request: web.Request) -> web.Response:
        if not self.may_read_metrics(request):
            raise web.HTTPForbidden(text="/metrics: this address may not read it (PW_METRICS_ALLOW); "
                                         "or send PW_METRICS_TOKEN as Authorization: Bearer <token>")
        body = await metrics.exposition(self.worker_metrics, self.counts, self.latency, self.input_read,
                                        self.consumer_lag, self.health)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def may_read_metrics(self, request: web.Request) -> bool:
        """A client address in PW_METRICS_ALLOW, or the bearer token PW_METRICS_TOKEN (compared in constant time)."""
        token = self.settings.metrics_token
        given = request.headers.get("Authorization", "")
        if token is not None and token.get_secret_value() and given.startswith("Bearer ") and \
                hmac.compare_digest(given[7:].encode(), token.get_secret_value().encode()):
            return True
        try:
            address = ipaddress.ip_address(request.remote or "")
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.settings.metrics_networks)

    async def checks(self) -> dict:
        (db_ok, db_detail), (kafka_ok, kafka_detail) = await asyncio.gather(
            metrics.database_check(await self.db()), self.kafka.reachable())
        return {"worker": self.settings.worker_name, "started": self.runtime.ready.is_set(),
                "postgres": {"ok": db_ok, "detail": db_detail}, "kafka": {"ok": kafka_ok, "detail": kafka_detail}}

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness: the worker has started and its web server answers. PostgreSQL and Kafka are
        reported, not required: a worker waits for them by itself, restarting it would not help."""
        checks = await self.checks()
        return web.json_response(checks, status=200 if checks["started"] else 503)

    async def readyz(self, request: web.Request) -> web.Response:
        """Readiness: started, both PostgreSQL and Kafka answer now, and no loop or agent is stalled
        (else 503). A ready worker may still be ``degraded``: ``status`` says so, ``degraded`` names
        the components not green and ``health`` has a field per component (level, figure, thresholds),
        for an orchestrator that chooses to act on it; the answer stays 200, as this worker can still
        take traffic."""
        checks = await self.checks()
        checks["stalled"] = self.runtime.stalled()
        ready = checks["started"] and checks["postgres"]["ok"] and checks["kafka"]["ok"] and not checks["stalled"]
        current = await health_for_page(self)
        degraded = current.degraded if current else ["health_unknown"]
        status = "not_ready" if not ready else "degraded" if degraded else "ready"
        return web.json_response({"ready": ready, "status": status, "degraded": degraded, **checks,
                                  "health": current.as_json() if current else None},
                                 status=200 if ready else 503)


_DONE_NAME = {"void_ticket": "void_ticket", "close_case": "close_case", "warn_again": "warn_again",
              "ticket_on_review": "ticket_on_review", "request_recheck": "request_recheck",
              "whitelist_plate": "whitelist_add", "unwhitelist_plate": "whitelist_remove",
              "exempt_zone": "zone_exempt", "lift_zone_exemption": "zone_exemption_lifted",
              "confirm_ticket": "confirm_ticket", "reject_ticket": "reject_ticket", "set_zone_rules": "zone_rules"}
_DONE_KEYS = {f"done.{v}" for v in _DONE_NAME.values()} | {f"done.void_ticket_{told}" for told in ("sms", "not_sent", "no_phone")}


def reasons_key(text: str | None) -> str:
    """The catalogue key of a reason the pipeline wrote (for counting), else the text itself."""
    parsed = reasons.parse(text or "")
    return parsed[0] if parsed else (text or "")


def order_of(list_: listing.Listing, query) -> listing.Order:
    """The order and page a request asks of a list; an unknown sort, direction or page is a 400
    naming the parameter."""
    try:
        return list_.order(query)
    except listing.BadParameter as bad:
        raise web.HTTPBadRequest(text=str(bad)) from None


async def listed(reading, order: listing.Order):
    """Await a list's page read in ``order``; a page cursor whose value is not of its column's type
    (made up, not one of our links) is a 400 naming the parameter, not a server error."""
    try:
        return await reading
    except asyncpg.DataError:
        parameter = order.listing.param("after" if order.after else "before")
        raise web.HTTPBadRequest(text=f"{parameter}: not a page of this list") from None


def held_for_input(partitions) -> dict:
    """Decisions due but waiting for their partition to be read, and how far behind it is."""
    held = [p for p in partitions if p["held"]]
    return {"held": sum(p["held"] for p in held),
            "behind_seconds": round(max((p["behind_seconds"] or 0.0 for p in held), default=0.0))}


def _time_left(deadline: datetime | None, now: datetime) -> str:
    if deadline is None:
        return ""
    left = int((deadline - now).total_seconds())
    return f"{left // 60}:{left % 60:02d}" if left > 0 else "0:00"


def _duration(seconds: float | None) -> str:
    if not seconds:
        return ""
    seconds = int(seconds)
    return f"{seconds // 60} min" if seconds >= 120 and seconds % 60 == 0 else f"{seconds} s"


def _age(seconds: float | None) -> str:
    """How long something has waited: 45 s, 12 min, 3 h 05 min."""
    seconds = int(seconds or 0)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def json_default(value):
    """``json.dumps``' default for the console's JSON: times in ISO 8601, ids as text."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(type(value).__name__)
