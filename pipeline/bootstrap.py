"""The one module that builds clients and wires adapters into the case service."""

import asyncio
import gc
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from pipeline.cases.effects import Topics
from pipeline.cases.service import CaseService
from pipeline.sms.service import SmsService, SmsStyle
from pipeline.cases.store import init_connection
from pipeline.config import Settings
from pipeline.db import errors as db_errors
from pipeline.db.migrate import migrate
from pipeline.db import primary
from pipeline.db.primary import PrimaryConnection
from pipeline.lookups.carparks import CarParkIndex
from pipeline.lookups.owners import PostgresOwnerDirectory
from pipeline.lookups.zones import ZoneBook
from pipeline.reference import tables
from pipeline.reference.feed import ReferenceFeed
from pipeline.sms.gateway import FileGateway, SmsGateway
from pipeline.sms.http_provider import HttpProviderGateway
from pipeline.sms.kannel import KannelGateway
from schemas import topics

log = logging.getLogger(__name__)


class BoundedPool(asyncpg.Pool):
    """A pool whose ``acquire()`` gives up after ``acquire_timeout`` seconds (``asyncio.TimeoutError``,
    which callers treat as an outage: wait and try again) instead of waiting forever."""

    acquire_timeout: float = 10.0

    def acquire(self, *, timeout=None):
        return super().acquire(timeout=self.acquire_timeout if timeout is None else timeout)


async def connect_database(settings: Settings, min_size: int = 1, max_size: int | None = None,
                           outage_ends: bool = True) -> asyncpg.Pool:
    """A pool with the worker's time limits: acquiring a connection, waiting for a lock, one
    statement, and a transaction left idle (each a ``PW_DB_*`` setting). A connection goes back to
    it without a reset round trip unless it may hold session state (``primary.reset``). PostgreSQL out
    of reach ends the program with what to do (a command's way), or, with ``outage_ends=False``, raises
    the error for the caller to wait out (a worker's start)."""
    url = settings.database_url.get_secret_value()
    pool = BoundedPool(
        url, min_size=min_size, max_size=max_size or settings.db_pool_size, max_queries=50_000,
        max_inactive_connection_lifetime=300.0, connect=None, setup=None, init=init_connection, reset=primary.reset,
        loop=None, connection_class=PrimaryConnection, record_class=asyncpg.Record,
        server_settings={
            "statement_timeout": f"{int(settings.db_statement_timeout_seconds * 1000)}",
            "lock_timeout": f"{int(settings.db_lock_timeout_seconds * 1000)}",
            "idle_in_transaction_session_timeout": f"{int(settings.db_idle_in_transaction_seconds * 1000)}",
            "application_name": f"parkwarden:{settings.worker_name}"[:63],
        })
    pool.acquire_timeout = settings.db_acquire_timeout_seconds
    try:
        return await pool
    except (OSError, asyncpg.PostgresError) as exc:
        if not outage_ends:
            raise
        raise SystemExit(
            f"cannot reach PostgreSQL ({type(exc).__name__}: {exc}). "
            "Start it with `scripts/services.sh start postgres` or check PW_DATABASE_URL."
        ) from None


async def connect_web_database(settings: Settings, outage_ends: bool = True) -> asyncpg.Pool:
    """The web side's own small pool (HTTP ingest and other handlers), so that a flood of requests
    cannot take the connections the pipeline decides with."""
    return await connect_database(settings, min_size=0, max_size=settings.web_db_pool_size, outage_ends=outage_ends)


def database_address(settings: Settings) -> str:
    """host:port/database of PW_DATABASE_URL, without the credentials; every host of a multi-host URL
    (``host1:port1,host2:port2``, as a PostgreSQL that fails over is reached)."""
    url = urlsplit(settings.database_url.get_secret_value())
    hosts = url.netloc.rpartition("@")[2].split(",")
    return ",".join(h if h.rpartition(":")[2].isdigit() else f"{h or 'localhost'}:5432" for h in hosts) + url.path


