"""The Faust worker: thin agents over the case service, and the loops that move time forward.

Run with ``parkwarden worker`` (or ``faust -A pipeline.app worker``). Any number of workers may
run in one consumer group: Kafka gives each some partitions of the camera events, and the
deadline, SMS and outbox loops share PostgreSQL rows safely.
"""

import asyncio
import logging
import time
from datetime import UTC, datetime

import faust
from mode import Service

from pipeline import aiokafka_leader, bootstrap, codecs, faust_subscription, logs
from pipeline.cameras import registry
from pipeline.cameras import views as camera_views
from pipeline.cases.service import DUE_BATCH, Source
from pipeline.config import ROOT, Settings
from pipeline.appeals import driver as appeals_driver
from pipeline.appeals import views as appeals_views
from pipeline.console import map as console_map
from pipeline.console import views as console_views
from pipeline.evidence import fetch as evidence_fetch
from pipeline.ingest import views as ingest_views
from pipeline.lookups.carparks import CarParkIndex, load_index
from pipeline.lookups.zones import ZoneBook, load_zones
from pipeline.outbox import OutboxRelay, woken
from pipeline.retention import job as retention
from pipeline.sms import driver_page
from pipeline.sms import views as sms_views
from pipeline.tickets import views as tickets_views
from schemas import topics

log = logging.getLogger("parkwarden")
settings = Settings()
bootstrap.check_delivery_reports(settings)  # before anything starts: no forgeable or unreachable reports
codecs.register(settings.evidence_schemes)
aiokafka_leader.install()  # a partition's offsets asked of an old leader: look the new one up (robinhood/aiokafka#9)
(ROOT / "var" / "faust").mkdir(parents=True, exist_ok=True)


class Worker(faust.Worker):
    """Faust's worker, with repeated warnings and errors rate-limited in its log and no debug records
    made below its level (pipeline/logs.py)."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        logs.worker_root_logger(logger, level)

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        bootstrap.keep_out_of_collections()  # Faust's consumer and agents too, now that they run


app = faust.App(
    settings.app_id,
    broker=f"kafka://{settings.kafka_bootstrap}",
    web_host=settings.web_host,
    web_port=settings.web_port,
    web_bind=settings.web_host,
    topic_partitions=settings.topic_partitions,
    topic_replication_factor=settings.topic_replication_factor,
    topic_disable_leader=True,
    store="memory://",
    datadir=str(ROOT / "var" / "faust" / "{conf.name}"),
    consumer_auto_offset_reset="earliest",
    producer_acks=-1,
    broker_credentials=faust.SASLCredentials(username=settings.kafka_sasl_username,
                                             password=settings.kafka_sasl_password.get_secret_value(),
                                             mechanism=settings.kafka_sasl_mechanism)
    if settings.kafka_sasl_username else None,
    broker_session_timeout=settings.session_timeout_seconds,
    broker_heartbeat_interval=min(3.0, settings.session_timeout_seconds / 5),
    Worker=Worker,
    **console_views.FAUST_WEB,
)

CAMERA_EVENTS = settings.topic(topics.CAMERA_EVENTS.name)
camera_events = app.topic(CAMERA_EVENTS, key_serializer="raw", value_serializer=codecs.CAMERA_EVENT)
"""The bare camera-events topic (whose messages name no integrator: dead letters) and, once the runtime
has read the integrators from PostgreSQL, each integrator's ``camera-events.<integrator>``."""
car_park_status = app.topic(settings.topic(topics.CAR_PARK_STATUS.name), key_serializer="raw",
                            value_serializer=codecs.CAR_PARK_STATUS)
reference_data = app.topic(*(settings.topic(t.name) for t in topics.REFERENCE), key_serializer="raw",
                           value_serializer="raw")
"""The compacted reference topics (plates, contacts, car parks, cameras): bytes, decoded by the feed."""


