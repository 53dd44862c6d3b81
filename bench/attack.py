"""Strangers against a worker: warning latency with and without an attack, on the local stack.

One worker (real Kafka, PostgreSQL, and Kannel by default) takes violations published at a steady
low rate, first undisturbed, then for the same time while strangers on loopback send it
  * bad console logins (random names and passwords) at --logins per second, and
  * ingest requests with random API keys (``POST /v1/camera-events``) at --ingest per second.
Reported per phase: camera event -> warning accepted (p50/p99, from PostgreSQL's timestamps, as in
bench/e2e.py), /healthz answer times sampled twice a second (the worker's event loop), and what
the strangers were answered.

The strangers run in a process of their own, so that their work does not delay the publishing and
timing of the violations (they still share the machine's cores with the worker, as an attacker on
the same host would). Bounded: each phase lasts --seconds; the strangers send at most rate x seconds
requests with at most --in-flight outstanding (a request that would exceed it is skipped and
counted); every address is loopback (--addresses > 1 spreads the strangers over 127.0.1.1,
127.0.1.2, ...: a "distributed" attack that the per-address limits alone do not stop). Not a test:
it prints figures for the README. Usage:
    ./dev bench attack [--seconds 30] [--rate 5] [--logins 200] [--ingest 200] [--addresses 1]
"""

import argparse
import asyncio
import collections
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime

import aiohttp
from aiokafka import AIOKafkaProducer

from bench.e2e import ROOT, BenchStack, bench_stack, machine, percentile, progress
from pipeline import bootstrap
from pipeline.config import Settings
from pipeline.demo import city
from schemas import events, topics
from schemas.codec import encode

WEB = "http://127.0.0.1:6100"


class Strangers:
    """Requests at a steady rate from loopback addresses, at most ``in_flight`` outstanding."""

    def __init__(self, addresses: int, in_flight: int):
        hosts = ["127.0.0.1"] if addresses <= 1 else [f"127.0.1.{i % 254 + 1}" for i in range(addresses)]
        self.sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(h, 0), limit=0),
                                               timeout=aiohttp.ClientTimeout(total=30)) for h in hosts]
        self.in_flight = in_flight
        self.outstanding = 0
        self.answers: collections.Counter = collections.Counter()
        self.sent = 0
        self.skipped = 0
        self._tasks: set[asyncio.Task] = set()

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=35)
        for s in self.sessions:
            await s.close()

    async def run(self, what: str, per_second: float, seconds: float, request) -> None:
        """Call ``request(session)`` ``per_second`` times a second for ``seconds``."""
        started = time.monotonic()
        for i in range(int(per_second * seconds)):
            await asyncio.sleep(max(0.0, started + i / per_second - time.monotonic()))
            if self.outstanding >= self.in_flight:
                self.skipped += 1
                continue
            self.outstanding += 1
            self.sent += 1
            task = asyncio.create_task(self._one(what, request, self.sessions[i % len(self.sessions)]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _one(self, what: str, request, session: aiohttp.ClientSession) -> None:
        try:
            status = await request(session)
            self.answers[f"{what} {status}"] += 1
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            self.answers[f"{what} {type(exc).__name__}"] += 1
        finally:
            self.outstanding -= 1


async def bad_login(session: aiohttp.ClientSession) -> int:
    form = {"name": f"x{secrets.token_hex(6)}", "password": secrets.token_urlsafe(12), "next": "/console/"}
    async with session.post(f"{WEB}/console/login", data=form, allow_redirects=False) as r:
        await r.read()
        return r.status


def bad_ingest(body: bytes):
    async def send(session: aiohttp.ClientSession) -> int:
        headers = {"Authorization": f"Bearer pwk_{secrets.token_urlsafe(24)}", "Content-Type": "application/json"}
        async with session.post(f"{WEB}/v1/camera-events", data=body, headers=headers) as r:
            await r.read()
            return r.status
    return send


async def health_times(stop: asyncio.Event) -> list[float]:
    """/healthz answer times (ms), twice a second until ``stop``."""
    times = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                async with http.get(f"{WEB}/healthz") as r:
                    await r.read()
                times.append((time.monotonic() - sent) * 1000)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                times.append(30_000.0)
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
    return times


async def publish_violations(stack: BenchStack, producer: AIOKafkaProducer, plates: list[str], phase: str,
                             rate: float) -> None:
    topic = topics.camera_events_of(stack.settings.topic(topics.CAMERA_EVENTS.name), city.INTEGRATOR)
    started = time.monotonic()
    for i, plate in enumerate(plates):
        camera = city.CAMERAS[i % len(city.CAMERAS)]
        violation = events.ViolationDetected(
            event_id=f"bench-{stack.run}-{phase}-{i:06d}", camera_id=camera.id, plate=plate,
            taken_at=datetime.now(UTC), location=events.Location(lat=camera.lat, lon=camera.lon),
            place=camera.place, zone=camera.zone, evidence=events.Evidence(image_url=f"https://evidence.bench/{i}.jpg"))
        await producer.send_and_wait(topic, encode(violation), key=plate.encode())
        await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.monotonic()))


