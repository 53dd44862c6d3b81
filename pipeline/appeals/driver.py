"""The driver's side of a ticket, on the driver page (``PW_DRIVER_PAGE=true``): the page of a case
with a ticket (``/d/<code>``, the link in the warning and the ticket SMS) shows the ticket, its
evidence, the notice and the pack to download, and the appeal form (申诉: a ground from the
catalogue, words, photos from the phone, https links), or the appeal's state and what the driver
can still do.

    GET  /d/ticket                      the form: ticket number, plate, code (for a driver without the link)
    POST /d/ticket                      the three checked together, then on to /d/<code>
    POST /d/<code>/appeal               file the appeal (multipart), then back to /d/<code> (post-redirect-get)
    GET  /d/<code>/notice.pdf           the notice (电子违停告知单)
    GET  /d/<code>/pack.json            the evidence pack
    GET  /d/<code>/appeal/photos/<id>   a photo of the appeal
    GET  /d/<code>/evidence/<1|2>       the evidence images (the violation, the capture after the deadline)

The code is the key, in the path or the body, never in a query string; every request spends one of
the client address's lookups (``pipeline.sms.driver_page``). No phone number is shown.
"""

import json
from datetime import datetime
from uuid import UUID

from aiohttp import web

from pipeline import bootstrap
from pipeline.appeals import grounds, photos, service, store
from pipeline.appeals.grounds import GROUNDS, NotAllowed
from pipeline.appeals.words import TEXT
from pipeline.evidence import store as evidence_images
from pipeline.sms.driver_page import CODE_PATH, SECURITY_HEADERS, DriverPage, read_code
from pipeline.tickets import notice
from pipeline.tickets.pack import Terms, evidence_pack
from schemas.plates import normalize_plate

FORM_FIELD_MAX = 16 * 1024
"""A text field of the appeal form, at most (the statement is 2,000 characters)."""


def refusal(key: str, **params) -> str:
    zh, en = TEXT[f"appeal_refused.{key}"]
    return f"{zh.format(**params)} {en.format(**params)}" if params else f"{zh} {en}"


