"""/metrics (Prometheus text format), /healthz and /readyz.

Two kinds of numbers:
- this worker's own, counted as events flow through it (a Faust sensor): events in per topic and
  the time per stage inside the worker (Kafka -> worker, worker -> decision committed), and console
  logins by outcome;
- the system's, read from PostgreSQL and Kafka, the same whichever worker answers (aggregate them
  with max(), not sum()): open cases by state, SMS by kind and status, dead letters today, outbox
  backlog and rows set aside, deadline lag, decisions held for their input, per-stage latency over
  the last five minutes, and the consumer group's lag per partition. Each is read at most once per
  refresh interval per worker (``Refreshed``), shared with the live console, however often /metrics
  is scraped, and each count reads an index (``queries.counts``).
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Generic, TypeVar

import asyncpg
import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily

from pipeline.console.health import LEVEL_VALUE

log = logging.getLogger(__name__)

disable_created_metrics()  # no *_created series: they double the output and say little here

LATENCY_WINDOW = timedelta(minutes=5)
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class WorkerMetrics:
    """This worker's counters and histograms, in its own registry."""

    def __init__(self):
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.events_in = Counter("parkwarden_events_in", "Messages this worker received, by topic.",
                                 ["topic"], registry=self.registry)
        self.stage_seconds = Histogram(
            "parkwarden_stage_seconds",
            "Time per stage inside this worker: kafka_to_worker (producer timestamp -> received), "
            "decide (received -> decision committed and acknowledged).",
            ["stage"], buckets=STAGE_BUCKETS, registry=self.registry)
        self.logins = Counter(
            "parkwarden_console_logins",
            "Console logins on this worker by outcome: accepted, wrong_password (an unknown name too), "
            "locked (too many failures for the name from that address), address_limited (too many "
            "attempts from the address: refused before any other work), busy (every password check "
            "slot taken: refused at once).",
            ["outcome"], registry=self.registry)
        for outcome in LOGIN_OUTCOMES:
            self.logins.labels(outcome)


LOGIN_OUTCOMES = ("accepted", "wrong_password", "locked", "address_limited", "busy")

T = TypeVar("T")


class Refreshed(Generic[T]):
    """A value read at most once per ``seconds``, whoever asks: callers within the interval get the
    same value, and callers at the same moment wait for one read. A read that fails is not kept
    (the next caller reads again).

    With ``stale_seconds``, a caller past the interval but within ``seconds + stale_seconds`` of the
    last read gets the value it holds at once, and the read is started behind it (one at a time):
    no request waits for a slow read while a value that recent is there. A value older than that
    (or none yet) is waited for, as without it. A read that fails behind is logged and not kept."""

    def __init__(self, seconds: float, read: Callable[[], Awaitable[T]], stale_seconds: float = 0.0):
        self.seconds = seconds
        self.stale_seconds = stale_seconds
        self._read = read
        self._value: T | None = None
        self._at: float | None = None
        self._lock = asyncio.Lock()
        self._behind: asyncio.Task | None = None

    @property
    def age(self) -> float | None:
        """Seconds since the value held was read (None: none yet)."""
        return None if self._at is None else time.monotonic() - self._at

    async def get(self) -> T:
        age = self.age
        if age is not None and self.seconds <= age < self.seconds + self.stale_seconds:
            if self._behind is None or self._behind.done():
                self._behind = asyncio.create_task(self._read_behind())
            return self._value
        async with self._lock:
            if self._at is None or time.monotonic() - self._at >= self.seconds:
                self._value = await self._read()
                self._at = time.monotonic()
            return self._value

    def invalidate(self) -> None:
        """The next caller waits for a fresh read (after a change it must see)."""
        self._at = None if self._at is None else self._at - self.seconds - self.stale_seconds

    async def _read_behind(self) -> None:
        async with self._lock:
            if self._at is not None and time.monotonic() - self._at < self.seconds:
                return
            try:
                self._value = await self._read()
                self._at = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - the next caller reads again
                log.warning("console: a figure was not re-read: %s", type(exc).__name__)


