"""Set-based SMS (issue 16): sending a claim of N warnings (marking them sending, recording the
gateway's acceptances and starting their cases' windows) costs a constant number of statements, not
a savepoint and several round trips per message; a message that cannot be prepared is still set aside alone."""

import asyncio
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from uuid import uuid4
from zoneinfo import ZoneInfo

from pipeline import restore
from pipeline.cases import store
from pipeline.cases.effects import CaseEffects, Topics
from pipeline.cases.machine import Case, Rules, Sighting, State
from pipeline.demo import city
from pipeline.lookups.carparks import CarParkIndex
from pipeline.sms.gateway import Accepted
from pipeline.sms.service import SmsService, SmsStyle

TOPICS = Topics("camera-events", "case-events", "tickets", "camera-commands", "dead-letters")


def detected_case(i: int) -> Case:
    camera = city.CAMERAS[i % len(city.CAMERAS)]
    now = datetime.now(UTC)
    sighting = Sighting(f"violation-{i}", camera.id, now - timedelta(seconds=5), camera.lat, camera.lon, camera.place,
                        None, city.INTEGRATOR)
    return Case(id=uuid4(), plate=f"浙C{i:05d}", state=State.DETECTED, zone=camera.zone, place=camera.place,
                violation=sighting, opened_at=now, window=timedelta(minutes=10), plate_type="02")


class SmsConnection:
    """Stands in for PostgreSQL with ``n`` warnings due (the first ``bad`` of them with params their
    text cannot be rendered from); counts round trips (a savepoint: two)."""

    def __init__(self, n: int, bad: int = 0):
        self.cases = [detected_case(i) for i in range(n)]
        self.rows = [{"id": uuid4(), "case_id": c.id, "kind": "warning", "phone": f"+86138{i:08d}",
                      "params": {"plate": c.plate, "place": c.place, "language": "zh"} if i >= bad else {},
                      "attempts": 0, "text": None, "status": "pending", "case_state": "detected",
                      "window_seconds": 600, "plate": c.plate, "first_report_at": None}
                     for i, c in enumerate(self.cases)]
        self.round_trips: list[str] = []
        self.written: dict[str, int] = {}

    @asynccontextmanager
    async def _savepoint(self):
        self.round_trips += ["SAVEPOINT", "RELEASE"]
        yield

    def transaction(self):
        return self._savepoint()

    async def fetch(self, sql: str, *args):
        self.round_trips.append(sql)
        if "s.next_attempt_at <= now()" in sql:
            return self.rows
        if "FROM unnest($1::uuid[], $2::text[])" in sql:
            return [{"id": sms_id, "attempts": 1} for sms_id in args[0]]
        if "JOIN unnest($1::uuid[], $2::int[])" in sql:
            return [r | {"status": "sending", "attempts": 1} for r in self.rows if r["id"] in args[0]]
        if "FROM cases WHERE id = ANY" in sql:
            return [row_of(c) for c in self.cases if c.id in args[0]]
        return []

    async def fetchval(self, sql: str, *args):
        self.round_trips.append(sql)
        if "clock_timestamp()" in sql:
            return datetime.now(UTC)
        if "UPDATE sms_messages SET status = 'sending'" in sql:
            return 1
        return None

    async def fetchrow(self, sql: str, *args):
        self.round_trips.append(sql)
        if "FROM cases WHERE id" in sql:
            return row_of(next(c for c in self.cases if c.id == args[0]))
        return None

    async def execute(self, sql: str, *args):
        self.round_trips.append(sql)

    async def executemany(self, sql: str, rows):
        self.round_trips.append(sql)
        self.written[sql] = self.written.get(sql, 0) + len(rows)


def row_of(case: Case) -> dict:
    return {"id": case.id, "plate": case.plate, "state": case.state.value, "zone": case.zone, "place": case.place,
            "violation": store.sighting_to_json(case.violation), "opened_at": case.opened_at, "warned_at": None,
            "deadline_at": None, "wake_at": None, "latest_capture": None, "closed_at": None, "reason": "",
            "warning_delivered_at": None, "window_seconds": 600, "fresh_capture": None, "left_at": None,
            "caution": "", "confirm": False, "plate_type": "02"}


class Pool:
    def __init__(self, conn):
        self.conn = conn

    @asynccontextmanager
    async def acquire(self):
        yield self.conn


class TakesAll:
    def __init__(self):
        self.sent = []

    async def send(self, sms):
        self.sent.append(sms)
        return Accepted(datetime.now(UTC), f"ref-{len(self.sent)}")


async def send_claim(n: int, bad: int = 0) -> tuple[SmsConnection, TakesAll]:
    restore.forget()  # each claim reads whether a restore is being reconciled (once a second in a worker)
    conn = SmsConnection(n, bad)
    style = SmsStyle("zh", "【杭州城管】", ZoneInfo("Asia/Shanghai"))
    effects = CaseEffects(None, CarParkIndex(), Rules(), TOPICS, "YH", style.timezone)
    gateway = TakesAll()
    await SmsService(Pool(conn), effects, style).send_due_sms(gateway, limit=n)
    return conn, gateway


async def test_sending_a_claim_of_warnings_costs_the_same_few_statements_as_one():
    one, _ = await send_claim(1)
    many, gateway = await send_claim(50)
    assert len(gateway.sent) == 50
    assert len(many.round_trips) == len(one.round_trips) <= 20, many.round_trips
    assert many.written[store.SMS_ACCEPTED] == 50, "every acceptance recorded, in one statement"
    assert many.written[store.UPDATE_CASE] == 50, "every case warned, in one statement"
    assert many.written[store.ADD_OUTBOX] == 50, "a WarningSent for each"