def keep_out_of_collections() -> int:
    """Move every object alive now (a started worker's modules, clients, pools and reference data)
    out of the garbage collector's sight, for good (``gc.freeze``); returns how many. A worker holds
    so many that each full collection stopped everything in it for 0.5-1.2 s at load 20 (about every
    15 s while 2,000 deadlines a second came due): a pause that every due case waited out. Objects
    made later are collected as ever; garbage among those frozen now (a pool replaced after a
    database outage) is kept."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


async def wait_for_database(settings: Settings, say_every: float = 15.0) -> None:
    """Return once PostgreSQL accepts a connection. Until then try again (backing off up to 5 s)
    and say so every ``say_every`` seconds; a refused login or a missing database is not an
    outage: it ends the worker with what to fix."""
    async def connect():
        try:
            conn = await asyncpg.connect(settings.database_url.get_secret_value(), timeout=5)
        except (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidCatalogNameError) as exc:
            raise SystemExit(f"PostgreSQL at {database_address(settings)} refused the worker "
                             f"({type(exc).__name__}: {exc}): check PW_DATABASE_URL") from None
        await conn.close()

    await _keep_trying(f"PostgreSQL at {database_address(settings)}", connect,
                       (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError),
                       "start it with `scripts/services.sh start postgres` or check PW_DATABASE_URL", say_every)


async def wait_for_kafka(settings: Settings, say_every: float = 15.0) -> None:
    """Return once a Kafka broker at PW_KAFKA_BOOTSTRAP answers with the cluster's metadata (what
    Faust's consumer and our producer need first: they give up at once without it). Until then try
    again (backing off up to 5 s) and say so every ``say_every`` seconds."""
    async def metadata():
        client = AIOKafkaClient(request_timeout_ms=5000, client_id=f"{settings.app_id}-wait",
                                **kafka_client_options(settings))
        try:
            await asyncio.wait_for(client.bootstrap(), 10)
        finally:
            await client.close()

    await _keep_trying(f"Kafka at {settings.kafka_bootstrap}", metadata, (KafkaError, OSError, TimeoutError),
                       "start it with `scripts/services.sh start kafka` or check PW_KAFKA_BOOTSTRAP", say_every)


async def start_on_database(settings: Settings, start: Callable[[], Awaitable[None]], say_every: float = 15.0) -> None:
    """Run a worker's start-up work on PostgreSQL (``start``) until it completes: when the database
    fails under it (a failover, a restart: ``errors.is_transient``), the whole of ``start`` is done
    again after a pause, as a supervisor would restart the worker, without ending the process.
    ``start`` must be safe to repeat (it cleans up what a failed attempt left). A fault of the data
    or of the settings ends the worker as before."""
    await _keep_trying(f"PostgreSQL at {database_address(settings)} to start on", start, db_errors.is_transient,
                       "the database failed during the worker's start; starting again", say_every)


async def _keep_trying(what: str, attempt: Callable[[], Awaitable[None]],
                       outage: tuple[type[BaseException], ...] | Callable[[BaseException], bool],
                       hint: str, say_every: float) -> None:
    is_outage = outage if callable(outage) and not isinstance(outage, tuple) else (lambda exc: isinstance(exc, outage))
    started = time.monotonic()
    waiting = "waiting for " + what.replace("%", "%%") + " (%.0f s so far): %s; %s"  # one template per service
    said_at: float | None = None
    pause = 0.5
    while True:
        try:
            await attempt()
        except Exception as exc:
            if not is_outage(exc):
                raise
            now = time.monotonic()
            if said_at is None or now - said_at >= say_every:
                log.warning(waiting, now - started, _reason(exc), hint)
                said_at = now
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)
        else:
            if said_at is not None:
                log.warning(what.replace("%", "%%") + " answers, after %.0f s of waiting", time.monotonic() - started)
            return


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return text if text.startswith(type(exc).__name__) else f"{type(exc).__name__}: {text}".rstrip(": ")


async def prepare_database(settings: Settings, outage_ends: bool = True) -> list[str]:
    pool = await connect_database(settings, outage_ends=outage_ends)
    try:
        async with pool.acquire() as conn:
            return await migrate(conn)
    finally:
        await pool.close()


def output_topics(settings: Settings) -> Topics:
    return Topics(
        camera_events=settings.topic(topics.CAMERA_EVENTS.name),
        case_events=settings.topic(topics.CASE_EVENTS.name),
        tickets=settings.topic(topics.TICKETS.name),
        camera_commands=settings.topic(topics.CAMERA_COMMANDS.name),
        dead_letters=settings.topic(topics.DEAD_LETTERS.name),
    )


MIN_SECRET_LENGTH = 16
NEW_SECRET = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def check_delivery_reports(settings: Settings) -> None:
    """Refuse to start (``SystemExit`` naming the PW_ variable to set) when delivery reports could be
    forged (no secret, or a short one) or could not arrive (a report URL the gateway cannot reach)."""
    if settings.sms_gateway == "kannel":
        secret, name, gateway_name, gateway_url = (settings.sms_report_secret, "PW_SMS_REPORT_SECRET",
                                                   "PW_KANNEL_SENDSMS_URL", settings.kannel_sendsms_url)
        use = "the key that signs each delivery-report URL given to Kannel"
    elif settings.sms_gateway == "http":
        if not settings.sms_http_url or not settings.sms_http_token:
            raise SystemExit("PW_SMS_GATEWAY=http needs PW_SMS_HTTP_URL and PW_SMS_HTTP_TOKEN")
        secret, name, gateway_name, gateway_url = (settings.sms_report_token, "PW_SMS_REPORT_TOKEN",
                                                   "PW_SMS_HTTP_URL", settings.sms_http_url)
        use = "the token the provider sends with its delivery reports (X-Report-Token)"
    else:
        return
    value = secret.get_secret_value() if secret is not None else ""
    if len(value) < MIN_SECRET_LENGTH:
        raise SystemExit(
            f"PW_SMS_GATEWAY={settings.sms_gateway} needs {name}: {use}, random, at least {MIN_SECRET_LENGTH} "
            f"characters, the same on every worker (make one with `{NEW_SECRET}`). "
            f"{'It is too short' if value else 'It is not set'}; without it anyone who reaches a worker could "
            "forge delivery reports.")
    report_host = urlsplit(settings.report_base_url).hostname or ""
    gateway_host = urlsplit(gateway_url).hostname or ""
    source = "PW_SMS_REPORT_BASE_URL" if settings.sms_report_base_url else "not set: from PW_WEB_HOST and PW_WEB_PORT"
    if not report_host or _unspecified(report_host):
        raise SystemExit(f"delivery reports would go to {settings.report_base_url} ({source}), which no gateway "
                         "can reach: set PW_SMS_REPORT_BASE_URL to this worker's (or its load balancer's) address")
    if _loopback(report_host) and not _loopback(gateway_host):
        raise SystemExit(f"delivery reports would go to {settings.report_base_url} ({source}), a loopback address, "
                         f"but the gateway ({gateway_name}) is at {gateway_host}: its reports could not arrive. "
                         "Set PW_SMS_REPORT_BASE_URL to an address the gateway reaches (a load balancer in front "
                         "of the workers).")


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def build_gateway(settings: Settings) -> SmsGateway:
    check_delivery_reports(settings)
    if settings.sms_gateway == "kannel":
        return KannelGateway(settings.kannel_sendsms_url, settings.kannel_username,
                             settings.kannel_password.get_secret_value(), settings.sms_sender,
                             f"{settings.report_base_url}/sms/delivery-report", settings.sms_timeout_seconds,
                             report_secret=settings.sms_report_secret.get_secret_value())
    if settings.sms_gateway == "http":
        return HttpProviderGateway(settings.sms_http_url, settings.sms_http_token.get_secret_value(),
                                   f"{settings.report_base_url}/sms/provider-report", settings.sms_timeout_seconds)
    return FileGateway(settings.sms_file)


def sms_style(settings: Settings) -> SmsStyle:
    return SmsStyle(settings.sms_language, settings.sms_signature, ZoneInfo(settings.timezone),
                    retry_seconds=settings.sms_retry_seconds, retry_max_seconds=settings.sms_retry_max_seconds,
                    retry_horizon={"warning": settings.sms_retry_horizon_seconds,
                                   "ticket": settings.sms_ticket_retry_horizon_seconds},
                    daily_limit=settings.sms_daily_limit_per_phone, driver_page=settings.driver_page,
                    driver_link=f"{settings.driver_base_url}/d/",
                    in_doubt_after=timedelta(seconds=settings.sms_in_doubt_seconds),
                    report_wait=timedelta(seconds=settings.sms_report_wait_seconds), worker=settings.worker_name)


def worker_clock(settings: Settings):
    offset = timedelta(seconds=settings.clock_offset_seconds)
    return lambda: datetime.now(UTC) + offset


def build_service(settings: Settings, pool: asyncpg.Pool, car_parks: CarParkIndex, zones: ZoneBook) -> CaseService:
    owners = PostgresOwnerDirectory(settings.owner_cache_size, settings.owner_cache_ttl_seconds)
    return CaseService(pool, owners, car_parks, zones, settings.rules, output_topics(settings), sms_style(settings),
                       settings.ticket_prefix, actor=f"pipeline:{settings.worker_name}",
                       clock=worker_clock(settings), parallel=settings.db_parallel_transactions,
                       integrator_stale_seconds=settings.integrator_stale_seconds,
                       dead_letter_raw_bytes_per_day=settings.dead_letter_raw_bytes_per_day)


def build_sms_service(settings: Settings, pool: asyncpg.Pool, cases: CaseService) -> SmsService:
    """The SMS service, deciding on warnings' cases through the case service's ``CaseEffects``."""
    return SmsService(pool, cases.effects, sms_style(settings), clock=worker_clock(settings),
                      in_flight=settings.sms_in_flight, outbox_written=lambda: cases.outbox_written())


def build_reference_feed(settings: Settings, pool: asyncpg.Pool, owners, reload) -> ReferenceFeed:
    """The reference feed, writing to ``pool``, forgetting changed plates in ``owners`` (the case
    service's owner directory) and calling ``reload(kinds)`` after car parks or cameras changed."""
    try:
        columns = tables.Columns.parse(settings.reference_columns)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    return ReferenceFeed(pool, {settings.topic(k.topic.name): k for k in tables.KINDS}, columns,
                         settings.topic(topics.DEAD_LETTERS.name), owners=owners, reload=reload)


def kafka_client_options(settings: Settings) -> dict:
    """What every aiokafka client of the pipeline needs to reach the broker: its address and, when
    ``PW_KAFKA_SASL_USERNAME`` is set, the pipeline's own SASL/SCRAM credentials."""
    options: dict = {"bootstrap_servers": settings.kafka_bootstrap}
    if settings.kafka_sasl_username:
        options |= {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": settings.kafka_sasl_mechanism,
                    "sasl_plain_username": settings.kafka_sasl_username,
                    "sasl_plain_password": settings.kafka_sasl_password.get_secret_value()}
    return options


def build_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(acks="all", enable_idempotence=True, linger_ms=5, client_id=f"{settings.app_id}-outbox",
                            **kafka_client_options(settings))


class EndOffsets:
    """Asks the broker for the end offset of each partition of every camera-events topic (the bare
    one and each integrator's, for ``watermarks``): a plain consumer outside any group, so it reads
    no messages and takes no partitions from the workers."""

    def __init__(self, settings: Settings, camera_events: str, reading: Callable[[], set[str]] | None = None):
        self.camera_events = camera_events
        self.reading = reading
        """The topics the workers read: a camera-events topic nobody reads (written by someone who is no
        integrator) must not get a watermark, which would hold decisions for ever."""
        self.consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, request_timeout_ms=10_000,
                                         client_id=f"{settings.app_id}-watermarks", **kafka_client_options(settings))
        self.admin = AIOKafkaAdminClient(request_timeout_ms=10_000, client_id=f"{settings.app_id}-watermarks",
                                         **kafka_client_options(settings))
        self.started = False
        self.partitions: set[tuple[str, int]] = set()
        self.partitions_read_at = 0.0
        self.asking = asyncio.Lock()
        """Loops that share the client ask one at a time."""

    async def __call__(self) -> dict[tuple[str, int], int]:
        async with self.asking:
            return await self._ask()

    async def _ask(self) -> dict[tuple[str, int], int]:
        if not self.started:
            await self.consumer.start()
            await self.admin.start()
            self.started = True
        if not self.partitions or time.monotonic() - self.partitions_read_at > 10:  # topics and partitions may be added
            self.partitions_read_at = time.monotonic()
            self.partitions = await self._partitions(self.reading() if self.reading else None)
        ends = await self.consumer.end_offsets([TopicPartition(t, p) for t, p in sorted(self.partitions)])
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}

    async def _partitions(self, read: set[str] | None) -> set[tuple[str, int]]:
        """The partitions of the camera-events topics ``read`` (all of them if None), from the brokers'
        metadata of those topics only: a shared broker may hold thousands of topics, whose metadata cost
        a worker more CPU than its deadlines."""
        names = sorted(read) if read is not None else await self.admin.list_topics()
        names = [t for t in names if topics.is_camera_events(self.camera_events, t)]
        if not names:
            return set()
        return {(t["topic"], p["partition"]) for t in await self.admin.describe_topics(names)
                if not t.get("error_code") for p in t["partitions"]}

    async def close(self) -> None:
        if self.started:
            await self.consumer.stop()
            await self.admin.close()


