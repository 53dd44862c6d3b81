"""The SMS loop under failure: a message in doubt is sent again only when it is known not to have
left (PostgreSQL cut off from its sender, clocks that differ), a gateway that is down delays and
never drops, a refused message goes to review at once, and one message that cannot be prepared
never stops the others. On the real Kannel (its fake SMS centre counts what reached the carrier)."""

import asyncio
import re
import signal
import time
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from pipeline.config import Settings

from tests.local_server import LocalServer, TcpProxy

from .conftest import SHARED_KANNEL, Stack, wait_for
from .test_sms_gateway import smsc  # noqa: F401 - the fixture

KANNEL_SENDSMS = Settings().kannel_sendsms_url


class HoldingLink(LocalServer):
    """Between the workers and Kannel's sendsms: holds the first request until the test releases it,
    then passes it on and brings Kannel's answer back; later requests pass at once."""

    def __init__(self):
        super().__init__()
        self.requests = 0
        self.first_arrived = asyncio.Event()
        self.second_arrived = asyncio.Event()
        self.release_first = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cgi-bin/sendsms"

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.requests == 1:
            self.first_arrived.set()
            await self.release_first.wait()
        else:
            self.second_arrived.set()
        async with self.session.get(f"{KANNEL_SENDSMS}?{request.query_string}") as answer:
            return web.Response(text=await answer.text(), status=answer.status)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/cgi-bin/sendsms", self.handle)

    async def __aenter__(self):
        self.session = aiohttp.ClientSession()
        return await super().__aenter__()

    async def __aexit__(self, *exc):
        self.release_first.set()
        await super().__aexit__(*exc)
        await self.session.close()


async def sms_at_the_centre(smsc, plate: str, timeout: float = 30) -> None:
    async def arrived():
        return [t for t in smsc.texts() if plate in t]
    await wait_for(arrived, timeout, f"the SMS for {plate} at the SMS centre")


async def delivered(stack: Stack, plate: str, timeout: float = 60) -> None:
    async def check():
        return await stack.count("""SELECT count(*) FROM sms_messages s JOIN cases c ON c.id = s.case_id
                                    WHERE c.plate = $1 AND s.status = 'delivered'""", plate)
    await wait_for(check, timeout, f"the warning to {plate} to be reported delivered")


async def plates_of_our_own(stack: Stack, n: int, length: int | None = None) -> list[str]:
    """Plates with a phone, drawn at random: the fake SMS centre's log is shared with every test run on
    this machine, and other tests take the first plates in order."""
    rows = await stack.pool.fetch(
        """SELECT p.plate FROM plate_registry p JOIN contact_registry c USING (owner_id)
           WHERE $2::int IS NULL OR length(p.plate) = $2 ORDER BY random() LIMIT $1""", n, length)
    return [r["plate"] for r in rows]


def kannel_env(link: HoldingLink, **extra) -> dict:
    # A long window: the case must still be 'warned' when the test looks.
    return {"PW_SMS_GATEWAY": "kannel", "PW_KANNEL_SENDSMS_URL": link.url, "PW_WINDOW_SECONDS": "300", **extra}


# ── a message in doubt ────────────────────────────────────────────────────────────────────────


@SHARED_KANNEL
async def test_a_worker_cut_off_from_postgresql_for_longer_than_its_lease_still_warns_once(stack: Stack, smsc):
    """Kannel takes the warning while its sender cannot reach PostgreSQL (nor keep Kannel's reports)
    for longer than the lease: the other worker puts the message back but does not send it again,
    and the sender, back, records Kannel's answer: one SMS at the SMS centre."""
    pg_port = urlsplit(stack.db_url).port
    database_link = TcpProxy("127.0.0.1", pg_port)
    await database_link.start()
    try:
        async with HoldingLink() as link:
            env = kannel_env(link, PW_SMS_IN_DOUBT_SECONDS="4", PW_SMS_REPORT_WAIT_SECONDS="60",
                             PW_SESSION_TIMEOUT_SECONDS="6")
            sender = stack.worker("sender", PW_DATABASE_URL=stack.db_url.replace(f":{pg_port}/", f":{database_link.port}/"),
                                  **env)
            other = stack.worker("other", **env)
            await sender.ready()
            await other.ready()
            await stack.all_car_parks_free()
            [plate] = await plates_of_our_own(stack, 1)
            other.proc.send_signal(signal.SIGSTOP)  # so that the sender is the one that sends
            try:
                await stack.publish(stack.violation(plate))
                await asyncio.wait_for(link.first_arrived.wait(), 60)  # the sender is handing it to Kannel
            finally:
                other.proc.send_signal(signal.SIGCONT)

            await database_link.stop()  # the sender loses PostgreSQL...
            cut_at = time.monotonic()
            link.release_first.set()  # ...and Kannel takes the warning
            await sms_at_the_centre(smsc, plate)

            async def settled_by_the_other():
                return await stack.count("SELECT count(*) FROM sms_messages WHERE status <> 'sending'") == 1
            await wait_for(settled_by_the_other, 60, "the other worker to settle the message in doubt")
            await asyncio.sleep(max(0.0, cut_at + 4 + 2 - time.monotonic()))  # an outage longer than the lease
            await database_link.start()

            case = await stack.wait_state(plate, "warned", timeout=30)
            await delivered(stack, plate)
            await asyncio.sleep(1)
            assert sum(plate in t for t in smsc.texts()) == 1, "the warning reached the SMS centre exactly once"
            assert link.requests == 1, "it was not sent again"
            sms = await stack.pool.fetchrow("SELECT * FROM sms_messages WHERE case_id = $1", case["id"])
            assert sms["gateway_ref"].startswith("kannel:"), "the sender's record of Kannel's answer was kept"
    finally:
        await database_link.stop()


