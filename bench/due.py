"""A province's day of open cases, and recovery (issue 16, musts 3 and 4), on the local services.

    ./dev bench due [--open 1000000] [--per-second 2000] [--workers 1] [--openers 2]
        Opens ``--open`` cases through the pipeline: the plates' owners are registered in bulk
        (reference data), a violation per plate is published to the camera-events topic (each send
        checked), and ``--openers`` workers open the cases and send their warnings through the file
        gateway, as in production, with a day's window so that no deadline falls meanwhile (progress:
        cases warned, rate, time to go; an error after ``--stall`` seconds without one). The openers
        are stopped, one worker (``--workers``) started, and then THE BENCH MOVES THE DEADLINES
        (``move_deadlines``: deadline, wake and window, one UPDATE per chunk): the pipeline opens a few
        hundred cases a second here, so deadlines left where opening put them would come due at that
        pace, not at ``--per-second``. All the cases are warned when their deadlines come due (the
        camera is asked). Then it measures, on PostgreSQL's clock, the lateness of each deadline
        decision (decided_at - (deadline + lateness allowance)), the worker's memory, the console's
        live page, its live data and /metrics response times at that size, and the CPU the worker
        and its PostgreSQL backends used.
    ./dev bench due --seed ...
        The same measurements, the open cases seeded in bulk instead (quick; not through the pipeline:
        one INSERT ... SELECT per table and chunk, into the tables the pipeline writes: plate and
        contact registries, sightings, cases, warning SMS rows, audit), half warned, half rechecking,
        their deadlines spread so that ``--per-second`` come due each second, while the worker runs.
    ./dev bench due ... --no-console: the deadlines alone, no console nor /metrics requests; --patience S:
        the figures are taken S seconds (600) after the last deadline even with cases undecided.
    ./dev bench due --kill
        Two workers; one is SIGKILLed while deadlines come due and camera events flow: the time until
        every due deadline is decided again (no case more than 1 s overdue), beside the session timeout.
    ./dev bench drain [--captures 1000000] [--violations 100000] [--workers 1 2]
        A backlog published while no worker runs (an outage), then the workers started: the time
        until every capture is recorded, and every violation's case opened and warning accepted.

Each run makes its own database and topics and drops them after. Worker web ports: PW_BENCH_WEB_PORT
(default 46600) and up. Every producer send's result is checked. Prints the machine and the load
average with each figure, for the README.
"""

import argparse
import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from bench.e2e import drop_database, load, machine, memory_mib, percentile, progress, publish
from pipeline import bootstrap
from pipeline.cases.store import init_connection
from pipeline.config import Settings
from pipeline.console import auth
from pipeline.db.migrate import migrate
from pipeline.demo import city
from schemas import events, topics
from schemas.codec import encode

ROOT = Path(__file__).resolve().parent.parent
WEB_PORT = int(os.environ.get("PW_BENCH_WEB_PORT", "46600"))
LATENESS = 30.0
"""The workers' lateness allowance (PW_LATENESS_SECONDS): a deadline is decided at deadline + this."""
RECHECK_WAIT = 3600.0
"""The workers' recheck wait: a case asked about wakes again after the run, so that the rate of
deadlines coming due is the one asked for, not doubled by rechecks coming back."""
PASSWORD = "a long enough password for the bench"


def ticks(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuMeter:
    """CPU seconds used by the workers and by the PostgreSQL backends serving the bench's database
    (found in pg_stat_activity; the server's shared processes, WAL writer and checkpointer, are not
    counted) between ``start`` and ``stop``."""
    pool: asyncpg.Pool
    db_name: str
    workers: list[int]
    before: dict[int, float] = field(default_factory=dict)

    async def backends(self) -> list[int]:
        return [r["pid"] for r in await self.pool.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE 'parkwarden%'",
            self.db_name)]

    async def start(self) -> None:
        self.started = time.monotonic()
        self.before = {pid: ticks(pid) for pid in await self.backends()}
        self.workers_before = {pid: ticks(pid) for pid in self.workers}

    async def stop(self) -> dict:
        pids = set(self.before) | set(await self.backends())
        postgres = sum(max(0.0, ticks(pid) - self.before.get(pid, 0.0)) for pid in pids)
        workers = sum(ticks(pid) - self.workers_before[pid] for pid in self.workers)
        wall = time.monotonic() - self.started
        return {"wall_s": wall, "postgres_cpu_s": postgres, "worker_cpu_s": workers,
                "postgres_cores": postgres / wall, "worker_cores": workers / wall}