CAMERA_EVENTS_CONFIG = {"message.timestamp.type": "LogAppendTime"}
"""Camera events are stamped by the broker when it takes them: in order per partition (for the
watermarks) and the time the camera's report reached us (for the camera's own delay). The same
for every integrator's camera-events topic."""

REFERENCE_CONFIG = {"cleanup.policy": "compact"}
"""The reference topics keep the latest message per key (a row as it is now; a tombstone, until the
broker's ``delete.retention.ms`` has passed): a worker reading one from the start gets every row."""


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """The configs of the registry's topics that have their own (the others take the broker's defaults)."""
    return {settings.topic(t.name): REFERENCE_CONFIG for t in topics.REFERENCE}


async def create_topics(settings: Settings, integrators: list[str] = ()) -> list[str]:
    """Create every registry topic that does not exist yet, and the camera-events and camera-commands
    topics of each integrator named (``camera-events.<name>``, ``camera-commands.<name>``); return the
    ones created. The settings the pipeline relies on (``topic_configs``, ``CAMERA_EVENTS_CONFIG``) are
    set on topics that exist with IncrementalAlterConfigs, which changes only those keys: whatever else
    an operator set on a topic (its retention, say) stays."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

    base, commands = settings.topic(topics.CAMERA_EVENTS.name), settings.topic(topics.CAMERA_COMMANDS.name)
    camera_topics = [base] + [topics.camera_events_of(base, name) for name in integrators]
    command_topics = [topics.camera_commands_of(commands, name) for name in integrators]
    admin = admin_client(settings, "topics")
    existing = set((await asyncio.to_thread(admin.list_topics, timeout=30)).topics)
    wanted = [settings.topic(t.name) for t in topics.ALL] + camera_topics[1:] + command_topics
    missing = [name for name in wanted if name not in existing]
    configs = topic_configs(settings) | {name: CAMERA_EVENTS_CONFIG for name in camera_topics}
    if settings.topic_replication_factor > 1:
        durable = {"min.insync.replicas": str(settings.topic_min_insync_replicas)}
        configs = {name: configs.get(name, {}) | durable for name in wanted}
    created = []
    if missing:
        futures = admin.create_topics([NewTopic(name, settings.topic_partitions, settings.topic_replication_factor, config=configs.get(name, {}))
                                       for name in missing], request_timeout=30)
        for name, future in futures.items():
            try:
                await asyncio.wrap_future(future)
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # another worker made it just now
                    raise
    changes = [ConfigResource(ResourceType.TOPIC, name, incremental_configs=[
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET) for key, value in config.items()])
        for name, config in configs.items() if name not in created]
    if changes:
        for future in admin.incremental_alter_configs(changes, request_timeout=30).values():
            await asyncio.wrap_future(future)
    for _ in range(20):  # a topic just created may not be in every broker's metadata yet
        metadata = (await asyncio.to_thread(admin.list_topics, timeout=30)).topics
        described = [{"topic": name, "error_code": 0 if name in metadata and metadata[name].error is None else 1,
                      "partitions": [{"replicas": list(p.replicas)} for p in metadata[name].partitions.values()]
                      if name in metadata else []} for name in wanted]
        if all(t["error_code"] == 0 and t["partitions"] for t in described):
            break
        await asyncio.sleep(0.5)
    check_replicas(settings, described)
    return created


def admin_client(settings: Settings, purpose: str):
    """confluent-kafka's AdminClient (librdkafka) as the pipeline's own principal: topics, their
    settings (IncrementalAlterConfigs), SCRAM users and ACLs (``pipeline.ingest.principals``)."""
    from confluent_kafka.admin import AdminClient

    config = {"bootstrap.servers": settings.kafka_bootstrap, "client.id": f"{settings.app_id}-{purpose}",
              "socket.timeout.ms": 15_000}
    if settings.kafka_sasl_username:
        config |= {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": settings.kafka_sasl_mechanism,
                   "sasl.username": settings.kafka_sasl_username,
                   "sasl.password": settings.kafka_sasl_password.get_secret_value()}
    return AdminClient(config, logger=logging.getLogger("parkwarden.kafka-admin"))


class TopicReplicationError(RuntimeError):
    """A parkwarden topic has fewer replicas than ``PW_TOPIC_REPLICATION_FACTOR``."""


def check_replicas(settings: Settings, described: list[dict]) -> None:
    """Refuse topics (as the admin client's DescribeTopics gives them) with a partition on fewer replicas
    than configured, naming them: such a topic loses acknowledged events with a broker."""
    want = settings.topic_replication_factor
    short = sorted({f"{t['topic']} ({min(len(p['replicas']) for p in t['partitions'])} replicas)"
                    for t in described if t["partitions"] and min(len(p["replicas"]) for p in t["partitions"]) < want})
    if short:
        raise TopicReplicationError(f"topics with fewer replicas than PW_TOPIC_REPLICATION_FACTOR={want}: "
                                    f"{', '.join(short)}; recreate them or reassign their partitions")
