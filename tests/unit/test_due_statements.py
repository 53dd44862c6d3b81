"""The deadline tick is set-based (issue 16): a batch of due cases, whatever they come to (a recheck
request, a ticket with its SMS and chain link, a warning notice, moved, unconfirmed), costs the same
statements as a batch of one of each, not a round trip (or ten) per case."""

from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from uuid import uuid4
from zoneinfo import ZoneInfo

import json

import pytest

from pipeline import restore
from pipeline.cases.effects import Topics
from pipeline.cases.machine import Rules
from pipeline.cases.service import CaseService
from pipeline.lookups.carparks import CarParkIndex
from pipeline.lookups.owners import PostgresOwnerDirectory
from pipeline.lookups.zones import ZoneBook
from pipeline.sms.service import SmsStyle

TOPICS = Topics("camera-events", "case-events", "tickets", "camera-commands", "dead-letters")
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
RULES = Rules()


def sighting(event_id: str, taken_at: datetime, lat=30.25, lon=120.16) -> dict:
    return {"event_id": event_id, "integrator": "hikvision", "camera_id": "cam-1", "taken_at": taken_at.isoformat(),
            "lat": lat, "lon": lon, "place": "Yan'an Rd", "evidence_url": f"https://cams.example/{event_id}.jpg"}


def due_row(i: int, kind: str) -> dict:
    """A case row as ``claim_due_cases`` returns it, due now, that ``on_wake`` decides as ``kind``."""
    deadline = NOW - RULES.lateness - timedelta(seconds=1)
    warned = deadline - RULES.window
    row = {"id": uuid4(), "plate": f"浙A{i:05d}", "state": "warned", "zone": "xihu", "place": "Yan'an Rd",
           "camera_id": "cam-1", "lat": 30.25, "lon": 120.16, "violation": sighting(f"v{i}", warned - timedelta(minutes=1)),
           "latest_capture": None, "window_seconds": RULES.window.total_seconds(), "detected_at": warned,
           "opened_at": warned, "warned_at": warned, "deadline_at": deadline, "wake_at": deadline + RULES.lateness,
           "closed_at": None, "reason": "", "warning_delivered_at": None, "fresh_capture": None, "left_at": None,
           "caution": "", "confirm": False, "plate_type": "02", "source_partition": None, "decided_without": []}
    if kind in ("ticket", "caution"):
        row["fresh_capture"] = row["latest_capture"] = sighting(f"c{i}", deadline - timedelta(seconds=2))
        row["caution"] = "first_offence" if kind == "caution" else ""
    elif kind == "moved":
        row["left_at"] = deadline
    elif kind == "unconfirmed":
        row["state"] = "rechecking"
    return row


class CountingConnection:
    """Stands in for PostgreSQL: hands out ``due`` rows as the claim, answers each statement as a
    database would, and counts the statements sent."""

    def __init__(self, due: list[dict]):
        self.due = due
        self.statements: list[str] = []
        self.serial = 0
        self.tickets: dict[str, dict] = {}
        self.executed: list[tuple[str, tuple]] = []

    def transaction(self):
        @asynccontextmanager
        async def block():
            self.statements.append("SAVEPOINT/BEGIN")
            yield
        return block()

    def _next(self) -> int:
        self.serial += 1
        return self.serial

    def _ticket(self, number, case_id, plate, issued_at, deadline_at, place, zone, lat, lon, evidence, reason):
        ticket = {"number": number, "case_id": case_id, "plate": plate, "issued_at": issued_at,
                  "deadline_at": deadline_at, "place": place, "zone": zone, "lat": lat, "lon": lon,
                  "evidence": evidence, "reason": reason, "warning_accepted_at": None, "warning_delivered_at": None}
        self.tickets[number] = ticket
        return ticket

    async def fetch(self, sql: str, *args):
        self.statements.append(" ".join(sql.split()))
        if "FROM cases c" in sql and "wake_at <=" in sql:
            return self.due
        if "generate_series" in sql:
            return [(self._next(),) for _ in range(args[0])]
        if "FROM plate_registry" in sql:
            plates = args[0] if isinstance(args[0], list) else [args[0]]
            return [{"plate": p, "plate_type": "02", "owner_id": f"o-{p}", "vehicle_colour": None,
                     "phone": "+8613800138000", "language": None, "opted_out": False} for p in plates]
        if "SET driver_code" in sql:
            return [{"id": case_id, "driver_code": code} for case_id, code in zip(*args)]
        if "INSERT INTO tickets" in sql:
            return [self._ticket(*row[:3], args[10], *row[3:8], json.loads(row[8]), row[9]) for row in zip(*args[:10])]
        return []

    async def execute(self, sql: str, *args):
        self.statements.append(" ".join(sql.split()))
        self.executed.append((" ".join(sql.split()), args))

    async def fetchval(self, sql: str, *args):
        self.statements.append(" ".join(sql.split()))
        if "SELECT now()" in sql:
            return NOW
        if "nextval" in sql:
            return self._next()
        if "INSERT INTO tickets" in sql:
            return self._ticket(*args)["number"]
        if "RETURNING id" in sql:
            return self._next()
        return None

    async def fetchrow(self, sql: str, *args):
        self.statements.append(" ".join(sql.split()))
        if "FROM tickets WHERE number" in sql:
            return self.tickets[args[0]]
        return None


