"""Set-based decisions (issue 16): a batch of camera events costs a constant number of statements, not
a round trip (or several) per event: captures and departures of plates with no open case, violations
that open and warn new cases, and events of plates with open cases."""

from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from uuid import uuid4

from pipeline.cases import store
from pipeline.cases.effects import Topics
from pipeline.cases.machine import Case, Rules, Sighting, State
from pipeline.cases.service import CaseService, Source
from pipeline.demo import city
from pipeline.lookups.carparks import CarParkIndex
from pipeline.lookups.owners import PostgresOwnerDirectory
from pipeline.lookups.zones import ZoneBook
from pipeline.sms.service import SmsStyle
from schemas import events

TOPICS = Topics("camera-events", "case-events", "tickets", "camera-commands", "dead-letters")
TOPIC = f"camera-events.{city.INTEGRATOR}"


class CountingConnection:
    """Stands in for PostgreSQL: answers as if no plate had a case and no event were a replay, and
    counts the statements sent."""

    def __init__(self):
        self.statements: list[str] = []

    def transaction(self):
        @asynccontextmanager
        async def block():
            yield
        return block()

    async def _statement(self, sql: str, *args):
        self.statements.append(" ".join(sql.split()))
        if "FROM cameras" in sql:
            return [{"id": c.id, "integrator": city.INTEGRATOR, "lat": c.lat, "lon": c.lon, "place": c.place,
                     "zone": c.zone, "direction": None, "commissioned_on": None} for c in city.CAMERAS]
        if "INSERT INTO sightings" in sql:
            return [{"integrator": city.INTEGRATOR, "event_id": e} for e in args[1]]
        return []

    fetch = execute = executemany = _statement

    async def fetchrow(self, sql: str, *args):
        await self._statement(sql, *args)
        return None

    async def fetchval(self, sql: str, *args):
        await self._statement(sql, *args)
        if "clock_timestamp" in sql:
            return datetime.now(UTC)
        return True  # a sighting recorded (the old path's add_sighting)


class CountingPool:
    def __init__(self):
        self.conn = CountingConnection()

    @asynccontextmanager
    async def acquire(self):
        yield self.conn


def service(pool) -> CaseService:
    return CaseService(pool, owners=None, car_parks=CarParkIndex(), zones=ZoneBook(default_window_seconds=600), rules=Rules(),
                       topics=TOPICS, sms=SmsStyle("zh", "【杭州城管】", ZoneInfo("Asia/Shanghai")),
                       ticket_prefix="YH", parallel=1)


def capture(i: int, kind=events.VehicleObserved):
    camera = city.CAMERAS[i % len(city.CAMERAS)]
    return kind(event_id=f"event-{i:06d}", camera_id=camera.id, plate=f"浙A{i:05d}",
                taken_at=datetime.now(UTC) - timedelta(seconds=1),
                location=events.Location(lat=camera.lat, lon=camera.lon))


async def test_a_batch_of_captures_of_plates_with_no_open_case_costs_the_same_few_statements_as_one():
    counts = {}
    for n in (1, 200):
        pool = CountingPool()
        batch = [(capture(i, events.VehicleDeparted if i % 3 == 0 else events.VehicleObserved),
                  Source(TOPIC, 0, i, capture(i).plate.encode(), datetime.now(UTC))) for i in range(n)]
        await service(pool).handle_camera_events(batch)
        counts[n] = [s for s in pool.conn.statements if "partition_watermarks" not in s]
    # PostgreSQL's clock, the cameras, the revoked integrators, the sightings, the plates' open cases
    assert len(counts[200]) == len(counts[1]) <= 5, counts[200]
    assert sum("INSERT INTO sightings" in s for s in counts[200]) == 1


