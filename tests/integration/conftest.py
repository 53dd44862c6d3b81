"""Integration tier: the real Kafka and PostgreSQL that `scripts/services.sh start` runs.

Each test gets its own database (a copy of the schema plus the demo city), its own topic prefix
and consumer group, and its own worker processes, so tests cannot see each other's events.
A missing service is an error, never a skip.
"""

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline import bootstrap
from pipeline.cases.store import init_connection
from pipeline.config import Settings
from pipeline.db.migrate import migrate
from pipeline.demo import city
from schemas import events, topics
from schemas.codec import encode
from tests.local_server import free_port  # noqa: F401 - tests import it from here

ROOT = Path(__file__).resolve().parents[2]
BASE = Settings()
ADMIN_URL = BASE.database_url.get_secret_value()
KAFKA = bootstrap.kafka_client_options(BASE)
"""How tests reach the broker: its address and, when it asks for one, the pipeline's SASL login."""

SHARED_KANNEL = pytest.mark.xdist_group("shared-kannel")
"""For a test whose SMS go through the shared Kannel: `./dev test` runs tests three at a time, and every test's
city has the same plates and phones, so a test that counts what the fake SMS centre received (var/log/fakesmsc.log)
or what Kannel logged must not overlap another that sends through it. Tests with this mark run one after another."""


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def grouped_as_marked(request):
    """`./dev test` runs the tests of an xdist_group one after another (--dist loadgroup). pytest-xdist 3.8 on
    pytest 9.2 drops the groups without a word (pytest-dev/pytest-xdist#1386): such a test fails instead of
    running beside the others of its group."""
    if request.config.getoption("loadgroup", False) and request.node.get_closest_marker("xdist_group") \
            and "@" not in request.node.nodeid:
        pytest.fail("--dist loadgroup ignored this test's xdist_group mark (pytest-dev/pytest-xdist#1386; "
                    "pyproject.toml keeps pytest below 9.2 for it)", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
async def services_running():
    try:
        conn = await asyncpg.connect(ADMIN_URL, timeout=5)
        await conn.close()
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL is not reachable ({type(exc).__name__}); run `scripts/services.sh start`", pytrace=False)
    producer = AIOKafkaProducer(request_timeout_ms=5000, **KAFKA)
    try:
        await asyncio.wait_for(producer.start(), 15)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"Kafka is not reachable ({type(exc).__name__}); run `scripts/services.sh start`", pytrace=False)
    finally:
        await producer.stop()


async def drop_database(name: str) -> None:
    """Drop a test database; an autovacuum worker on it (not ours to end) may hold it a moment."""
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        for attempt in range(20):
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectInUseError):
                if attempt == 19:
                    raise
                await asyncio.sleep(0.5)
    finally:
        await admin.close()


@pytest.fixture
async def database():
    """An empty database of the test's own (its URL), dropped afterwards."""
    name = f"pw_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        await drop_database(name)