async def strangers_main(args) -> None:
    """The strangers' process: send for ``args.seconds``, then print what they were answered (JSON)."""
    strangers = Strangers(args.addresses, args.in_flight)
    camera = city.CAMERAS[0]
    body = encode(events.VehicleObserved(
        event_id=f"stranger-{secrets.token_hex(4)}", camera_id=camera.id, plate="浙A12345", taken_at=datetime.now(UTC),
        location=events.Location(lat=camera.lat, lon=camera.lon), place=camera.place, zone=camera.zone))
    print("ready", flush=True)
    await asyncio.gather(strangers.run("login", args.logins, args.seconds, bad_login),
                         strangers.run("ingest", args.ingest, args.seconds, bad_ingest(body)))
    await strangers.close()
    print(json.dumps({"answers": strangers.answers, "sent": strangers.sent, "skipped": strangers.skipped,
                      "cpu_s": time.process_time()}))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from /proc."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def phase(stack: BenchStack, producer: AIOKafkaProducer, plates: list[str], name: str, args,
                attack: bool) -> dict:
    worker = stack.procs[0].pid
    cpu_before, started = cpu_seconds(worker), time.monotonic()
    stop = asyncio.Event()
    health = asyncio.create_task(health_times(stop))
    strangers = None
    if attack:
        strangers = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.attack", "--strangers", "--seconds", str(args.seconds),
            "--logins", str(args.logins), "--ingest", str(args.ingest), "--addresses", str(args.addresses),
            "--in-flight", str(args.in_flight), cwd=ROOT, stdout=subprocess.PIPE)
        assert (await asyncio.wait_for(strangers.stdout.readline(), 60)).strip() == b"ready"
    print(f"  {name}: {len(plates)} violations at {args.rate:g}/s"
          + (f", {args.logins:g} bad logins/s and {args.ingest:g} bad-key ingest requests/s" if attack else ""),
          file=sys.stderr)
    try:
        await publish_violations(stack, producer, plates, name, args.rate)
        worker_cores = (cpu_seconds(worker) - cpu_before) / (time.monotonic() - started)
        load = os.getloadavg()[0]
        sent = {"answers": {}, "sent": 0, "skipped": 0, "cpu_s": 0.0}
        if strangers is not None:
            out, _ = await asyncio.wait_for(strangers.communicate(), 120)
            if strangers.returncode != 0:
                raise SystemExit(f"bench: the strangers' process exited with {strangers.returncode}")
            sent = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        if strangers is not None and strangers.returncode is None:
            strangers.kill()
            await strangers.wait()
    stop.set()
    return {"health_ms": await health, "worker_cores": worker_cores, "load": load,
            "strangers_cores": sent.pop("cpu_s") / args.seconds, **sent}


async def latencies(stack: BenchStack, phase_name: str, n: int) -> list[float]:
    """camera event -> warning accepted (ms) of a phase's violations, once all are accepted."""
    started = time.monotonic()
    while True:
        rows = await stack.pool.fetch(
            """SELECT extract(epoch FROM s.accepted_at - c.detected_at) * 1000 AS ms FROM sms_messages s
               JOIN cases c ON c.id = s.case_id
               WHERE s.kind = 'warning' AND s.accepted_at IS NOT NULL AND c.violation->>'event_id' LIKE $1""",
            f"bench-{stack.run}-{phase_name}-%")
        progress(f"{phase_name} warnings accepted", len(rows), n, started)
        if len(rows) >= n:
            print(file=sys.stderr)
            return sorted(float(r["ms"]) for r in rows)
        stack.check_workers()
        if time.monotonic() - started > 300:
            raise SystemExit(f"\nbench: only {len(rows)}/{n} {phase_name} warnings accepted after 300 s; "
                             f"see {stack.log_dir}")
        await asyncio.sleep(0.5)


