"""How the gateways' answers are told apart (pipeline/sms/kannel.py, http_provider.py): "the gateway
is down or busy" (``TemporaryFailure``: the message waits, no window starts) from "this message is
refused" (``PermanentFailure``: its case goes to review at once)."""

from uuid import uuid4

import pytest
from aiohttp import web

from pipeline.sms.gateway import OutgoingSms, PermanentFailure, TemporaryFailure
from pipeline.sms.http_provider import HttpProviderGateway
from pipeline.sms.kannel import KannelGateway
from tests.local_server import LocalServer, free_port

pytestmark = pytest.mark.unit

SMS = OutgoingSms(uuid4(), "13800138000", "浙A12345在文一西路违停，请于10:52前驶离。【杭州城管】")


class Answers(LocalServer):
    """Answers every request with ``status`` and ``body``, as Kannel's sendsms or a provider would."""

    def __init__(self, status: int, body: str):
        super().__init__()
        self.status, self.body = status, body

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(text=self.body, status=self.status)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/cgi-bin/sendsms", self.handle)
        router.add_post("/send", self.handle)


async def kannel_answer(port: int):
    gateway = KannelGateway(f"http://127.0.0.1:{port}/cgi-bin/sendsms", "pw", "secret", "12345",
                            "http://127.0.0.1:8080/sms/delivery-report", 5, report_secret="a-secret-for-tests")
    try:
        return await gateway.send(SMS)
    finally:
        await gateway.close()


async def provider_answer(port: int):
    gateway = HttpProviderGateway(f"http://127.0.0.1:{port}/send", "token", "http://127.0.0.1:8080/sms/provider-report")
    try:
        return await gateway.send(SMS)
    finally:
        await gateway.close()


# Kannel's smsbox answers, word for word (gw/smsbox.c), and what they mean for a warning.
@pytest.mark.parametrize("status, body, failure", [
    (503, "Temporal failure, try again later.", TemporaryFailure),  # bearerbox could not take it now
    (500, "Sending failed.", TemporaryFailure),
    (403, "Authorization failed for sendsms", TemporaryFailure),  # our credentials: nothing can go until fixed
    (403, "Not routable. Do not try again.", PermanentFailure),  # this receiver: never
    (400, "Missing receiver number, rejected", PermanentFailure),
])
async def test_kannel_answers_are_down_or_refused(status, body, failure):
    async with Answers(status, body) as kannel:
        with pytest.raises(failure) as raised:
            await kannel_answer(kannel.port)
    assert type(raised.value) is failure
    assert "13800138000" not in str(raised.value)


@pytest.mark.parametrize("status, failure", [
    (503, TemporaryFailure), (502, TemporaryFailure), (429, TemporaryFailure), (408, TemporaryFailure),
    (401, TemporaryFailure), (403, TemporaryFailure),  # our token refused: every message waits for the fix
    (400, PermanentFailure), (404, PermanentFailure), (422, PermanentFailure),
])
async def test_provider_answers_are_down_or_refused(status, failure):
    async with Answers(status, '{"error": "x"}') as provider:
        with pytest.raises(failure) as raised:
            await provider_answer(provider.port)
    assert type(raised.value) is failure


async def test_nobody_listening_is_the_gateway_down():
    with pytest.raises(TemporaryFailure):
        await kannel_answer(free_port())
    with pytest.raises(TemporaryFailure):
        await provider_answer(free_port())