class StageSensor(faust.Sensor):
    """Counts messages in and times them through the worker (Faust calls these hooks)."""

    MAX_IN_FLIGHT = 100_000

    def __init__(self, metrics: WorkerMetrics, **kwargs):
        super().__init__(**kwargs)
        self.metrics = metrics
        self._received: dict[tuple, float] = {}

    def on_message_in(self, tp, offset, message) -> None:
        self.metrics.events_in.labels(tp.topic).inc()
        if message.timestamp:
            self.metrics.stage_seconds.labels("kafka_to_worker").observe(max(0.0, time.time() - message.timestamp))
        if len(self._received) > self.MAX_IN_FLIGHT:  # acks lost in a rebalance: start over
            self._received.clear()
        self._received[(tp, offset)] = time.monotonic()

    def on_message_out(self, tp, offset, message) -> None:
        started = self._received.pop((tp, offset), None)
        if started is not None:
            self.metrics.stage_seconds.labels("decide").observe(time.monotonic() - started)


class KafkaProbe:
    """Asks the broker whether it answers, and how far the consumer group is behind per partition."""

    def __init__(self, bootstrap: str, group_id: str, input_topics: list[str], timeout: float = 3.0,
                 options: dict | None = None):
        self.bootstrap = bootstrap
        self.options = options or {"bootstrap_servers": bootstrap}
        """The aiokafka connection options (address, and the SASL login if the broker asks for one)."""
        self.group_id = group_id
        self.input_topics = input_topics
        self.timeout = timeout
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        async with self._lock:
            if self._admin is None:
                admin = AIOKafkaAdminClient(request_timeout_ms=int(self.timeout * 1000),
                                            client_id=f"{self.group_id}-probe", **self.options)
                await admin.start()
                self._admin = admin
            if self._consumer is None:
                consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False,
                                            request_timeout_ms=int(self.timeout * 1000) + 1000,
                                            client_id=f"{self.group_id}-probe", **self.options)
                await consumer.start()
                self._consumer = consumer
            return self._admin, self._consumer

    async def reachable(self) -> tuple[bool, str]:
        try:
            admin, _ = await asyncio.wait_for(self._clients(), self.timeout)
            cluster = await asyncio.wait_for(admin.describe_cluster(), self.timeout)
            return bool(cluster.get("brokers")), f"{len(cluster.get('brokers', []))} broker(s)"
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
            return False, f"{type(exc).__name__}: {exc}"[:200]

    async def lag(self) -> dict[tuple[str, int], int]:
        admin, consumer = await asyncio.wait_for(self._clients(), self.timeout)
        names = self.input_topics() if callable(self.input_topics) else self.input_topics  # topics may be added
        described = await asyncio.wait_for(admin.describe_topics(names), self.timeout)
        tps = [TopicPartition(t["topic"], p["partition"]) for t in described if not t.get("error_code")
               for p in t["partitions"]]
        if not tps:
            return {}
        committed = await asyncio.wait_for(admin.list_consumer_group_offsets(self.group_id, partitions=tps),
                                           self.timeout)
        ends = await asyncio.wait_for(consumer.end_offsets(tps), self.timeout)
        starts = await asyncio.wait_for(consumer.beginning_offsets(tps), self.timeout)
        lag = {}
        for tp in tps:
            done = committed.get(tp)
            position = done.offset if done is not None and done.offset >= 0 else starts[tp]
            lag[(tp.topic, tp.partition)] = max(0, ends[tp] - position)
        return lag

    async def close(self) -> None:
        for client in (self._consumer, self._admin):
            if client is not None:
                try:
                    await client.stop() if isinstance(client, AIOKafkaConsumer) else await client.close()
                except Exception:  # noqa: BLE001
                    pass
        self._admin = self._consumer = None


async def database_check(pool: asyncpg.Pool | None, timeout: float = 3.0) -> tuple[bool, str]:
    if pool is None:
        return False, "not connected yet"
    try:
        async with asyncio.timeout(timeout):
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
        return True, "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return False, f"{type(exc).__name__}: {exc}"[:200]


