"""The evidence fetcher against the demo's HTTPS image server (its own CA): what it takes, what it refuses."""

import hashlib
from datetime import UTC, datetime

import pytest
from aiohttp import web

from pipeline.config import Settings
from pipeline.demo import photos
from pipeline.evidence import fetch
from tests.local_server import free_port

pytestmark = pytest.mark.unit

TAKEN = datetime(2026, 11, 26, 10, 42, tzinfo=UTC)


async def _big(request):
    return web.Response(body=b"\xff\xd8" + b"0" * (2 * 1024 * 1024), content_type="image/jpeg")


async def _big_streamed(request):
    response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
    await response.prepare(request)
    for _ in range(40):
        await response.write(b"0" * 65536)
    return response


async def _pdf(request):
    return web.Response(body=b"%PDF-1.4\n" + b"x" * 500, content_type="image/jpeg")


async def _moved(request):
    raise web.HTTPFound("https://elsewhere.example/x.jpg")


async def _missing(request):
    raise web.HTTPNotFound()


@pytest.fixture(scope="module")
async def server(tmp_path_factory):
    tls = photos.make_ca(tmp_path_factory.mktemp("ca"))
    port = free_port()
    runner = await photos.serve(tls, "127.0.0.1", port, [("GET", "/big.jpg", _big), ("GET", "/stream.jpg", _big_streamed),
                                                         ("GET", "/doc.jpg", _pdf), ("GET", "/moved.jpg", _moved),
                                                         ("GET", "/gone.jpg", _missing)])
    yield tls, f"https://localhost:{port}"
    await runner.cleanup()


def fetcher(tls, hosts="cityA=localhost", max_bytes=1024 * 1024, ca=True):
    return fetch.Fetcher(fetch.allowed_hosts(hosts), max_bytes, 5, str(tls.ca_file) if ca else None)


async def test_a_capture_is_fetched_and_its_sha256_checked(server):
    tls, base = server
    path, sha = photos.photo_for("cam-7", TAKEN, "浙A12345")
    f = fetcher(tls)
    try:
        got = await f.fetch(base + path, "cityA", sha)
    finally:
        await f.close()
    assert got.content_type == "image/jpeg" and (got.width, got.height) == (640, 400)
    assert got.sha256 == sha == hashlib.sha256(got.data).hexdigest()


@pytest.mark.parametrize("url, integrator, why", [
    ("http://localhost:{port}/e/cam/20261126104200/x.jpg", "cityA", "not https"),
    ("{base}/e/cam/20261126104200/x.jpg", "cityB", "host localhost not allowed for integrator cityB"),
    ("{base}/big.jpg", "cityA", "too big (2097154 bytes, at most 1048576)"),
    ("{base}/stream.jpg", "cityA", "too big (over 1048576 bytes)"),
    ("{base}/doc.jpg", "cityA", "not an image"),
    ("{base}/moved.jpg", "cityA", "redirect (HTTP 302) not followed"),
])
async def test_refusals_name_the_reason(server, url, integrator, why):
    tls, base = server
    f = fetcher(tls)
    try:
        with pytest.raises(fetch.Refused, match=why.replace("(", r"\(").replace(")", r"\)")):
            await f.fetch(url.format(base=base, port=base.rsplit(":", 1)[1]), integrator)
    finally:
        await f.close()


async def test_an_image_that_is_not_the_events_is_a_mismatch(server):
    tls, base = server
    path, sha = photos.photo_for("cam-7", TAKEN, "浙A12345")
    f = fetcher(tls)
    try:
        with pytest.raises(fetch.Mismatch) as caught:
            await f.fetch(base + path, "cityA", "0" * 64)
    finally:
        await f.close()
    assert caught.value.got == sha and caught.value.expected == "0" * 64


async def test_an_untrusted_certificate_or_a_missing_image_may_pass_later(server):
    tls, base = server
    path, _ = photos.photo_for("cam-7", TAKEN, "浙A12345")
    for f, url, why in ((fetcher(tls, ca=False), base + path, "TLS"), (fetcher(tls), base + "/gone.jpg", "HTTP 404")):
        try:
            with pytest.raises(fetch.Failed, match=why):
                await f.fetch(url, "cityA")
        finally:
            await f.close()


def test_hosts_per_integrator_and_a_bad_setting():
    assert fetch.allowed_hosts("a=h1, H2; *=common") == {"a": frozenset({"h1", "h2"}), "*": frozenset({"common"})}
    f = fetch.Fetcher(fetch.allowed_hosts("*=common"), 10, 1)
    f.check("https://common/x.jpg", "anyone")
    with pytest.raises(ValueError, match="evidence_hosts"):
        Settings(evidence_hosts="no-equals-sign")


async def test_a_worker_fetches_many_images_at_once_so_that_a_slow_vendor_keeps_up_with_a_city():
    """Each fetch waits on the vendor's server: the loop has as many in flight as the setting allows."""
    import asyncio
    from contextlib import asynccontextmanager

    due = [{"event_id": f"e{i}", "integrator": "acme", "url": f"https://img.acme/{i}.jpg", "attempts": 1,
            "expected": None} for i in range(100)]
    recorded = []

    class Conn:
        async def fetch(self, sql, limit, lease):
            taken, due[:] = due[:limit], due[limit:]
            return taken

        def transaction(self):
            @asynccontextmanager
            async def tx():
                yield
            return tx()

        async def execute(self, sql, *args):
            recorded.append(args[1])

    class Pool:
        def acquire(self):
            @asynccontextmanager
            async def conn():
                yield Conn()
            return conn()

    in_flight = most = 0

    class SlowVendor:
        async def fetch(self, url, integrator, expected):
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0.01)
            in_flight -= 1
            raise fetch.Failed("HTTP 503")

    at_once = Settings().evidence_fetches_at_once
    assert at_once >= 32
    assert await fetch.run_due(Pool(), SlowVendor(), fetch.Retry(6, 30, 60), at_once)
    assert most == at_once and len(recorded) == at_once
