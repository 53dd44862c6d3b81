"""Our own chaos run (issue 8): a ground-truth city under faults, judged from Kafka and the fake SMS
centre only.

A city of cars with phones on record (the demo city's plates) parks illegally while two workers run:
each car stays past its deadline (captured at the deadline, or answering the recheck, or not), leaves
early, or leaves at the edge (2-4 s before its deadline); some events are duplicated, late, out of
order (a capture overtakes its violation, or a later event), and malformed messages, tombstones,
keyless messages and events for another integrator's camera are mixed in. The cameras are real Kafka
clients of the demo integrator (its cameras, registered by the demo city's load): they publish to
``camera-events.demo`` and read ``RecheckRequested`` on ``camera-commands.demo`` logged in as ``demo``
(SASL/SCRAM, ``parkwarden integrators kafka-login demo``), and learn each car's deadline from
``WarningSent`` on case-events (read with the pipeline's login, as a live feed would). A share of the
cars is at cameras of a second integrator that reports over HTTP ingest with its key (``parkwarden
integrators add``; the same places, cameras ``<demo camera>-http``). Meanwhile a worker
is SIGKILLed and restarted every ~20 s, the broker restarts once, PostgreSQL restarts once and Kannel
is down for two minutes. At the end ``bench.chaos_judge`` compares what the city did with what Kafka
and the SMS centre say, and prints the table (all zeros when nothing went wrong).

Everything runs on a private stack (Kafka, PostgreSQL, Kannel under ``var/chaos`` with their own
ports, through ``scripts/services.sh`` with ``PW_VAR_DIR``), started and stopped by the run; the
shared services are never touched. Not a test (a smaller run is: tests/integration/test_chaos.py).

    ./dev chaos [--cars 1000] [--arrivals-seconds 480] [--seed 1] [--keep-services] [--small]
"""

import argparse
import asyncio
import json
import logging
import os
import random
import secrets
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.chaos_judge import (DELIVERY_SLACK, LEAVES_EARLY, LEAVES_EDGE, STAYS_ANSWERS, STAYS_SEEN, STAYS_SILENT,
                               Car, Record, Report, judge, when)
from bench.e2e import machine
from pipeline import bootstrap
from pipeline.cameras import registry
from pipeline.cases.machine import Rules
from pipeline.cases.store import init_connection
from pipeline.config import Settings
from pipeline.db.migrate import migrate
from pipeline.demo import city
from pipeline.logs import quiet_repeats
from pipeline.sms.kannel import read_fakesmsc_line
from schemas import events, topics
from schemas.codec import encode

ROOT = Path(__file__).resolve().parent.parent
BEHAVIOUR_WEIGHTS = {STAYS_SEEN: 0.25, STAYS_ANSWERS: 0.15, STAYS_SILENT: 0.10, LEAVES_EARLY: 0.30, LEAVES_EDGE: 0.20}
HTTP_CAMERAS = [replace(c, id=f"{c.id}-http") for c in city.CAMERAS]
"""The HTTP integrator's cameras: one beside each demo camera (same place, zone and position)."""
EDGE_MARGIN = 2.0
"""Seconds between an edge car's events and the instants where a rule flips (the deadline for its
departure, the deadline less the capture tolerance for its captures): far more than the clocks'
disagreement on one machine (none: every party stamps from the same clock) and than a tick."""


@dataclass(frozen=True)
class Plan:
    """The city and the faults of one run (seconds from the first arrival)."""

    cars: int = 1000
    arrivals_seconds: float = 480
    workers: int = 2
    window: float = 30
    lateness: float = 10
    capture_tolerance: float = 3
    recheck_wait: float = 20
    kill_every: float = 20
    """A worker (each in turn) is SIGKILLed and restarted this often while cars arrive; 0: never."""
    kill_window: float = 15
    """Seconds after a worker's SIGKILL counted as its fault window (warnings' latency by window)."""
    kills: int | None = None
    """At most this many kills (None: as many as fit in the arrivals)."""
    broker_restart_at: float | None = 100
    postgres_restart_at: float | None = 200
    kannel_down_at: float | None = 280
    kannel_down_for: float = 120
    drain_seconds: float = 360
    """After the last arrival, how long to wait at most for every case to close."""
    broker_kill_at: float | None = None
    """On a cluster (``--cluster``): the broker leading most camera-events partitions is SIGKILLed then."""
    broker_down_for: float = 60
    postgres_kill_at: float | None = None
    """On a cluster: the PostgreSQL primary's postmaster is SIGKILLed then (Patroni fails over)."""
    diverge_for: float = 0
    """On a cluster: the primary's WAL sender is stopped (SIGSTOP) this long before the kill, so that the old
    primary has WAL the standby never got (its timeline diverges: it rejoins through pg_rewind)."""
    rolling_restart_at: float | None = None
    """On a cluster: every worker stopped with SIGTERM and started again, one at a time, from then."""
    http_share: float = 0.1
    duplicate_share: float = 0.05
    late_share: float = 0.1
    out_of_order_share: float = 0.1
    capture_first_share: float = 0.05
    malformed_share: float = 0.05
    seed: int = 1

    @property
    def rules(self) -> Rules:
        return Rules(window=timedelta(seconds=self.window), lateness=timedelta(seconds=self.lateness),
                     capture_tolerance=timedelta(seconds=self.capture_tolerance),
                     recheck_wait=timedelta(seconds=self.recheck_wait))

    def worker_env(self) -> dict[str, str]:
        return {"PW_WINDOW_SECONDS": str(self.window), "PW_LATENESS_SECONDS": str(self.lateness),
                "PW_CAPTURE_TOLERANCE_SECONDS": str(self.capture_tolerance),
                "PW_RECHECK_WAIT_SECONDS": str(self.recheck_wait)}

    @classmethod
    def cluster(cls) -> "Plan":
        """``--cluster``: fewer cars than the single-broker run (3 brokers, 2 PostgreSQL and 3 etcd share
        the machine), worker kills further apart, and the cluster's faults instead of service restarts, one
        after the other (a fault waits for the previous one to be over: the broker back in sync, the old
        primary back as standby)."""
        return cls(cars=300, arrivals_seconds=360, kill_every=45, broker_restart_at=None, postgres_restart_at=None,
                   kannel_down_at=None, broker_kill_at=30, broker_down_for=60, postgres_kill_at=170, diverge_for=3,
                   rolling_restart_at=220, drain_seconds=480)

    @classmethod
    def small(cls) -> "Plan":
        """The test suite's run: a few hundred cars, one kill, one broker restart, a short Kannel outage."""
        return cls(cars=300, arrivals_seconds=60, window=20, lateness=8, recheck_wait=12, kill_every=10, kills=1,
                   broker_restart_at=20, postgres_restart_at=None, kannel_down_at=2, kannel_down_for=15,
                   drain_seconds=180)