@SHARED_KANNEL
async def test_a_worker_whose_clock_runs_a_minute_ahead_does_not_send_another_workers_warning_again(
        stack: Stack, smsc):
    """One worker is handing the warning to Kannel (a slow answer, within its timeout); another, whose
    clock runs 60 s ahead, must not take it for a message its sender abandoned."""
    async with HoldingLink() as link:
        env = kannel_env(link, PW_SMS_TIMEOUT_SECONDS="5", PW_SMS_IN_DOUBT_SECONDS="6", PW_SMS_RETRY_SECONDS="0.2",
                         PW_SMS_REPORT_WAIT_SECONDS="0", PW_SESSION_TIMEOUT_SECONDS="6")
        ahead = stack.worker("ahead", PW_CLOCK_OFFSET_SECONDS="60", **env)
        sender = stack.worker("sender", **env)
        await ahead.ready()
        await sender.ready()
        await stack.all_car_parks_free()
        [plate] = await plates_of_our_own(stack, 1)

        ahead.proc.send_signal(signal.SIGSTOP)  # so that the other worker is the one that sends
        try:
            await stack.publish(stack.violation(plate))
            await asyncio.wait_for(link.first_arrived.wait(), 60)
        finally:
            ahead.proc.send_signal(signal.SIGCONT)
        try:  # the sender waits for Kannel's answer: 3 s, well within its 5 s timeout
            await asyncio.wait_for(link.second_arrived.wait(), 3)
        except TimeoutError:
            pass
        link.release_first.set()

        await stack.wait_state(plate, "warned", timeout=30)
        await delivered(stack, plate)
        await asyncio.sleep(1)
        assert link.requests == 1, "the warning was not sent a second time"
        assert sum(plate in t for t in smsc.texts()) == 1, "the warning reached the SMS centre exactly once"


# ── one message never stops the others ───────────────────────────────────────────────────────


async def test_english_with_a_code_an_8_character_plate_and_100000_free_spaces_warns_and_the_next_warning_too(
        stack: Stack):
    """Seen in the field: this warning could not be rendered in one segment, and as it came first in
    every claim, no SMS of any kind left again. Now the driver-page code gives way."""
    worker = stack.worker(PW_SMS_LANGUAGE="en", PW_DRIVER_PAGE="true")
    await worker.ready()
    await stack.all_car_parks_free(free=100_000)
    [new_energy] = await plates_of_our_own(stack, 1, length=8)
    [other] = await plates_of_our_own(stack, 1, length=7)

    await stack.publish(stack.violation(new_energy))
    await wait_for(lambda: stack.case_of(new_energy), 30, "the first case to open")
    await stack.publish(stack.violation(other))

    await stack.wait_state(new_energy, "warned", timeout=30)
    await stack.wait_state(other, "warned", timeout=30)
    lines = stack.handset_lines()
    [text] = [line["text"] for line in lines if new_energy in line["text"]]
    assert "Move by" in text and re.search(r" http://\S+/d/[2-9A-Z]{10}$", text), \
        "the warning and its link (the car parks are on the page)"
    assert sum(other in line["text"] for line in lines) == 1