class Runtime(Service):
    """Owns the clients (PostgreSQL pools, Kafka producer, SMS gateway) and the periodic loops.

    Faust starts it before its own consumer and producer, so its start waits for PostgreSQL and
    Kafka (saying so every few seconds) and a worker started before them simply waits for them."""

    def __post_init__(self) -> None:
        self.ready = asyncio.Event()
        self.sms_queued = asyncio.Event()
        """Set when this worker's camera events queued SMS: wakes the SMS loop before its poll."""
        self.outbox_written = asyncio.Event()
        """Set when this worker wrote outbox rows: wakes the outbox relay before its poll."""
        self.pool = self.web_pool = self.service = self.sms_service = self.gateway = self.producer = self.relay = self.feed = None
        self.settings = settings
        self.car_parks = CarParkIndex()
        self.zones = ZoneBook(default_window_seconds=settings.window_seconds, defaults=settings.zone_defaults)
        self.registry = registry.Registry()
        self.integrators: set[str] = set()
        """Integrators whose camera-events topic exists and is read by this worker's agent."""
        self._integrators_lock = asyncio.Lock()
        self.rounds: dict[str, float | None] = {}
        self._end_offsets: bootstrap.EndOffsets | None = None
        """Each loop's and agent's current round: when it began (monotonic), None between rounds."""

    def stalled(self) -> list[str]:
        """Loops and agents busy with one round for longer than ``PW_STALL_SECONDS``."""
        now = time.monotonic()
        return sorted(name for name, since in self.rounds.items()
                      if since is not None and now - since > settings.stall_seconds)

    async def round(self, name: str, work):
        """Run one round of a loop or an agent, so that a round that never ends is seen."""
        self.rounds[name] = time.monotonic()
        try:
            return await work()
        finally:
            self.rounds[name] = None

    async def on_start(self) -> None:
        await bootstrap.wait_for_database(settings)
        await bootstrap.start_on_database(settings, self._start_on_database)
        self.gateway = bootstrap.build_gateway(settings)
        await bootstrap.wait_for_kafka(settings)
        await self._read_integrator_topics()
        self.producer = bootstrap.build_producer(settings)
        await self.producer.start()
        self.relay = OutboxRelay(self.pool, lambda: bootstrap.build_producer(settings))
        bootstrap.keep_out_of_collections()
        self.ready.set()
        log.info("parkwarden ready: %d car parks, window %ss", len(self.car_parks), settings.window_seconds)

    async def _start_on_database(self) -> None:
        """The start's work on PostgreSQL: done again from the top if the database fails under it."""
        await self._close_pools()
        await bootstrap.prepare_database(settings, outage_ends=False)
        self.pool = await bootstrap.connect_database(settings, min_size=2, outage_ends=False)
        self.web_pool = await bootstrap.connect_web_database(settings, outage_ends=False)
        await self._refresh_reference()
        self.service = bootstrap.build_service(settings, self.pool, self.car_parks, self.zones)
        self.service.sms_queued, self.service.outbox_written = self.sms_queued.set, self.outbox_written.set
        self.sms_service = bootstrap.build_sms_service(settings, self.pool, self.service)
        self.feed = bootstrap.build_reference_feed(settings, self.pool, self.service.owners, self._reload_reference)
        await self.feed.forget_changed_elsewhere()

    async def _close_pools(self) -> None:
        for pool in (self.web_pool, self.pool):
            if pool is not None:
                pool.terminate()
        self.pool = self.web_pool = None

    def end_offsets(self) -> bootstrap.EndOffsets:
        """The one broker client that the watermarks and deadline loops share to ask for end offsets."""
        if self._end_offsets is None:
            self._end_offsets = bootstrap.EndOffsets(settings, CAMERA_EVENTS, reading=lambda: set(camera_events.topics))
        return self._end_offsets

    async def on_stop(self) -> None:
        if self._end_offsets is not None:
            await self._end_offsets.close()
        for closing in (self.gateway and self.gateway.close(), self.producer and self.producer.stop(),
                        self.relay and self.relay.close(), self.web_pool and self.web_pool.close(),
                        self.pool and self.pool.close()):
            if closing is not None:
                await closing

    async def _refresh_reference(self) -> None:
        await load_index(self.pool, self.car_parks)
        await load_zones(self.pool, self.zones)
        await self.registry.load(self.pool)
        if self.ready.is_set():
            await self._read_integrator_topics()
            await self.feed.forget_changed_elsewhere()

    async def _reload_reference(self, kinds: set[str]) -> None:
        """Car parks or cameras changed on the reference feed: read them again now (not in 2 s)."""
        if "car-parks" in kinds:
            await load_index(self.pool, self.car_parks)
        if "cameras" in kinds:
            await self.registry.load(self.pool)

    async def _read_integrator_topics(self) -> None:
        """Read the camera-events topic of every integrator: create the topics of new ones, and have
        the agent subscribe to them (at start, before Faust subscribes; later, with a resubscription)."""
        async with self.pool.acquire() as conn:
            names = set(await registry.integrator_names(conn))
        if names <= self.integrators:
            return
        await self.ensure_camera_topics(names)

    async def ensure_camera_topics(self, names: set[str]) -> None:
        """``camera-events.<name>`` exists for each name (with the broker's append time) and is read."""
        if set(names) <= self.integrators:
            return
        async with self._integrators_lock:
            new = set(names) - self.integrators
            if not new:
                return
            await bootstrap.create_topics(settings, sorted(new))
            self.integrators |= new
        names = [CAMERA_EVENTS] + [topics.camera_events_of(CAMERA_EVENTS, n) for n in sorted(self.integrators)]
        faust_subscription.read_topics(app, camera_events, CAMERA_EVENTS, names)
        log.info("reading camera events of %d integrators (new: %s)", len(self.integrators), ", ".join(sorted(new)))

    async def _every(self, seconds: float, work, wake: asyncio.Event | None = None, pause=None) -> None:
        """Run ``work`` in rounds, again at once while it is busy, else after ``seconds`` (or after
        what ``pause()`` says, as the last round left it), or as soon as ``wake`` is set."""
        await self.ready.wait()
        while not self.should_stop:
            if wake is not None:
                wake.clear()
            try:
                busy = await self.round(work.__name__, work)
            except Exception as exc:  # noqa: BLE001 - a loop must outlive outages
                log.error("%s failed: %s: %s", work.__name__, type(exc).__name__, exc)
                busy = False
                await self.sleep(1.0)
            if not busy:
                delay = pause() if pause else seconds
                if wake is None:
                    await self.sleep(delay)
                else:
                    await woken(wake, delay)

    @Service.task
    async def deadlines(self) -> None:
        """Decide the due cases, on time: each round first brings the watermarks of the camera-events
        partitions read to the end up to PostgreSQL's now (as the watermarks loop does each tick), so
        that a deadline waits for no other loop. A round that claimed a full batch is followed by the
        next at once; another sleeps until the next case is due, at least PW_DEADLINE_GAP_SECONDS and
        at most a tick."""
        await self.ready.wait()
        end_offsets = self.end_offsets()
        pause = settings.tick_seconds

        async def decide_due_cases():
            nonlocal pause
            try:
                await self.service.mark_current_partitions(end_offsets, stale=False)
            except Exception as exc:  # noqa: BLE001 - the watermarks loop says so; held cases wait
                log.debug("watermarks before the deadlines: %s: %s", type(exc).__name__, exc)
            if await self.service.decide_due_cases() >= DUE_BATCH:
                return True  # busy: the next batch waits no more
            pause = await self.service.seconds_to_next_wake(settings.deadline_gap_seconds, settings.tick_seconds)
            return False
        await self._every(settings.tick_seconds, decide_due_cases, pause=lambda: pause)

    @Service.task
    async def delivery_reports(self) -> None:
        await self._every(settings.tick_seconds, self.service_call("apply_delivery_reports", sms=True))

    @Service.task
    async def sms(self) -> None:
        await self.ready.wait()
        async def sms():
            return (await self.sms_service.settle_in_doubt_sms()
                    + await self.sms_service.send_due_sms(self.gateway, wait=False))
        try:
            await self._every(settings.sms_poll_seconds, sms, wake=self.sms_queued)
        finally:
            await self.sms_service.stop_sending()

    @Service.task
    async def evidence_images(self) -> None:
        """Fetch the evidence images of cases (pipeline/evidence/fetch.py), off the camera events' path."""
        await self.ready.wait()
        fetcher, retry = evidence_fetch.Fetcher.of(settings), evidence_fetch.Retry.of(settings)
        async def evidence_images():
            return await evidence_fetch.run_due(self.pool, fetcher, retry, settings.evidence_fetches_at_once)
        try:
            await self._every(settings.evidence_poll_seconds, evidence_images)
        finally:
            await fetcher.close()

    @Service.task
    async def outbox(self) -> None:
        await self.ready.wait()
        await self.relay.run(lambda: self.should_stop, settings.outbox_poll_seconds, wake=self.outbox_written)

    @Service.task
    async def watermarks(self) -> None:
        """Keep idle camera-events partitions current, so that they never hold a decision."""
        await self.ready.wait()
        end_offsets = self.end_offsets()
        async def mark_current_partitions():
            await self.service.mark_current_partitions(end_offsets)
            return False
        await self._every(settings.tick_seconds, mark_current_partitions)

    @Service.task
    async def watchdog(self) -> None:
        """Say so in the log when a loop or an agent has made no progress for PW_STALL_SECONDS."""
        await self.ready.wait()
        while not self.should_stop:
            if stalled := self.stalled():
                log.error("no progress for %ss in %s: a lock or a connection never came back; /readyz fails "
                          "until it moves (see pg_stat_activity for application_name parkwarden:%s)",
                          settings.stall_seconds, ", ".join(stalled), settings.worker_name)
            await self.sleep(min(5.0, settings.stall_seconds / 2))

    @Service.task
    async def retention(self) -> None:
        """Purge what is past its retention (pipeline/retention/job.py), one worker at a time."""
        policy = retention.Policy.of(settings)
        async def purge():
            async with self.pool.acquire() as conn:
                if done := await retention.run(conn, policy):
                    log.info("retention: %s", retention.summary(done).replace("\n", "; "))
            return False
        await self._every(settings.retention_seconds, purge)

    @Service.task
    async def reference(self) -> None:
        await self._every(settings.reference_refresh_seconds, self._refresh_reference)

    def service_call(self, name: str, sms: bool = False):
        async def call():
            return await getattr(self.sms_service if sms else self.service, name)()
        call.__name__ = name
        return call