@dataclass(frozen=True)
class PrivateStack:
    """Kafka, PostgreSQL and Kannel of our own, under ``var_dir`` and on their own ports (scripts/services.sh)."""

    var_dir: str = "var/chaos"
    kafka_port: int = 29192
    postgres_port: int = 25532
    kannel_admin_port: int = 23100
    fakesmsc_port: int = 20100
    web_port: int = 26200
    """The workers' web ports: web_port, web_port + 1, ...

    All below Linux's ephemeral range (32768-60999): a port in it may be taken, while a service
    restarts, by a client's outgoing connection (or by a client connecting to itself while it retries),
    and the restart then fails with "Address already in use" (seen with 39192)."""

    def env(self) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("PW_")}
        return {**clean, "PW_VAR_DIR": self.var_dir, "PW_KAFKA_PORT": str(self.kafka_port),
                "PW_KAFKA_CONTROLLER_PORT": str(self.kafka_port + 1), "PW_PG_PORT": str(self.postgres_port),
                "PW_KANNEL_ADMIN_PORT": str(self.kannel_admin_port),
                "PW_KANNEL_SMSBOX_PORT": str(self.kannel_admin_port + 1),
                "PW_KANNEL_SENDSMS_PORT": str(self.kannel_admin_port + 13),
                "PW_FAKESMSC_PORT": str(self.fakesmsc_port)}

    def database_url(self, name: str) -> str:
        return f"postgresql://parkwarden:parkwarden@127.0.0.1:{self.postgres_port}/{name}"

    @property
    def admin_url(self) -> str:
        return self.database_url("parkwarden")

    @property
    def log_dir(self) -> Path:
        return ROOT / self.var_dir / "log"

    async def services(self, *args: str) -> str:
        """Run scripts/services.sh on this stack; its output goes to var_dir/log/chaos-services.log."""
        return await self.script("services.sh", *args)

    async def script(self, name: str, *args: str) -> str:
        """Run scripts/<name> on this stack; its output goes to var_dir/log/chaos-services.log."""
        proc = await asyncio.create_subprocess_exec(str(ROOT / "scripts" / name), *args, env=self.env(),
                                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = (await proc.communicate())[0].decode(errors="replace")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / "chaos-services.log").open("a") as f:
            f.write(f"$ {name} {' '.join(args)}\n{out}")
        if proc.returncode != 0:
            raise RuntimeError(f"scripts/{name} {' '.join(args)} failed ({proc.returncode}):\n{out[-2000:]}")
        return out

    async def database_ready(self, name: str) -> None:
        """Return once a new database ``name`` can be connected to (at once, on one server)."""

    async def start(self) -> None:
        await self.services("start")

    async def stop(self) -> None:
        await self.services("stop")

    async def client_env(self) -> dict[str, str]:
        """The PW_* variables that point clients at this stack (``services.sh env``)."""
        found = {}
        for line in (await self.services("env")).splitlines():
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                found[name] = shlex.split(value)[0] if value else ""
        return found


