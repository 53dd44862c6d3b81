"""The Kannel adapter's answers to the case service, against a small stand-in for sendsms.

What matters is the kind of failure: one that surely did not reach Kannel may be retried at once;
one whose request went out (no answer) is in doubt and must not be sent again blindly.
"""

import asyncio
import hashlib
import hmac
from urllib.parse import parse_qs, urlsplit
from uuid import uuid4

import pytest
from aiohttp import web

from pipeline.sms.gateway import Accepted, InDoubt, OutgoingSms, PermanentFailure, TemporaryFailure
from pipeline.sms.kannel import KannelGateway
from tests.local_server import LocalServer, free_port

TEXT = "浙A12345在文一西路违停，请于10:52前驶离。附近停车场余17位。【杭州城管】"


class SendSms(LocalServer):
    """Answers /cgi-bin/sendsms with ``status`` after ``delay`` seconds, and keeps what it was asked."""

    def __init__(self, status: int = 202, delay: float = 0.0):
        super().__init__()
        self.status, self.delay = status, delay
        self.queries: list[dict] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.queries.append(dict(request.query))
        await asyncio.sleep(self.delay)
        return web.Response(text="0: Accepted for delivery", status=self.status)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/cgi-bin/sendsms", self.handle)


REPORT_SECRET = "a-report-secret-for-tests"


def gateway(port: int, timeout: float = 5) -> KannelGateway:
    return KannelGateway(f"http://127.0.0.1:{port}/cgi-bin/sendsms", "pw", "secret", "12345",
                         "http://127.0.0.1:8080/sms/delivery-report", timeout, report_secret=REPORT_SECRET)


async def send(port: int, timeout: float = 5):
    g = gateway(port, timeout)
    try:
        return await g.send(OutgoingSms(uuid4(), "13800138000", TEXT))
    finally:
        await g.close()


async def test_accepted_message_carries_ucs2_and_a_report_url_with_our_id():
    async with SendSms(202) as kannel:
        sms = OutgoingSms(uuid4(), "13800138000", TEXT)
        g = gateway(kannel.port)
        try:
            accepted = await g.send(sms)
        finally:
            await g.close()
    assert isinstance(accepted, Accepted)
    [query] = kannel.queries
    assert query["coding"] == "2" and query["text"] == TEXT and query["to"] == "13800138000"
    report = parse_qs(urlsplit(query["dlr-url"]).query)
    assert report["id"] == [str(sms.id)]
    assert report["sig"] == [hmac.new(REPORT_SECRET.encode(), str(sms.id).encode(), hashlib.sha256).hexdigest()]
    assert report["status"] == ["%d"], "the signature covers the id only: Kannel fills in the status"


async def test_kannel_not_listening_is_a_temporary_failure_safe_to_retry():
    with pytest.raises(TemporaryFailure, match="Kannel unreachable") as failure:
        await send(free_port())
    assert not isinstance(failure.value, InDoubt)
    assert "13800138000" not in str(failure.value)


async def test_no_answer_after_the_request_went_out_is_in_doubt_not_a_retry():
    async with SendSms(202, delay=2) as kannel:
        with pytest.raises(InDoubt) as doubt:
            await send(kannel.port, timeout=0.5)
    assert len(kannel.queries) == 1, "the request reached Kannel, which may have queued the SMS"
    assert not isinstance(doubt.value, TemporaryFailure)
    assert "13800138000" not in str(doubt.value)


@pytest.mark.parametrize("status, failure", [(400, PermanentFailure), (403, TemporaryFailure), (503, TemporaryFailure)])
async def test_refusals_by_status(status, failure):
    async with SendSms(status) as kannel:
        with pytest.raises(failure):
            await send(kannel.port)


async def test_a_text_longer_than_one_segment_is_refused_before_kannel_could_cut_it():
    async with SendSms(202) as kannel:
        g = gateway(kannel.port)
        try:
            with pytest.raises(PermanentFailure, match="more than one segment"):
                await g.send(OutgoingSms(uuid4(), "13800138000", "长" * 71))
        finally:
            await g.close()
    assert kannel.queries == []
