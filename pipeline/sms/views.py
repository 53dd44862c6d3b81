"""Delivery reports, as HTTP endpoints on every worker's web server (any worker can take any report)."""

from datetime import UTC, datetime
from uuid import UUID

import faust
from faust.web import Request, Response, View

from pipeline.sms.kannel import DLR_STATUS

PROVIDER_STATUS = {"delivered": "delivered", "failed": "failed", "queued": "queued"}


def register(app: faust.App, runtime) -> None:
    @app.page("/sms/delivery-report")
    class KannelReport(View):
        """Kannel calls ``GET ?id=<our id>&status=<dlr bit>&at=<unix time>&answer=<SMSC answer>``."""

        async def get(self, request: Request) -> Response:
            await runtime.ready.wait()
            q = request.query
            try:
                sms_id = UUID(q.get("id", ""))
                status = DLR_STATUS[int(q.get("status", ""))]
            except (ValueError, KeyError):
                return self.json({"error": "expected id=<uuid> and status=1|2|4|8|16"}, status=400)
            at = q.get("at", "")
            reported_at = datetime.fromtimestamp(int(at), UTC) if at.isdigit() and int(at) > 0 else None
            known = await runtime.service.record_delivery_report(sms_id, status, reported_at, q.get("answer", "")[:100])
            return self.json({"recorded": known}, status=200 if known else 404)

    @app.page("/sms/provider-report")
    class ProviderReport(View):
        """An HTTP SMS provider POSTs ``{"id", "status": "delivered"|"failed"|"queued", "at", "detail"}``."""

        async def post(self, request: Request) -> Response:
            await runtime.ready.wait()
            token = runtime.settings.sms_report_token.get_secret_value()
            if request.headers.get("X-Report-Token") != token:
                return self.json({"error": "missing or wrong X-Report-Token"}, status=401)
            try:
                body = await request.json()
                sms_id = UUID(str(body["id"]))
                status = PROVIDER_STATUS[body["status"]]
                reported_at = datetime.fromisoformat(body["at"]) if body.get("at") else None
            except (ValueError, KeyError, TypeError) as exc:
                return self.json({"error": f"expected id, status (delivered|failed|queued), at: {exc}"}, status=400)
            known = await runtime.service.record_delivery_report(sms_id, status, reported_at,
                                                                 str(body.get("detail", ""))[:100])
            return self.json({"recorded": known}, status=200 if known else 404)
