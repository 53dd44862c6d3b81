"""Appeals and tickets' paperwork in the operators' console.

    GET  /console/appeals                      the queue: open appeals, soonest due first, overdue flagged
    GET  /console/appeals/{id}                 an appeal with the ticket's evidence beside it; the decision form
    POST /console/appeals/{id}/decide          uphold the ticket or void it, with a reason (supervisors)
    GET  /console/tickets/{number}/appeal      the ticket's appeal, or the form to record one taken by phone
    POST /console/tickets/{number}/appeal      record an appeal taken by phone (supervisors)

Same rules as every console page (``pipeline.console.views.guarded``): a session, the CSRF token
on every POST, a supervisor to act.
"""

import logging
from datetime import datetime
from pathlib import Path
from uuid import UUID

from aiohttp import web
from jinja2 import ChoiceLoader, FileSystemLoader

from pipeline import bootstrap
from pipeline.appeals import grounds, service, store, words
from pipeline.appeals.grounds import GROUNDS, NotAllowed
from pipeline.console import actions, listing
from pipeline.console.actions import Refused
from pipeline.console.queries import scrub
from pipeline.console.views import EXPORT_LIMIT, listed, order_of
from pipeline.tickets.pack import Terms, evidence_pack
from pipeline.tickets.views import console_route, ticket_number
from schemas.plates import normalize_plate

log = logging.getLogger(__name__)
HERE = Path(__file__).parent