async def system_families(counts: Refreshed[dict], latency: Refreshed[dict], input_read: Refreshed[list],
                          lag: Refreshed[dict]) -> list[GaugeMetricFamily]:
    """The system's numbers, as last read (within a refresh interval). A source that does not
    answer shows as ``*_up 0``."""
    families = []
    db_up = GaugeMetricFamily("parkwarden_database_up", "1 when PostgreSQL answered the latest read.")
    try:
        async with asyncio.timeout(5):
            figures, stages, read = await counts.get(), await latency.get(), await input_read.get()
        db_up.add_metric([], 1)
        families.extend(_database_families(figures, stages))
        families.extend(_watermark_families(read["partitions"]))
        families.append(_stale_family(read["stale"]))
    except Exception as exc:  # noqa: BLE001
        log.warning("metrics: PostgreSQL did not answer: %s", type(exc).__name__)
        db_up.add_metric([], 0)
    families.append(db_up)

    kafka_up = GaugeMetricFamily("parkwarden_kafka_up", "1 when Kafka answered the latest read.")
    behind = GaugeMetricFamily("parkwarden_consumer_lag", "Messages not yet committed by the worker group, per "
                               "input topic partition (end offset - committed offset).", labels=["topic", "partition"])
    try:
        for (topic, partition), n in sorted((await lag.get()).items()):
            behind.add_metric([topic, str(partition)], n)
        kafka_up.add_metric([], 1)
    except Exception as exc:  # noqa: BLE001
        log.warning("metrics: Kafka did not answer: %s", type(exc).__name__)
        kafka_up.add_metric([], 0)
    families.extend([kafka_up, behind])
    return families


def _database_families(status: dict, latency: dict) -> list[GaugeMetricFamily]:
    open_cases = GaugeMetricFamily("parkwarden_open_cases", "Cases by state: open ones, and those waiting for review.",
                                   labels=["state"])
    for state, n in status["cases"].items():
        open_cases.add_metric([state], n)
    sms = GaugeMetricFamily("parkwarden_sms_messages", "SMS by kind and status: those created since local "
                            "midnight, and every one still pending or sending.", labels=["kind", "status"])
    for kind, st, n in status["sms"]:
        sms.add_metric([kind, st], n)
    stages = GaugeMetricFamily(
        "parkwarden_recent_latency_seconds",
        "Latency per stage over the last 5 minutes, from PostgreSQL timestamps: capture_to_warning "
        "(camera capture -> warning accepted), sms_queue (SMS queued -> accepted), deadline_to_ticket.",
        labels=["stage", "quantile"])
    for stage, qs in latency.items():
        for q, v in qs.items():
            stages.add_metric([stage, str(q)], v)
    return [
        open_cases, sms, stages,
        GaugeMetricFamily("parkwarden_dead_letters_today", "Unusable input messages kept in dead_letters "
                          "since local midnight.", value=status["dead_letters_today"]),
        GaugeMetricFamily("parkwarden_tickets_today", "Tickets issued since local midnight.",
                          value=status["tickets_today"]),
        GaugeMetricFamily("parkwarden_deadline_lag_seconds",
                          "How late the oldest due deadline is (now - oldest due wake_at); 0 when none is due.",
                          value=status["deadline_lag"]),
        GaugeMetricFamily("parkwarden_outbox_backlog", "Kafka outputs not yet relayed.", value=status["outbox_backlog"]),
        GaugeMetricFamily("parkwarden_outbox_oldest_seconds", "Age of the oldest outbox row.",
                          value=status["outbox_oldest_age"]),
        GaugeMetricFamily("parkwarden_outbox_set_aside",
                          "Kafka outputs the broker refused for good, kept in outbox_set_aside "
                          "(see `parkwarden outbox list`).", value=status["outbox_set_aside"]),
    ]