@dataclass
class Stack:
    run: str
    settings: Settings
    db_name: str
    pool: asyncpg.Pool
    env: dict
    log_dir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    def start_worker(self, i: int, name: str = "due", **env: str) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}-worker-{self.run}-{i}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "worker"],
                                env={**self.env, "PW_WEB_PORT": str(WEB_PORT + i), "PW_WORKER_NAME": f"{name}{i}", **env},
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs.append(proc)
        return proc

    def stop_workers(self, procs: list[subprocess.Popen]) -> None:
        """Stop these workers (SIGTERM by PID, SIGKILL after 60 s) and forget them."""
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            self.procs.remove(p)

    async def ready(self, i: int, timeout: float = 120) -> None:
        """Wait until worker ``i`` answers /readyz."""
        started = time.monotonic()
        async with aiohttp.ClientSession() as http:
            while time.monotonic() - started < timeout:
                self.check_workers()
                try:
                    async with http.get(f"http://127.0.0.1:{WEB_PORT + i}/readyz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.5)
        raise SystemExit(f"bench: worker {i} not ready after {timeout:.0f} s; see {self.log_dir}")

    def check_workers(self) -> None:
        for p in self.procs:
            if p.poll() is not None and p.returncode != -signal.SIGKILL:
                raise SystemExit(f"\nbench: a worker exited with {p.returncode}; see {self.log_dir}")

    def camera_topic(self) -> str:
        return topics.camera_events_of(self.settings.topic(topics.CAMERA_EVENTS.name), city.INTEGRATOR)


@asynccontextmanager
async def stack(**worker_env: str):
    """A fresh database (the demo city's cameras, car parks and zones) and topics; workers are
    started by the caller (``Stack.start_worker``); all stopped and dropped after."""
    run = uuid.uuid4().hex[:8]
    base = Settings()
    db_name = f"pw_due_{run}"
    admin_url = base.database_url.get_secret_value()
    db_url = admin_url.rsplit("/", 1)[0] + "/" + db_name
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    await admin.close()
    settings = Settings(database_url=db_url, topic_prefix=f"due{run}.", app_id=f"pw-due-{run}")
    pool = await asyncpg.create_pool(db_url, init=init_connection, min_size=1, max_size=4)
    log_dir = ROOT / "var" / "bench"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PW_DATABASE_URL": db_url, "PW_TOPIC_PREFIX": settings.topic_prefix,
           "PW_APP_ID": settings.app_id, "PW_LOG_LEVEL": "warn", "PW_SMS_GATEWAY": "file",
           "PW_SMS_FILE": str(log_dir / f"due-handsets-{run}.jsonl"), "PW_SMS_REPORT_SECRET": secrets.token_urlsafe(32),
           "PW_LATENESS_SECONDS": str(LATENESS), "PW_RECHECK_WAIT_SECONDS": str(RECHECK_WAIT),
           "PW_CAPTURE_BOUND_SECONDS": str(RECHECK_WAIT + LATENESS), **worker_env}
    s = Stack(run, settings, db_name, pool, env, log_dir)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            await city.load(conn)
            await auth.add_operator(conn, "bench", "viewer", PASSWORD)
        await bootstrap.create_topics(settings, [city.INTEGRATOR])
        yield s
    finally:
        for p in s.procs:
            if p.poll() is None:
                p.terminate()
        for p in s.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        await pool.close()
        await drop_database(admin_url, db_name)


PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
"""The letters a standard plate may have after its province (never I nor O)."""


def plate_of(i: int) -> str:
    """The bench's plates: 沪 (not the demo city's 浙), a letter, five digits: 2,400,000 distinct, each a
    valid standard plate (the pipeline refuses the others)."""
    return f"沪{PLATE_LETTERS[i // 100000 % len(PLATE_LETTERS)]}{i % 100000:05d}"


def partition_of(plate: str, partitions: int) -> int:
    """The partition the producer's default partitioner gives the plate's key (murmur2, as Java's)."""
    return (murmur2(plate.encode()) & 0x7FFFFFFF) % partitions


