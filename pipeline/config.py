"""The one reader of the environment: every setting, with its default, in one frozen object."""

import ipaddress
import os
import socket
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.cases.machine import Rules, ZoneRules
from pipeline.client_limits import parse_networks
from schemas.events import NEVER_EVIDENCE_SCHEMES

ROOT = Path(__file__).resolve().parent.parent
LOOP_CONNECTIONS = 9
"""Connections a worker's loops may hold at once besides the camera events' parallel transactions:
car-park counts, deadlines, SMS (two: a claim is made while the answers to earlier ones are recorded),
delivery reports, the outbox relay, reference data, retention, and the reference feed's agent."""


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
    kafka_super_users: str = "broker,controller"
    """The broker's super users besides ``kafka_sasl_username`` (comma-separated; its ``super.users``):
    names no integrator, data platform or consumer may take (``pipeline.ingest.principals``)."""
    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$")
    topic_partitions: int = Field(default=4, ge=1)
    topic_replication_factor: int = Field(default=1, ge=1)
    """Replicas of every parkwarden topic: 1 on the single broker; 3 on a cluster (``scripts/cluster.sh``).
    Checked at start: a topic with fewer replicas is an error naming it."""
    topic_min_insync_replicas: int = Field(default=1, ge=1)
    """``min.insync.replicas`` of every parkwarden topic (2 on a 3-broker cluster): with ``acks=all`` a
    write is acknowledged once that many replicas hold it."""
    app_id: str = "parkwarden"
    worker_name: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    session_timeout_seconds: float = Field(default=10, gt=0)
    """How soon a dead worker's partitions go to the others."""
    batch_size: int = Field(default=200, ge=1)
    batch_within_seconds: float = Field(default=0.05, gt=0)

    # PostgreSQL
    database_url: SecretStr = SecretStr("postgresql://parkwarden:parkwarden@127.0.0.1:55432/parkwarden")
    backup_database_url: SecretStr | None = None
    """The login `parkwarden backup` takes base backups with (it needs the REPLICATION attribute); None:
    ``database_url``."""
    db_pool_size: int = Field(default=13, ge=4)
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
    capture_bound_seconds: float = Field(default=600, gt=0)
    """A capture taken later than this after the deadline shows the car there then, not at the
    deadline: it is not evidence, for automatic tickets and for an officer's ticket on review alike.
    At least PW_LATENESS_SECONDS + PW_RECHECK_WAIT_SECONDS, so that a recheck's answer can count."""
    delivery_wait_seconds: float = Field(default=600, ge=0)
    """With a gateway that reports delivery (kannel, http): how long after the deadline a case whose
    warning has no delivery report yet waits for it (a late delivery moves the deadline to
    delivered + window); without one by then an officer decides (review)."""
    same_stay_minutes: float = Field(default=1440, gt=0)
    """A car detected again at the place of its closed case (ticketed, warning notice, to confirm,
    unconfirmed, review, exempt) within this many minutes after the case closed (after its ticket)
    is the same stay: the detection is added to that case as evidence, with no new warning. One
    stay, one ticket per 24 hours by default, not per calendar day."""
    integrator_stale_seconds: float = Field(default=120, gt=0)
    """One integrator cannot hold the city's decisions: an integrator whose camera-events topic is read
    further behind than this is marked stale (console banner, /metrics, audit log) and due cases are
    decided without it, except cases within PW_SAME_PLACE_M of one of its cameras (which wait for
    it). A case decided so says which topics it was decided without (audit ``decided_without``)."""
    dead_letter_raw_bytes_per_day: int = Field(default=64 * 1024 * 1024, ge=0)
    """The dead letters' raw bytes kept per source topic (one per integrator) per UTC day; beyond it a
    dead letter keeps its reason, field errors and a SHA-256 of the bytes, not the bytes."""
    first_offence_months: int = Field(default=0, ge=0)
    """For zones without their own setting: a car with no ticket nor warning notice in the last N
    months gets a first-offence warning notice (首违警告) instead of a ticket. 0: off."""
    new_camera_days: int = Field(default=0, ge=0)
    """For zones without their own setting: a camera in its first N days after commissioning issues
    warning notices only (a camera whose commissioning date is not known is not new). 0: off."""
    confirm_tickets: bool = False
    """For zones without their own setting: a ticket takes effect (issued, published, sent) only once
    an officer confirms it on the console's queue; a rejected one never does."""

    # Loops
    tick_seconds: float = Field(default=0.5, gt=0)
    deadline_gap_seconds: float = Field(default=0.05, ge=0)
    """The deadline loop's shortest sleep after a round that decided nothing (it sleeps until the
    next case is due, at most a tick): a bound on its rounds, so that cases coming due at 2,000 a
    second are decided in batches (about 100 each), not one round trip each."""
    sms_poll_seconds: float = Field(default=1.0, gt=0)
    """The longest the SMS loop waits for work: it is woken at once when this worker's camera events
    queued an SMS; this is for those queued elsewhere (deadlines, the console, other workers)."""
    outbox_poll_seconds: float = Field(default=0.5, gt=0)
    """The longest the outbox relay waits: it is woken at once when this worker's camera events or SMS
    loop wrote outbox rows; this is for those written elsewhere."""
    sms_in_flight: int = Field(default=4, ge=1)
    """Claims of SMS (50 each) whose gateway calls may be outstanding at once: the next claim is made
    while the gateway answers the previous ones."""
    reference_refresh_seconds: float = Field(default=2.0, gt=0)
    """How often a worker reads car parks, zones and cameras again, and forgets the plates whose owner
    another worker's reference feed changed (``pipeline/reference/feed.py``)."""
    reference_columns: str = ""
    """JSON: the source tables' column names per kind of reference data, for Debezium change events whose
    table is not named like ours: ``{kind: {our field: source column}}``, kinds plates, contacts, car-parks,
    cameras; e.g. ``{"plates": {"plate": "hphm", "plate_type": "hpzl", "owner_id": "sfzmhm"}}``. Empty: our
    own column names (``pipeline/reference/tables.py``)."""

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
    """The lease a worker holds on a message it is handing to the gateway, on PostgreSQL's clock,
    renewed while the gateway call is outstanding. A message whose lease
    ran out (its worker died, lost PostgreSQL, or had no answer) is in doubt: settled from delivery
    reports, or sent again after sms_report_wait_seconds. Longer than sms_timeout_seconds."""
    sms_report_wait_seconds: float = Field(default=120, ge=0)
    """How long a message in doubt with no delivery report waits before it is sent again: time for
    its worker to come back with the gateway's answer (after a PostgreSQL outage, say) and for the
    gateway to retry its reports (Kannel here: every 5 s). An answer or a report that comes first
    settles it instead."""
    sms_daily_limit_per_phone: int = Field(default=6, ge=1)
    """At most this many SMS to one phone per (local) day; a warning over the limit goes to review."""
    driver_page: bool = False
    """Off by default (official SMS often carry no links): a code in the warning, looked up at /d."""
    driver_code_grace_hours: float = Field(default=72, ge=0)
    """A driver-page code shows its case until the case has been closed this long (3 days: time to
    read about a ticket and ask about it); then it answers "not found", like a code never given."""
    driver_page_lookups_per_minute: float = Field(default=10, gt=0)
    """Code lookups per client address per minute, per worker (429 with Retry-After above it)."""
    driver_page_lookup_burst: int = Field(default=10, ge=1)
    """Lookups one address may make at once before the per-minute rate applies."""
    trusted_proxies: str = ""
    """Comma-separated addresses or networks of reverse proxies in front of the workers (e.g.
    ``10.0.0.0/8``): for requests from them, the client's address (for per-address limits) is read
    from X-Forwarded-For. Empty: the connecting address is the client's."""

    @cached_property
    def trusted_proxy_networks(self) -> tuple:
        return parse_networks(self.trusted_proxies)

    @model_validator(mode="after")
    def _min_insync_within_replicas(self) -> "Settings":
        if self.topic_min_insync_replicas > self.topic_replication_factor:
            raise ValueError(f"PW_TOPIC_MIN_INSYNC_REPLICAS ({self.topic_min_insync_replicas}) is more than "
                             f"PW_TOPIC_REPLICATION_FACTOR ({self.topic_replication_factor}): no write could succeed")
        return self

    @model_validator(mode="after")
    def _trusted_proxies_are_addresses(self) -> "Settings":
        try:
            parse_networks(self.trusted_proxies)
        except ValueError as exc:
            raise ValueError(f"PW_TRUSTED_PROXIES: {exc}") from None
        return self
    sms_report_base_url: str | None = None
    """Where gateways send delivery reports; default http://<web_host>:<web_port>. Checked at start: a
    gateway on another machine cannot report to a loopback address."""
    kannel_sendsms_url: str = "http://127.0.0.1:13013/cgi-bin/sendsms"
    kannel_username: str = "parkwarden"
    kannel_password: SecretStr = SecretStr("parkwarden")
    kannel_status_url: SecretStr | None = None
    """Kannel bearerbox's admin status (``http://127.0.0.1:13000/status.xml?password=...``; a
    ``status.txt`` or ``status`` address is read as its ``status.xml``): the console's health strip
    reads the SMS gateway and the SMS-centre links from it. Unset: those two are shown as unknown."""
    sms_http_url: str | None = None
    sms_http_token: SecretStr | None = None
    sms_report_secret: SecretStr | None = None
    """Key of the HMAC-SHA256 that signs our message id in each delivery-report URL given to Kannel
    (``sig=``); a report without the right signature is refused (403). No default: with the kannel
    gateway a worker refuses to start without it. Random, at least 16 characters, the same on every
    worker (any worker may receive any report)."""
    sms_report_token: SecretStr | None = None
    """Shared secret an HTTP provider sends (header X-Report-Token) with its delivery reports. No
    default: with the http gateway a worker refuses to start without it (random, at least 16 characters)."""
    sms_language: Literal["zh-CN", "en"] = "zh-CN"
    sms_signature: str = "杭州城管"
    sms_retry_seconds: float = Field(default=2, gt=0)
    """The first wait after the gateway could not take a message (down, busy); doubling each time."""
    sms_retry_max_seconds: float = Field(default=30, gt=0)
    """The longest wait between two tries while the gateway is down."""
    sms_retry_horizon_seconds: float = Field(default=1800, gt=0)
    """How long a warning waits for a gateway that is down (from its first failure) before its case
    goes to review. No window starts meanwhile, and a warning sent late still gives the driver the
    whole window; past half an hour the car has likely gone or an officer should look."""
    sms_ticket_retry_horizon_seconds: float = Field(default=86400, gt=0)
    """The same for the SMS announcing a ticket (and an appeal's decision): the ticket stands anyway,
    the notice is still worth a day's wait."""
    timezone: str = "Asia/Shanghai"

    # Tickets
    ticket_prefix: str = Field(default="YH", pattern=r"^[A-Z]{1,4}$")
    appeal_window_days: float = Field(default=15, gt=0)
    """A driver may appeal a ticket (申诉) until this many days after it was issued (printed on the notice)."""
    appeal_decision_days: float = Field(default=10, gt=0)
    """An appeal's decision is due this many days after it was received; later, it is flagged overdue."""
    public_base_url: str | None = None
    """Where drivers reach the driver page, printed on notices and (with the driver page on) in SMS
    links (``<this>/d/<code>``); default http://<web_host>:<web_port>. Keep it short: it shares the
    SMS's 70 characters."""
    notice_legal_basis: str = "《中华人民共和国道路交通安全法》第九十三条"
    """The law a ticket applies, printed on the notice."""
    notice_penalty: str = "处二十元以上二百元以下罚款 Fine of CNY 20 to 200"
    """The penalty, as the city states it, printed on the notice."""
    notice_payment: str = "凭告知单号到交警违法处理窗口或“交管12123”处理 | Settle it with the ticket number at a traffic-police office or in the 12123 app"
    """Where to pay or settle a standing ticket (Chinese | English), on the driver page and the notice."""
    # Evidence images (pipeline/evidence/fetch.py)
    evidence_hosts: str = Field(default="", pattern=r"^\s*([^=;\s]+\s*=[^=;]*(;\s*[^=;\s]+\s*=[^=;]*)*;?)?\s*$")
    """Hosts each integrator's evidence images may be fetched from: ``name=host,host;other=host`` (``*=host``
    for every integrator). An image elsewhere is not fetched ("host not allowed")."""
    evidence_ca_file: str | None = None
    """A PEM file of CAs trusted for evidence fetches besides the system's (the demo's CA)."""
    evidence_max_bytes: int = Field(default=5 * 1024 * 1024, gt=0)
    evidence_fetch_seconds: float = Field(default=10, gt=0)
    """Bound on one fetch (connect and read)."""
    evidence_fetch_attempts: int = Field(default=6, ge=1)
    """A fetch that failed in a way that may pass is tried this many times in all, then shown as not obtained."""
    evidence_retry_seconds: float = Field(default=30, gt=0)
    """The wait after the first failed attempt; it doubles after each."""
    evidence_poll_seconds: float = Field(default=2, gt=0)
    evidence_fetches_at_once: int = Field(default=32, ge=1)
    """Images each worker's evidence loop fetches at once. A city opens hundreds of cases a second and
    each fetch waits on a camera vendor's server: 4 at a time (before) fell behind the cases opened."""
    demo_evidence_url: str | None = None
    """The demo's image server (``parkwarden evidence-server``): the simulator's captures point at it."""
    reconsideration_days: int = Field(default=60, ge=1)
    """A driver may ask for administrative reconsideration (行政复议) this many days after a decision."""
    lawsuit_months: int = Field(default=6, ge=1)
    """... or go to court (行政诉讼) within this many months; both shown once an appeal is refused."""

    # Retention (pipeline/retention/job.py; the README defends the defaults)
    retention_seconds: float = Field(default=600, gt=0)
    """How often a worker runs the purge (one worker at a time; the others skip their round)."""
    retention_unlinked_sightings_hours: float = Field(default=36, gt=0)
    """Sightings no case holds (most: every car the cameras see) go a day (UTC) at a time once the
    whole day is this old. The same-stay rule looks back PW_SAME_STAY_MINUTES (24 h) after a case
    closed and late events need their earlier sightings: 24 h plus a margin."""
    retention_event_ids_days: float = Field(default=8, gt=0)
    """The dedupe keys of sightings (integrator, event id; no plate) are kept this long: longer than
    Kafka keeps an event that could be replayed (7 days by default) and than any sighting class."""
    retention_closed_case_days: float = Field(default=30, gt=0)
    """A case closed without a ticket or caution (moved, unconfirmed, exempt, cancelled, rejected) keeps
    its sightings, SMS phone number and text this long after it closed: time for a complaint."""
    retention_decided_case_days: float = Field(default=210, gt=0)
    """A ticketed or cautioned case keeps its evidence (sightings, SMS phone and text, the appeal's
    free text) this long after the latest of its close, its ticket's issue or void and its appeal's
    decision, and while an appeal is undecided: administrative reconsideration (60 days) and
    litigation (6 months) run from the notice or the decision. The ticket record stays whole."""
    retention_delivery_report_days: float = Field(default=30, gt=0)
    """Delivery reports, once applied or set aside."""
    retention_dead_letter_raw_days: float = Field(default=14, gt=0)
    """A dead letter's raw bytes and key (its reason and field errors stay): time for the integrator
    to see what they sent and fix it."""
    retention_operator_session_hours: float = Field(default=24, ge=0)
    """Console sessions, this long after they expired."""
    retention_login_failure_days: float = Field(default=7, ge=0)
    """Failed logins (operator name, client address), this long after the last one."""
    retention_audit_mask_days: float = Field(default=30, ge=0)
    """Phone numbers in audit log details are masked once an entry is this old."""
    retention_audit_log_months: int = Field(default=24, ge=6)
    """The audit log goes a month (UTC) at a time once the whole month is this old (at least 6: the
    Cybersecurity Law, art. 21, asks for six months of logs)."""
    retention_batch_size: int = Field(default=1000, ge=1)
    """Rows per purge statement (each batch its own short transaction)."""
    retention_partitions_ahead_days: int = Field(default=3, ge=1)
    """Daily sightings partitions are created this many days ahead (and the audit log's next month)."""
    retention_lock_timeout_seconds: float = Field(default=2, gt=0)
    """How long creating or dropping a partition waits for its table; then it tries next round."""

    clock_offset_seconds: float = 0
    """Test only: this worker's own clock runs this many seconds ahead (negative: behind), to show
    that no decision between workers depends on it. Never set it in production."""

    @model_validator(mode="before")
    @classmethod
    def _removed_settings(cls, values: dict) -> dict:
        if "PW_SMS_MAX_ATTEMPTS" in os.environ:
            raise ValueError("PW_SMS_MAX_ATTEMPTS is gone: SMS are retried by time, up to "
                             "PW_SMS_RETRY_HORIZON_SECONDS (warnings) and PW_SMS_TICKET_RETRY_HORIZON_SECONDS")
        return values

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

    @model_validator(mode="after")
    def _a_recheck_answer_can_count(self) -> "Settings":
        if self.capture_bound_seconds < self.lateness_seconds + self.recheck_wait_seconds:
            raise ValueError(f"PW_CAPTURE_BOUND_SECONDS ({self.capture_bound_seconds}) must be at least "
                             f"PW_LATENESS_SECONDS + PW_RECHECK_WAIT_SECONDS ({self.lateness_seconds + self.recheck_wait_seconds}): "
                             f"a camera's answer to a recheck would never count as evidence")
        return self

    @cached_property
    def rules(self) -> Rules:
        return Rules(
            window=timedelta(seconds=self.window_seconds),
            lateness=timedelta(seconds=self.lateness_seconds),
            capture_tolerance=timedelta(seconds=self.capture_tolerance_seconds),
            capture_bound=timedelta(seconds=self.capture_bound_seconds),
            recheck_wait=timedelta(seconds=self.recheck_wait_seconds),
            same_place_m=self.same_place_m,
            require_delivery_report=self.sms_gateway != "file",
            delivery_wait=timedelta(seconds=self.delivery_wait_seconds),
            max_report_delay=timedelta(seconds=self.max_report_delay_seconds),
            same_stay=timedelta(minutes=self.same_stay_minutes),
            timezone=ZoneInfo(self.timezone),
        )

    @cached_property
    def zone_defaults(self) -> ZoneRules:
        """The city's zone rules, for zones without their own (``pipeline.lookups.zones``)."""
        return ZoneRules(window=timedelta(seconds=self.window_seconds), first_offence_months=self.first_offence_months,
                         new_camera_days=self.new_camera_days, confirm_tickets=self.confirm_tickets)

    @property
    def driver_base_url(self) -> str:
        return (self.public_base_url or f"http://{self.web_host}:{self.web_port}").rstrip("/")

    @property
    def report_base_url(self) -> str:
        host = f"[{self.web_host}]" if ":" in self.web_host else self.web_host  # an IPv6 address
        return self.sms_report_base_url or f"http://{host}:{self.web_port}"

    def topic(self, base_name: str) -> str:
        return f"{self.topic_prefix}{base_name}"

    # Operators
    console_session_hours: float = Field(default=12, gt=0)
    """How long a console login lasts (a shift)."""
    console_login_max_failures: int = Field(default=5, ge=1)
    console_login_lock_minutes: float = Field(default=15, gt=0)
    """After console_login_max_failures failed logins for one name from one client address within this
    many minutes, that name is refused (429) from that address until the oldest failure is this old.
    Other addresses are not refused: failures from elsewhere cannot lock an operator out."""
    console_login_per_address_per_minute: int = Field(default=10, ge=1)
    """Login attempts per client address (an IPv6 /64) per minute on each worker, as many at once;
    beyond them 429, before any password check or database work."""
    console_login_concurrency: int = Field(default=1, ge=1)
    """Logins checked at once per worker, each argon2 check in a thread (64 MiB and up to 4 cores for
    tens of ms each); a login beyond them is answered 503 at once, not queued."""
    console_secure_cookie: bool = False
    """Mark the session cookie Secure: set it when the console is served over HTTPS."""
    console_refresh_seconds: float = Field(default=1.0, gt=0)
    """How often the live console (server-sent events) and /metrics re-read PostgreSQL."""
    console_db_pool_size: int = Field(default=3, ge=1)
    console_page_size: int = Field(default=100, ge=1, le=1000)
    """Rows on a page of the console's lists (case search, tickets, appeals, the audit log); an export
    holds every row that matches (up to 50,000), not one page."""
    review_sla_minutes: float = Field(default=30, gt=0)
    """A case waiting for review is due this many minutes after it went to review (the review queue
    shows each one's age and due time, and flags it overdue)."""
    """The console's own connections, apart from the pipeline's."""
    metrics_allow: str = "127.0.0.1/32,::1/128"
    """Client addresses or networks (comma-separated) that may read /metrics; empty: none (then only
    with metrics_token). Loopback only by default."""
    metrics_token: SecretStr | None = None
    """A token that lets any address read /metrics, sent as ``Authorization: Bearer <token>``."""

    @cached_property
    def metrics_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(n.strip(), strict=False) for n in self.metrics_allow.split(",") if n.strip())

    @model_validator(mode="after")
    def _retention_outlasts_its_uses(self) -> "Settings":
        if self.retention_decided_case_days < self.appeal_window_days + self.appeal_decision_days:
            raise ValueError(f"PW_RETENTION_DECIDED_CASE_DAYS ({self.retention_decided_case_days:g}) must be at least "
                             f"PW_APPEAL_WINDOW_DAYS + PW_APPEAL_DECISION_DAYS "
                             f"({self.appeal_window_days + self.appeal_decision_days:g}): evidence outlives appeals")
        if self.retention_event_ids_days * 24 < self.retention_unlinked_sightings_hours + 24:
            raise ValueError(f"PW_RETENTION_EVENT_IDS_DAYS ({self.retention_event_ids_days:g}) must outlast the "
                             "sightings it deduplicates (PW_RETENTION_UNLINKED_SIGHTINGS_HOURS plus a day)")
        if self.retention_unlinked_sightings_hours * 60 < self.same_stay_minutes + 60:
            raise ValueError(f"PW_RETENTION_UNLINKED_SIGHTINGS_HOURS ({self.retention_unlinked_sightings_hours:g}) must "
                             f"outlast the stay (PW_SAME_STAY_MINUTES, {self.same_stay_minutes:g}, plus an hour): the "
                             "same-stay rule looks back for departures and sightings elsewhere over the whole stay")
        return self

    @model_validator(mode="after")
    def _metrics_allow_is_addresses(self) -> "Settings":
        try:
            self.metrics_networks
        except ValueError as exc:
            raise ValueError(f"PW_METRICS_ALLOW: {exc} (give addresses or networks, comma-separated)") from None
        return self

    # The console's map
    map_tiles: str | None = None
    """The console map's tile URL template, from the city's own tile server (Leaflet's form,
    ``https://tiles.example.gov.cn/{z}/{x}/{y}.png``; ``{s}`` only as the host's first label). Unset: no
    tile layer, the map's vector layers on a plain background, nothing fetched from another host."""
    map_tiles_attribution: str = ""
    """The tiles' attribution, shown (as text) in the map's corner."""
    map_silent_factor: float = Field(default=5, gt=1)
    map_silent_min_seconds: float = Field(default=300, gt=0)
    """The map flags a camera silent when its last capture is older than map_silent_factor times its
    usual gap (the mean gap between its last 20 captures) and older than map_silent_min_seconds."""
    map_refresh_seconds: float = Field(default=5, gt=0)
    """How often the console map re-reads PostgreSQL (once per worker, whoever is looking)."""

    @cached_property
    def map_tiles_origin(self) -> str | None:
        """The tile server's origin for the map page's Content-Security-Policy (``{s}.`` as ``*.``)."""
        if not self.map_tiles:
            return None
        parts = urlsplit(self.map_tiles)
        return f"{parts.scheme}://{parts.netloc.replace('{s}.', '*.', 1)}"

    @model_validator(mode="after")
    def _map_tiles_is_a_template(self) -> "Settings":
        if self.map_tiles:
            parts = urlsplit(self.map_tiles)
            if parts.scheme not in ("https", "http") or not parts.netloc or \
                    "{" in parts.netloc.replace("{s}.", "", 1) or any(f"{{{k}}}" not in self.map_tiles for k in "zxy"):
                raise ValueError("PW_MAP_TILES: a tile URL template, http(s)://host/.../{z}/{x}/{y}.png "
                                 "({s} only as the host's first label)")
        return self

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
    evidence_url_schemes: str = Field(default="https", pattern=r"^[a-z][a-z0-9+.-]*(,[a-z][a-z0-9+.-]*)*$")
    """Comma-separated schemes an evidence image URL may have, e.g. ``https,s3`` (lower case, no spaces).
    Others are refused: 422 on HTTP, a dead letter on Kafka. javascript, data, file and vbscript never."""

    @property
    def evidence_schemes(self) -> frozenset[str]:
        return frozenset(self.evidence_url_schemes.split(","))

    @model_validator(mode="after")
    def _no_scheme_that_runs_code(self) -> "Settings":
        if self.evidence_schemes & NEVER_EVIDENCE_SCHEMES:
            raise ValueError(f"PW_EVIDENCE_URL_SCHEMES may not allow {', '.join(sorted(self.evidence_schemes & NEVER_EVIDENCE_SCHEMES))}: "
                             "such links run or read something where an operator opens them")
        return self
