"""A ticket's paperwork in the operators' console (any logged-in operator):

    GET /console/tickets/{number}/pack.json   the evidence pack (``pack``)
    GET /console/tickets/{number}/notice.pdf  the notice, 电子违停告知单 (``notice``)
"""

import json

from aiohttp import web

from pipeline.console.views import guarded
from pipeline.tickets import notice
from pipeline.tickets.pack import Terms, evidence_pack


def console_route(console):
    """A console handler ``handler(console, request)`` behind the console's guard (session, CSRF, role)."""
    def route(handler, act: bool = False):
        wrapped = guarded(act=act)(handler)
        return lambda request: wrapped(console, request)
    return route


def ticket_number(request) -> str:
    return request.match_info["number"].strip().upper()


def register(app, runtime, console) -> None:
    terms = Terms.of(console.settings)
    notice_terms = notice.NoticeTerms.of(console.settings)
    route = console_route(console)

    async def pack_of(number: str) -> dict | None:
        pool = await console.db()
        async with pool.acquire() as conn:
            return await evidence_pack(conn, number, terms)

    async def pack_json(self, request):
        pack = await pack_of(ticket_number(request))
        if pack is None:
            return console.message(request, 404, "error.not_found", "refused.no_ticket")
        return web.Response(text=json.dumps(pack, ensure_ascii=False, indent=2), content_type="application/json",
                            headers={"Content-Disposition": f'inline; filename="{pack["ticket"]["number"]}.json"'})

    async def notice_pdf(self, request):
        pack = await pack_of(ticket_number(request))
        if pack is None:
            return console.message(request, 404, "error.not_found", "refused.no_ticket")
        async with (await console.db()).acquire() as conn:
            page = await notice.page_url(conn, pack["ticket"]["number"], notice_terms)
            images = await notice.images_of(conn, pack)
        return web.Response(body=notice.render(pack, notice_terms, page, images), content_type="application/pdf",
                            headers={"Content-Disposition": f'inline; filename="{pack["ticket"]["number"]}.pdf"'})

    r = app.web.web_app.router
    r.add_get("/console/tickets/{number}/pack.json", route(pack_json))
    r.add_get("/console/tickets/{number}/notice.pdf", route(notice_pdf))