class Workers:
    """The pipeline's worker processes, each at its own web port, killed and restarted by PID."""

    def __init__(self, count: int, env: dict[str, str], first_port: int, log_dir: Path, run: str):
        self.env = env
        self.run = run
        self.ports = [first_port + i for i in range(count)]
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen | None] = [None] * count
        self.readies_before_start = [0] * count
        """How many times each worker had logged that it was ready when it was last started."""
        self.kills = 0
        self.rolling = False
        """A rolling restart is under way: the run's SIGKILLs wait."""
        self.stopping: set[int] = set()
        """Workers being stopped on purpose (not to be restarted as if they had exited on their own)."""
        self.exits: list[str] = []
        """Workers that exited on their own, with their exit codes (restarted, as a supervisor would)."""

    def log_path(self, i: int) -> Path:
        return self.log_dir / f"chaos-{self.run}-worker-{i}.log"

    def start(self, i: int) -> None:
        self.readies_before_start[i] = self.readies(i)
        with self.log_path(i).open("a") as log:
            self.procs[i] = subprocess.Popen(
                [sys.executable, "-m", "pipeline", "worker"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                env={**self.env, "PW_WEB_PORT": str(self.ports[i]), "PW_WORKER_NAME": f"chaos{i}"})

    async def ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not all("Worker]: Ready" in self.log_path(i).read_text(errors="replace") for i in range(len(self.procs))):
            for i, p in enumerate(self.procs):
                if p.poll() is not None:
                    raise RuntimeError(f"worker {i} exited with {p.returncode}; see {self.log_path(i)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the workers were not ready after {timeout:.0f} s; see {self.log_dir}")
            await asyncio.sleep(0.5)

    def readies(self, i: int) -> int:
        """How many times worker ``i`` logged that it is ready (its log is appended to at each start)."""
        path = self.log_path(i)
        return path.read_text(errors="replace").count("Worker]: Ready") if path.exists() else 0

    async def restart_gently(self, i: int, timeout: float = 300) -> tuple[float, float]:
        """Stop worker ``i`` with SIGTERM (as an upgrade does), start it again and wait until it is ready;
        (seconds it took to exit, seconds from its start to ready)."""
        while self.readies(i) <= self.readies_before_start[i]:  # an operator stops a worker that is up,
            await asyncio.sleep(0.5)                             # not one still starting
        readies = self.readies(i)
        began = time.monotonic()
        p = self.procs[i]
        self.stopping.add(i)
        try:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                while p.poll() is None:
                    if time.monotonic() - began > timeout:
                        raise RuntimeError(f"worker {i} did not stop within {timeout:.0f} s of SIGTERM; "
                                           f"see {self.log_path(i)}")
                    await asyncio.sleep(0.2)
                if p.returncode != 0:
                    self.exits.append(f"worker {i} exited with {p.returncode} after SIGTERM (rolling restart)")
            stopped = time.monotonic()
            self.start(i)
        finally:
            self.stopping.discard(i)
        while self.readies(i) <= readies:
            if self.procs[i].poll() is not None:
                raise RuntimeError(f"worker {i} exited with {self.procs[i].returncode} while starting; "
                                   f"see {self.log_path(i)}")
            if time.monotonic() - stopped > timeout:
                raise RuntimeError(f"worker {i} was not ready {timeout:.0f} s after its restart; see {self.log_path(i)}")
            await asyncio.sleep(0.5)
        return stopped - began, time.monotonic() - stopped

    def kill_and_restart(self, i: int) -> None:
        p = self.procs[i]
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
        self.kills += 1
        self.start(i)

    def stop(self) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.terminate()
        for p in self.procs:
            if p is None:
                continue
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def restart_exited(self, at: float) -> None:
        """Start again a worker that exited on its own (not killed by the run), noting it."""
        for i, p in enumerate(self.procs):
            if p is not None and p.poll() is not None and i not in self.stopping:
                self.exits.append(f"worker {i} exited with {p.returncode} at {at:.0f} s "
                                  f"(see {self.log_path(i).relative_to(ROOT)})")
                self.start(i)


class Publisher:
    """The cameras' way in: Kafka (acks=all) or HTTP ingest (202 once Kafka acknowledged); each message
    is sent again until acknowledged, through every outage, until ``until`` (monotonic)."""

    def __init__(self, kafka: dict, topic: str, ingest_urls: list[str], api_key: str, until: float):
        self.kafka_options = kafka
        """The integrator's own Kafka login (``bootstrap.kafka_client_options`` shape)."""
        self.topic = topic
        self.ingest_urls = ingest_urls
        self.api_key = api_key
        self.until = until
        self.acknowledged: set[str] = set()
        self.tally: Counter = Counter()
        self.producer: AIOKafkaProducer | None = None
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(acks="all", linger_ms=5, request_timeout_ms=10_000, retry_backoff_ms=250,
                                         **self.kafka_options)
        await self.producer.start()
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))

    async def close(self) -> None:
        if self.session:
            await self.session.close()
        if self.producer:
            await self.producer.stop()

    async def kafka(self, key: bytes | None, value: bytes | None, event_id: str | None = None) -> bool:
        while time.monotonic() < self.until:
            try:
                await asyncio.wait_for(self.producer.send_and_wait(self.topic, value, key=key), 20)
                self.tally["sent over Kafka"] += 1
                if event_id:
                    self.acknowledged.add(event_id)
                return True
            except Exception:  # noqa: BLE001 - the broker is away or slow: a camera tries again
                self.tally["Kafka sends tried again"] += 1
                await asyncio.sleep(1.0)
        return False

    async def http(self, event: events.PlateEvent, turn: int) -> bool:
        body = encode(event)
        headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}
        while time.monotonic() < self.until:
            url = self.ingest_urls[turn % len(self.ingest_urls)]
            turn += 1
            try:
                async with self.session.post(url, data=body, headers=headers) as response:
                    if response.status == 202:
                        self.tally["sent over HTTP"] += 1
                        self.acknowledged.add(event.event_id)
                        return True
                    if response.status in (403, 422):
                        self.tally[f"refused by HTTP ingest with {response.status} (a harness bug)"] += 1
                        print(f"chaos: HTTP ingest refused {event.event_id}: {(await response.text())[:300]}")
                        return False
                    self.tally[f"HTTP {response.status}, tried again"] += 1
            except (aiohttp.ClientError, TimeoutError):
                self.tally["HTTP unreachable, tried again"] += 1
            await asyncio.sleep(0.5)
        return False


@dataclass
class Spot:
    camera: city.Camera
    lat: float
    lon: float


@dataclass
class CityState:
    """What the cameras have learnt from Kafka, and what the live feed counts for the progress lines."""

    deadlines: dict[str, asyncio.Future] = field(default_factory=dict)
    plates_with_case: set[str] = field(default_factory=set)
    opened: set[str] = field(default_factory=set)
    closed: Counter = field(default_factory=Counter)
    closed_ids: set[str] = field(default_factory=set)
    warned: set[str] = field(default_factory=set)
    tickets: set[str] = field(default_factory=set)
    rechecks: set[str] = field(default_factory=set)
    dead_letters: int = 0


