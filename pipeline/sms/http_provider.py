"""Adapter for HTTP SMS providers (a carrier's or a cloud provider's JSON API).

Request: ``POST <url>`` with ``Authorization: Bearer <token>``, ``Idempotency-Key: <our message id>``
and JSON ``{"id", "to", "text", "report_url"}``. Any 2xx is acceptance; 408, 425, 429 and 5xx (or no
answer: the idempotency key makes a repeat harmless) mean the provider is down or busy, and 401/403
that it refuses our token: the message waits and is tried again. Any other 4xx refuses this message:
final. The provider reports delivery by POSTing
``{"id": <our id>, "status": "delivered"|"failed", "at": <ISO time>, "detail": "..."}`` to
``/sms/provider-report`` with the header ``X-Report-Token``.
"""

from datetime import UTC, datetime

import aiohttp

from pipeline.cases.reasons import why
from pipeline.lookups.owners import scrub
from pipeline.sms import texts
from pipeline.sms.gateway import Accepted, OutgoingSms, PermanentFailure, TemporaryFailure

RETRYABLE = {408, 425, 429}


class HttpProviderGateway:
    def __init__(self, url: str, token: str, report_url: str, timeout_seconds: float = 5):
        self.url = url
        self.token = token
        self.report_url = report_url
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, sms: OutgoingSms) -> Accepted:
        if not texts.fits_one_segment(sms.text):
            raise PermanentFailure(why("too_long", units=texts.length(sms.text)))
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        headers = {"Authorization": f"Bearer {self.token}", "Idempotency-Key": str(sms.id)}
        body = {"id": str(sms.id), "to": sms.phone, "text": sms.text, "report_url": self.report_url}
        try:
            async with self._session.post(self.url, json=body, headers=headers) as response:
                status = response.status
                answer = scrub((await response.text())[:200])
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TemporaryFailure(why("provider_unreachable", error=type(exc).__name__)) from None
        if 200 <= status < 300:
            return Accepted(datetime.now(UTC), f"http:{answer[:60]}")
        if status in RETRYABLE or status >= 500:
            raise TemporaryFailure(why("provider_answered", status=status))
        if status in (401, 403):
            raise TemporaryFailure(why("provider_credentials", status=status))
        raise PermanentFailure(why("provider_refused", status=status, answer=answer))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
