"""The driver's side of a ticket, on the driver page (``PW_DRIVER_PAGE=true``): with the ticket
number, the plate and the code from the warning SMS, the owner sees the evidence (and downloads
the pack and the notice) and appeals (申诉) on a ground from the catalogue.

    GET  /d/ticket              the form: ticket number, plate, code
    POST /d/ticket              the ticket, its evidence, and the appeal form (or the appeal's status)
    POST /d/ticket/appeal       file the appeal
    POST /d/ticket/pack.json    the evidence pack
    POST /d/ticket/notice.pdf   the notice (电子违停告知单)

The three together are the key, sent in the body (never in a URL); a wrong one of any of them gets
the same answer. Each client (``client_limits.client_key``: behind ``PW_TRUSTED_PROXIES`` the
forwarded address, an IPv6 client by its /64) may try ``PW_DRIVER_PAGE_LOOKUPS_PER_MINUTE`` times a
minute per worker (``PW_DRIVER_PAGE_LOOKUP_BURST`` at once), like the driver page's code lookup.
No phone number is shown.
"""

import html
import json
from datetime import datetime

from aiohttp import web

from pipeline.appeals import grounds, service, store
from pipeline.appeals.grounds import GROUNDS, NotAllowed
from pipeline.appeals.words import TEXT
from pipeline.client_limits import client_key
from pipeline.ingest.ratelimit import LocalBuckets, retry_after_header
from pipeline.sms.driver_page import PAGE
from pipeline import bootstrap
from pipeline.tickets import notice
from pipeline.tickets.pack import Terms, evidence_pack
from schemas.plates import normalize_plate

FORM = """<h1>告知单查询与申诉 Ticket and appeal</h1>
<form method="post" action="/d/ticket">
<p><label>告知单号 Ticket number<br><input name="number" required autocapitalize="characters" autocomplete="off"></label></p>
<p><label>车牌 Plate<br><input name="plate" required autocomplete="off"></label></p>
<p><label>短信中的查询码 Code from the SMS<br><input name="code" required autocapitalize="characters" autocomplete="off"></label></p>
<button>查询 Look up</button></form>{error}"""


def _e(value) -> str:
    return html.escape(str(value if value is not None else "–"))


def _t(key: str, **params) -> str:
    zh, en = TEXT[key]
    return f"{zh.format(**params)} {en.format(**params)}" if params else f"{zh} {en}"


def _local(iso: str | None) -> str:
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M") if iso else "–"


def _key_fields(number: str, plate: str, code: str) -> str:
    return "".join(f'<input type="hidden" name="{k}" value="{_e(v)}">' for k, v in
                   (("number", number), ("plate", plate), ("code", code)))


def ticket_page(pack: dict, key: str, error: str = "") -> str:
    t, appeal = pack["ticket"], pack["appeal"]
    captures = "".join(
        f'<li data-role="{c["role"]}"><b>{_local(c["taken_at"])}</b> · {_e(c["camera_id"])}<br>'
        + (f'<a href="{_e(c["image_url"])}" rel="noreferrer noopener">{_e(c["image_url"])}</a>' if c["image_url"] else "")
        + "</li>" for c in pack["captures"])
    warning = pack["warning"]
    status = ("已撤销 Void: " + _e(t["void_reason"])) if t["status"] == "voided" else "有效 Standing"
    body = [error, f'<h1>{_e(t["plate"])} · {_e(t["number"])}</h1>',
            f'<div class="card"><p id="ticket-status">{status}</p>',
            f'<p>{_e(t["place"])}<br>驶离期限 Deadline {_local(t["deadline_at"])}<br>开具 Issued {_local(t["issued_at"])}</p>',
            f'<p>告知短信 Warning: 网关接收 accepted {_local(warning and warning["accepted_at"])} · '
            f'送达 delivered {_local(warning and warning["delivered_at"])}</p>',
            f'<ol id="captures">{captures}</ol>',
            f'<p class="muted">相距 {pack["between"]["distance_m"]:g} m · 间隔 {pack["between"]["interval_seconds"]:g} s · '
            f'{_e(pack["decision"]["rule"]["zh"])} / {_e(pack["decision"]["rule"]["en"])}</p>',
            f'<p>核验码 Verification code <b id="verification-code">{_e(pack["record"]["verification_code"])}</b></p>',
            f'<form method="post" action="/d/ticket/notice.pdf">{key}<button>下载告知单 Notice (PDF)</button></form> '
            f'<form method="post" action="/d/ticket/pack.json">{key}<button>下载证据包 Evidence (JSON)</button></form></div>']
    filed = appeal["filed"]
    if filed:
        outcome = {"upheld": "维持告知单 Ticket upheld", "voided": "告知单已撤销 Ticket voided"}.get(filed["outcome"] or "")
        body.append(f'<div class="card" id="appeal-status"><h2>申诉 Appeal</h2><p>{_e(GROUNDS[filed["ground"]][0])} '
                    f'{_e(GROUNDS[filed["ground"]][1])}<br>收到 Received {_local(filed["received_at"])}<br>'
                    + (f'<b>{outcome}</b>: {_e(filed["reason"])} ({_local(filed["decided_at"])})' if outcome else
                       f'处理中，最迟 {_local(filed["due_at"])} 前答复 Under review; decision due by {_local(filed["due_at"])}')
                    + "</p></div>")
    elif appeal["open"]:
        options = "".join(f'<option value="{k}">{_e(zh)} {_e(en)}</option>' for k, (zh, en) in GROUNDS.items())
        body.append(f'<div class="card"><h2>申诉 Appeal</h2><p class="muted">申诉期限 Until {_local(appeal["until"])}</p>'
                    f'<form method="post" action="/d/ticket/appeal" id="appeal-form">{key}'
                    f'<p><label>理由 Ground<br><select name="ground" required>{options}</select></label></p>'
                    f'<p><label>说明 Statement<br><textarea name="statement" rows="4" maxlength="{grounds.STATEMENT_MAX}" '
                    f'style="width:100%"></textarea></label></p>'
                    f'<p><label>附件链接（https，每行一个）Attachment URLs (https, one per line)<br>'
                    f'<textarea name="attachments" rows="2" style="width:100%"></textarea></label></p>'
                    f'<button>提交申诉 Submit the appeal</button></form></div>')
    else:
        body.append(f'<p class="muted">申诉期限已过 The appeal window closed {_local(appeal["until"])}. '
                    f'咨询请拨 Call {_e(appeal["how"]["phone"])}</p>')
    return "".join(body)