class City:
    """The ground-truth city: each car lives its life in its own task, whatever the pipeline does."""

    def __init__(self, plan: Plan, cars: list[Car], publisher: Publisher, run: str, started: datetime, until: float):
        self.plan = plan
        self.cars = {c.plate: c for c in cars}
        self.number = {c.plate: i for i, c in enumerate(cars)}
        self.publisher = publisher
        self.run = run
        self.started = started
        self.until = until
        self.state = CityState()
        self.rng = random.Random(plan.seed)
        self.spots: dict[str, Spot] = {}
        self.arrive_at: dict[str, datetime] = {}
        self.capture_first: set[str] = set()
        cameras = {c.id: c for c in city.CAMERAS + HTTP_CAMERAS}
        for i, car in enumerate(cars):
            camera = cameras[car.camera_id]
            self.spots[car.plate] = Spot(camera, camera.lat + self.rng.uniform(-1e-4, 1e-4),
                                         camera.lon + self.rng.uniform(-1e-4, 1e-4))
            self.arrive_at[car.plate] = started + timedelta(seconds=(i + self.rng.random()) * plan.arrivals_seconds
                                                            / len(cars))
            if self.rng.random() < plan.capture_first_share:
                self.capture_first.add(car.plate)
            self.state.deadlines[car.plate] = asyncio.get_running_loop().create_future()
        self.arrived: set[str] = set()
        self.tally: Counter = Counter()
        self._seq = Counter()
        self._background: set[asyncio.Task] = set()

    # what the cameras read on Kafka --------------------------------------------------------------

    def on_output(self, topic: str, message: dict) -> None:
        s = self.state
        kind = message.get("type")
        if kind == "CaseOpened":
            s.opened.add(message["case_id"])
            s.plates_with_case.add(message["plate"])
        elif kind == "WarningSent":
            s.warned.add(message["case_id"])
            future = s.deadlines.get(message["plate"])
            if future is not None and not future.done():
                future.set_result(when(message["deadline_at"]))
        elif kind == "CaseClosed" and message["case_id"] not in s.closed_ids:
            s.closed_ids.add(message["case_id"])
            s.closed[message["outcome"]] += 1
        elif kind == "TicketIssued":
            s.tickets.add(message["ticket_number"])
        elif kind == "RecheckRequested" and message["recheck_id"] not in s.rechecks:
            s.rechecks.add(message["recheck_id"])
            car = self.cars.get(message["plate"])
            if car is not None:
                self._in_background(self._answer(car, message))
        elif kind == "DeadLetter":
            s.dead_letters += 1

    # the cars --------------------------------------------------------------------------------

    def _in_background(self, work) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _event_id(self, car: Car) -> str:
        self._seq[car.plate] += 1
        return f"chaos-{self.run}-{self.number[car.plate]:04d}-{self._seq[car.plate]}"

    def _capture(self, cls, car: Car, taken_at: datetime, **extra):
        spot = self.spots[car.plate]
        return cls(event_id=self._event_id(car), camera_id=spot.camera.id, plate=car.plate, taken_at=taken_at,
                   location=events.Location(lat=spot.lat, lon=spot.lon), place=spot.camera.place,
                   zone=spot.camera.zone, evidence=events.Evidence(
                       image_url=f"https://evidence.chaos/{self.run}/{self.number[car.plate]:04d}/{taken_at:%H%M%S%f}.jpg"),
                   **extra)

    def _departure(self, car: Car, taken_at: datetime, **extra):
        spot = self.spots[car.plate]
        return events.VehicleDeparted(event_id=self._event_id(car), camera_id=spot.camera.id, plate=car.plate,
                                      taken_at=taken_at, location=events.Location(lat=spot.lat, lon=spot.lon), **extra)

    async def _send(self, car: Car, event, at: datetime | None = None, rng: random.Random | None = None) -> None:
        """Send ``event`` once the wall clock reaches ``at`` (sometimes late, sometimes twice)."""
        rng = rng or self.rng
        if at is not None:
            if rng.random() < self.plan.late_share:
                at += timedelta(seconds=rng.uniform(1, 3))
                self.tally["late"] += 1
            await asyncio.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()))
        await self._publish(car, event)
        if rng.random() < self.plan.duplicate_share:
            self.tally["duplicated"] += 1
            delay = rng.uniform(0.2, 3)
            async def again():
                await asyncio.sleep(delay)
                await self._publish(car, event)
            self._in_background(again())

    async def _publish(self, car: Car, event) -> None:
        self.tally[event.type] += 1
        if car.via_http:
            await self.publisher.http(event, self._seq[car.plate])
        else:
            await self.publisher.kafka(car.plate.encode(), encode(event), event.event_id)

    async def live(self, car: Car) -> None:
        rng = random.Random(f"{self.plan.seed}-{car.plate}")
        arrived = self.arrive_at[car.plate]
        await asyncio.sleep(max(0.0, (arrived - datetime.now(UTC)).total_seconds()))
        violation = self._capture(events.ViolationDetected, car, arrived)
        if car.plate in self.capture_first:
            self.tally["capture before its violation"] += 1
            await self._send(car, self._capture(events.VehicleObserved, car, arrived + timedelta(seconds=0.5)),
                             arrived + timedelta(seconds=0.5), rng)
            await self._send(car, violation, arrived + timedelta(seconds=1.0), rng)
        else:
            await self._send(car, violation, arrived, rng)
        self.arrived.add(car.plate)
        try:
            deadline = await asyncio.wait_for(asyncio.shield(self.state.deadlines[car.plate]),
                                              max(1.0, self.until - time.monotonic()))
        except TimeoutError:
            return  # never warned: the judge counts the warning as lost
        window, tolerance = timedelta(seconds=self.plan.window), timedelta(seconds=self.plan.capture_tolerance)
        accepted = deadline - window
        last_patrol = deadline - tolerance - timedelta(seconds=EDGE_MARGIN)
        plan = [(min(accepted + window * rng.uniform(0.05, 0.45), last_patrol), "patrol")
                for _ in range(rng.choice((0, 1, 2)))]
        if car.behaviour == LEAVES_EARLY:
            plan.append((accepted + window * rng.uniform(0.5, 0.75), "departure"))
        elif car.behaviour == LEAVES_EDGE:
            plan.append((deadline - timedelta(seconds=rng.uniform(EDGE_MARGIN, EDGE_MARGIN + 2)), "departure"))
        elif car.behaviour == STAYS_SEEN:  # clear of the band where a late delivery may have moved the deadline
            earliest = DELIVERY_SLACK.total_seconds() + 1 - self.plan.capture_tolerance
            plan.append((deadline + timedelta(seconds=rng.uniform(earliest, 3)), "deadline"))
        plan.sort()
        held = None
        for taken_at, what in plan:
            event = (self._departure(car, taken_at) if what == "departure"
                     else self._capture(events.VehicleObserved, car, taken_at))
            if what == "patrol" and held is None and rng.random() < self.plan.out_of_order_share:
                held = event  # sent after the car's next event: it arrives out of order
                self.tally["out of order"] += 1
                continue
            await self._send(car, event, taken_at, rng)
            if held is not None:
                await self._send(car, held, None, rng)
                held = None
        if held is not None:
            await asyncio.sleep(5)
            await self._send(car, held, None, rng)

    async def _answer(self, car: Car, request: dict) -> None:
        """A camera's answer to a recheck: a capture if the car stays, a departure if it left; or silence."""
        if not car.answers_rechecks:
            self.tally["recheck not answered"] += 1
            return
        await asyncio.sleep(random.uniform(0.5, 2.5))
        now = datetime.now(UTC)
        if car.stays:
            event = self._capture(events.VehicleObserved, car, now, recheck_id=request["recheck_id"])
        else:
            event = self._departure(car, now, recheck_id=request["recheck_id"])
        self.tally["recheck answered"] += 1
        await self._send(car, event)

    async def malformed(self, count: int, unused_plate: str) -> None:
        """Messages no agent can use or may take, spread over the arrivals: tombstones (keyed by a parked
        car's plate), keyless events, not JSON, an invalid field, an invalid plate, and a valid event for
        a camera of the HTTP integrator (the pipeline must refuse it on the demo integrator's topic)."""
        cam = city.CAMERAS[0]
        plates = list(self.cars)
        for i in range(count):
            await asyncio.sleep(max(0.0, (self.started + timedelta(seconds=(i + 0.5) * self.plan.arrivals_seconds
                                                                   / count) - datetime.now(UTC)).total_seconds()))
            kind = ("tombstone", "no key", "not JSON", "invalid field", "invalid plate", "another's camera")[i % 6]
            now = datetime.now(UTC).isoformat()
            base = {"type": "ViolationDetected", "event_id": f"chaos-{self.run}-bad-{i}", "camera_id": cam.id,
                    "plate": unused_plate, "taken_at": now, "location": {"lat": cam.lat, "lon": cam.lon},
                    "place": cam.place, "evidence": {"image_url": "https://evidence.chaos/bad.jpg"}}
            key, value = {
                "tombstone": (self.rng.choice(plates).encode(), None),
                "no key": (None, json.dumps(base).encode()),
                "not JSON": (b"chaos-bad", b"{not json"),
                "invalid field": (b"chaos-bad", json.dumps({**base, "location": {"lat": 95.0, "lon": cam.lon}}).encode()),
                "invalid plate": (b"chaos-bad", json.dumps({**base, "plate": "XX12345"}).encode()),
                "another's camera": (unused_plate.encode(), json.dumps({**base, "camera_id": HTTP_CAMERAS[0].id}).encode()),
            }[kind]
            await self.publisher.kafka(key, value)
            self.tally[f"malformed: {kind}"] += 1

    def cases_done(self) -> bool:
        """Every car that arrived has a case, every case is closed, every malformed message is a dead letter."""
        s = self.state
        return (self.arrived <= s.plates_with_case and s.opened <= s.closed_ids
                and s.dead_letters >= sum(v for k, v in self.tally.items() if k.startswith("malformed")))

    def every_sms_seen(self, sms_count: int) -> bool:
        """The SMS centre has as many messages as the warnings, tickets and warning notices on Kafka (without
        the notices, their SMS could stand in for tickets' still on their way, and the run end before those)."""
        s = self.state
        return sms_count >= len(s.warned) + len(s.tickets) + s.closed["cautioned"]

    async def cancel(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)


