"""The one reader of the environment: every setting, with its default, in one frozen object."""

import os
import socket
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.cases.machine import Rules

ROOT = Path(__file__).resolve().parent.parent
LOOP_CONNECTIONS = 6
"""Connections a worker's loops may hold at once besides the camera events' parallel transactions:
car-park counts, deadlines, SMS, delivery reports, the outbox relay, reference data."""


class Settings(BaseSettings):
    """Read from ``PW_*`` environment variables (e.g. ``PW_WINDOW_SECONDS=600``)."""

    model_config = SettingsConfigDict(env_prefix="PW_", frozen=True, extra="ignore")

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:39092"
    kafka_sasl_username: str | None = None
    """The pipeline's own Kafka principal (SASL/SCRAM over SASL_PLAINTEXT); unset: PLAINTEXT, no login."""
    kafka_sasl_password: SecretStr = SecretStr("")
    """The password of ``kafka_sasl_username``."""
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    """The SCRAM mechanism the broker's listener takes."""
    kafka_tools_classpath: str = str(ROOT / "var" / "kafka" / "libs" / "*")
    """Kafka's own jars (``scripts/services.sh`` resolves them): `parkwarden integrators add` runs
    their ConfigCommand to create an integrator's SCRAM user."""
    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$")
    topic_partitions: int = Field(default=4, ge=1)
    app_id: str = "parkwarden"
    worker_name: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    session_timeout_seconds: float = Field(default=10, gt=0)
    """How soon a dead worker's partitions go to the others."""
    batch_size: int = Field(default=200, ge=1)
    batch_within_seconds: float = Field(default=0.05, gt=0)

    # PostgreSQL
    database_url: SecretStr = SecretStr("postgresql://parkwarden:parkwarden@127.0.0.1:55432/parkwarden")
    db_pool_size: int = Field(default=12, ge=4)
    db_parallel_transactions: int = Field(default=4, ge=1)
    """A batch of camera events is split by plate into this many transactions, run side by side."""
    db_acquire_timeout_seconds: float = Field(default=10, gt=0)
    """How long a worker waits for a free connection of its pool before it treats it as an outage."""
    db_lock_timeout_seconds: float = Field(default=10, gt=0)
    """How long one statement waits for a row lock (PostgreSQL's lock_timeout)."""
    db_statement_timeout_seconds: float = Field(default=30, gt=0)
    """How long one statement may run (PostgreSQL's statement_timeout)."""
    db_idle_in_transaction_seconds: float = Field(default=60, gt=0)
    """A transaction left idle this long is ended by PostgreSQL (its locks freed)."""
    stall_seconds: float = Field(default=60, gt=0)
    """A loop or agent busy with one round for this long is stalled: logged, and /readyz fails."""

    # Web (served by each worker)
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    web_db_pool_size: int = Field(default=4, ge=1)
    """The web handlers' own PostgreSQL connections (ingest keys, rate limits, ...), apart from the
    pipeline's, so that a flood of HTTP requests cannot starve the pipeline."""

    # The case rules
    window_seconds: float = Field(default=600, gt=0)
    lateness_seconds: float = Field(default=30, ge=0)
    capture_tolerance_seconds: float = Field(default=5, ge=0)
    recheck_wait_seconds: float = Field(default=120, gt=0)
    same_place_m: float = Field(default=50, gt=0)
    max_report_delay_seconds: float = Field(default=300, gt=0)

    # Loops
    tick_seconds: float = Field(default=0.5, gt=0)
    sms_poll_seconds: float = Field(default=0.1, gt=0)
    outbox_poll_seconds: float = Field(default=0.05, gt=0)
    reference_refresh_seconds: float = Field(default=2.0, gt=0)

    # Lookups
    owner_cache_size: int = Field(default=100_000, ge=0)
    owner_cache_ttl_seconds: float = Field(default=300, ge=0)

    # SMS
    sms_gateway: Literal["kannel", "http", "file"] = "kannel"
    """kannel (its HTTP sendsms API), http (a JSON SMS provider), file (one JSON line per SMS)."""
    sms_file: Path = ROOT / "var" / "sms" / "handsets.jsonl"
    sms_sender: str = Field(default="12345", pattern=r"^[0-9A-Za-z+]{1,16}$")
    sms_timeout_seconds: float = Field(default=5, gt=0)
    sms_in_doubt_seconds: float = Field(default=60, gt=0)
    """A message handed to the gateway this long ago with no answer recorded lost its sender (a worker
    that died mid-send): it is settled from delivery reports, or sent again. Longer than sms_timeout."""
    sms_daily_limit_per_phone: int = Field(default=6, ge=1)
    """At most this many SMS to one phone per (local) day; a warning over the limit goes to review."""
    driver_page: bool = False
    """Off by default (official SMS often carry no links): a code in the warning, looked up at /d."""
    sms_report_base_url: str | None = None
    """Where gateways send delivery reports; default http://<web_host>:<web_port>."""
    kannel_sendsms_url: str = "http://127.0.0.1:13013/cgi-bin/sendsms"
    kannel_username: str = "parkwarden"
    kannel_password: SecretStr = SecretStr("parkwarden")
    sms_http_url: str | None = None
    sms_http_token: SecretStr | None = None
    sms_report_token: SecretStr = SecretStr("change-me")
    """Shared secret an HTTP provider sends (header X-Report-Token) with its delivery reports."""
    sms_language: Literal["zh-CN", "en"] = "zh-CN"
    sms_signature: str = "杭州城管"
    sms_max_attempts: int = Field(default=6, ge=1)
    sms_retry_seconds: float = Field(default=2, gt=0)
    timezone: str = "Asia/Shanghai"

    # Tickets
    ticket_prefix: str = Field(default="YH", pattern=r"^[A-Z]{1,4}$")

    @model_validator(mode="after")
    def _pool_serves_every_loop(self) -> "Settings":
        needed = self.db_parallel_transactions + LOOP_CONNECTIONS
        if self.db_pool_size < needed:
            raise ValueError(
                f"PW_DB_POOL_SIZE ({self.db_pool_size}) is too small for PW_DB_PARALLEL_TRANSACTIONS "
                f"({self.db_parallel_transactions}): each parallel transaction and each of the worker's "
                f"{LOOP_CONNECTIONS} loops needs a connection; raise PW_DB_POOL_SIZE to at least {needed} "
                f"or lower PW_DB_PARALLEL_TRANSACTIONS")
        return self

    @model_validator(mode="after")
    def _in_doubt_outlasts_a_gateway_call(self) -> "Settings":
        if self.sms_in_doubt_seconds <= self.sms_timeout_seconds:
            raise ValueError(f"PW_SMS_IN_DOUBT_SECONDS ({self.sms_in_doubt_seconds}) must be longer than "
                             f"PW_SMS_TIMEOUT_SECONDS ({self.sms_timeout_seconds}): raise it or lower the timeout")
        return self

    @cached_property
    def rules(self) -> Rules:
        return Rules(
            window=timedelta(seconds=self.window_seconds),
            lateness=timedelta(seconds=self.lateness_seconds),
            capture_tolerance=timedelta(seconds=self.capture_tolerance_seconds),
            recheck_wait=timedelta(seconds=self.recheck_wait_seconds),
            same_place_m=self.same_place_m,
            require_delivery_report=self.sms_gateway != "file",
            max_report_delay=timedelta(seconds=self.max_report_delay_seconds),
        )

    @property
    def report_base_url(self) -> str:
        return self.sms_report_base_url or f"http://{self.web_host}:{self.web_port}"

    def topic(self, base_name: str) -> str:
        return f"{self.topic_prefix}{base_name}"

    # Operators
    console_session_hours: float = Field(default=12, gt=0)
    """How long a console login lasts (a shift)."""
    console_login_max_failures: int = Field(default=5, ge=1)
    console_login_lock_minutes: float = Field(default=15, gt=0)
    """After console_login_max_failures failed logins for one name within this many minutes, that name
    is refused (429) until the oldest failure is this old."""
    console_secure_cookie: bool = False
    """Mark the session cookie Secure: set it when the console is served over HTTPS."""
    console_refresh_seconds: float = Field(default=1.0, gt=0)
    """How often the live console (server-sent events) and /metrics re-read PostgreSQL."""
    console_db_pool_size: int = Field(default=3, ge=1)
    """The console's own connections, apart from the pipeline's."""

    # Integrators
    ingest_max_body_bytes: int = Field(default=1_048_576, ge=1024)
    """The largest HTTP ingest body (413 above it)."""
    ingest_max_events: int = Field(default=1000, ge=1)
    """The most events in one HTTP ingest request (413 above it)."""
    ingest_rate_per_second: float = Field(default=20, gt=0)
    """Requests per second per integrator, across all workers (429 with Retry-After above it)."""
    ingest_rate_burst: int = Field(default=40, ge=1)
    """Requests an integrator may send at once before the rate applies."""
    ingest_key_cache_seconds: float = Field(default=10, gt=0)
    """How long a worker trusts a key it has checked (a revoked key stops working within this). While
    PostgreSQL is unreachable, a key this worker has seen valid keeps working (no revocation can be
    read then); an unknown one gets 503."""
    ingest_unknown_key_cache_seconds: float = Field(default=60, gt=0)
    """How long a worker remembers that PostgreSQL did not know a key, answering 401 without asking
    again (keys are random, so a new key is never one that was tried before)."""
    ingest_unknown_key_cache_size: int = Field(default=10_000, ge=1)
    """The most unknown keys a worker remembers (apart from the known ones, which they never evict)."""
    ingest_bad_keys_per_address: int = Field(default=20, ge=1)
    """Requests with a missing or unknown key one client address may make per
    ingest_bad_key_seconds (per worker); over it, requests from that address whose key this worker
    does not already trust get 429 with Retry-After, before any database work."""
    ingest_bad_key_seconds: float = Field(default=60, gt=0)
    """The period of ingest_bad_keys_per_address (an address regains one bad-key request every
    ingest_bad_key_seconds / ingest_bad_keys_per_address seconds)."""
    ingest_publish_timeout_seconds: float = Field(default=10, gt=0)
    """How long the ingest waits for Kafka's acknowledgement before answering 503."""