runtime = Runtime()
app.add_dependency(runtime)


def _sources(batch) -> list[tuple[object, Source]]:
    return [(e.value, Source(m.topic, m.partition, m.offset, m.key, _kafka_time(m.timestamp), m.value))
            for e in batch for m in (e.message,)]


def _kafka_time(timestamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, UTC) if timestamp and timestamp > 0 else None


@app.agent(camera_events, concurrency=1)
async def decide_camera_events(stream):
    """Every camera event, in order per plate, decided in batches."""
    await runtime.ready.wait()
    async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_seconds):
        await runtime.round("camera-events", lambda: _until_recorded(runtime.service.handle_camera_events,
                                                                     _sources(batch)))


@app.agent(car_park_status, concurrency=1)
async def record_car_park_status(stream):
    """Live free-space counts, kept for the nearest-car-park lookup."""
    await runtime.ready.wait()
    async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_seconds):
        await runtime.round("car-park-status", lambda: _until_recorded(runtime.service.handle_car_park_statuses,
                                                                       _sources(batch)))


@app.agent(reference_data, concurrency=1)
async def materialize_reference_data(stream):
    """Registries, car parks and cameras from their owners, in order per key (pipeline/reference/feed.py)."""
    await runtime.ready.wait()
    async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_seconds):
        await runtime.round("reference-data", lambda: _until_recorded(runtime.feed.handle, _sources(batch)))


async def _until_recorded(handle, batch) -> None:
    """The guard around a batch: an agent that raised would have its batch acknowledged by Faust
    unrecorded, so nothing but cancellation leaves here before ``handle`` has recorded every event."""
    while True:
        try:
            return await handle(batch)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - see the docstring
            log.exception("a batch of %d messages could not be recorded; trying it again in 1s", len(batch))
            await asyncio.sleep(1.0)


sms_views.register(app, runtime)
driver = driver_page.register(app, runtime) if settings.driver_page else None
ingest_views.register(app, runtime)
console = console_views.register(app, runtime)
tickets_views.register(app, runtime, console)
appeals_views.register(app, runtime, console)
camera_views.register(app, console)
console_map.register(app, console)
if driver is not None:
    appeals_driver.register(app, runtime, driver)