def line(name: str, ms: list[float], result: dict) -> str:
    health = sorted(result["health_ms"])
    text = (f"  {name}: camera event -> warning accepted p50 {statistics.median(ms):,.0f} ms, "
            f"p99 {percentile(ms, 0.99):,.0f} ms, max {ms[-1]:,.0f} ms ({len(ms)} warnings); "
            f"/healthz p50 {statistics.median(health):,.0f} ms, p99 {percentile(health, 0.99):,.0f} ms"
            f"\n    worker CPU {result['worker_cores']:.2f} cores; machine load average {result['load']:.1f}")
    if result["sent"] or result["skipped"]:
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(result["answers"].items()))
        text += (f"\n    strangers: {result['sent']} requests sent ({answers}); {result['skipped']} skipped "
                 f"(in-flight cap); their own CPU {result['strangers_cores']:.2f} cores")
    return text


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30, help="length of each phase")
    parser.add_argument("--rate", type=float, default=5, help="violations per second, in both phases")
    parser.add_argument("--logins", type=float, default=200, help="bad console logins per second in the attack")
    parser.add_argument("--ingest", type=float, default=200, help="bad-key ingest requests per second in the attack")
    parser.add_argument("--addresses", type=int, default=1, help="loopback addresses the strangers come from")
    parser.add_argument("--in-flight", type=int, default=400, help="most stranger requests outstanding at once")
    parser.add_argument("--gateway", choices=["kannel", "file"], default="kannel")
    parser.add_argument("--strangers", action="store_true", help=argparse.SUPPRESS)  # the strangers' process
    args = parser.parse_args()
    if not 0 < args.seconds <= 300 or args.logins > 1000 or args.ingest > 1000 or args.addresses > 254:
        raise SystemExit("bench: keep it bounded: --seconds up to 300, rates up to 1000/s, up to 254 addresses")
    if args.strangers:
        return await strangers_main(args)
    base = Settings()
    print(f"machine: {machine()}")
    n = int(args.rate * args.seconds)
    async with bench_stack(2 * n + 100, 1, base, PW_SMS_GATEWAY=args.gateway) as stack:
        plates = [r["plate"] for r in await stack.pool.fetch(
            "SELECT p.plate FROM plate_registry p JOIN contact_registry c USING (owner_id) LIMIT $1", 2 * n)]
        assert len(plates) == 2 * n, "not enough plates with a phone"
        producer = AIOKafkaProducer(acks="all", linger_ms=5, **bootstrap.kafka_client_options(stack.settings))
        await producer.start()
        try:
            now = datetime.now(UTC)
            for cp in city.CAR_PARKS:
                await producer.send_and_wait(stack.settings.topic(topics.CAR_PARK_STATUS.name), encode(
                    events.CarParkStatus(car_park_id=cp[0], free_spaces=40, reported_at=now)), key=cp[0].encode())
            await asyncio.sleep(3)
            stack.check_workers()
            quiet = await phase(stack, producer, plates[:n], "quiet", args, attack=False)
            quiet_ms = await latencies(stack, "quiet", n)
            attacked = await phase(stack, producer, plates[n:], "attack", args, attack=True)
            attack_ms = await latencies(stack, "attack", n)
            stack.check_workers()
            memory = stack.memory()
        finally:
            await producer.stop()
    print(f"1 worker, {args.gateway} gateway, violations at {args.rate:g}/s for {args.seconds:g} s per phase; "
          f"strangers from {args.addresses} loopback address(es)")
    print(line("without attack", quiet_ms, quiet))
    print(line(f"with {args.logins:g} bad logins/s + {args.ingest:g} bad-key ingest requests/s", attack_ms, attacked))
    print(f"  worker memory (resident): peak {max(m['VmHWM'] for m in memory):.0f} MiB")
    print(json.dumps({"p99_ms": {"without": percentile(quiet_ms, 0.99), "with": percentile(attack_ms, 0.99)}}))


if __name__ == "__main__":
    asyncio.run(main())