def _watermark_families(partitions) -> list[GaugeMetricFamily]:
    held = GaugeMetricFamily("parkwarden_decisions_held", "Due cases not decided yet because the camera-events "
                             "partition carrying their plate is not read past their wake time (input on its way).",
                             labels=["partition"])
    behind = GaugeMetricFamily("parkwarden_camera_events_read_behind_seconds", "How far behind PostgreSQL's now() "
                               "each camera-events partition is read and recorded (its watermark).",
                               labels=["partition"])
    for p in partitions:
        held.add_metric([str(p["partition"])], p["held"])
        if p["behind_seconds"] is not None:
            behind.add_metric([str(p["partition"])], max(0.0, p["behind_seconds"]))
    return [held, behind]


def _stale_family(stale) -> GaugeMetricFamily:
    family = GaugeMetricFamily("parkwarden_integrator_stale_seconds", "Integrators marked stale (camera-events read "
                               "further behind than PW_INTEGRATOR_STALE_SECONDS): how far behind. Decisions no longer "
                               "wait for them (except cases near their cameras).",
                               labels=["integrator"])
    for s in stale:
        family.add_metric([s["integrator"] or s["topic"]], s["behind_seconds"])
    return family


class _Families:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def health_families(current) -> list[GaugeMetricFamily]:
    """The health strip's figures (``console.health``), as judged at the same refresh."""
    c = current.components
    level = GaugeMetricFamily("parkwarden_health", "Each health component as the console's strip shows it: "
                              "0 green, 1 amber, 2 red (or unknown).", labels=["component"])
    for name, comp in c.items():
        level.add_metric([name], LEVEL_VALUE[comp.level])
    families = [level]
    if not c["sms_gateway"].detail.get("not_watched"):
        families.append(GaugeMetricFamily("parkwarden_sms_gateway_up", "1 when Kannel's bearerbox answers its "
                                          "admin status with an smsbox connected.",
                                          value=1 if c["sms_gateway"].level == "ok" else 0))
        links = GaugeMetricFamily("parkwarden_smsc_link_up", "1 per SMS-centre link Kannel reports online, 0 "
                                  "offline (Kannel's status.xml).", labels=["smsc"])
        for link in c["smsc_link"].detail.get("links", []):
            links.add_metric([link["id"]], 1 if link["online"] else 0)
        families.append(links)
        families.append(GaugeMetricFamily("parkwarden_smsc_links_offline", "SMS-centre links not online (1 when "
                                          "Kannel does not answer or has none).", value=1 if c["smsc_link"].value is None
                                          else c["smsc_link"].value))
        families.append(GaugeMetricFamily("parkwarden_kannel_queued", "Messages Kannel holds queued, not yet "
                                          "handed to an SMS centre.", value=c["smsc_link"].detail.get("queued", 0)))
    families += [
        GaugeMetricFamily("parkwarden_sms_reports_pending", "SMS the gateway accepted in the last 24 h that have "
                          "no delivery report yet.", value=c["delivery_reports"].detail["pending"]),
        GaugeMetricFamily("parkwarden_sms_reports_pending_oldest_seconds", "Age of the oldest SMS awaiting its "
                          "delivery report.", value=c["delivery_reports"].value),
        GaugeMetricFamily("parkwarden_camera_events_lag_seconds", "How far behind PostgreSQL's now() the slowest "
                          "camera-events partition is read.", value=c["camera_events"].value),
        GaugeMetricFamily("parkwarden_decisions_held_total", "Due cases waiting for their partition to be read, "
                          "all partitions.", value=c["decisions_held"].value),
        GaugeMetricFamily("parkwarden_dead_letters_last_hour", "Unusable input messages kept in dead_letters in the "
                          "last hour.", value=c["dead_letters"].value),
    ]
    return families


async def exposition(worker: WorkerMetrics, counts: Refreshed[dict], latency: Refreshed[dict],
                     input_read: Refreshed[list], lag: Refreshed[dict], health: Refreshed | None = None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    families = await system_families(counts, latency, input_read, lag)
    if health is not None:
        try:
            async with asyncio.timeout(5):
                families += health_families(await health.get())
        except Exception as exc:  # noqa: BLE001
            log.warning("metrics: health not read: %s", type(exc).__name__)
    registry.register(_Families(families))
    return generate_latest(worker.registry) + generate_latest(registry)