class RegistryConnection(CountingConnection):
    """Also answers as if every plate were registered to an owner with a phone, and as if the plates
    in ``open_cases`` (plate -> Case) had those cases open."""

    def __init__(self, open_cases: dict | None = None):
        super().__init__()
        self.open_cases = open_cases or {}
        self.batches: dict[str, int] = {}

    async def executemany(self, sql: str, rows):
        self.batches[" ".join(sql.split())] = len(rows)
        return await self._statement(sql)

    async def _statement(self, sql: str, *args):
        rows = await super()._statement(sql, *args)
        if "FROM plate_registry" in sql:
            return [{"plate": plate, "plate_type": "02", "owner_id": f"owner-{plate}", "vehicle_colour": None,
                     "phone": "+8613800000000", "language": "zh", "opted_out": False} for plate in args[0]]
        if "FROM cases WHERE id IN" in sql:
            return [row_of(case) for plate, case in self.open_cases.items() if plate in args[0]]
        return rows

    fetch = execute = _statement


def row_of(case: Case) -> dict:
    return {"id": case.id, "plate": case.plate, "state": case.state.value, "zone": case.zone, "place": case.place,
            "violation": store.sighting_to_json(case.violation), "opened_at": case.opened_at,
            "warned_at": case.warned_at, "deadline_at": case.deadline_at, "wake_at": case.wake_at,
            "latest_capture": None, "closed_at": None, "reason": "", "warning_delivered_at": None,
            "window_seconds": 600, "fresh_capture": None, "left_at": None, "caution": "", "confirm": False,
            "plate_type": "02"}


def violation(i: int) -> events.ViolationDetected:
    camera = city.CAMERAS[i % len(city.CAMERAS)]
    return events.ViolationDetected(
        event_id=f"violation-{i:06d}", camera_id=camera.id, plate=f"浙B{i:05d}",
        taken_at=datetime.now(UTC) - timedelta(seconds=1), location=events.Location(lat=camera.lat, lon=camera.lon),
        evidence=events.Evidence(image_url=f"https://evidence.test/{i}.jpg"))


def warned_case(event: events.ViolationDetected) -> Case:
    camera = next(c for c in city.CAMERAS if c.id == event.camera_id)
    now = datetime.now(UTC)
    sighting = Sighting(f"earlier-{event.event_id}", camera.id, now - timedelta(minutes=3), camera.lat, camera.lon,
                        camera.place, None, city.INTEGRATOR)
    return Case(id=uuid4(), plate=event.plate, state=State.WARNED, zone=camera.zone, place=camera.place,
                violation=sighting, opened_at=now - timedelta(minutes=3), warned_at=now - timedelta(minutes=2),
                deadline_at=now + timedelta(minutes=8), wake_at=now + timedelta(minutes=8, seconds=30),
                window=timedelta(minutes=10), plate_type="02")


async def statements_for(batch_of, n: int, open_cases=lambda events: {}) -> tuple[list[str], dict[str, int]]:
    pool = CountingPool()
    batch = batch_of(n)
    pool.conn = RegistryConnection(open_cases([e for e, _ in batch]))
    owners = PostgresOwnerDirectory(0, 0)
    cases = service(pool)
    cases.owners = cases.effects.owners = owners
    await cases.handle_camera_events(batch)
    return [s for s in pool.conn.statements if "partition_watermarks" not in s], pool.conn.batches


def violations(n: int):
    return [(violation(i), Source(TOPIC, 0, i, violation(i).plate.encode(), datetime.now(UTC))) for i in range(n)]


async def test_a_batch_of_violations_of_distinct_plates_opens_and_warns_in_the_same_few_statements_as_one():
    one, _ = await statements_for(violations, 1)
    many, writes = await statements_for(violations, 200)
    assert len(many) == len(one) <= 16, many
    assert sum("FROM plate_registry" in s for s in many) == 1, "the owners in one query"
    assert writes[" ".join(store.INSERT_CASE.split())] == 200, "200 cases in one statement"
    assert writes[" ".join(store.ADD_SMS.split())] == 200, "a warning for each, in one statement"
    assert writes[" ".join(store.ADD_OUTBOX.split())] == 200
    assert writes[" ".join(store.AUDIT.split())] == 200