def register(app, runtime, console) -> None:
    words.install()
    console.templates.loader = ChoiceLoader([console.templates.loader, FileSystemLoader(HERE / "templates")])
    terms = Terms.of(console.settings)
    tickets_topic = bootstrap.output_topics(console.settings).tickets

    async def desk() -> service.AppealDesk:
        return service.AppealDesk(await console.db(), tickets_topic, terms)

    route = console_route(console)

    async def pack_of(number: str) -> dict | None:
        pool = await console.db()
        async with pool.acquire() as conn:
            return await evidence_pack(conn, number, terms)

    def refusal(request, refused) -> str:
        t = console.words(request)
        if isinstance(refused, Refused):
            return t(f"refused.{refused.key}", **refused.params)
        params = {k: console._when(v) if isinstance(v, datetime) else v for k, v in refused.params.items()}
        return t(f"appeal_refused.{refused.key}", **params)

    async def queue(self, request):
        """Open appeals and decided ones, each list sorted and paged on its own (the decided list's
        parameters are ``decided_sort``, ...), filtered by ground; or both as one CSV."""
        q = request.query
        open_order, decided_order = order_of(store.OPEN, q), order_of(store.DECIDED, q)
        ground = q.get("ground", "").strip()
        if ground and ground not in GROUNDS:
            raise web.HTTPBadRequest(text="ground: one of " + ", ".join(GROUNDS))
        filters = {"ground": ground} if ground else {}
        pool = await console.db()
        async with pool.acquire() as conn:
            if q.get("format") == "csv":  # both lists from their first row, in their orders, audited
                open_ = (await listed(store.queue_page(conn, False, open_order.first(), EXPORT_LIMIT, ground), open_order)).rows
                decided = (await listed(store.queue_page(conn, True, decided_order.first(), EXPORT_LIMIT, ground), decided_order)).rows
                return await console.export(
                    request, conn, "appeals",
                    {**filters, **open_order.first().params(), **decided_order.first().params()}, [
                        ("ticket", "plate", "channel", "ground", "received_at", "due_at", "overdue", "decided_at",
                         "outcome", "decided_by", "decision_reason"),
                        *[(a["ticket_number"], a["plate"], a["channel"], a["ground"], console._when(a["received_at"]),
                           console._when(a["due_at"]), "yes" if a["overdue"] else "", console._when(a["decided_at"]),
                           a["outcome"] or "", a["decided_by"] or "", scrub(a["decision_reason"] or ""))
                          for a in (*open_, *decided)]])
            size = console.settings.console_page_size
            open_ = await listed(store.queue_page(conn, False, open_order, size, ground), open_order)
            decided = await listed(store.queue_page(conn, True, decided_order, size, ground), decided_order)
            counts = await store.counts(conn)
        links = listing.Links("/console/appeals", {**filters, **decided_order.params()}, open_)
        decided_links = listing.Links("/console/appeals", {**filters, **open_order.params()}, decided)
        return console.render(request, "appeals.html", title=console.words(request)("appeals.title"), nav="appeals",
                              open=open_.rows, decided=decided.rows, counts=counts, links=links,
                              decided_links=decided_links, grounds=GROUNDS, ground=ground)

    async def appeal_page(request, appeal, number: str, status: int = 200, error: str | None = None,
                          form: dict | None = None):
        t = console.words(request)
        pack = await pack_of(number)
        if pack is None:
            return console.message(request, 404, "error.not_found", "refused.no_ticket")
        done = request.query.get("done")
        return console.render(request, "appeal.html", status, title=t("appeal.title", number=number), nav="appeals",
                              appeal=appeal, pack=pack, grounds=GROUNDS, error=error, form=form or {},
                              notice=t(f"done.{done}") if done in ("appeal_filed", "appeal_decided") else None)

    def appeal_id(request) -> UUID:
        try:
            return UUID(request.match_info["appeal_id"])
        except ValueError:
            raise web.HTTPNotFound() from None

    async def appeal(self, request):
        pool = await console.db()
        async with pool.acquire() as conn:
            row = await store.get(conn, appeal_id(request))
        if row is None:
            return console.message(request, 404, "error.not_found", "appeal_refused.no_appeal")
        return await appeal_page(request, row, row["ticket_number"])

    async def decide(self, request):
        form, session = request["form"], request["session"]
        try:
            reason = actions.check_reason(str(form.get("reason", "")))
            decided = await service.decide(await desk(), session.operator.actor, appeal_id(request),
                                           str(form.get("outcome", "")), reason)
        except (Refused, NotAllowed) as refused:
            pool = await console.db()
            async with pool.acquire() as conn:
                row = await store.get(conn, appeal_id(request))
            if row is None:
                return console.message(request, 404, "error.not_found", "appeal_refused.no_appeal")
            return await appeal_page(request, row, row["ticket_number"], 409, refusal(request, refused))
        log.info("console: %s decided appeal %s: %s", session.operator.actor, decided["id"], decided["outcome"])
        raise web.HTTPSeeOther(f"/console/appeals/{decided['id']}?done=appeal_decided")

    async def ticket_appeal(self, request):
        number = ticket_number(request)
        pool = await console.db()
        async with pool.acquire() as conn:
            row = await store.of_ticket(conn, number)
        if row is not None:
            raise web.HTTPSeeOther(f"/console/appeals/{row['id']}")
        return await appeal_page(request, None, number)

    async def record(self, request):
        number, form, session = ticket_number(request), request["form"], request["session"]
        try:
            filing = grounds.filing(form.get("ground"), form.get("statement"), form.get("attachments"))
            filed = await service.file_by_phone(await desk(), session.operator.actor, number,
                                                normalize_plate(str(form.get("plate", ""))), filing)
        except NotAllowed as refused:
            return await appeal_page(request, None, number, 409, refusal(request, refused),
                                     {k: str(form.get(k, "")) for k in ("ground", "statement", "attachments", "plate")})
        log.info("console: %s recorded appeal %s against %s", session.operator.actor, filed["id"], number)
        raise web.HTTPSeeOther(f"/console/appeals/{filed['id']}?done=appeal_filed")

    r = app.web.web_app.router
    r.add_get("/console/appeals", route(queue))
    r.add_get("/console/appeals/{appeal_id}", route(appeal))
    r.add_post("/console/appeals/{appeal_id}/decide", route(decide, act=True))
    r.add_get("/console/tickets/{number}/appeal", route(ticket_appeal))
    r.add_post("/console/tickets/{number}/appeal", route(record, act=True))