SEED = """
WITH n AS (SELECT * FROM unnest($1::int[], $2::text[], $3::int[], $4::timestamptz[], $5::text[])
                  AS n(i, plate, part, wake_at, state)),
     cam AS (SELECT row_number() OVER (ORDER BY id) - 1 AS k, id, lat, lon, place, zone FROM cameras
             WHERE removed_at IS NULL AND integrator = $6),
     cams AS (SELECT count(*) AS total FROM cam),
     rows AS (
        SELECT n.*, c.id AS camera_id, c.lat, c.lon, c.place, c.zone,
               'due-' || $7 || '-v' || n.i AS event_id, gen_random_uuid() AS case_id,
               CASE WHEN n.state = 'warned' THEN n.wake_at - make_interval(secs => $8)
                    ELSE n.wake_at - make_interval(secs => $8 + $9) END AS deadline_at
        FROM n CROSS JOIN cams JOIN cam c ON c.k = n.i % cams.total),
     plates AS (INSERT INTO plate_registry (plate, owner_id, plate_type)
                SELECT plate, 'due-owner-' || i, '02' FROM rows),
     contacts AS (INSERT INTO contact_registry (owner_id, phone)
                  SELECT 'due-owner-' || i, '+86139' || lpad(i::text, 8, '0') FROM rows),
     ids AS (INSERT INTO sighting_ids (integrator, event_id, received_at)
             SELECT $6, event_id, deadline_at - interval '661 seconds' FROM rows),
     seen AS (INSERT INTO sightings (integrator, event_id, kind, plate, camera_id, taken_at, lat, lon, place, zone,
                                     evidence, received_at, case_id)
              SELECT $6, event_id, 'ViolationDetected', plate, camera_id, deadline_at - interval '662 seconds', lat,
                     lon, place, zone, jsonb_build_object('image_url', 'https://evidence.bench/' || event_id || '.jpg'),
                     deadline_at - interval '661 seconds', case_id FROM rows),
     opened AS (INSERT INTO cases (id, plate, state, zone, place, camera_id, lat, lon, violation, window_seconds,
                                   detected_at, opened_at, warned_at, deadline_at, wake_at, reason, updated_at,
                                   source_partition, source_topic, plate_type)
                SELECT case_id, plate, state, zone, place, camera_id, lat, lon,
                       jsonb_build_object('event_id', event_id, 'integrator', $6, 'camera_id', camera_id,
                                          'taken_at', deadline_at - interval '662 seconds', 'lat', lat, 'lon', lon,
                                          'place', place,
                                          'evidence_url', 'https://evidence.bench/' || event_id || '.jpg'),
                       600, deadline_at - interval '662 seconds', deadline_at - interval '661 seconds',
                       deadline_at - interval '600 seconds', deadline_at, wake_at,
                       CASE WHEN state = 'rechecking' THEN 'recheck_requested' ELSE 'warned' END,
                       deadline_at - interval '600 seconds', part, $10, '02'
                FROM rows),
     warned AS (INSERT INTO sms_messages (id, case_id, kind, phone, params, text, status, attempts, next_attempt_at,
                                          created_at, accepted_at, gateway_ref)
                SELECT gen_random_uuid(), case_id, 'warning', '+86139' || lpad(i::text, 8, '0'),
                       jsonb_build_object('plate', plate, 'place', place, 'language', null),
                       'bench warning', 'accepted', 1, deadline_at - interval '601 seconds',
                       deadline_at - interval '601 seconds', deadline_at - interval '600 seconds', 'bench-' || i
                FROM rows)
INSERT INTO audit_log (at, case_id, actor, action, detail)
SELECT deadline_at - interval '601 seconds', case_id, 'bench:seed', 'opened:detected',
       jsonb_build_object('seeded', true) FROM rows
"""
"""One chunk of open cases, each with its owner (plate and contact registries), its violation (a
sighting, kept once), its warning (accepted by the gateway when the case was warned) and its audit
entry: the rows the pipeline writes for a case it opened and warned. A ``rechecking`` case's camera
was asked at its deadline; it wakes to be closed unconfirmed.

Every table is filled from ``rows`` alone, never by joining two of the chunk's CTEs: after five
executions on a connection PostgreSQL may keep a generic plan, which takes ``unnest($1)`` for 10 rows
and so joined ``opened`` to ``rows`` by a nested loop, rescanning the chunk (spilled to disk) once per
case: 20,000² rows read, minutes a chunk, which is why seeding slowed past 100,000 (5 chunks)."""


async def seed(pool: asyncpg.Pool, run: str, first: int, wakes: list[datetime], partitions: int, source_topic: str,
               started: float, total: int, chunk: int = 20000) -> None:
    """Open ``len(wakes)`` cases numbered from ``first``, waking at ``wakes`` (in order): every other
    one warned (its deadline + the allowance), the others rechecking (answer_by + the allowance)."""
    for at in range(0, len(wakes), chunk):
        numbers = list(range(first + at, first + min(at + chunk, len(wakes))))
        plates = [plate_of(i) for i in numbers]
        async with pool.acquire() as conn:
            await conn.execute(SEED, numbers, plates, [partition_of(p, partitions) for p in plates],
                               wakes[at:at + chunk], ["warned" if i % 2 == 0 else "rechecking" for i in numbers],
                               city.INTEGRATOR, run, LATENESS, 120.0, source_topic)
        progress("open cases seeded", first + at + len(numbers), total, started)


async def time_requests(base: str, path: str, http: aiohttp.ClientSession, into: list[float]) -> None:
    started = time.monotonic()
    async with http.get(base + path, allow_redirects=False) as r:
        await r.read()
        if r.status != 200:
            raise SystemExit(f"bench: GET {path} answered {r.status}")
    into.append((time.monotonic() - started) * 1000)


async def console_session(base: str) -> aiohttp.ClientSession:
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with http.post(f"{base}/console/login", data={"name": "bench", "password": PASSWORD, "next": "/console/"},
                         allow_redirects=False) as r:
        await r.read()
        if r.status != 303:
            raise SystemExit(f"bench: console login answered {r.status}")
    return http


