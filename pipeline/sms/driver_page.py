"""The optional driver page (``PW_DRIVER_PAGE=true``): the code from the warning SMS shows the case,
the time left and the three nearest car parks with live free spaces. Mobile-first, no login: it
shows no phone number and only part of the plate.

The code is the only key, so it must not be guessable: 10 random characters, unique
(``store.give_driver_code``), shown until the case has been closed for ``PW_DRIVER_CODE_GRACE_HOURS``,
and looked up at most ``PW_DRIVER_PAGE_LOOKUPS_PER_MINUTE`` times a minute per client address on
each worker (429 with Retry-After above it), on the web side's own connections. An unknown,
mistyped or expired code gets the same answer.
"""

import html
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import faust
from faust.web import Request, Response, View

from pipeline.cases import store
from pipeline.cases.store import CODE_ALPHABET, DRIVER_CODE_LENGTH
from pipeline.client_limits import client_key
from pipeline.ingest import database
from pipeline.ingest.ratelimit import LocalBuckets, retry_after_header
from pipeline.lookups.carparks import nearest_free

STATE_WORDS = {"detected": "正在通知 Notifying", "warned": "请尽快驶离 Please move", "rechecking": "核查中 Checking",
               "moved": "已驶离，无需处理 Moved, nothing more to do", "ticketed": "已开具告知单 Ticket issued",
               "unconfirmed": "已结束 Closed", "review": "人工审核中 Under review", "exempt": "豁免 Exempt",
               "cancelled": "已撤销 Cancelled"}

PAGE = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>违停提醒 Parking notice</title>
<style>body{{font-family:system-ui,sans-serif;margin:0;padding:16px;max-width:480px;color:#222}}
h1{{font-size:1.3em}}.big{{font-size:2.2em;font-weight:700;margin:.2em 0}}.card{{border:1px solid #ddd;
border-radius:8px;padding:12px;margin:12px 0}}li{{margin:.5em 0}}input,button{{font-size:1.2em;padding:8px}}
.muted{{color:#666;font-size:.9em}}</style></head><body>{body}</body></html>"""

FORM = """<h1>违停提醒查询 Parking notice</h1><form method="get" action="/d/lookup">
<p>短信中的查询码 Code from the SMS:</p><input name="code" maxlength="14" autocapitalize="characters"
autocomplete="off" required> <button>查询 Look up</button></form>{error}
<p><a href="/d/ticket">告知单查询与申诉 Ticket and appeal</a></p>"""


def mask_plate(plate: str) -> str:
    return plate[:2] + "*" * (len(plate) - 4) + plate[-2:]


def read_code(text: str) -> str | None:
    """The code as a driver may type it (any case, with spaces or dashes), or None if it cannot be one."""
    code = text.strip().upper().replace(" ", "").replace("-", "")
    if len(code) != DRIVER_CODE_LENGTH or any(c not in CODE_ALPHABET for c in code):
        return None
    return code


def register(app: faust.App, runtime) -> None:
    settings = runtime.settings
    tz = ZoneInfo(settings.timezone)
    grace = timedelta(hours=settings.driver_code_grace_hours)
    limiter = LocalBuckets(settings.driver_page_lookups_per_minute / 60, settings.driver_page_lookup_burst)

    def page(body: str, view: View, status: int = 200, headers: dict | None = None) -> Response:
        return view.html(PAGE.format(body=body), status=status, headers=headers)

    @app.page("/d")
    class Form(View):
        async def get(self, request: Request) -> Response:
            return page(FORM.format(error=""), self)

    @app.page("/d/lookup")
    class Lookup(View):
        async def get(self, request: Request) -> Response:
            wait = limiter.take(client_key(request, settings.trusted_proxy_networks))
            if wait > 0:
                retry = retry_after_header(wait)
                return page(FORM.format(error=f"<p>查询过于频繁，请{retry}秒后再试 Too many lookups: try again "
                                              f"in {retry} s.</p>"), self, 429, {"Retry-After": retry})
            code = read_code(request.query.get("code", ""))
            if code is None:
                return page(FORM.format(error=f"<p>查询码为{DRIVER_CODE_LENGTH}位字母数字 "
                                              f"The code has {DRIVER_CODE_LENGTH} letters/digits.</p>"), self, 400)
            await runtime.ready.wait()
            try:
                async with database.connection(runtime.web_pool) as conn:
                    case = await store.case_for_driver_code(conn, code, grace)
            except database.DatabaseAway:
                return page(FORM.format(error="<p>系统繁忙，请稍后再试 Busy: try again in a minute.</p>"), self, 503,
                            {"Retry-After": "30"})
            if case is None:
                return page(FORM.format(error="<p>未找到 Not found: check the code.</p>"), self, 404)
            now = datetime.now(UTC)
            left = ""
            if case["state"] in ("warned", "rechecking") and case["deadline_at"]:
                seconds = max(0, int((case["deadline_at"] - now).total_seconds()))
                left = (f'<div class="big">{seconds // 60}:{seconds % 60:02d}</div><p>剩余时间 time left · '
                        f'截止 deadline {case["deadline_at"].astimezone(tz):%H:%M}</p>')
            parks = nearest_free(runtime.car_parks, case["lat"], case["lon"], 3)
            items = "".join(
                f'<li><b>{html.escape(p.car_park.name)}</b><br>{p.free_spaces} 空位 free · '
                f'{p.distance_m:,.0f} m · <span class="muted">{p.counted_at.astimezone(tz):%H:%M}</span></li>'
                for p in parks) or "<li>附近暂无空位 No free spaces nearby</li>"
            body = (f'<h1>{html.escape(mask_plate(case["plate"]))} · {html.escape(case["place"])}</h1>'
                    f'<div class="card"><p>{STATE_WORDS.get(case["state"], case["state"])}</p>{left}</div>'
                    f'<h2>附近停车场 Car parks nearby</h2><ol>{items}</ol>'
                    f'<p class="muted">查询或申诉请拨12345 · To check or contest call 12345 · '
                    f'<a href="/d/ticket">告知单与申诉 Ticket and appeal</a></p>')
            return page(body, self)
