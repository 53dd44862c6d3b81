"""End-to-end benchmark on the local stack (real Kafka, PostgreSQL, worker processes).

Measures, in one run, each figure with the machine's load average when it was taken:
  * the ceiling: a raw aiokafka consume-and-produce loop on the same broker;
  * Kannel's own raw sendsms rate (the same requests the Kannel gateway makes, no pipeline);
  * captures recorded per second (captures of plates with no open case: camera event -> sighting row);
  * violations per second end to end: camera event published -> case opened -> warning SMS accepted,
    through the file gateway and through Kannel;
  * p50/p99 latency from publishing the camera event to the gateway's acceptance of the warning;
and prints each rate as a ratio to its ceiling measured in the same run, beside the issue's target.
Every send of every producer here is checked (an unchecked aiokafka send future can lose messages).

Not a test: it prints figures (and the machine) for the README. Usage:
    ./dev bench [--violations 3000] [--captures 20000] [--workers 1] [--gateway both|file|kannel]
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


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


async def publish(producer: AIOKafkaProducer, messages, label: str, total: int) -> float:
    """Send every (topic, value, key) and check each send's result (raises on the first lost one);
    returns the seconds it took."""
    started = time.monotonic()
    pending = []
    for i, (topic, value, key) in enumerate(messages):
        pending.append(await producer.send(topic, value, key=key))
        if len(pending) >= 1000:
            await asyncio.gather(*pending)
            pending.clear()
            progress(label, i + 1, total, started)
    await asyncio.gather(*pending)
    progress(label, total, total, started)
    print(file=sys.stderr)
    return time.monotonic() - started


def progress(label: str, done: int, total: int, started: float) -> None:
    rate = done / max(time.monotonic() - started, 1e-9)
    eta = f", {(total - done) / rate:,.0f} s to go" if 0 < done < total else ""
    print(f"\r  {label}: {done:,}/{total:,} ({rate:,.0f}/s{eta})   ", end="", file=sys.stderr, flush=True)


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
    await publish(producer, ((src, payload, str(i).encode()) for i in range(n)), "raw published", n)
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
    warm_plates: list[str] = ()

    def check_workers(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise SystemExit(f"\nbench: a worker exited with {p.returncode}; see {self.log_dir}")

    def memory(self) -> list[dict[str, float]]:
        return [memory_mib(p.pid) for p in self.procs]


@asynccontextmanager
async def bench_stack(plates: int, workers: int, base: Settings, **worker_env: str):
    """Create a fresh database (demo city with ``plates`` plates) and topics, start ``workers``
    worker processes (web ports ``PW_BENCH_WEB_PORT``, default 6100, and up) with ``worker_env``; stop them and drop it all after."""
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
    profilers: list[subprocess.Popen] = []
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
                                          env={**env, "PW_WEB_PORT": str(WEB_PORT + i), "PW_WORKER_NAME": f"bench{i}"},
                                          stdout=log, stderr=subprocess.STDOUT, cwd=ROOT))
        await asyncio.sleep(8)  # workers join the group
        if profile_dir := os.environ.get("PW_BENCH_PROFILE"):  # py-spy samples each worker until it stops
            Path(profile_dir).mkdir(parents=True, exist_ok=True)
            profilers = [subprocess.Popen(
                [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(p.pid), "--format", "raw", "--rate", "50", "--nonblocking",
                 "-o", str(Path(profile_dir) / f"worker-{run}-{i}.txt")], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL) for i, p in enumerate(procs)]
        stack = BenchStack(run, settings, pool, procs, log_dir)
        await warm_up(stack)
        yield stack
    finally:
        for p in procs:
            p.terminate()
        for p in profilers:
            p.wait(timeout=30)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        await pool.close()
        await drop_database(admin_url, db_name)


async def drop_database(admin_url: str, db_name: str) -> None:
    """Drop a benchmark's database; if another role's session holds it (which this login may not end)
    or an autovacuum worker has just started on it, try again for a while, then say so instead of
    losing the run's figures."""
    admin = await asyncpg.connect(admin_url)
    try:
        for _ in range(10):
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
                return
            except (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectInUseError):
                await asyncio.sleep(1)
        print(f"\nbench: could not drop {db_name} (another session holds it); drop it later", file=sys.stderr)
    finally:
        await admin.close()


WARM_UP_CAPTURES = 50