async def open_cases(s: Stack, n: int, per_second: float, lead: float, partitions: int) -> tuple[datetime, datetime]:
    """Seed ``n`` open cases (see ``SEED``), the first due ``lead`` seconds from now, ``per_second``
    coming due each second after it; returns (first wake, last wake), PostgreSQL's clock."""
    now = await s.pool.fetchval("SELECT now()")
    first = now + timedelta(seconds=lead)
    wakes = due_times(first, 0, n, per_second)
    started = time.monotonic()
    await seed(s.pool, s.run, 0, wakes, partitions, s.camera_topic(), started, n)
    print(file=sys.stderr)
    late = await s.pool.fetchval("SELECT clock_timestamp()") - wakes[-1]
    print(f"seeded {n:,} open cases in bulk in {time.monotonic() - started:.0f} s ({load()})"
          + (f"; WARNING: seeding ended {late.total_seconds():.0f} s after the last wake" if late.total_seconds() > 0 else ""),
          flush=True)
    return wakes[0], wakes[-1]


def due_times(first: datetime, start: int, count: int, per_second: float) -> list[datetime]:
    """When cases ``start`` to ``start + count - 1`` of a run come due: case k at ``first + k /
    per_second``, so that ``per_second`` come due in each second from ``first`` on."""
    return [first + timedelta(seconds=k / per_second) for k in range(start, start + count)]


OPENING_WINDOW = 86400.0
"""The opening workers' window (PW_WINDOW_SECONDS): a day, so that no deadline falls while the
cases are being opened; the bench then moves the deadlines (``move_deadlines``)."""


async def register_owners(pool: asyncpg.Pool, n: int) -> None:
    """Reference data, in bulk: an owner with a phone for each of the plates ``plate_of(0 .. n-1)``."""
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO plate_registry (plate, owner_id, plate_type)
               SELECT p, 'due-owner-' || i, '02' FROM unnest($1::text[]) WITH ORDINALITY AS u(p, i)""",
            [plate_of(i) for i in range(n)])
        await conn.execute(
            """INSERT INTO contact_registry (owner_id, phone)
               SELECT 'due-owner-' || i, '+86139' || lpad(i::text, 8, '0') FROM generate_series(1, $1) AS i""", n)


def violations(s: Stack, n: int, label: str):
    """``n`` violation camera events as (topic, value, key), one per plate ``plate_of(i)``, taken by the
    demo city's cameras in turn."""
    topic, cameras, taken = s.camera_topic(), city.CAMERAS, datetime.now(UTC)
    for i in range(n):
        camera = cameras[i % len(cameras)]
        plate = plate_of(i)
        yield topic, encode(events.ViolationDetected(
            event_id=f"{label}-{s.run}-{i:08d}", camera_id=camera.id, plate=plate, taken_at=taken,
            location=events.Location(lat=camera.lat, lon=camera.lon), place=camera.place,
            evidence=events.Evidence(image_url=f"https://evidence.bench/{i}.jpg"))), plate.encode()


async def open_through_pipeline(s: Stack, n: int, openers: int, stall: float) -> None:
    """Open ``n`` cases the way production does: the plates' owners registered (in bulk: reference
    data), a violation per plate published to the camera-events topic (each send checked), then
    ``openers`` workers open the cases and send their warnings through the file gateway, with a day's
    window; waits until every warning is accepted and every case's evidence fetch settled (as in a
    city, where they are fetched while the window runs; an error if none is for ``stall`` seconds),
    then stops the opening workers."""
    await register_owners(s.pool, n)
    producer = AIOKafkaProducer(acks="all", linger_ms=5, **bootstrap.kafka_client_options(s.settings))
    await producer.start()
    try:
        await publish(producer, violations(s, n, "due"), "violations published", n)
    finally:
        await producer.stop()
    procs = [s.start_worker(i, "open", PW_WINDOW_SECONDS=str(OPENING_WINDOW)) for i in range(openers)]
    started = time.monotonic()
    await _until(s, "cases opened and warned", n, stall,
                 "SELECT count(*) FROM sms_messages WHERE accepted_at IS NOT NULL")
    took = time.monotonic() - started
    print(file=sys.stderr)
    print(f"opened {n:,} cases through the pipeline ({openers} worker(s), file gateway): all warned {took:.0f} s "
          f"after the workers started ({n / took:,.0f}/s; {load()})", flush=True)
    await _until(s, "evidence fetches settled (the bench's images are refused: host not allowed)", n, stall,
                 "SELECT count(*) FROM evidence_fetches WHERE state <> 'pending'")
    print(file=sys.stderr)
    print(f"every case's evidence fetch settled {time.monotonic() - started:.0f} s after the workers started "
          f"({load()})", flush=True)
    s.stop_workers(procs)