class CountingPool:
    def __init__(self, due):
        self.conn = CountingConnection(due)

    @asynccontextmanager
    async def acquire(self):
        yield self.conn


def service(pool) -> CaseService:
    return CaseService(pool, owners=PostgresOwnerDirectory(0, 0), car_parks=CarParkIndex(),
                       zones=ZoneBook(default_window_seconds=600), rules=RULES, topics=TOPICS,
                       sms=SmsStyle("zh", "【杭州城管】", ZoneInfo("Asia/Shanghai")), ticket_prefix="YH")


KINDS = ("recheck", "ticket", "caution", "moved", "unconfirmed")


@pytest.mark.parametrize("driver_page", [False, True])
async def test_a_batch_of_due_cases_costs_the_same_statements_as_one_case_of_each_kind(driver_page):
    counts, pools = {}, {}
    for n in (1, 40):
        restore.forget()  # each run reads whether a restore is being reconciled (once a second in a worker)
        pool = CountingPool([due_row(i * len(KINDS) + k, kind) for i in range(n) for k, kind in enumerate(KINDS)])
        cases = service(pool)
        cases.effects.driver_page = driver_page
        assert await cases.decide_due_cases(limit=500) == n * len(KINDS)
        counts[n], pools[n] = len(pool.conn.statements), pool
    assert counts[40] == counts[1], f"{counts[1]} statements for 5 due cases, {counts[40]} for 200"
    statements = pools[40].conn.statements
    assert sum(s.startswith("UPDATE cases c SET state") for s in statements) == 1
    assert sum("INSERT INTO audit_log" in s for s in statements) == 1
    assert sum("INSERT INTO sms_messages" in s for s in statements) == 1
    assert len(pools[40].conn.tickets) == 40  # one ticket per ticketed case, each in the one INSERT


async def test_the_decisions_of_a_batch_are_the_machine_s_with_their_effects():
    rows = [due_row(k, kind) for k, kind in enumerate(KINDS)]
    pool = CountingPool(rows)
    await service(pool).decide_due_cases()
    executed = dict(pool.conn.executed)
    update = executed[next(s for s in executed if s.startswith("UPDATE cases c SET state"))]
    assert dict(zip(update[0], update[1])) == {
        rows[0]["id"]: "rechecking", rows[1]["id"]: "ticketed", rows[2]["id"]: "cautioned", rows[3]["id"]: "moved",
        rows[4]["id"]: "unconfirmed"}
    sms = executed[next(s for s in executed if "INSERT INTO sms_messages" in s)]
    assert sorted(zip(sms[1], sms[2])) == sorted([(rows[1]["id"], "ticket"), (rows[2]["id"], "caution")])
    outbox = executed[next(s for s in executed if "INSERT INTO outbox" in s)]
    assert sorted(outbox[1]) == sorted(["camera-commands", "tickets"] + ["case-events"] * 4)
    chain = executed[next(s for s in executed if "INSERT INTO ticket_chain" in s)]
    assert chain[0] == ["TicketIssued"] and chain[3][0] == outbox[0][outbox[1].index("tickets")]
    audit = executed[next(s for s in executed if "INSERT INTO audit_log" in s)]
    assert audit[3] == ["warned->rechecking", "warned->ticketed", "warned->cautioned", "warned->moved",
                        "rechecking->unconfirmed"]