def ground_truth(plan: Plan) -> list[Car]:
    """The city's cars: distinct demo plates with a phone on record, each at one of the demo city's
    cameras, or for a car reported over HTTP at the HTTP integrator's camera beside it (those of a
    first-offence zone give a warning notice instead of a ticket), with its behaviour."""
    rng = random.Random(plan.seed)
    with_phone = [(p, ph) for p, _, ph in city.plates(2000) if ph]
    if plan.cars > len(with_phone) - 1:
        raise SystemExit(f"chaos: at most {len(with_phone) - 1} cars (demo plates with a phone)")
    rng.shuffle(with_phone)
    first_offence = {z[0] for z in city.ZONES if z[4]}
    cars = []
    for plate, phone in with_phone[:plan.cars]:
        i = rng.randrange(len(city.CAMERAS))
        behaviour = rng.choices(list(BEHAVIOUR_WEIGHTS), list(BEHAVIOUR_WEIGHTS.values()))[0]
        answers = {STAYS_ANSWERS: True, STAYS_SILENT: False}.get(behaviour, rng.random() < 0.5)
        via_http = rng.random() < plan.http_share
        camera = (HTTP_CAMERAS if via_http else city.CAMERAS)[i]
        cars.append(Car(plate, phone, behaviour, answers, via_http=via_http,
                        camera_id=camera.id, first_offence_zone=camera.zone in first_offence))
    return cars


async def watch_outputs(kafka: dict, names: list[str], on_output, stop: asyncio.Event) -> None:
    """Read ``names`` from their start as the login in ``kafka`` (no consumer group), until ``stop``."""
    consumer = AIOKafkaConsumer(*names, group_id=None, auto_offset_reset="earliest", **kafka)
    await consumer.start()
    try:
        while not stop.is_set():
            try:
                batches = await consumer.getmany(timeout_ms=500)
            except Exception as exc:  # noqa: BLE001 - the broker restarts: keep reading
                print(f"chaos: reading the outputs: {type(exc).__name__}: {exc}; again in 1 s")
                await asyncio.sleep(1)
                continue
            for tp, records in batches.items():
                for r in records:
                    if r.value is not None:
                        on_output(r.topic, json.loads(r.value))
    finally:
        await consumer.stop()