async def _until(s: Stack, what: str, n: int, stall: float, count_sql: str) -> None:
    """Wait until ``count_sql`` counts ``n``, printing progress; an error if it stops growing for ``stall`` s."""
    started = last_step = time.monotonic()
    done = 0
    while done < n:
        await asyncio.sleep(2)
        s.check_workers()
        now, before = time.monotonic(), done
        done = await s.pool.fetchval(count_sql)
        progress(what, done, n, started)
        if done > before:
            last_step = now
        elif now - last_step > stall:
            raise SystemExit(f"\nbench: opening stalled: {what}: {done:,}/{n:,}, none in the last "
                             f"{stall:.0f} s; see {s.log_dir}/open-worker-{s.run}-*.log")


MOVE = """UPDATE cases c SET deadline_at = m.deadline, wake_at = m.deadline + make_interval(secs => $3),
                           window_seconds = extract(epoch FROM m.deadline - c.warned_at)
          FROM unnest($1::uuid[], $2::timestamptz[]) AS m(id, deadline) WHERE c.id = m.id"""
"""A chunk's deadlines moved: the deadline, the wake the deadline loop looks for (deadline + the
allowance; index ``cases_due``) and the window, so that deadline = warned + window still holds."""


async def move_deadlines(s: Stack, n: int, per_second: float, lead: float, chunk: int = 20000) -> tuple[datetime, datetime]:
    """Move the deadlines of the ``n`` warned cases (in the order of their ids, which is random) so that
    ``per_second`` come due each second, the first ``lead`` seconds from now; then VACUUM ANALYZE the
    cases. Returns (first wake, last wake), PostgreSQL's clock."""
    started = time.monotonic()
    first_deadline = await s.pool.fetchval("SELECT now()") + timedelta(seconds=lead - LATENESS)
    after, moved = uuid.UUID(int=0), 0
    async with s.pool.acquire() as conn:
        while ids := [r["id"] for r in await conn.fetch(
                "SELECT id FROM cases WHERE state = 'warned' AND id > $1 ORDER BY id LIMIT $2", after, chunk)]:
            await conn.execute(MOVE, ids, due_times(first_deadline, moved, len(ids), per_second), LATENESS)
            moved, after = moved + len(ids), ids[-1]
            progress("deadlines moved", moved, n, started)
        print(file=sys.stderr)
        await conn.execute("VACUUM (ANALYZE) cases")
    first = first_deadline + timedelta(seconds=LATENESS)
    late = await s.pool.fetchval("SELECT clock_timestamp()") - first
    print(f"moved the deadlines of {moved:,} cases (and VACUUM ANALYZE) in {time.monotonic() - started:.0f} s ({load()})"
          + (f"; WARNING: {n - moved:,} of the {n:,} cases were not warned" if moved != n else "")
          + (f"; WARNING: done {late.total_seconds():.0f} s after the first wake" if late.total_seconds() > 0 else ""),
          flush=True)
    return first, due_times(first, moved - 1, 1, per_second)[0]


_DECIDED = """FROM (SELECT id, CASE WHEN reason = 'recheck_requested' OR state = 'unconfirmed'
                                 THEN deadline_at + make_interval(secs => $1 + 120)
                                 ELSE deadline_at + make_interval(secs => $1) END AS wake_before
                 FROM cases WHERE plate LIKE '沪%') c
           JOIN audit_log a ON a.case_id = c.id AND a.detail ->> 'cause' = 'deadline'"""
"""Each seeded case (c.wake_before: when it came due, $1 the allowance) joined to its deadline decisions (a)."""


async def lateness(pool: asyncpg.Pool, since: datetime | None = None) -> list[float]:
    """Seconds from each seeded case's wake (its deadline, or answer_by, + the allowance) to its first
    deadline decision (the audit entry of the decision, at PostgreSQL's now() of its transaction)."""
    rows = await pool.fetch(
        f"""SELECT extract(epoch FROM min(a.at) - min(c.wake_before)) AS late
           {_DECIDED}
           WHERE $2::timestamptz IS NULL OR c.wake_before >= $2
           GROUP BY c.id""", LATENESS, since)
    return sorted(r["late"] for r in rows)


async def late_stretches(pool: asyncpg.Pool, first: datetime, over: float = 1.0) -> tuple[int, str]:
    """The cases decided more than ``over`` seconds late, and when they came due: the seconds into the
    deadlines, as stretches ("+3-19 s"), which tell a pause (one stretch) from a spread."""
    rows = await pool.fetch(
        f"""SELECT floor(extract(epoch FROM c.wake_before - $3))::int AS second
           {_DECIDED}
           GROUP BY c.id, c.wake_before HAVING extract(epoch FROM min(a.at) - c.wake_before) > $2""",
        LATENESS, over, first)
    seconds = sorted({r["second"] for r in rows})
    stretches, start = [], None
    for i, second in enumerate(seconds):
        start = second if start is None else start
        if i + 1 == len(seconds) or seconds[i + 1] != second + 1:
            stretches.append(f"+{start} s" if start == second else f"+{start}-{second} s")
            start = None
    return len(rows), ", ".join(stretches) or "none"