async def read_appeal_form(request: web.Request) -> tuple[dict, list[bytes]]:
    """The appeal form's fields and the photos' bytes, read part by part within bounds: at most
    ``photos.MAX_PHOTOS`` files of ``photos.MAX_BYTES`` each (``NotAllowed`` beyond)."""
    fields: dict[str, str] = {}
    files: list[bytes] = []
    if not request.content_type.startswith("multipart/"):
        form = await request.post()
        return {k: str(v) for k, v in form.items() if isinstance(v, str)}, []
    reader = await request.multipart()
    async for part in reader:
        if part.filename is not None:
            data = await _bounded(part, photos.MAX_BYTES)
            if data is None:
                raise NotAllowed("photo_too_big", max_mb=photos.MAX_BYTES // (1024 * 1024))
            if data:  # an empty file field: the form sent without photos
                files.append(data)
            if len(files) > photos.MAX_PHOTOS:
                raise NotAllowed("too_many_photos", max=photos.MAX_PHOTOS)
        elif part.name:
            value = await _bounded(part, FORM_FIELD_MAX)
            fields[part.name] = (value or b"").decode("utf-8", "replace")
    return fields, files


async def _bounded(part, limit: int) -> bytes | None:
    """A part's bytes, or None when it has more than ``limit``."""
    data = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


def register(app, runtime, driver: DriverPage) -> None:
    terms = Terms.of(runtime.settings)
    tickets_topic = bootstrap.output_topics(runtime.settings).tickets

    async def ticket_context(code: str, row) -> dict:
        async with runtime.web_pool.acquire() as conn:
            pack = await evidence_pack(conn, row["number"], terms)
            shown = await store.photos_of(conn, row["appeal_id"]) if row["appeal_id"] else []
        return {"ticket": pack["ticket"], "pack": pack, "grounds": GROUNDS, "statement_max": grounds.STATEMENT_MAX,
                "photos_max": photos.MAX_PHOTOS, "photo_mb": photos.MAX_BYTES // (1024 * 1024),
                "appeal_photos": shown}

    driver.ticket_context = ticket_context

    async def with_ticket(request: web.Request, buckets=None):
        """(code, situation row) of a case with a ticket, or the answer to send instead."""
        found = await driver.lookup(request, buckets)
        if isinstance(found, web.Response):
            return found
        if not found[1]["number"]:
            return driver.form(404, "未找到，请核对查询码 Not found: check the code.")
        return found

    async def form(request: web.Request) -> web.Response:
        return driver.render("driver_ticket_form.html")

    async def by_number(request: web.Request) -> web.Response:
        refused = driver.limited(request)
        if refused is not None:
            return refused
        data = await request.post()
        number = str(data.get("number", "")).strip().upper()
        plate = normalize_plate(str(data.get("plate", "")))
        code = read_code(str(data.get("code", "")))
        ticket = None
        if number and plate and code:
            await runtime.ready.wait()
            async with runtime.web_pool.acquire() as conn:
                ticket = await store.ticket_for_driver(conn, number, plate, code)
        if ticket is None:
            return driver.render("driver_ticket_form.html", 404, error=refusal("not_found"))
        raise web.HTTPSeeOther(f"/d/{code}")

    async def appeal(request: web.Request) -> web.Response:
        found = await with_ticket(request)
        if isinstance(found, web.Response):
            return found
        code, row = found
        fields: dict = {}
        try:
            fields, files = await read_appeal_form(request)
            filing = grounds.filing(fields.get("ground"), fields.get("statement"), fields.get("attachments"))
            cleaned = [photos.clean(raw) for raw in files]
            desk = service.AppealDesk(runtime.web_pool, tickets_topic, terms)
            await service.file_as_driver(desk, row["number"], row["plate"], code, filing, cleaned)
        except NotAllowed as no:
            params = {k: driver.local(v) if isinstance(v, datetime) else v for k, v in no.params.items()}
            return await driver.ticket_page(code, row, 409, error=refusal(no.key, **params), form=fields)
        raise web.HTTPSeeOther(f"/d/{code}")

    async def pack_json(request: web.Request) -> web.Response:
        found = await with_ticket(request)
        if isinstance(found, web.Response):
            return found
        async with runtime.web_pool.acquire() as conn:
            pack = await evidence_pack(conn, found[1]["number"], terms)
        return web.Response(text=json.dumps(pack, ensure_ascii=False, indent=2), content_type="application/json",
                            headers={**SECURITY_HEADERS,
                                     "Content-Disposition": f'attachment; filename="{pack["ticket"]["number"]}.json"'})

    async def notice_pdf(request: web.Request) -> web.Response:
        found = await with_ticket(request)
        if isinstance(found, web.Response):
            return found
        code, row = found
        async with runtime.web_pool.acquire() as conn:
            pack = await evidence_pack(conn, row["number"], terms)
            images = await notice.images_of(conn, pack)
        terms_printed = notice.NoticeTerms.of(runtime.settings)
        page = f"{terms_printed.page_base}{code}" if terms_printed.page_base else None
        return web.Response(body=notice.render(pack, terms_printed, page, images), content_type="application/pdf",
                            headers={**SECURITY_HEADERS,
                                     "Content-Disposition": f'attachment; filename="{pack["ticket"]["number"]}.pdf"'})

    async def photo(request: web.Request) -> web.Response:
        found = await with_ticket(request, driver.polls)  # a page shows up to 3: not the lookups' budget
        if isinstance(found, web.Response):
            return found
        try:
            photo_id = UUID(request.match_info["photo_id"])
        except ValueError:
            raise web.HTTPNotFound() from None
        row = found[1]
        async with runtime.web_pool.acquire() as conn:
            kept = await store.photo(conn, row["appeal_id"], photo_id) if row["appeal_id"] else None
        if kept is None:
            raise web.HTTPNotFound()
        return web.Response(body=kept["data"], content_type=kept["content_type"],
                            headers={**SECURITY_HEADERS, "Cache-Control": "private, max-age=3600"})

    async def evidence_photo(request: web.Request) -> web.Response:
        """The ticket's evidence image ``n`` (1: the violation, 2: the capture after the deadline), as stored."""
        found = await with_ticket(request, driver.polls)  # a page shows 2: not the lookups' budget
        if isinstance(found, web.Response):
            return found
        n = int(request.match_info["n"])
        async with runtime.web_pool.acquire() as conn:
            t = await conn.fetchrow("SELECT case_id, evidence FROM tickets WHERE number = $1", found[1]["number"])
            kept = await evidence_images.image_of_capture(conn, t["case_id"], t["evidence"][n - 1]["event_id"]) \
                if t and t["evidence"] and n <= len(t["evidence"]) else None
        if kept is None:
            raise web.HTTPNotFound()
        return web.Response(body=kept["data"], content_type=kept["content_type"],
                            headers={**SECURITY_HEADERS, "Cache-Control": "private, max-age=3600"})

    r = app.web.web_app.router
    r.add_get("/d/ticket", form)
    r.add_post("/d/ticket", by_number)
    r.add_post(f"/d/{CODE_PATH}/appeal", appeal)
    r.add_get(f"/d/{CODE_PATH}/notice.pdf", notice_pdf)
    r.add_get(f"/d/{CODE_PATH}/pack.json", pack_json)
    r.add_get(f"/d/{CODE_PATH}/appeal/photos/{{photo_id}}", photo)
    r.add_get(f"/d/{CODE_PATH}/evidence/{{n:[12]}}", evidence_photo)