async def warm_up(stack: BenchStack) -> None:
    """Wait until the workers have joined the group and recorded captures of ``WARM_UP_CAPTURES`` plates
    (spread over the partitions): a worker that starts slowly on a busy machine (imports, the group's
    join) must not count in a rate, nor its first batch's one-off costs. The plates are the demo city's
    last ones, which the runs do not use (``BenchStack.warm_plates``)."""
    settings, pool = stack.settings, stack.pool
    plates = [r["plate"] for r in await pool.fetch(
        "SELECT plate FROM plate_registry ORDER BY plate DESC LIMIT $1", WARM_UP_CAPTURES)]
    topic = topics.camera_events_of(settings.topic(topics.CAMERA_EVENTS.name), city.INTEGRATOR)
    camera = city.CAMERAS[1]
    producer = AIOKafkaProducer(acks="all", **bootstrap.kafka_client_options(settings))
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, encode(events.VehicleObserved(
            event_id=f"warm-{stack.run}-{i}", camera_id=camera.id, plate=plate, taken_at=datetime.now(UTC),
            location=events.Location(lat=camera.lat, lon=camera.lon), place=camera.place)), key=plate.encode())
            for i, plate in enumerate(plates)])
    finally:
        await producer.stop()
    started = time.monotonic()
    while (recorded := await pool.fetchval("SELECT count(*) FROM sightings WHERE event_id LIKE 'warm-%'")) < len(plates):
        stack.check_workers()
        if time.monotonic() - started > 300:
            raise SystemExit(f"\nbench: the workers recorded {recorded}/{len(plates)} warm-up captures in 300 s; "
                             f"see {stack.log_dir}")
        await asyncio.sleep(0.3)
    print(f"  workers ready and warm after {time.monotonic() - started:.0f} s more", file=sys.stderr)
    stack.warm_plates = plates


async def pipeline_run(n: int, workers: int, base: Settings, gateway: str, rate: float = 0) -> dict:
    async with bench_stack(n + n // 10 + 100 + WARM_UP_CAPTURES, workers, base, PW_SMS_GATEWAY=gateway) as stack:
        settings, pool, run = stack.settings, stack.pool, stack.run
        plates = [r["plate"] for r in await pool.fetch(
            "SELECT p.plate FROM plate_registry p JOIN contact_registry c USING (owner_id) "
            "WHERE p.plate <> ALL($2::text[]) LIMIT $1", n, list(stack.warm_plates))]
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

        def violations():
            for i, plate in enumerate(plates):
                yield topic, encode(events.ViolationDetected(
                    event_id=f"bench-{run}-{i:07d}", camera_id=camera.id, plate=plate, taken_at=datetime.now(UTC),
                    location=events.Location(lat=camera.lat, lon=camera.lon), place=camera.place,
                    evidence=events.Evidence(image_url=f"https://evidence.bench/{i}.jpg"))), plate.encode()

        if rate:  # a steady rate: each send's result is awaited (checked) before the next
            for i, (to, value, key) in enumerate(violations()):
                await (await producer.send(to, value, key=key))
                await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.monotonic()))
        else:
            await publish(producer, violations(), "published", n)
        await producer.stop()
        publish_s = time.monotonic() - started
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


async def captures_run(n: int, workers: int, base: Settings) -> dict:
    """``n`` captures (``VehicleObserved``) of 1,000 plates with no open case, published at full speed:
    captures recorded (a sighting row each) per second, from the first send to the last row."""
    async with bench_stack(1000 + WARM_UP_CAPTURES, workers, base, PW_SMS_GATEWAY="file") as stack:
        settings, pool, run = stack.settings, stack.pool, stack.run
        plates = [r["plate"] for r in await pool.fetch(
            "SELECT plate FROM plate_registry WHERE plate <> ALL($1::text[]) LIMIT 1000", list(stack.warm_plates))]
        camera = city.CAMERAS[1]
        topic = topics.camera_events_of(settings.topic(topics.CAMERA_EVENTS.name), city.INTEGRATOR)
        producer = AIOKafkaProducer(acks="all", linger_ms=5, **bootstrap.kafka_client_options(settings))
        await producer.start()
        first_sent = datetime.now(UTC)
        started = time.monotonic()

        def captures():
            for i in range(n):
                plate = plates[i % len(plates)]
                yield topic, encode(events.VehicleObserved(
                    event_id=f"cap-{run}-{i:08d}", camera_id=camera.id, plate=plate, taken_at=datetime.now(UTC),
                    location=events.Location(lat=camera.lat, lon=camera.lon), place=camera.place,
                    evidence=events.Evidence(image_url=f"https://evidence.bench/c{i}.jpg"))), plate.encode()

        publish_s = await publish(producer, captures(), "captures published", n)
        await producer.stop()
        while (recorded := await pool.fetchval("SELECT count(*) FROM sightings WHERE event_id LIKE 'cap-%'")) < n:
            progress("captures recorded", recorded, n, started)
            stack.check_workers()
            if time.monotonic() - started > 600:
                raise SystemExit(f"\nbench: only {recorded}/{n} captures recorded after 600 s; see {stack.log_dir}")
            await asyncio.sleep(0.3)
        print(file=sys.stderr)
        last = await pool.fetchval("SELECT max(received_at) FROM sightings WHERE event_id LIKE 'cap-%'")
        elapsed = (last - first_sent).total_seconds()
        return {"captures": n, "per_second": n / elapsed, "end_to_end_s": elapsed, "publish_s": publish_s}