async def test_a_warning_that_cannot_be_rendered_is_set_aside_alone_and_the_others_are_sent():
    conn, gateway = await send_claim(10, bad=1)
    assert len(gateway.sent) == 9
    assert conn.rows[0]["id"] not in {sms.id for sms in gateway.sent}
    failed = [s for s in conn.round_trips if "SET status = 'failed'" in s]
    assert len(failed) == 1, "the one message that cannot be rendered fails, with its reason"


class ReportConnection(SmsConnection):
    """``n`` warnings accepted a minute ago, each with a report that it was delivered."""

    def __init__(self, n: int):
        super().__init__(n)
        accepted = datetime.now(UTC) - timedelta(minutes=1)
        self.cases = [c.__class__(**{**c.__dict__, "state": State.WARNED, "warned_at": accepted,
                                     "deadline_at": accepted + c.window, "wake_at": accepted + c.window})
                      for c in self.cases]
        self.reports = [{"id": i, "sms_id": r["id"], "status": "delivered", "detail": "", "reported_at": accepted,
                         "received_at": datetime.now(UTC), "sms_status": "accepted", "case_id": c.id,
                         "kind": "warning", "accepted_at": accepted, "delivered_at": None}
                        for i, (r, c) in enumerate(zip(self.rows, self.cases))]

    async def fetch(self, sql: str, *args):
        if "FROM sms_delivery_reports r JOIN sms_messages s" in sql:
            self.round_trips.append(sql)
            return self.reports
        if "FROM cases WHERE id = ANY" in sql:
            self.round_trips.append(sql)
            return [row_of(c) | {"state": "warned", "warned_at": c.warned_at, "deadline_at": c.deadline_at,
                                 "wake_at": c.wake_at} for c in self.cases if c.id in args[0]]
        return await super().fetch(sql, *args)


async def apply_reports(n: int) -> ReportConnection:
    conn = ReportConnection(n)
    style = SmsStyle("zh", "【杭州城管】", ZoneInfo("Asia/Shanghai"))
    effects = CaseEffects(None, CarParkIndex(), Rules(), TOPICS, "YH", style.timezone)
    assert await SmsService(Pool(conn), effects, style).apply_delivery_reports(limit=n) == n
    return conn


async def test_applying_a_claim_of_delivery_reports_costs_the_same_few_statements_as_one():
    one = await apply_reports(1)
    many = await apply_reports(100)
    assert len(many.round_trips) == len(one.round_trips) <= 12, many.round_trips
    assert many.written[store.APPLY_DELIVERY] == many.written[store.REPORT_APPLIED] == 100
    assert many.written[store.ADD_OUTBOX] == 100, "a WarningDelivered for each warning delivered"


class Holds:
    """A gateway that answers nothing until ``answer`` is set."""

    def __init__(self):
        self.sent = []
        self.answer = asyncio.Event()

    async def send(self, sms):
        self.sent.append(sms)
        await self.answer.wait()
        return Accepted(datetime.now(UTC), f"ref-{len(self.sent)}")


class Claims(SmsConnection):
    """Each claim takes the next ``limit`` pending messages (as ``FOR UPDATE SKIP LOCKED`` after the
    previous claim marked its own ``sending``)."""

    async def fetch(self, sql: str, *args):
        if "s.next_attempt_at <= now()" in sql:
            self.round_trips.append(sql)
            claimed, self.rows = self.rows[:args[0]], self.rows[args[0]:]
            self.claimed = getattr(self, "claimed", []) + claimed
            return claimed
        if "JOIN unnest($1::uuid[], $2::int[])" in sql:
            self.round_trips.append(sql)
            return [r | {"status": "sending", "attempts": 1} for r in self.claimed if r["id"] in args[0]]
        return await super().fetch(sql, *args)


async def test_the_next_claim_is_sent_while_the_gateway_answers_the_previous_ones_up_to_in_flight():
    """``send_due_sms(wait=False)`` (the worker's SMS loop) returns once its claim is marked sending:
    three claims of 10 are with the gateway at once, a fourth waits until one is answered, and every
    answer is recorded."""
    conn = Claims(40)
    style = SmsStyle("zh", "【杭州城管】", ZoneInfo("Asia/Shanghai"))
    written = []
    sms = SmsService(Pool(conn), CaseEffects(None, CarParkIndex(), Rules(), TOPICS, "YH", style.timezone), style,
                     in_flight=3, outbox_written=lambda: written.append("outbox"))
    gateway = Holds()
    for _ in range(3):
        assert await asyncio.wait_for(sms.send_due_sms(gateway, limit=10, wait=False), 1) == 10
    await asyncio.sleep(0.05)
    assert len(gateway.sent) == 30, "three claims with the gateway at once"
    fourth = asyncio.create_task(sms.send_due_sms(gateway, limit=10, wait=False))
    await asyncio.sleep(0.1)
    assert not fourth.done() and len(gateway.sent) == 30, "no fourth claim while three are outstanding"
    gateway.answer.set()
    assert await asyncio.wait_for(fourth, 1) == 10
    await asyncio.wait_for(asyncio.gather(*sms.sending), 1)
    assert len(gateway.sent) == 40 and len({s.id for s in gateway.sent}) == 40
    assert conn.written[store.SMS_ACCEPTED] == 40, "every answer recorded"
    assert written == ["outbox"] * 4, "the outbox relay woken after each claim's answers were recorded"