async def read_topic(kafka: dict, name: str, timeout: float = 120) -> list[Record]:
    """Every message of a topic, from its start to its end offsets as of now."""
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **kafka)
    await consumer.start()
    try:
        cluster = await consumer._client.fetch_all_metadata()  # the public topics() keeps no partitions
        tps = [TopicPartition(name, p) for p in sorted(cluster.partitions_for_topic(name) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        found: list[Record] = []
        deadline = time.monotonic() + timeout
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not read {name} to its end within {timeout:.0f} s")
            for tp, records in (await consumer.getmany(*tps, timeout_ms=1000)).items():
                found += [Record(r.partition, r.offset, datetime.fromtimestamp(r.timestamp / 1000, UTC), r.key, r.value,
                                 name) for r in records if r.offset < ends[tp]]
        return found
    finally:
        await consumer.stop()


def sms_received(log: Path, offset: int) -> list[tuple[str, str]]:
    """(receiver, text) of every message the fake SMS centre logged after ``offset``."""
    if not log.exists():
        return []
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", errors="replace")
    return [got for got in map(read_fakesmsc_line, text.splitlines()) if got]


class Faults:
    """The faults of a plan, at their times; each one written down with when it began and ended."""

    def __init__(self, plan: Plan, stack: PrivateStack, workers: Workers, started: float, say, run=None):
        self.plan = plan
        self.run_of = run
        """The ChaosRun (its settings and topics), for faults that look at the cluster."""
        self.windows: list[tuple[str, datetime, datetime]] = []
        """(fault, began, ended) in UTC, for the warnings' latency during and outside faults."""
        self.stack = stack
        self.workers = workers
        self.started = started
        self.say = say
        self.done: list[str] = []
        self.kannel_outages: list[tuple[datetime, datetime]] = []
        """When Kannel was down (stopped, then started again), wall clock: the judge splits the latency."""

    def now(self) -> float:
        return time.monotonic() - self.started

    async def _at(self, t: float) -> None:
        await asyncio.sleep(max(0.0, t - self.now()))

    async def _service(self, label: str, *steps: tuple[str, ...], pause: float = 0) -> None:
        """Run the services.sh steps (one command at a time per stack: a step may wait for another fault's)."""
        began, began_at = self.now(), datetime.now(UTC)
        self.say(f"[{began:5.0f} s] fault: {label} begins")
        times = []
        for i, step in enumerate(steps):
            if i and pause:
                await asyncio.sleep(pause)
            for attempt in range(3):
                try:
                    await self.stack.services(*step)
                    break
                except RuntimeError as exc:
                    if attempt == 2:
                        raise
                    self.say(f"[{self.now():5.0f} s] fault: {label}: {' '.join(step)} failed, trying again in 5 s "
                             f"({str(exc).splitlines()[0]}; see {self.stack.log_dir}/chaos-services.log)")
                    await asyncio.sleep(5)
                    step = ("start", step[-1])
            times.append(f"{' '.join(step)} done at {self.now():.0f} s")
        self.done.append(f"{label} (from {began:.0f} s: {', '.join(times)})")
        if label.startswith("Kannel down"):
            self.kannel_outages.append((began_at, datetime.now(UTC)))
        self.say(f"[{self.now():5.0f} s] fault: {label} over")

    async def kills(self) -> None:
        p = self.plan
        if not p.kill_every:
            return
        rng = random.Random(p.seed)
        t, n = p.kill_every, 0
        while t < p.arrivals_seconds and (p.kills is None or n < p.kills):
            await self._at(t)
            while self.workers.rolling:
                await asyncio.sleep(1)
            i = n % len(self.workers.procs)
            began = datetime.now(UTC)
            self.workers.kill_and_restart(i)
            self.windows.append((f"worker {i} SIGKILLed (+{p.kill_window:.0f} s)", began,
                                 began + timedelta(seconds=p.kill_window)))
            n += 1
            t = self.now() + p.kill_every + rng.uniform(-3, 3)
        if n:
            self.done.append(f"worker SIGKILLed and restarted {n} times, every ~{p.kill_every:.0f} s")

    async def run(self) -> None:
        await asyncio.gather(self.kills(), self.services_in_turn())

    async def services_in_turn(self) -> None:
        """The service faults in time order, one after the other: scripts/services.sh changes one stack
        one command at a time, so a Kannel start asked during a broker restart would wait for it."""
        p = self.plan
        planned = []
        if p.broker_restart_at is not None:
            planned.append((p.broker_restart_at, "broker restart", (("restart", "kafka"),), 0.0))
        if p.postgres_restart_at is not None:
            planned.append((p.postgres_restart_at, "PostgreSQL restart", (("restart", "postgres"),), 0.0))
        if p.kannel_down_at is not None:
            planned.append((p.kannel_down_at, f"Kannel down {p.kannel_down_for:.0f} s",
                            (("stop", "kannel"), ("start", "kannel")), p.kannel_down_for))
        for t, label, steps, pause in sorted(planned):
            await self._at(t)
            await self._service(label, *steps, pause=pause)


class ChaosRun:
    """One run: set up (a fresh database and topics on the private stack, an integrator key, the
    workers), drive the city through the faults, wait for every case to close, read Kafka, judge."""

    def __init__(self, plan: Plan, stack: PrivateStack, say=print, faults=None):
        self.plan = plan
        self.faults_class = faults or Faults
        self.stack = stack
        self.say = say
        self.id = uuid.uuid4().hex[:8]
        self.db_name = f"pw_chaos_{self.id}"
        self.workers: Workers | None = None
        self.publisher: Publisher | None = None
        self.city: City | None = None
        self.tasks: list[asyncio.Task] = []

    async def setup(self) -> None:
        self.stack.log_dir.mkdir(parents=True, exist_ok=True)
        self.client_log = logging.FileHandler(self.stack.log_dir / f"chaos-{self.id}-clients.log")
        self.client_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        clients = logging.getLogger("aiokafka")
        clients.addHandler(self.client_log)
        clients.propagate = False  # the cameras' Kafka clients complain through every outage: to a file
        quiet_repeats(clients)
        env = await self.stack.client_env()
        self.sms_log = Path(env["PW_FAKESMSC_LOG"])
        self.sms_offset = self.sms_log.stat().st_size if self.sms_log.exists() else 0
        db_url = self.stack.database_url(self.db_name)
        admin = await asyncpg.connect(self.stack.admin_url)
        await admin.execute(f'CREATE DATABASE "{self.db_name}"')
        await admin.close()
        await self.stack.database_ready(self.db_name)
        self.settings = Settings(database_url=db_url, kafka_bootstrap=env["PW_KAFKA_BOOTSTRAP"],
                                 kafka_sasl_username=env.get("PW_KAFKA_SASL_USERNAME"),
                                 kafka_sasl_password=env.get("PW_KAFKA_SASL_PASSWORD", ""),
                                 kafka_sasl_mechanism=env.get("PW_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
                                 topic_prefix=f"chaos{self.id}.", app_id=f"pw-chaos-{self.id}",
                                 topic_replication_factor=int(env.get("PW_TOPIC_REPLICATION_FACTOR", 1)),
                                 topic_min_insync_replicas=int(env.get("PW_TOPIC_MIN_INSYNC_REPLICAS", 1)))
        self.kafka = bootstrap.kafka_client_options(self.settings)
        """The pipeline's own login: the live feed (case-events, tickets, dead letters) and the judge."""
        worker_env = {**self.stack.env(), **env, "PW_DATABASE_URL": db_url,
                      "PW_TOPIC_PREFIX": self.settings.topic_prefix, "PW_APP_ID": self.settings.app_id,
                      "PW_SMS_GATEWAY": "kannel", "PW_SMS_REPORT_SECRET": secrets.token_urlsafe(32),
                      "PW_LOG_LEVEL": "info", **self.plan.worker_env()}
        self.http_integrator = f"chaos-http-{self.id}"
        conn = await asyncpg.connect(db_url)
        try:
            await init_connection(conn)
            await migrate(conn)
            await city.load(conn, plate_count=2000)  # registers the demo cameras to the demo integrator
            key = self._parkwarden(worker_env, "integrators", "add", self.http_integrator, "--no-kafka-login")
            for camera in HTTP_CAMERAS:
                await city.register(conn, camera, self.http_integrator)
            self.cameras = {c.id: c for c in await registry.listing(conn)}
        finally:
            await conn.close()
        await bootstrap.create_topics(self.settings, [city.INTEGRATOR, self.http_integrator])
        demo_password = self._parkwarden(worker_env, "integrators", "kafka-login", city.INTEGRATOR)
        self.demo_kafka = {**self.kafka, "sasl_plain_username": city.INTEGRATOR,
                           "sasl_plain_password": demo_password} if self.settings.kafka_sasl_username else self.kafka
        """The demo integrator's own login: its cameras write camera-events.demo and read camera-commands.demo."""
        self.workers = Workers(self.plan.workers, worker_env, self.stack.web_port, self.stack.log_dir, self.id)
        for i in range(self.plan.workers):
            self.workers.start(i)
        self.say(f"starting {self.plan.workers} workers (logs in {self.stack.log_dir.relative_to(ROOT)}/"
                 f"chaos-{self.id}-worker-*.log)...")
        await self.workers.ready()
        self.until = time.monotonic() + 60 + self.plan.arrivals_seconds + self.plan.drain_seconds
        self.publisher = Publisher(self.demo_kafka, self.topic(topics.CAMERA_EVENTS, city.INTEGRATOR),
                                   [f"http://127.0.0.1:{p}/v1/camera-events" for p in self.workers.ports], key,
                                   self.until)
        await self.publisher.start()
        car_parks = AIOKafkaProducer(acks="all", **self.kafka)  # the city's car parks: no integrator's
        await car_parks.start()
        try:
            now = datetime.now(UTC)
            for cp in city.CAR_PARKS:
                await car_parks.send_and_wait(self.topic(topics.CAR_PARK_STATUS), encode(
                    events.CarParkStatus(car_park_id=cp[0], free_spaces=40, reported_at=now)), key=cp[0].encode())
        finally:
            await car_parks.stop()

    def _parkwarden(self, env: dict[str, str], *args: str) -> str:
        """Run the parkwarden command on this run's stack; its first line of standard output (a key, a password)."""
        done = subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, cwd=ROOT, capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise RuntimeError(f"parkwarden {' '.join(args)} failed ({done.returncode}): {done.stderr[-1000:]}")
        return done.stdout.strip().splitlines()[0]

    def topic(self, t: topics.Topic, integrator: str | None = None) -> str:
        """A topic of this run; with ``integrator``: its own camera-events or camera-commands topic."""
        name = self.settings.topic(t.name)
        if integrator is None:
            return name
        return (topics.camera_events_of if t is topics.CAMERA_EVENTS else topics.camera_commands_of)(name, integrator)

    def camera_topics(self, t: topics.Topic) -> list[str]:
        """The demo integrator's and the HTTP integrator's camera-events (or camera-commands) topics."""
        return [self.topic(t, city.INTEGRATOR), self.topic(t, self.http_integrator)]

    def sms(self) -> list[tuple[str, str]]:
        return sms_received(self.sms_log, self.sms_offset)

    def progress(self) -> str:
        s = self.city.state
        closed = ", ".join(f"{k} {v}" for k, v in sorted(s.closed.items()))
        return (f"[{self.faults.now():5.0f} s] cars arrived {len(self.city.arrived)}/{self.plan.cars} · events acked "
                f"{len(self.publisher.acknowledged)} · warned {len(s.warned)} · rechecks {len(s.rechecks)} · tickets "
                f"{len(s.tickets)} · closed {len(s.closed_ids)} ({closed}) · open {len(s.opened - s.closed_ids)} · "
                f"dead letters {s.dead_letters} · SMS at the centre {len(self.sms())} · worker kills {self.workers.kills} · "
                f"load {os.getloadavg()[0]:.1f}")

    def _check(self) -> None:
        """A task of the harness that failed is a bug of the harness: stop with it. A worker that exited
        on its own is started again (a supervisor would) and the report says so."""
        self.workers.restart_exited(self.faults.now())
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()

    async def drive(self) -> None:
        """Cars arrive and live their lives while the faults happen; then wait for every case to close."""
        cars = ground_truth(self.plan)
        self.cars = cars
        self.faults = self.faults_class(self.plan, self.stack, self.workers, time.monotonic(), self.say, run=self)
        self.city = City(self.plan, cars, self.publisher, self.id, datetime.now(UTC) + timedelta(seconds=1), self.until)
        self.stop_watching = asyncio.Event()
        feed = [self.topic(t) for t in (topics.CASE_EVENTS, topics.TICKETS, topics.DEAD_LETTERS)]
        feed.append(self.topic(topics.CAMERA_COMMANDS, self.http_integrator))  # that integrator has no Kafka login
        watching = [asyncio.create_task(watch_outputs(self.kafka, feed, self.city.on_output, self.stop_watching)),
                    asyncio.create_task(watch_outputs(  # the demo cameras read their own commands, as themselves
                        self.demo_kafka, [self.topic(topics.CAMERA_COMMANDS, city.INTEGRATOR)], self.city.on_output,
                        self.stop_watching))]
        unused = next(p for p, _, ph in city.plates(2000) if ph and p not in self.city.cars)
        faults = asyncio.create_task(self.faults.run())
        self.tasks = [*watching, faults, asyncio.create_task(
            self.city.malformed(max(5, int(self.plan.cars * self.plan.malformed_share)), unused))]
        self.tasks += [asyncio.create_task(self.city.live(car)) for car in cars]
        last = time.monotonic()
        while (len(self.city.arrived) < len(cars) or not faults.done()) and time.monotonic() < self.until:
            await asyncio.sleep(1)
            self._check()
            if time.monotonic() - last >= 15:
                self.say(self.progress())
                last = time.monotonic()
        self.say(self.progress() + " · arrivals and faults over; waiting for every case to close")
        drain_end = time.monotonic() + self.plan.drain_seconds
        done_since = None
        while time.monotonic() < drain_end:
            await asyncio.sleep(1)
            self._check()
            if time.monotonic() - last >= 15:
                self.say(self.progress())
                last = time.monotonic()
            if not self.city.cases_done():
                done_since = None
                continue
            done_since = done_since or time.monotonic()
            quiet = time.monotonic() - done_since
            if quiet >= 30 or (quiet >= 5 and self.city.every_sms_seen(len(self.sms()))):
                break
        else:
            self.say(f"chaos: not every case closed within {self.plan.drain_seconds:.0f} s of the last arrival")
        self.say(self.progress())

    async def stop_city(self) -> None:
        if self.city is not None:
            self.stop_watching.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.city is not None:
            await self.city.cancel()

    async def judge(self) -> Report:
        self.say("reading every topic from the start...")
        read = {}
        for t in (topics.CAMERA_EVENTS, topics.CAMERA_COMMANDS):
            read[t] = [r for name in self.camera_topics(t) for r in await read_topic(self.kafka, name)]
        for t in (topics.CASE_EVENTS, topics.TICKETS, topics.DEAD_LETTERS):
            read[t] = await read_topic(self.kafka, self.topic(t))
        out = {t: [json.loads(r.value) for r in records if r.value is not None]
               for t, records in read.items() if t != topics.CAMERA_EVENTS}
        report = judge(self.cars, read[topics.CAMERA_EVENTS], out[topics.CASE_EVENTS], out[topics.TICKETS],
                       out[topics.CAMERA_COMMANDS], out[topics.DEAD_LETTERS], self.sms(), self.plan.rules,
                       self.topic(topics.CAMERA_EVENTS), self.cameras, self.publisher.acknowledged,
                       self.faults.kannel_outages)
        report.notes.append("the city sent: " + ", ".join(f"{k} {v}" for k, v in sorted(self.city.tally.items())))
        report.notes.append("delivery: " + ", ".join(f"{k} {v}" for k, v in sorted(self.publisher.tally.items())))
        report.notes.append("faults: " + "; ".join(self.faults.done))
        report.worker_exits = self.workers.exits
        return report

    async def close(self, keep_services: bool) -> None:
        await self.stop_city()
        if hasattr(self, "client_log"):
            logging.getLogger("aiokafka").removeHandler(self.client_log)
            logging.getLogger("aiokafka").propagate = True
            self.client_log.close()
        if self.workers is not None:
            self.workers.stop()
        if self.publisher is not None:
            await self.publisher.close()
        if keep_services:
            self.say(f"the private stack keeps running (PW_VAR_DIR={self.stack.var_dir}, database {self.db_name}); "
                     f"the commands that ran it are in {self.stack.log_dir}/chaos-services.log")
            return
        try:
            admin = await asyncpg.connect(self.stack.admin_url)
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            await admin.close()
        except (OSError, asyncpg.PostgresError) as exc:
            self.say(f"chaos: could not drop {self.db_name}: {exc}")
        await self.stack.stop()


async def run(plan: Plan, stack: PrivateStack, keep_services: bool = False, say=print, faults=None) -> Report:
    """One chaos run on ``stack`` (started here, stopped at the end unless ``keep_services``)."""
    chaos = ChaosRun(plan, stack, say, faults)
    say(f"chaos {chaos.id}: {plan.cars} cars over {plan.arrivals_seconds:.0f} s, window {plan.window:.0f} s, "
        f"lateness {plan.lateness:.0f} s, capture tolerance {plan.capture_tolerance:.0f} s, recheck wait "
        f"{plan.recheck_wait:.0f} s; private stack in {stack.var_dir} (scripts/services.sh, its output in "
        f"{stack.log_dir.relative_to(ROOT)}/chaos-services.log)")
    try:
        await stack.start()
        await chaos.setup()
        await chaos.drive()
        await chaos.stop_city()
        report = await chaos.judge()
        report.windows = chaos.faults.windows
        report.notes += getattr(chaos.faults, "figures", [])
        return report
    finally:
        await chaos.close(keep_services)


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg()) + " (1, 5, 15 min)"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cars", type=int)
    parser.add_argument("--arrivals-seconds", type=float)
    parser.add_argument("--minutes", type=float, help="the arrivals' length in minutes (as --arrivals-seconds)")
    parser.add_argument("--cluster", action="store_true",
                        help="on a 3-broker Kafka cluster and a Patroni pair (bench/chaos_cluster.py), var/chaos-cluster")
    parser.add_argument("--no-diverge", action="store_true",
                        help="--cluster: kill the primary without first stopping its WAL sender (no pg_rewind needed)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--small", action="store_true", help="the test suite's smaller run")
    parser.add_argument("--keep-services", action="store_true", help="leave the private stack running afterwards")
    args = parser.parse_args()
    plan = Plan.small() if args.small else Plan.cluster() if args.cluster else Plan()
    if args.minutes is not None:
        args.arrivals_seconds = args.minutes * 60
    changes = {k: v for k, v in (("cars", args.cars), ("arrivals_seconds", args.arrivals_seconds),
                                 ("seed", args.seed)) if v is not None}
    plan = replace(plan, **changes)
    if args.no_diverge:
        plan = replace(plan, diverge_for=0)
    print(f"machine: {machine()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; load average {load_average()}")
    stack, faults = PrivateStack(), None
    if args.cluster:
        from bench.chaos_cluster import ClusterFaults, ClusterStack
        stack, faults = ClusterStack(), ClusterFaults
    report = await run(plan, stack, keep_services=args.keep_services, say=lambda line: print(line, flush=True),
                       faults=faults)
    print(report.table())
    if args.cluster:
        from bench.chaos_cluster import latency_by_window
        print(latency_by_window(report))
    print(f"load average at the end: {load_average()}")
    sys.exit(0 if report.all_zeros() else 1)


if __name__ == "__main__":
    asyncio.run(main())