async def kannel_ceiling(settings: Settings, n: int, concurrency: int = 50) -> float:
    """Kannel's own sendsms rate: the requests the Kannel gateway makes (UCS-2, a delivery-report URL
    each, answered by a stand-in here), ``concurrency`` at a time as the SMS loop sends, no pipeline."""
    from aiohttp import web
    from pipeline.sms.gateway import OutgoingSms
    from pipeline.sms.kannel import KannelGateway

    reports = web.Application()
    reports.router.add_get("/sms/delivery-report", lambda request: web.Response(text="ok"))
    runner = web.AppRunner(reports)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", KANNEL_REPORT_PORT).start()
    gateway = KannelGateway(settings.kannel_sendsms_url, settings.kannel_username,
                            settings.kannel_password.get_secret_value(), settings.sms_sender,
                            f"http://127.0.0.1:{KANNEL_REPORT_PORT}/sms/delivery-report", 10,
                            report_secret=secrets.token_urlsafe(32))
    text = "【杭州城管】浙A12345在文一西路海创园南门违停，请于10:52前驶离。最近停车场:海创园余28位(10:42)"
    sent, started = 0, time.monotonic()
    try:
        for first in range(0, n, concurrency):
            batch = [OutgoingSms(uuid.uuid4(), f"1380000{i:04d}", text) for i in range(first, min(n, first + concurrency))]
            await asyncio.gather(*(gateway.send(sms) for sms in batch))  # raises unless every one is accepted
            sent += len(batch)
            progress("kannel sendsms", sent, n, started)
        elapsed = time.monotonic() - started
        print(file=sys.stderr)
        await asyncio.sleep(2)  # let Kannel post its reports
    finally:
        await gateway.close()
        await runner.cleanup()
    return n / elapsed


KANNEL_REPORT_PORT = int(os.environ.get("PW_BENCH_REPORT_PORT", "41401"))
WEB_PORT = int(os.environ.get("PW_BENCH_WEB_PORT", "6100"))


def percentile(ordered: list[float], share: float) -> float:
    return ordered[max(0, int(len(ordered) * share) - 1)]


def ratio(label: str, rate: float, ceiling: float, target: float) -> str:
    share = rate / ceiling
    return (f"  {label}: {share:.1%} (target >= {target:.0%}: "
            f"{'met' if share >= target else 'NOT met'})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--violations", type=int, default=3000, help="0: skip the violations runs")
    parser.add_argument("--captures", type=int, default=20000, help="0: skip the captures run")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0,
                        help="violations per second to publish (0: as fast as possible, to find the throughput)")
    parser.add_argument("--gateway", choices=["both", "kannel", "file"], default="both",
                        help="SMS gateway(s) the workers send through (kannel: the real one on loopback)")
    args = parser.parse_args()
    base = Settings()
    print(f"machine: {machine()}")
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {load()} at the start")
    ceiling = await raw_ceiling(bootstrap.kafka_client_options(base), max(args.violations, args.captures))
    print(f"raw aiokafka consume+produce ceiling: {ceiling:,.0f} msg/s ({load()})", flush=True)
    ratios = []
    if args.gateway in ("both", "kannel") and args.violations:
        kannel = await kannel_ceiling(base, args.violations)
        print(f"Kannel's own sendsms rate: {kannel:,.0f} SMS/s ({load()})", flush=True)
    if args.captures:
        captured = await captures_run(args.captures, args.workers, base)
        print(f"captures recorded, {args.workers} worker(s), {captured['captures']} captures: "
              f"{captured['per_second']:,.0f}/s ({captured['end_to_end_s']:.1f} s; published in "
              f"{captured['publish_s']:.1f} s; {load()})", flush=True)
        ratios.append(ratio("captures recorded / raw loop", captured["per_second"], ceiling, 0.5))
    for gateway in (["file", "kannel"] if args.gateway == "both" else [args.gateway]) if args.violations else []:
        result = await pipeline_run(args.violations, args.workers, base, gateway, args.rate)
        print(f"pipeline, {result['workers']} worker(s), {gateway} gateway, "
              f"{'published at ' + str(args.rate) + '/s' if args.rate else 'published at full speed'}, "
              f"{result['violations']} violations: {result['per_second']:,.0f} violations/s end to end "
              f"({result['end_to_end_s']:.1f} s; published in {result['publish_s']:.1f} s; {load()})")
        print(f"  camera event -> warning accepted: p50 {result['p50_ms']:,.0f} ms, p99 {result['p99_ms']:,.0f} ms, "
              f"max {result['max_ms']:,.0f} ms")
        print(f"  of which camera event -> case opened: p50 {result['case_p50_ms']:,.0f} ms, "
              f"p99 {result['case_p99_ms']:,.0f} ms")
        print(f"  worker memory (resident, the largest worker): {result['idle_mib']:.0f} MiB ready, "
              f"peak {result['peak_mib']:.0f} MiB, {result['after_mib']:.0f} MiB after the run", flush=True)
        if gateway == "file":
            ratios.append(ratio("violations via the file gateway / raw loop", result["per_second"], ceiling, 0.2))
        else:
            ratios.append(ratio("violations via Kannel / Kannel's own sendsms", result["per_second"], kannel, 0.8))
    print("ratios, each to its ceiling measured in this run:")
    print("\n".join(ratios))


if __name__ == "__main__":
    asyncio.run(main())