async def due_run(args) -> None:
    async with stack() as s:
        if not args.seed:
            await open_through_pipeline(s, args.open, args.openers, args.stall)
        producer = AIOKafkaProducer(acks="all", **bootstrap.kafka_client_options(s.settings))
        await producer.start()
        partitions = len(await producer.partitions_for(s.camera_topic()))
        for i in range(args.workers):
            s.start_worker(i)
        for i in range(args.workers):
            await s.ready(i)
        idle = max(memory_mib(p.pid)["VmRSS"] for p in s.procs)
        print(f"worker ready: {idle:.0f} MiB resident ({load()})", flush=True)
        if args.seed:
            lead = args.lead if args.lead is not None else args.open / args.seed_rate + 30
            first, last = await open_cases(s, args.open, args.per_second, lead, partitions)
        else:
            lead = args.lead if args.lead is not None else args.open / args.move_rate + 30
            first, last = await move_deadlines(s, args.open, args.per_second, lead)
        meter = CpuMeter(s.pool, s.db_name, [p.pid for p in s.procs])
        base = f"http://127.0.0.1:{WEB_PORT}"
        http = await console_session(base)
        page, live, metrics = [], [], []
        traffic = None
        loads = []
        try:
            while await s.pool.fetchval("SELECT now()") < first:
                await asyncio.sleep(0.2)
            await meter.start()
            started = time.monotonic()
            span = (last - first).total_seconds()
            traffic = asyncio.create_task(camera_traffic(s, producer, args.open)) if args.kill else None
            kill_at = started + args.kill_after if args.kill else None
            killed_at = recovered_at = None
            worst_after_kill = 0.0
            usual = 1.0
            """The most overdue a due case was before the kill (at least 1 s): the watermarks' tick and the
            load make a case wait that long anyway; recovered is back to it, after the held cases."""
            while True:
                s.check_workers()
                row = await s.pool.fetchrow(
                    """SELECT now() AS now, (SELECT min(wake_at) FROM cases WHERE state IN ('warned', 'rechecking')
                                               AND wake_at <= $1) AS oldest""", last)
                overdue = max(0.0, (row["now"] - row["oldest"]).total_seconds()) if row["oldest"] else 0.0
                if killed_at is None:
                    usual = max(usual, overdue)
                else:
                    worst_after_kill = max(worst_after_kill, overdue)
                    if recovered_at is None and worst_after_kill > usual and overdue <= usual:
                        recovered_at = time.monotonic()
                if kill_at and killed_at is None and time.monotonic() >= kill_at:
                    s.procs[0].send_signal(signal.SIGKILL)
                    killed_at = time.monotonic()
                    print(f"\n  worker 0 SIGKILLed {killed_at - started:.0f} s into the deadlines", file=sys.stderr)
                if not args.kill and args.console:
                    await asyncio.gather(time_requests(base, "/console/", http, page),
                                         time_requests(base, "/console/api/overview", http, live))
                    await time_requests(base, "/metrics", http, metrics)
                loads.append(os.getloadavg()[0])
                elapsed = (row["now"] - first).total_seconds()
                print(f"\r  {elapsed:.0f} s into the deadlines, {min(elapsed, span) * args.per_second:,.0f} come due; "
                      f"the oldest undecided is {overdue:.1f} s overdue", end="", file=sys.stderr, flush=True)
                if row["oldest"] is None:
                    break
                if elapsed > span + args.patience:
                    undecided = await s.pool.fetchval(
                        "SELECT count(*) FROM cases WHERE state IN ('warned', 'rechecking') AND wake_at <= $1", last)
                    print(f"\nbench: {undecided:,} due cases still undecided {args.patience:.0f} s after the last "
                          "deadline; the figures below are of the decided ones (each undecided one is later "
                          "than all of them)", file=sys.stderr)
                    print(f"  NOT all decided: {undecided:,} due cases undecided {args.patience:.0f} s after the last deadline")
                    break
                await asyncio.sleep(0.25)
            print(file=sys.stderr)
            cpu = await meter.stop()
        finally:
            if args.kill and traffic is not None:
                traffic.cancel()
            await http.close()
            await producer.stop()
        memory = [memory_mib(p.pid) for p in s.procs if p.poll() is None]
        late = await lateness(s.pool)
        decided = len(late)
        print(f"{args.open:,} open cases, {args.per_second:,.0f} coming due per second, {args.workers} worker(s) "
              f"({load()}; 1-minute load average during the run {min(loads):.1f}-{max(loads):.1f}):")
        print(f"  deadline decisions: {decided:,}; lateness after deadline + allowance (PostgreSQL's clock): "
              f"p50 {percentile(late, 0.5) * 1000:,.0f} ms, p99 {percentile(late, 0.99) * 1000:,.0f} ms, "
              f"max {late[-1] * 1000:,.0f} ms (target p99 < 1 s: {'met' if percentile(late, 0.99) < 1 else 'NOT met'})")
        n_late, stretches = await late_stretches(s.pool, first)
        print(f"  decided more than 1 s late: {n_late:,}, coming due at these seconds into the deadlines: {stretches}")
        print(f"  decided {decided / cpu['wall_s']:,.0f}/s over {cpu['wall_s']:.0f} s; CPU: worker(s) "
              f"{cpu['worker_cores']:.2f} cores, their PostgreSQL backends {cpu['postgres_cores']:.2f} cores -> "
              f"{decided / max(cpu['postgres_cpu_s'], 1e-9):,.0f} deadline decisions per PostgreSQL CPU second")
        print(f"  worker memory: {idle:.0f} MiB ready, peak {max(m['VmHWM'] for m in memory):.0f} MiB, "
              f"{max(m['VmRSS'] for m in memory):.0f} MiB after (target < 300 MB: "
              f"{'met' if max(m['VmHWM'] for m in memory) * 1.048576 < 300 else 'NOT met'})")
        if args.kill:
            session = float(s.env.get("PW_SESSION_TIMEOUT_SECONDS", Settings().session_timeout_seconds))
            if worst_after_kill <= usual:
                print(f"  after worker 0's SIGKILL no due case was more overdue than before it ({usual:.1f} s)")
            elif recovered_at is None:
                print(f"  after the SIGKILL: due cases still more overdue at the end than before it ({usual:.1f} s; "
                      f"worst {worst_after_kill:.1f} s): not caught up, no figure")
            else:
                took = recovered_at - killed_at
                print(f"  after worker 0's SIGKILL: the due cases its partitions held all decided {took:.1f} s later "
                      f"(the oldest undecided back to at most {usual:.1f} s overdue, as before the kill; worst "
                      f"{worst_after_kill:.1f} s); session timeout {session:.0f} s -> {took - session:+.1f} s after it "
                      f"(target within 5 s: {'met' if took - session <= 5 else 'NOT met'})")
        elif args.console:
            for name, times in (("live page /console/", page), ("live data /console/api/overview", live),
                                ("/metrics", metrics)):
                times.sort()
                print(f"  {name}: {len(times)} requests, p50 {percentile(times, 0.5):,.0f} ms, "
                      f"p99 {percentile(times, 0.99):,.0f} ms (target p99 < 200 ms: "
                      f"{'met' if percentile(times, 0.99) < 200 else 'NOT met'})")