async def test_a_batch_of_events_of_plates_with_open_cases_costs_the_same_few_statements_as_one():
    def mixed(n: int):
        batch = []
        for i in range(n):
            v = violation(i)
            kind = (events.VehicleObserved, events.VehicleDeparted)[i % 2] if i % 3 else events.ViolationDetected
            event = kind(**{k: getattr(v, k) for k in ("event_id", "camera_id", "plate", "taken_at", "location")},
                         **({"evidence": v.evidence} if kind is not events.VehicleDeparted else {}))
            batch.append((event, Source(TOPIC, 0, i, v.plate.encode(), datetime.now(UTC))))
        return batch

    def open_cases(batch):
        return {event.plate: warned_case(violation(i)) for i, event in enumerate(batch)}

    one, _ = await statements_for(mixed, 1, open_cases)
    three, _ = await statements_for(mixed, 3, open_cases)
    many, writes = await statements_for(mixed, 200, open_cases)
    assert len(many) == len(three), many
    assert len(many) <= 16, many
    assert writes[" ".join(store.LINK_SIGHTING.split())] == 200, "each event linked to its case, in one statement"


async def test_a_violation_elsewhere_closes_the_plate_s_case_before_its_new_case_is_written():
    """One open case per plate (a unique index): in the batch's writes the old case is closed first."""
    def elsewhere(n: int):
        event = violation(4)
        return [(event.model_copy(update={"plate": violation(0).plate}),
                 Source(TOPIC, 0, 0, violation(0).plate.encode(), datetime.now(UTC)))]

    def open_cases(batch):
        return {violation(0).plate: warned_case(violation(0))}

    statements, writes = await statements_for(elsewhere, 1, open_cases)
    update = statements.index(" ".join(store.UPDATE_CASE.split()))
    insert = statements.index(" ".join(store.INSERT_CASE.split()))
    assert update < insert
    assert writes[" ".join(store.INSERT_CASE.split())] == 1


async def test_a_small_batch_is_decided_in_one_transaction_and_a_large_one_side_by_side():
    """The parallel transactions (``PW_DB_PARALLEL_TRANSACTIONS``) each cost the same few statements,
    so a batch is split only when each transaction gets ``EVENTS_PER_TRANSACTION`` events or more."""
    sightings = {}
    for n in (60, 400):
        pool = CountingPool()
        parallel = service(pool)
        parallel.parallel = 4
        batch = [(capture(i), Source(TOPIC, 0, i, capture(i).plate.encode(), datetime.now(UTC))) for i in range(n)]
        await parallel.handle_camera_events(batch)
        sightings[n] = sum("INSERT INTO sightings" in s for s in pool.conn.statements)
    assert sightings == {60: 1, 400: 4}


async def test_a_batch_that_queued_warnings_wakes_the_sms_loop_and_the_outbox_relay_after_it_committed():
    """The worker's SMS loop and outbox relay need not poll often: a batch that queued SMS or wrote outbox
    rows wakes them once its transaction has committed; a batch of mere captures wakes neither."""
    for batch_of, expected in ((violations, ["commit", "sms", "outbox"]), (lambda n: [
            (capture(i), Source(TOPIC, 0, i, capture(i).plate.encode(), datetime.now(UTC))) for i in range(n)], ["commit"])):
        woken = []
        pool = CountingPool()
        batch = batch_of(3)
        pool.conn = RegistryConnection()

        @asynccontextmanager
        async def transaction():
            yield
            woken.append("commit")
        pool.conn.transaction = transaction
        cases = service(pool)
        cases.owners = cases.effects.owners = PostgresOwnerDirectory(0, 0)
        cases.sms_queued, cases.outbox_written = (lambda: woken.append("sms")), (lambda: woken.append("outbox"))
        await cases.handle_camera_events(batch)
        assert woken == expected