def register(app, runtime) -> None:
    terms = Terms.of(runtime.settings)
    tickets_topic = bootstrap.output_topics(runtime.settings).tickets
    settings = runtime.settings
    limiter = LocalBuckets(settings.driver_page_lookups_per_minute / 60, settings.driver_page_lookup_burst)

    def page(body: str, status: int = 200, headers: dict | None = None) -> web.Response:
        return web.Response(text=PAGE.format(body=body), content_type="text/html", status=status, headers=headers)

    def refused(key: str, **params) -> str:
        return f'<p class="error" role="alert">{_e(_t(f"appeal_refused.{key}", **params))}</p>'

    async def unlocked(request: web.Request):
        """(number, plate, code, ticket row) from the form, or an answer to send instead."""
        wait = limiter.take(client_key(request, settings.trusted_proxy_networks))
        if wait > 0:
            retry = retry_after_header(wait)
            return page(FORM.format(error=f"<p>查询过于频繁，请{retry}秒后再试 Too many tries: wait {retry} s.</p>"), 429,
                        {"Retry-After": retry})
        form = await request.post()
        number = str(form.get("number", "")).strip().upper()
        plate = normalize_plate(str(form.get("plate", "")))
        code = str(form.get("code", "")).strip().upper().replace(" ", "").replace("-", "")
        await runtime.ready.wait()
        async with runtime.web_pool.acquire() as conn:
            ticket = await store.ticket_for_driver(conn, number, plate, code) if number and plate and code else None
            pack = await evidence_pack(conn, number, terms) if ticket else None
        if ticket is None:
            return page(FORM.format(error=refused("not_found")), 404)
        return number, plate, code, form, pack

    async def form(request: web.Request) -> web.Response:
        return page(FORM.format(error=""))

    async def show(request: web.Request) -> web.Response:
        found = await unlocked(request)
        if isinstance(found, web.Response):
            return found
        number, plate, code, _, pack = found
        return page(ticket_page(pack, _key_fields(number, plate, code)))

    async def appeal(request: web.Request) -> web.Response:
        found = await unlocked(request)
        if isinstance(found, web.Response):
            return found
        number, plate, code, form, pack = found
        key = _key_fields(number, plate, code)
        try:
            filing = grounds.filing(form.get("ground"), form.get("statement"), form.get("attachments"))
            await service.file_as_driver(service.AppealDesk(runtime.web_pool, tickets_topic, terms), number, plate,
                                         code, filing)
        except NotAllowed as no:
            params = {k: _local(v.isoformat()) if isinstance(v, datetime) else v for k, v in no.params.items()}
            return page(ticket_page(pack, key, refused(no.key, **params)), 409)
        async with runtime.web_pool.acquire() as conn:
            pack = await evidence_pack(conn, number, terms)
        return page('<p class="notice" id="appeal-filed">申诉已提交 Your appeal is filed.</p>' + ticket_page(pack, key))

    async def pack_json(request: web.Request) -> web.Response:
        found = await unlocked(request)
        if isinstance(found, web.Response):
            return found
        pack = found[-1]
        return web.Response(text=json.dumps(pack, ensure_ascii=False, indent=2), content_type="application/json",
                            headers={"Content-Disposition": f'attachment; filename="{pack["ticket"]["number"]}.json"'})

    async def notice_pdf(request: web.Request) -> web.Response:
        found = await unlocked(request)
        if isinstance(found, web.Response):
            return found
        pack = found[-1]
        return web.Response(body=notice.render(pack), content_type="application/pdf",
                            headers={"Content-Disposition": f'attachment; filename="{pack["ticket"]["number"]}.pdf"'})

    r = app.web.web_app.router
    r.add_get("/d/ticket", form)
    r.add_post("/d/ticket", show)
    r.add_post("/d/ticket/appeal", appeal)
    r.add_post("/d/ticket/pack.json", pack_json)
    r.add_post("/d/ticket/notice.pdf", notice_pdf)
