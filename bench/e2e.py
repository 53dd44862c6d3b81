"""End-to-end benchmark on the local stack (real Kafka, PostgreSQL, worker processes).

Measures, in one run:
  * violations per second end to end: camera event published -> case opened -> warning SMS accepted;
  * p50/p99 latency from publishing the camera event to the gateway's acceptance of the warning;
  * the ceiling: a raw aiokafka consume-and-produce loop on the same broker.

Not a test: it prints figures (and the machine) for the README. Usage:
    ./dev bench [--violations 5000] [--workers 1]
"""

import argparse
import asyncio
import os
import platform
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline import bootstrap
from pipeline.cases.store import init_connection
from pipeline.config import Settings
from pipeline.db.migrate import migrate
from pipeline.demo import city
from schemas import events, topics
from schemas.codec import encode

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = "unknown cpu"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def progress(label: str, done: int, total: int, started: float) -> None:
    rate = done / max(time.monotonic() - started, 1e-9)
    print(f"\r  {label}: {done}/{total} ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)


def memory_mib(pid: int) -> dict[str, float]:
    """A process's resident memory now (VmRSS) and at its peak so far (VmHWM), in MiB, from /proc."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found


async def raw_ceiling(options: dict, n: int) -> float:
    """Consume n messages and produce each to another topic: aiokafka alone, no processing."""
    run = uuid.uuid4().hex[:8]
    src, dst = f"bench-raw-{run}-in", f"bench-raw-{run}-out"
    producer = AIOKafkaProducer(acks="all", linger_ms=5, **options)
    await producer.start()
    payload = b'{"type":"ViolationDetected","padding":"' + b"x" * 400 + b'"}'
    for i in range(n):
        await producer.send(src, payload, key=str(i).encode())
    await producer.flush()
    consumer = AIOKafkaConsumer(src, **options, auto_offset_reset="earliest",
                                group_id=f"bench-raw-{run}", enable_auto_commit=False)
    await consumer.start()
    seen, started = 0, time.monotonic()
    while seen < n:
        for tp, records in (await consumer.getmany(timeout_ms=500, max_records=1000)).items():
            futures = [await producer.send(dst, r.value, key=r.key) for r in records]
            await asyncio.gather(*futures)
            seen += len(records)
        await consumer.commit()
        progress("raw consume+produce", seen, n, started)
    elapsed = time.monotonic() - started
    print(file=sys.stderr)
    await consumer.stop()
    await producer.stop()
    return n / elapsed


@dataclass
class BenchStack:
    """A benchmark's own database, topics and worker processes on the local services."""
    run: str
    settings: Settings
    pool: asyncpg.Pool
    procs: list[subprocess.Popen]
    log_dir: Path

    def check_workers(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise SystemExit(f"\nbench: a worker exited with {p.returncode}; see {self.log_dir}")

    def memory(self) -> list[dict[str, float]]:
        return [memory_mib(p.pid) for p in self.procs]


@asynccontextmanager
async def bench_stack(plates: int, workers: int, base: Settings, **worker_env: str):
    """Create a fresh database (demo city with ``plates`` plates) and topics, start ``workers``
    worker processes (web ports 6100...) with ``worker_env``; stop them and drop it all after."""
    run = uuid.uuid4().hex[:8]
    db_name = f"pw_bench_{run}"
    admin_url = base.database_url.get_secret_value()
    db_url = admin_url.rsplit("/", 1)[0] + "/" + db_name
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    await admin.close()
    settings = Settings(database_url=db_url, topic_prefix=f"bench{run}.", app_id=f"pw-bench-{run}")
    pool = await asyncpg.create_pool(db_url, init=init_connection)
    procs: list[subprocess.Popen] = []
    log_dir = ROOT / "var" / "bench"
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            await city.load(conn, plate_count=plates)
        await bootstrap.create_topics(settings, [city.INTEGRATOR])
        env = {**os.environ, "PW_DATABASE_URL": db_url, "PW_TOPIC_PREFIX": settings.topic_prefix,
               "PW_APP_ID": settings.app_id, "PW_LOG_LEVEL": "warn", "PW_WINDOW_SECONDS": "600",
               "PW_SMS_FILE": str(log_dir / f"handsets-{run}.jsonl"),
               "PW_SMS_REPORT_SECRET": secrets.token_urlsafe(32), **worker_env}
        log_dir.mkdir(parents=True, exist_ok=True)
        for i in range(workers):
            log = open(log_dir / f"worker-{run}-{i}.log", "w")
            procs.append(subprocess.Popen([sys.executable, "-m", "pipeline", "worker"],
                                          env={**env, "PW_WEB_PORT": str(6100 + i), "PW_WORKER_NAME": f"bench{i}"},
                                          stdout=log, stderr=subprocess.STDOUT, cwd=ROOT))
        await asyncio.sleep(8)  # workers join the group
        yield BenchStack(run, settings, pool, procs, log_dir)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        await pool.close()
        admin = await asyncpg.connect(admin_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await admin.close()


async def pipeline_run(n: int, workers: int, base: Settings, gateway: str, rate: float = 0) -> dict:
    async with bench_stack(n + n // 10 + 100, workers, base, PW_SMS_GATEWAY=gateway) as stack:
        settings, pool, run = stack.settings, stack.pool, stack.run
        plates = [r["plate"] for r in await pool.fetch(
            "SELECT p.plate FROM plate_registry p JOIN contact_registry c USING (owner_id) LIMIT $1", n)]
        assert len(plates) == n, "not enough plates with a phone"

        producer = AIOKafkaProducer(acks="all", linger_ms=5, **bootstrap.kafka_client_options(settings))
        await producer.start()
        now = datetime.now(UTC)
        for cp in city.CAR_PARKS:
            await producer.send_and_wait(settings.topic(topics.CAR_PARK_STATUS.name), encode(
                events.CarParkStatus(car_park_id=cp[0], free_spaces=40, reported_at=now)), key=cp[0].encode())
        await asyncio.sleep(3)  # counts reach the workers' car-park index
        idle_mib = max(m["VmRSS"] for m in stack.memory())
        camera = city.CAMERAS[0]
        topic = topics.camera_events_of(settings.topic(topics.CAMERA_EVENTS.name), city.INTEGRATOR)
        started = time.monotonic()
        first_sent = datetime.now(UTC)
        for i, plate in enumerate(plates):
            violation = events.ViolationDetected(
                event_id=f"bench-{run}-{i:07d}", camera_id=camera.id, plate=plate, taken_at=datetime.now(UTC),
                location=events.Location(lat=camera.lat, lon=camera.lon), place=camera.place,
                evidence=events.Evidence(image_url=f"https://evidence.bench/{i}.jpg"))
            await producer.send(topic, encode(violation), key=plate.encode())
            if rate:
                await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.monotonic()))
            if i % 500 == 0:
                progress("published", i, n, started)
        await producer.flush()
        await producer.stop()
        publish_s = time.monotonic() - started
        print(file=sys.stderr)
        while True:
            accepted = await pool.fetchval("SELECT count(*) FROM sms_messages WHERE accepted_at IS NOT NULL")
            progress("warnings accepted", accepted, n, started)
            if accepted >= n:
                break
            stack.check_workers()
            if time.monotonic() - started > 600:
                raise SystemExit(f"\nbench: only {accepted}/{n} warnings accepted after 600 s; see {stack.log_dir}")
            await asyncio.sleep(0.5)
        print(file=sys.stderr)
        memory = stack.memory()
        rows = await pool.fetch(
            """SELECT extract(epoch FROM s.accepted_at - c.detected_at) AS latency,
                      extract(epoch FROM c.opened_at - c.detected_at) AS to_case, s.accepted_at
               FROM sms_messages s JOIN cases c ON c.id = s.case_id WHERE s.kind = 'warning'""")
        latencies = sorted(r["latency"] * 1000 for r in rows)
        to_case = sorted(r["to_case"] * 1000 for r in rows)
        last = max(r["accepted_at"] for r in rows)
        elapsed = (last - first_sent).total_seconds()
        return {
            "violations": n, "workers": workers, "publish_s": publish_s, "end_to_end_s": elapsed,
            "per_second": n / elapsed, "p50_ms": statistics.median(latencies),
            "p99_ms": percentile(latencies, 0.99), "max_ms": latencies[-1],
            "case_p50_ms": statistics.median(to_case), "case_p99_ms": percentile(to_case, 0.99),
            "idle_mib": idle_mib, "peak_mib": max(m["VmHWM"] for m in memory),
            "after_mib": max(m["VmRSS"] for m in memory),
        }


def percentile(ordered: list[float], share: float) -> float:
    return ordered[max(0, int(len(ordered) * share) - 1)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--violations", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0,
                        help="violations per second to publish (0: as fast as possible, to find the throughput)")
    parser.add_argument("--gateway", choices=["kannel", "file"], default="kannel",
                        help="SMS gateway the workers send through (kannel: the real one on loopback)")
    args = parser.parse_args()
    base = Settings()
    print(f"machine: {machine()}")
    ceiling = await raw_ceiling(bootstrap.kafka_client_options(base), args.violations)
    result = await pipeline_run(args.violations, args.workers, base, args.gateway, args.rate)
    print(f"raw aiokafka consume+produce ceiling: {ceiling:,.0f} msg/s")
    print(f"pipeline, {result['workers']} worker(s), {args.gateway} gateway, "
          f"{'published at ' + str(args.rate) + '/s' if args.rate else 'published at full speed'}, {result['violations']} violations: "
          f"{result['per_second']:,.0f} violations/s end to end ({result['end_to_end_s']:.1f} s; published in "
          f"{result['publish_s']:.1f} s)")
    print(f"camera event -> warning accepted: p50 {result['p50_ms']:,.0f} ms, p99 {result['p99_ms']:,.0f} ms, "
          f"max {result['max_ms']:,.0f} ms")
    print(f"  of which camera event -> case opened: p50 {result['case_p50_ms']:,.0f} ms, "
          f"p99 {result['case_p99_ms']:,.0f} ms")
    print(f"worker memory (resident, the largest worker): {result['idle_mib']:.0f} MiB ready, "
          f"peak {result['peak_mib']:.0f} MiB, {result['after_mib']:.0f} MiB after the run")


if __name__ == "__main__":
    asyncio.run(main())
