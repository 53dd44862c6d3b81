"""One way to know a client's address and limit it (issue 15, must 12), on a real worker.

Behind a reverse proxy listed in ``PW_TRUSTED_PROXIES`` every request comes from the proxy; the
console's login, HTTP ingest's bad-key limit and the driver pages' lookups all count the client it
forwards (``X-Forwarded-For``), an IPv6 client by its /64 (``pipeline/client_limits.py``). Here the
worker's proxy is the test itself (127.0.0.1).
"""

import aiohttp

from .conftest import Stack
from .console_helpers import base_url

A, B = "198.51.100.7", "198.51.100.8"
SAME_64 = ("2001:db8:7:7::1", "2001:db8:7:7:ffff::2")


async def _statuses(http: aiohttp.ClientSession, method: str, url: str, clients: list[str], **kwargs) -> list[int]:
    statuses, headers = [], kwargs.pop("headers", {})
    for client in clients:
        async with http.request(method, url, headers={"X-Forwarded-For": client, **headers},
                                allow_redirects=False, **kwargs) as r:
            await r.read()
            statuses.append(r.status)
    return statuses


async def test_every_per_client_limit_counts_the_forwarded_client_and_an_ipv6_client_by_its_64(stack: Stack):
    worker = stack.worker(PW_TRUSTED_PROXIES="127.0.0.1", PW_DRIVER_PAGE="true",
                          PW_CONSOLE_LOGIN_PER_ADDRESS_PER_MINUTE="1", PW_INGEST_BAD_KEYS_PER_ADDRESS="1",
                          PW_DRIVER_PAGE_LOOKUPS_PER_MINUTE="1", PW_DRIVER_PAGE_LOOKUP_BURST="1")
    await worker.ready()
    base = base_url(worker)
    login = {"name": "nobody", "password": "guess", "next": "/console/"}
    lookup = {"number": "YH261126000001", "plate": "浙A12345", "code": "ABCDEFGHJK"}
    limited = {
        "console login": ("POST", f"{base}/console/login", {"data": login}, 401),
        "ingest bad key": ("POST", f"{base}/v1/camera-events", {"data": b"[]", "headers": {"Authorization": "Bearer pwk_x"}}, 401),
        "ticket lookup": ("POST", f"{base}/d/ticket", {"data": lookup}, 404),
        "code lookup": ("GET", f"{base}/d/ABCDEFGHJK", {}, 404),
    }
    async with aiohttp.ClientSession() as http:
        failures = []
        for n, (what, (method, url, kwargs, refused)) in enumerate(limited.items()):
            # Each endpoint meets clients of its own: the driver page's lookups share one budget.
            a, b = A.replace(".7", f".{7 + 10 * n}"), B.replace(".8", f".{8 + 10 * n}")
            one = await _statuses(http, method, url, [a, a], **dict(kwargs))
            other = await _statuses(http, method, url, [b], **dict(kwargs))
            block = await _statuses(http, method, url, [ip.replace(":7:7:", f":7:{7 + n}:") for ip in SAME_64],
                                    **dict(kwargs))
            if (one, other, block) != ([refused, 429], [refused], [refused, 429]):
                failures.append((what, one, other, block))  # another client: its own limit; one /64: one client
        assert not failures, failures