async def wait_for(check, timeout: float = 30, what: str = "condition", every: float = 0.1):
    """Poll an async ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)
        await asyncio.sleep(every)


async def sleep_until(moment: datetime) -> None:
    """Sleep until a wall-clock moment (a case's deadline, say); at once if it has passed."""
    await asyncio.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


class Worker:
    """One `parkwarden worker` process, started and stopped by its PID."""

    def __init__(self, name: str, env: dict, log_dir: Path, web_port: int | None = None):
        self.name = name
        self.env = {**env, "PW_WEB_PORT": str(web_port or free_port()), "PW_WORKER_NAME": name}
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Worker":
        self._log = self.log_path.open("a")
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline", "worker"], env=self.env, cwd=ROOT,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        return self

    async def ready(self, timeout: float = 60) -> None:
        async def joined():
            if self.proc.poll() is not None:
                pytest.fail(f"worker {self.name} exited with {self.proc.returncode}; see {self.log_path}", pytrace=False)
            return "Worker]: Ready" in self.log_path.read_text(errors="replace")
        await wait_for(joined, timeout, f"worker {self.name} to join the consumer group")

    async def owns(self, partitions: str, timeout: float = 60) -> None:
        """Wait until this worker's latest assignment gives it ``partitions`` (e.g. "{0-3}") of the camera events."""
        async def assigned():
            log = self.log_path.read_text(errors="replace")
            latest = log.rsplit("Setting newly assigned partitions", 1)
            return len(latest) == 2 and any(
                "camera-events" in line and partitions in line for line in latest[1].splitlines()[:8])
        await wait_for(assigned, timeout, f"worker {self.name} to own camera-events partitions {partitions}")

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Stack:
    """A test's own slice of the real services, with helpers to publish and to look."""

    def __init__(self, tmp_path: Path):
        self.id = uuid.uuid4().hex[:10]
        self.db_name = f"pw_test_{self.id}"
        self.db_url = ADMIN_URL.rsplit("/", 1)[0] + "/" + self.db_name
        self.prefix = f"t{self.id}."
        self.tmp = tmp_path
        self.sms_file = tmp_path / "handsets.jsonl"
        self.window = 4.0
        self.env = {
            **os.environ,
            "PW_DATABASE_URL": self.db_url,
            "PW_TOPIC_PREFIX": self.prefix,
            "PW_APP_ID": f"pw-test-{self.id}",
            "PW_SMS_FILE": str(self.sms_file),
            "PW_SMS_GATEWAY": "file",
            "PW_WINDOW_SECONDS": str(self.window),
            "PW_LATENESS_SECONDS": "1",
            "PW_CAPTURE_TOLERANCE_SECONDS": "1",
            "PW_RECHECK_WAIT_SECONDS": "3",
            "PW_TICK_SECONDS": "0.2",
            "PW_SMS_TIMEOUT_SECONDS": "2",
            "PW_SMS_IN_DOUBT_SECONDS": "4",
            "PW_SMS_REPORT_SECRET": secrets.token_urlsafe(32),
            "PW_LOG_LEVEL": "info",
        }
        self.settings = Settings(database_url=self.db_url, topic_prefix=self.prefix, app_id=f"pw-test-{self.id}")
        self.workers: list[Worker] = []
        self.pool: asyncpg.Pool | None = None
        self.producer: AIOKafkaProducer | None = None
        self._seq = 0

    async def start(self) -> None:
        admin = await asyncpg.connect(ADMIN_URL)
        await admin.execute(f'CREATE DATABASE "{self.db_name}"')
        await admin.close()
        self.pool = await asyncpg.create_pool(self.db_url, min_size=1, max_size=4, init=init_connection)
        async with self.pool.acquire() as conn:
            await migrate(conn)
            await city.load(conn, plate_count=300)
        await bootstrap.create_topics(self.settings, [city.INTEGRATOR])
        self.producer = AIOKafkaProducer(acks="all", **KAFKA)
        await self.producer.start()

    async def close(self) -> None:
        for w in self.workers:
            w.stop()
        if self.producer:
            await self.producer.stop()
        if self.pool:
            await self.pool.close()
        await drop_database(self.db_name)
        await self.delete_topics()

    async def delete_topics(self) -> None:
        """Delete this test's topics: a broker holds files open for every partition it keeps, and a
        suite makes thousands."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(request_timeout_ms=10_000, **KAFKA)
        try:
            await admin.start()
            mine = [t for t in await admin.list_topics() if t.startswith(self.prefix)]
            if mine:
                await admin.delete_topics(mine, timeout_ms=10_000)
        finally:
            await admin.close()

    def worker(self, name: str | None = None, web_port: int | None = None, **env) -> Worker:
        w = Worker(name or f"w{len(self.workers) + 1}", {**self.env, **env}, self.tmp, web_port)
        self.workers.append(w)
        return w.start()

    # publishing ---------------------------------------------------------------------------

    def topic(self, t: topics.Topic, integrator: str = city.INTEGRATOR) -> str:
        """The topic's name in this test; camera events and commands: the integrator's own topic (the demo's
        by default)."""
        name = self.settings.topic(t.name)
        return f"{name}.{integrator}" if t in (topics.CAMERA_EVENTS, topics.CAMERA_COMMANDS) else name

    async def publish(self, message, key: str | None = None, integrator: str = city.INTEGRATOR) -> None:
        t = topics.CAR_PARK_STATUS if isinstance(message, events.CarParkStatus) else topics.CAMERA_EVENTS
        key = key or getattr(message, "plate", None) or message.car_park_id
        await self.producer.send_and_wait(self.topic(t, integrator), encode(message), key=key.encode())

    async def publish_raw(self, raw: bytes, key: bytes = b"raw", integrator: str = city.INTEGRATOR) -> None:
        await self.producer.send_and_wait(self.topic(topics.CAMERA_EVENTS, integrator), raw, key=key)

    async def register_camera(self, camera: city.Camera, integrator: str = city.INTEGRATOR) -> None:
        """Register a test's own camera (or move a demo camera to ``integrator``)."""
        async with self.pool.acquire() as conn:
            await city.register(conn, camera, integrator)

    async def add_integrator(self, name: str, kind: str = "publisher", cameras: tuple[city.Camera, ...] = ()) -> str:
        """A new integrator, owning ``cameras`` (taken from whoever owned them); returns its API key."""
        from pipeline.ingest import keys

        async with self.pool.acquire() as conn:
            _, key = await keys.add(conn, name, kind)
        for camera in cameras:
            await self.register_camera(camera, name)
        await bootstrap.create_topics(self.settings, [name])
        return key

    async def all_car_parks_free(self, free: int = 25) -> None:
        now = datetime.now(UTC)
        for cp in city.CAR_PARKS:
            await self.publish(events.CarParkStatus(car_park_id=cp[0], free_spaces=free, reported_at=now))

    def event_id(self) -> str:
        self._seq += 1
        return f"test-{self.id}-{self._seq:05d}"

    def violation(self, plate: str, camera: city.Camera = city.CAMERAS[0], at: datetime | None = None):
        return events.ViolationDetected(
            event_id=self.event_id(), camera_id=camera.id, plate=plate, taken_at=at or datetime.now(UTC),
            location=events.Location(lat=camera.lat, lon=camera.lon), place=camera.place, zone=camera.zone,
            evidence=events.Evidence(image_url=f"https://evidence.test/{self._seq}.jpg"))

    def observation(self, plate: str, camera: city.Camera = city.CAMERAS[0], at: datetime | None = None):
        return events.VehicleObserved(
            event_id=self.event_id(), camera_id=camera.id, plate=plate, taken_at=at or datetime.now(UTC),
            location=events.Location(lat=camera.lat, lon=camera.lon), place=camera.place, zone=camera.zone,
            evidence=events.Evidence(image_url=f"https://evidence.test/{self._seq}.jpg"))

    def departure(self, plate: str, camera: city.Camera = city.CAMERAS[0], at: datetime | None = None):
        return events.VehicleDeparted(
            event_id=self.event_id(), camera_id=camera.id, plate=plate, taken_at=at or datetime.now(UTC),
            location=events.Location(lat=camera.lat, lon=camera.lon))

    # looking ------------------------------------------------------------------------------

    async def case_of(self, plate: str):
        return await self.pool.fetchrow("SELECT * FROM cases WHERE plate = $1 ORDER BY opened_at DESC LIMIT 1", plate)

    async def wait_state(self, plate: str, state: str, timeout: float = 30):
        async def check():
            row = await self.case_of(plate)
            return row if row and row["state"] == state else None
        return await wait_for(check, timeout, f"case of {plate} to be {state}")

    async def count(self, sql: str, *args) -> int:
        return await self.pool.fetchval(sql, *args)

    def handset_lines(self) -> list[dict]:
        if not self.sms_file.exists():
            return []
        return [json.loads(line) for line in self.sms_file.read_text(encoding="utf-8").splitlines()]

    async def consume(self, t: topics.Topic, until, timeout: float = 20) -> list[dict]:
        """Read a topic from the start until ``until(messages)`` holds."""
        consumer = AIOKafkaConsumer(self.topic(t), **KAFKA,
                                    auto_offset_reset="earliest", group_id=None)
        await consumer.start()
        messages: list[dict] = []
        try:
            end = time.monotonic() + timeout
            while not until(messages):
                if time.monotonic() > end:
                    pytest.fail(f"timed out reading {t.name}: got {len(messages)} messages", pytrace=False)
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    messages.extend(json.loads(r.value) for r in records)
            return messages
        finally:
            await consumer.stop()

    async def plates_with_phone(self, n: int) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT p.plate FROM plate_registry p JOIN contact_registry c USING (owner_id) ORDER BY p.plate LIMIT $1", n)
        return [r["plate"] for r in rows]


@pytest.fixture
async def stack(tmp_path):
    s = Stack(tmp_path)
    await s.start()
    try:
        yield s
    finally:
        await s.close()


def after(dt: datetime, seconds: float) -> datetime:
    return dt + timedelta(seconds=seconds)