async def camera_traffic(s: Stack, producer: AIOKafkaProducer, first_plate: int, per_second: float = 50) -> None:
    """Captures of plates with no case, ``per_second``, each send checked: the partitions are read,
    so that a dead worker's partitions hold decisions until the group gives them to the survivor."""
    topic, camera, i = s.camera_topic(), city.CAMERAS[0], 0
    started = time.monotonic()
    while True:
        plate = plate_of(first_plate + i % 20000)
        await (await producer.send(topic, encode(events.VehicleObserved(
            event_id=f"traffic-{s.run}-{i:08d}", camera_id=camera.id, plate=plate, taken_at=datetime.now(UTC),
            location=events.Location(lat=camera.lat, lon=camera.lon), place=camera.place)), key=plate.encode()))
        i += 1
        await asyncio.sleep(max(0.0, started + i / per_second - time.monotonic()))


async def drain_run(kind: str, n: int, workers: int) -> dict:
    """Publish ``n`` camera events of ``kind`` with no worker running, then start ``workers``: how
    long until all are recorded (captures) or all warnings are accepted (violations)."""
    async with stack() as s:
        if kind == "violations":  # owners to warn: one plate each
            await register_owners(s.pool, n)
        producer = AIOKafkaProducer(acks="all", linger_ms=5, **bootstrap.kafka_client_options(s.settings))
        await producer.start()
        topic = s.camera_topic()
        cameras = city.CAMERAS

        def captures():
            taken = datetime.now(UTC)
            for i in range(n):
                camera = cameras[i % len(cameras)]
                plate = plate_of(i % 50000)
                yield topic, encode(events.VehicleObserved(
                    event_id=f"drain-{s.run}-{i:08d}", camera_id=camera.id, plate=plate, taken_at=taken,
                    location=events.Location(lat=camera.lat, lon=camera.lon), place=camera.place,
                    evidence=events.Evidence(image_url=f"https://evidence.bench/{i}.jpg"))), plate.encode()

        await publish(producer, violations(s, n, "drain") if kind == "violations" else captures(),
                      f"{kind} published (no worker running)", n)
        await producer.stop()
        started = time.monotonic()
        for i in range(workers):
            s.start_worker(i)
        meter = CpuMeter(s.pool, s.db_name, [p.pid for p in s.procs])
        await meter.start()
        query = ("SELECT count(*) FROM sms_messages WHERE accepted_at IS NOT NULL" if kind == "violations"
                 else "SELECT count(*) FROM sightings")
        loads, last_cpu, cpu = [], time.monotonic(), None
        while (done := await s.pool.fetchval(query)) < n:
            s.check_workers()
            progress(f"{kind} drained", done, n, started)
            loads.append(os.getloadavg()[0])
            if time.monotonic() - last_cpu > 5:  # new backends appear as the pools grow
                meter.before |= {pid: ticks(pid) for pid in await meter.backends() if pid not in meter.before}
                last_cpu = time.monotonic()
            if time.monotonic() - started > 3600:
                raise SystemExit(f"\nbench: only {done}/{n} {kind} drained after an hour")
            await asyncio.sleep(0.5)
        cpu = await meter.stop()
        took = time.monotonic() - started
        print(file=sys.stderr)
        first_done = await s.pool.fetchval(
            "SELECT min(accepted_at) FROM sms_messages" if kind == "violations" else "SELECT min(received_at) FROM sightings")
        last_done = await s.pool.fetchval(
            "SELECT max(accepted_at) FROM sms_messages" if kind == "violations" else "SELECT max(received_at) FROM sightings")
        working = (last_done - first_done).total_seconds()
        return {"kind": kind, "n": n, "workers": workers, "took_s": took, "working_s": working,
                "per_second": n / max(working, 1e-9), "loads": (min(loads, default=0), max(loads, default=0)), **cpu}


