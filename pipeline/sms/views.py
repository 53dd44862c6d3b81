"""Delivery reports, as HTTP endpoints on every worker's web server (any worker can take any report).

Only the configured gateway's endpoint exists: ``/sms/delivery-report`` with the kannel gateway,
``/sms/provider-report`` with the http gateway (the file gateway reports nothing). A report must
prove it comes from the gateway, checked in constant time before anything else: Kannel's carries
the ``sig`` we put in the URL we gave it (``pipeline.sms.kannel.report_signature``), a provider's
the header ``X-Report-Token``. A report that does not is refused and changes nothing.
"""

import hmac
from datetime import UTC, datetime
from uuid import UUID

import faust
from faust.web import Request, Response, View

from pipeline.sms.kannel import DLR_STATUS, report_signature

PROVIDER_STATUS = {"delivered": "delivered", "failed": "failed", "queued": "queued"}


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


def register(app: faust.App, runtime) -> None:
    settings = runtime.settings
    if settings.sms_gateway == "kannel":
        _kannel_reports(app, runtime, settings.sms_report_secret.get_secret_value())
    elif settings.sms_gateway == "http":
        _provider_reports(app, runtime, settings.sms_report_token.get_secret_value())


def _kannel_reports(app: faust.App, runtime, secret: str) -> None:
    @app.page("/sms/delivery-report")
    class KannelReport(View):
        """Kannel calls ``GET ?id=<our id>&sig=<HMAC of the id>&status=<dlr bit>&at=<unix time>&answer=<SMSC answer>``."""

        async def get(self, request: Request) -> Response:
            q = request.query
            try:
                sms_id = UUID(q.get("id", ""))
            except ValueError:
                return self.json({"error": "expected id=<uuid>"}, status=400)
            if not _same(q.get("sig", ""), report_signature(secret, sms_id)):
                return self.json({"error": "missing or wrong signature"}, status=403)
            try:
                status = DLR_STATUS[int(q.get("status", ""))]
            except (ValueError, KeyError):
                return self.json({"error": "expected status=1|2|4|8|16"}, status=400)
            await runtime.ready.wait()
            at = q.get("at", "")
            reported_at = datetime.fromtimestamp(int(at), UTC) if at.isdigit() and int(at) > 0 else None
            known = await runtime.sms_service.record_delivery_report(sms_id, status, reported_at, q.get("answer", "")[:100])
            return self.json({"recorded": known}, status=200 if known else 404)


def _provider_reports(app: faust.App, runtime, token: str) -> None:
    @app.page("/sms/provider-report")
    class ProviderReport(View):
        """An HTTP SMS provider POSTs ``{"id", "status": "delivered"|"failed"|"queued", "at", "detail"}``."""

        async def post(self, request: Request) -> Response:
            if not _same(request.headers.get("X-Report-Token", ""), token):
                return self.json({"error": "missing or wrong X-Report-Token"}, status=401)
            try:
                body = await request.json()
                sms_id = UUID(str(body["id"]))
                status = PROVIDER_STATUS[body["status"]]
                reported_at = datetime.fromisoformat(body["at"]) if body.get("at") else None
            except (ValueError, KeyError, TypeError) as exc:
                return self.json({"error": f"expected id, status (delivered|failed|queued), at: {exc}"}, status=400)
            await runtime.ready.wait()
            known = await runtime.sms_service.record_delivery_report(sms_id, status, reported_at,
                                                                 str(body.get("detail", ""))[:100])
            return self.json({"recorded": known}, status=200 if known else 404)
