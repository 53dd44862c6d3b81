"""The one module that builds clients and wires adapters into the case service."""

import ipaddress
import logging
from datetime import timedelta
from urllib.parse import urlsplit
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


async def connect_database(settings: Settings, min_size: int = 1) -> asyncpg.Pool:
    url = settings.database_url.get_secret_value()
    try:
        return await asyncpg.create_pool(url, min_size=min_size, max_size=settings.db_pool_size, init=init_connection)
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


def build_service(settings: Settings, pool: asyncpg.Pool, car_parks: CarParkIndex, zones: ZoneBook) -> CaseService:
    owners = PostgresOwnerDirectory(pool, settings.owner_cache_size, settings.owner_cache_ttl_seconds)
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
