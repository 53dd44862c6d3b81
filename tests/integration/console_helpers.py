"""Shared by the console tests: operators made directly in the test database, an HTTP client that
logs in like a browser (cookies, the CSRF token from the page), and a case walked to a ticket."""

import asyncio
import re
from datetime import UTC, datetime

import aiohttp

from pipeline.console import auth

from .conftest import Stack

PASSWORD = "a long enough password"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def add_operator(stack: Stack, name: str, role: str) -> None:
    async with stack.pool.acquire() as conn:
        await auth.add_operator(conn, name, role, PASSWORD)


def base_url(worker) -> str:
    return f"http://127.0.0.1:{worker.env['PW_WEB_PORT']}"


class ConsoleClient:
    """An operator's browser without the browser: a cookie jar and the session's CSRF token.
    ``address``: the loopback address it connects from (127.0.0.2, ...: another client for the server)."""

    def __init__(self, base: str, address: str = "127.0.0.1"):
        self.base = base
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                          connector=aiohttp.TCPConnector(local_addr=(address, 0)))
        self.csrf: str | None = None

    async def close(self) -> None:
        await self.http.close()

    async def login(self, name: str, password: str = PASSWORD) -> aiohttp.ClientResponse:
        async with self.http.post(f"{self.base}/console/login", data={"name": name, "password": password,
                                                                       "next": "/console/"},
                                  allow_redirects=False) as r:
            await r.read()
        if r.status == 303:
            await self.page("/console/")
        return r

    async def page(self, path: str) -> tuple[int, str]:
        async with self.http.get(f"{self.base}{path}", allow_redirects=False) as r:
            text = await r.text()
            token = CSRF.search(text)
            if token:
                self.csrf = token.group(1)
            return r.status, text

    async def post(self, path: str, data: dict, csrf: bool = True, headers: dict | None = None) -> tuple[int, str, str]:
        """(status, body, Location) of a form POST, with the session's CSRF token unless ``csrf=False``."""
        form = {**data, **({"csrf": self.csrf} if csrf and self.csrf else {})}
        async with self.http.post(f"{self.base}{path}", data=form, allow_redirects=False, headers=headers) as r:
            return r.status, await r.text(), r.headers.get("Location", "")


async def warned_case(stack: Stack, plate: str, camera=None):
    from pipeline.demo import city

    camera = camera or city.CAMERAS[0]
    violation = stack.violation(plate, camera)
    await stack.publish(violation)
    return violation, await stack.wait_state(plate, "warned", timeout=20)


async def ticketed_case(stack: Stack, plate: str, camera=None):
    """Violation -> warning -> still there after the deadline -> ticket, on the real pipeline."""
    from pipeline.demo import city

    camera = camera or city.CAMERAS[0]
    violation, case = await warned_case(stack, plate, camera)
    await asyncio.sleep(max(0.0, (case["deadline_at"] - datetime.now(UTC)).total_seconds()))
    await stack.publish(stack.observation(plate, camera))
    case = await stack.wait_state(plate, "ticketed", timeout=20)
    ticket = await stack.pool.fetchrow("SELECT * FROM tickets WHERE case_id = $1", case["id"])
    return violation, case, ticket


async def phone_of(stack: Stack, plate: str) -> str | None:
    return await stack.pool.fetchval(
        "SELECT c.phone FROM plate_registry p JOIN contact_registry c USING (owner_id) WHERE p.plate = $1", plate)


async def plates_without_phone(stack: Stack, n: int) -> list[str]:
    rows = await stack.pool.fetch(
        """SELECT p.plate FROM plate_registry p LEFT JOIN contact_registry c USING (owner_id)
           WHERE c.owner_id IS NULL ORDER BY p.plate LIMIT $1""", n)
    return [r["plate"] for r in rows]
