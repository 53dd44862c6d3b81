"""Set-based decisions (issue 16): a batch of camera events costs a constant number of statements for
the captures and departures of plates with no open case, not a round trip (or two) per event."""

from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from pipeline.cases.effects import Topics
from pipeline.cases.machine import Rules
from pipeline.cases.service import CaseService, Source
from pipeline.demo import city
from pipeline.lookups.carparks import CarParkIndex
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

    fetch = execute = _statement

    async def fetchrow(self, sql: str, *args):
        await self._statement(sql, *args)
        return None

    async def fetchval(self, sql: str, *args):
        await self._statement(sql, *args)
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
    # the cameras, the revoked integrators, the plates with open cases, the sightings
    assert len(counts[200]) == len(counts[1]) <= 4, counts[200]
    assert sum("INSERT INTO sightings" in s for s in counts[200]) == 1
