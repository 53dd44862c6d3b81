"""The decision path alone, no Kafka: batches of camera events handed to ``CaseService.handle_camera_events``
(as the worker's agent hands them), then the SMS loop (``SmsService.send_due_sms``, an in-process gateway
that takes every message at once), on a fresh database of the shared PostgreSQL. Prints events/s of each
step with the load average. Shows what the set-based statements (issue 16) buy, apart from Kafka.

Steps, each over ``--events`` distinct registered plates, in batches of ``--batch``:
  captures    captures of plates with no open case (kept as sightings only)
  violations  violations of those plates (each opens a case and queues a warning)
  on cases    captures of the same plates (each decided on its open case)
  sms         the queued warnings sent (claim, mark sending, record the acceptance, start the window)

Usage: ./dev bench decide [--events 4000] [--batch 200]
"""

import argparse
import asyncio
import os
import time
import uuid
from datetime import UTC, datetime

import asyncpg

from bench.e2e import drop_database
from pipeline import bootstrap
from pipeline.cases.service import Source
from pipeline.config import Settings
from pipeline.db.migrate import migrate
from pipeline.demo import city
from pipeline.lookups.carparks import CarParkIndex, load_index
from pipeline.lookups.zones import ZoneBook, load_zones
from pipeline.sms.gateway import Accepted
from schemas import events, topics


class TakesAll:
    """A gateway that takes every message at once."""

    async def send(self, sms) -> Accepted:
        return Accepted(datetime.now(UTC), f"bench:{sms.id}")

    async def close(self) -> None:
        pass


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


async def timed(label: str, n: int, work) -> None:
    started = time.monotonic()
    await work()
    elapsed = time.monotonic() - started
    print(f"{label:<12} {n:>6} in {elapsed:6.1f} s = {n / elapsed:8,.0f}/s  ({load()})", flush=True)


async def run(n: int, batch: int) -> None:
    base = Settings()
    run_id = uuid.uuid4().hex[:8]
    database = f"pw_decide_{run_id}"
    admin_url = base.database_url.get_secret_value()
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.close()
    try:
        settings = Settings(database_url=admin_url.rsplit("/", 1)[0] + "/" + database, topic_prefix=f"decide{run_id}.")
        pool = await bootstrap.connect_database(settings, min_size=2)
        async with pool.acquire() as conn:
            await migrate(conn)
            await city.load(conn, plate_count=n + 100)
        car_parks, zones = CarParkIndex(), ZoneBook(default_window_seconds=600, defaults=settings.zone_defaults)
        await load_index(pool, car_parks)
        await load_zones(pool, zones)
        service = bootstrap.build_service(settings, pool, car_parks, zones)
        sms = bootstrap.build_sms_service(settings, pool, service)
        plates = [r["plate"] for r in await pool.fetch(
            """SELECT p.plate FROM plate_registry p JOIN contact_registry c USING (owner_id)
               WHERE NOT EXISTS (SELECT 1 FROM whitelisted_plates w WHERE w.plate = p.plate) LIMIT $1""", n)]
        topic = topics.camera_events_of(settings.topic(topics.CAMERA_EVENTS.name), city.INTEGRATOR)
        camera = city.CAMERAS[0]
        print(f"{len(plates)} plates, batches of {batch}, one worker's CaseService on {database}", flush=True)

        def batches(kind, step: str):
            evs = [(kind(event_id=f"{step}-{i:07d}", camera_id=camera.id, plate=plate, taken_at=datetime.now(UTC),
                         location=events.Location(lat=camera.lat, lon=camera.lon),
                         **({} if kind is events.VehicleDeparted else
                            {"evidence": events.Evidence(image_url=f"https://evidence.test/{step}/{i}.jpg")})),
                    Source(topic, i % 6, i, plate.encode(), datetime.now(UTC))) for i, plate in enumerate(plates)]
            return [evs[i:i + batch] for i in range(0, len(evs), batch)]

        async def decide(parts):
            for part in parts:
                await service.handle_camera_events(part)

        await timed("captures", len(plates), lambda: decide(batches(events.VehicleObserved, "capture")))
        await timed("violations", len(plates), lambda: decide(batches(events.ViolationDetected, "violation")))
        await timed("on cases", len(plates), lambda: decide(batches(events.VehicleObserved, "again")))

        async def send_all():
            while await sms.send_due_sms(TakesAll(), limit=50):
                pass
        queued = await pool.fetchval("SELECT count(*) FROM sms_messages WHERE status = 'pending'")
        await timed("sms", queued, send_all)
        warned = await pool.fetchval("SELECT count(*) FROM cases WHERE state = 'warned'")
        print(f"cases opened {await pool.fetchval('SELECT count(*) FROM cases')}, warned {warned}", flush=True)
        await pool.close()
    finally:
        await drop_database(admin_url, database)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(run(args.events, args.batch))


if __name__ == "__main__":
    main()