async def drain(args) -> None:
    for kind, n in (("captures", args.captures), ("violations", args.violations)):
        if not n:
            continue
        for workers in args.workers:
            r = await drain_run(kind, n, workers)
            what = "recorded" if kind == "captures" else "cases opened and warnings accepted"
            print(f"backlog of {n:,} {kind}, {workers} worker(s): all {what} {r['took_s']:.0f} s after the workers "
                  f"started ({r['working_s']:.0f} s from the first to the last, {r['per_second']:,.0f}/s); CPU: "
                  f"workers {r['worker_cores']:.2f} cores, their PostgreSQL backends {r['postgres_cores']:.2f} cores -> "
                  f"{n / max(r['postgres_cpu_s'], 1e-9):,.0f} {kind} per PostgreSQL CPU second, "
                  f"{n / max(r['worker_cpu_s'], 1e-9):,.0f} per worker CPU second "
                  f"(1-minute load average {r['loads'][0]:.1f}-{r['loads'][1]:.1f}; {load()})", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    due = sub.add_parser("due", help="a province's day of open cases (and --kill: a worker SIGKILLed)")
    due.add_argument("--open", type=int, default=1_000_000)
    due.add_argument("--per-second", type=float, default=2000)
    due.add_argument("--workers", type=int, default=None, help="default 1 (2 with --kill)")
    due.add_argument("--openers", type=int, default=2, help="workers opening the cases through the pipeline")
    due.add_argument("--stall", type=float, default=300,
                     help="seconds without a warning accepted before the opening is given up as stalled")
    due.add_argument("--move-rate", type=float, default=2500,
                     help="deadlines moved per second, assumed to place the first deadline after moving them")
    due.add_argument("--seed", action="store_true",
                     help="seed the open cases in bulk with SQL instead of opening them through the pipeline (quick)")
    due.add_argument("--seed-rate", type=float, default=4000,
                     help="open cases seeded per second, assumed to place the first deadline after seeding")
    due.add_argument("--lead", type=float, default=None,
                     help="seconds from the start of seeding (or of moving the deadlines) to the first wake")
    due.add_argument("--no-console", dest="console", action="store_false",
                     help="do not request the console and /metrics during the run (the deadlines alone)")
    due.add_argument("--patience", type=float, default=600,
                     help="seconds after the last deadline before the figures are taken with cases undecided")
    due.add_argument("--kill", action="store_true", help="two workers; SIGKILL one --kill-after s into the deadlines")
    due.add_argument("--kill-after", type=float, default=20)
    drain_p = sub.add_parser("drain", help="a backlog of captures and violations drained by 1 and 2 workers")
    drain_p.add_argument("--captures", type=int, default=1_000_000)
    drain_p.add_argument("--violations", type=int, default=100_000)
    drain_p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {load()} at the start", flush=True)
    if args.command == "due":
        args.workers = args.workers or (2 if args.kill else 1)
        await due_run(args)
    else:
        await drain(args)


async def stoppable() -> None:
    """``main``, cancelled (its workers stopped, its database dropped) on SIGTERM or SIGINT, which a
    shell's background job ignores by default."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    await main()


if __name__ == "__main__":
    asyncio.run(stoppable())
