"""The one module that builds clients and wires adapters into the case service."""

import logging
import time
from datetime import timedelta
from zoneinfo import ZoneInfo

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.cases.service import CaseService, SmsStyle, Topics
from pipeline.cases.store import init_connection
from pipeline.config import Settings
from pipeline.db.migrate import migrate
from pipeline.lookups.carparks import CarParkIndex
from pipeline.lookups.owners import PostgresOwnerDirectory
from pipeline.lookups.zones import ZoneBook
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


async def connect_database(settings: Settings, min_size: int = 1, max_size: int | None = None) -> asyncpg.Pool:
    """A pool with the worker's time limits: acquiring a connection, waiting for a lock, one
    statement, and a transaction left idle (each a ``PW_DB_*`` setting)."""
    url = settings.database_url.get_secret_value()
    pool = BoundedPool(
        url, min_size=min_size, max_size=max_size or settings.db_pool_size, max_queries=50_000,
        max_inactive_connection_lifetime=300.0, connect=None, setup=None, init=init_connection, reset=None,
        loop=None, connection_class=asyncpg.Connection, record_class=asyncpg.Record,
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
        raise SystemExit(
            f"cannot reach PostgreSQL ({type(exc).__name__}: {exc}). "
            "Start it with `scripts/services.sh start postgres` or check PW_DATABASE_URL."
        ) from None


async def prepare_database(settings: Settings) -> list[str]:
    pool = await connect_database(settings)
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


def build_gateway(settings: Settings) -> SmsGateway:
    if settings.sms_gateway == "kannel":
        return KannelGateway(settings.kannel_sendsms_url, settings.kannel_username,
                             settings.kannel_password.get_secret_value(), settings.sms_sender,
                             f"{settings.report_base_url}/sms/delivery-report", settings.sms_timeout_seconds)
    if settings.sms_gateway == "http":
        if not settings.sms_http_url or not settings.sms_http_token:
            raise SystemExit("PW_SMS_GATEWAY=http needs PW_SMS_HTTP_URL and PW_SMS_HTTP_TOKEN")
        return HttpProviderGateway(settings.sms_http_url, settings.sms_http_token.get_secret_value(),
                                   f"{settings.report_base_url}/sms/provider-report", settings.sms_timeout_seconds)
    return FileGateway(settings.sms_file)


def build_service(settings: Settings, pool: asyncpg.Pool, car_parks: CarParkIndex, zones: ZoneBook) -> CaseService:
    owners = PostgresOwnerDirectory(settings.owner_cache_size, settings.owner_cache_ttl_seconds)
    sms = SmsStyle(settings.sms_language, settings.sms_signature, ZoneInfo(settings.timezone),
                   settings.sms_max_attempts, settings.sms_retry_seconds, settings.sms_daily_limit_per_phone,
                   settings.driver_page, timedelta(seconds=settings.sms_in_doubt_seconds))
    return CaseService(pool, owners, car_parks, zones, settings.rules, output_topics(settings), sms,
                       settings.ticket_prefix, actor=f"pipeline:{settings.worker_name}",
                       parallel=settings.db_parallel_transactions)


def build_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True,
                            linger_ms=5, client_id=f"{settings.app_id}-outbox")


class EndOffsets:
    """Asks the broker for the end offset of each partition of a topic (for ``watermarks``): a plain
    consumer outside any group, so it reads no messages and takes no partitions from the workers."""

    def __init__(self, settings: Settings, topic: str):
        self.topic = topic
        self.consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                         enable_auto_commit=False, request_timeout_ms=10_000,
                                         client_id=f"{settings.app_id}-watermarks")
        self.started = False
        self.partitions: set[int] = set()
        self.partitions_read_at = 0.0

    async def __call__(self) -> dict[int, int]:
        if not self.started:
            await self.consumer.start()
            self.started = True
        if not self.partitions or time.monotonic() - self.partitions_read_at > 60:  # partitions may be added
            self.partitions_read_at = time.monotonic()
            cluster = await self.consumer._client.fetch_all_metadata()  # the public topics() keeps no partitions
            self.partitions = cluster.partitions_for_topic(self.topic) or set()
        partitions = self.partitions
        ends = await self.consumer.end_offsets([TopicPartition(self.topic, p) for p in sorted(partitions)])
        return {tp.partition: offset for tp, offset in ends.items()}

    async def close(self) -> None:
        if self.started:
            await self.consumer.stop()


TOPIC_CONFIGS = {topics.CAMERA_EVENTS.name: {"message.timestamp.type": "LogAppendTime"}}
"""Camera events are stamped by the broker when it takes them: in order per partition (for the
watermarks) and the time the camera's report reached us (for the camera's own delay)."""


async def create_topics(settings: Settings) -> list[str]:
    """Create every registry topic that does not exist yet; return the ones created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [settings.topic(t.name) for t in topics.ALL]
        missing = [name for name in wanted if name not in existing]
        if missing:
            await admin.create_topics([
                NewTopic(settings.topic(t.name), settings.topic_partitions, 1, topic_configs=TOPIC_CONFIGS.get(t.name, {}))
                for t in topics.ALL if settings.topic(t.name) in missing])
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, settings.topic(name), configs)
                                   for name, configs in TOPIC_CONFIGS.items()])
        return missing
    finally:
        await admin.close()
