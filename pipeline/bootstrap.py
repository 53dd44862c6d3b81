"""The one module that builds clients and wires adapters into the case service."""

import logging
from datetime import timedelta
from zoneinfo import ZoneInfo

import asyncpg
from aiokafka import AIOKafkaProducer

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


async def create_topics(settings: Settings) -> list[str]:
    """Create every registry topic that does not exist yet; return the ones created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [settings.topic(t.name) for t in topics.ALL]
        missing = [name for name in wanted if name not in existing]
        if missing:
            await admin.create_topics([NewTopic(n, settings.topic_partitions, 1) for n in missing])
        return missing
    finally:
        await admin.close()