async def test_a_message_that_cannot_be_prepared_is_set_aside_its_case_goes_to_review_and_the_rest_leave(
        stack: Stack):
    # Opens cases; its SMS loop (woken by the cases it opens) cannot reach its gateway, so they wait.
    kannel = urlsplit(KANNEL_SENDSMS)
    nowhere = TcpProxy(kannel.hostname, kannel.port)  # never started: connection refused
    quiet = stack.worker("quiet", PW_SMS_GATEWAY="kannel",
                         PW_KANNEL_SENDSMS_URL=KANNEL_SENDSMS.replace(f":{kannel.port}/", f":{nowhere.port}/"))
    await quiet.ready()
    await stack.all_car_parks_free()
    broken, fine = await plates_of_our_own(stack, 2)
    for plate in (broken, fine):
        await stack.publish(stack.violation(plate))
        await stack.wait_state(plate, "detected", timeout=30)
    # A message the loop cannot render (written by an older version, say): any error on one row will do.
    await stack.pool.execute("""UPDATE sms_messages s SET params = s.params - 'plate' FROM cases c
                                WHERE c.id = s.case_id AND c.plate = $1""", broken)
    quiet.stop()

    worker = stack.worker("sender")
    await worker.ready()
    await stack.wait_state(fine, "warned", timeout=30)
    case = await stack.wait_state(broken, "review", timeout=30)
    assert case["reason"].startswith("warning failed: message set aside: KeyError")
    sms = await stack.pool.fetchrow("SELECT * FROM sms_messages WHERE case_id = $1", case["id"])
    assert sms["status"] == "failed" and "set aside" in sms["last_error"]
    assert [fine in line["text"] for line in stack.handset_lines()] == [True], "only the good warning left"


# ── the gateway down, or refusing ─────────────────────────────────────────────────────────────


@SHARED_KANNEL
async def test_kannel_unreachable_for_longer_than_the_old_attempt_budget_delays_warnings_and_sends_each_once(
        stack: Stack, smsc):
    """Kannel stays up for everyone else; this worker reaches it through a link that refuses
    connections until the test opens it. The warnings wait (no window starts) through more tries
    than the six the old budget allowed, and each leaves once when Kannel is back."""
    kannel = urlsplit(KANNEL_SENDSMS)
    link = TcpProxy(kannel.hostname, kannel.port)  # not started yet: connection refused
    try:
        worker = stack.worker(PW_SMS_GATEWAY="kannel",
                              PW_KANNEL_SENDSMS_URL=KANNEL_SENDSMS.replace(f":{kannel.port}/", f":{link.port}/"),
                              PW_SMS_RETRY_SECONDS="0.1", PW_SMS_RETRY_MAX_SECONDS="0.5", PW_WINDOW_SECONDS="300")
        await worker.ready()
        await stack.all_car_parks_free()
        plates = await plates_of_our_own(stack, 5)
        for plate in plates:
            await stack.publish(stack.violation(plate))

        async def waiting_past_the_old_budget():
            return await stack.count("SELECT count(*) FROM sms_messages WHERE attempts >= 8 AND status = 'pending'") == 5
        await wait_for(waiting_past_the_old_budget, 60, "the warnings to be tried more than 6 times while Kannel is away")
        assert await stack.count("SELECT count(*) FROM cases WHERE state = 'detected'") == 5, \
            "no window starts while the gateway has not taken the warning"
        assert "Kannel unreachable" in await stack.pool.fetchval("SELECT last_error FROM sms_messages LIMIT 1")
        await link.start()

        async def all_warned():
            return await stack.count("SELECT count(*) FROM cases WHERE state = 'warned'") == 5
        await wait_for(all_warned, 60, "all five warnings after Kannel came back")
        for plate in plates:
            await delivered(stack, plate)
        await asyncio.sleep(1)
        received = smsc.texts()
        for plate in plates:
            assert sum(plate in t for t in received) == 1, "each warning reached the SMS centre exactly once"
    finally:
        await link.stop()


class NotRoutable(LocalServer):
    """Kannel's sendsms when no SMS centre route takes the receiver (its own words)."""

    def __init__(self):
        super().__init__()
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        return web.Response(text="Not routable. Do not try again.", status=403)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/cgi-bin/sendsms", self.handle)


async def test_a_warning_kannel_refuses_as_not_routable_sends_its_case_to_review_at_once(stack: Stack):
    async with NotRoutable() as kannel:
        worker = stack.worker(PW_SMS_GATEWAY="kannel", PW_KANNEL_SENDSMS_URL=f"http://127.0.0.1:{kannel.port}/cgi-bin/sendsms",
                              PW_SMS_RETRY_SECONDS="0.1")
        await worker.ready()
        [plate] = await plates_of_our_own(stack, 1)
        await stack.publish(stack.violation(plate))
        case = await stack.wait_state(plate, "review", timeout=30)
        await asyncio.sleep(1)
    assert kannel.requests == 1, "a refused message is not tried again"
    assert "not routable" in case["reason"]
