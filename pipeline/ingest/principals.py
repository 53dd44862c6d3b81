"""Kafka logins of everyone but the pipeline: a SCRAM user of its own, the ACLs that allow it what its
kind needs and nothing else, and (for integrators) a produce quota.

Three kinds, one namespace (the ``principals`` table; a name is one principal's, whatever its kind):

- an **integrator** NAME (``parkwarden integrators add``; topic names with ``PW_TOPIC_PREFIX``)::

    topic camera-events.NAME   WRITE, DESCRIBE    its camera events (the topic says who wrote them)
    topic camera-commands.NAME READ, DESCRIBE     recheck requests to its cameras
    group NAME                 READ               its consumer group (named exactly NAME: a prefix would
                                                  also match another integrator's, e.g. NAME2)
    quota producer_byte_rate   (--produce-bytes-per-second) what it may write per second, per broker

- a **data platform** feeding reference data (``parkwarden reference kafka-login NAME --kind ...``):
  WRITE and DESCRIBE on the reference topics of those kinds only (``feed_bindings``);
- a **consumer**, a city system reading outputs (``parkwarden consumers add NAME --topics ...``): READ
  and DESCRIBE on those topics, READ on its own consumer group NAME (``consumer_bindings``).

Everything else is refused by the broker's authorizer (``allow.everyone.if.no.acl.found=false``).
The reserved names (``reserved``) are never given a login: the broker's super users, the pipeline's
own principal (``PW_KAFKA_SASL_USERNAME``), the app id (the pipeline's consumer group), ``ANONYMOUS``;
no ACL ever names a consumer group of the pipeline (``check_bindings``).

How: confluent-kafka's AdminClient (librdkafka) makes SCRAM users (AlterUserScramCredentials) and
ACLs (CreateAcls, DescribeAcls, DeleteAcls), as the pipeline's own principal (a super user). Produce
quotas are the exception: neither confluent-kafka nor another Python client has AlterClientQuotas yet
(librdkafka has no client-quota API), so that one request is sent with aiokafka's protocol classes
(``_AlterClientQuotas``, KIP-546 version 0) and read back with aiokafka's DescribeClientQuotas.
"""

import asyncio
import logging
import secrets
from collections.abc import Iterable

import asyncpg
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError
from aiokafka.protocol.admin import DescribeClientQuotasRequest
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Float64, Int16, Int32, Schema, String
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, ResourcePatternType,
                                   ResourceType, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialUpsertion)

from pipeline.config import Settings
from schemas import topics

ITERATIONS = 8192
APPLY_SECONDS = 30
"""How long a command waits for the broker to log in with a password it has just set."""
PRODUCE_QUOTA = "producer_byte_rate"
NAME_RULE = "1-64 characters, letters, digits, '.', '_' or '-', starting with a letter or digit"
ALWAYS_RESERVED = ("ANONYMOUS",)
"""Kafka's principal for a client that did not log in."""
CONSUMER_TOPICS = (topics.TICKETS, topics.CASE_EVENTS, topics.DEAD_LETTERS)
"""What a city system may read: the pipeline's outputs to the city (never an integrator's topics)."""


class KafkaAccessError(RuntimeError):
    """The broker refused to make or withdraw a login, or the name may not have one."""


class ReservedName(KafkaAccessError):
    """The name is the pipeline's, the broker's or Kafka's own."""


def reserved(settings: Settings) -> set[str]:
    """Names no integrator, data platform or consumer may take (compared without case): the broker's
    super users (``PW_KAFKA_SUPER_USERS``), the pipeline's own principal, the app id (Faust's app and
    the pipeline's consumer group) and ``ANONYMOUS``."""
    names = [*settings.kafka_super_users.split(","), settings.kafka_sasl_username or "", settings.app_id,
             *pipeline_groups(settings), *ALWAYS_RESERVED]
    return {n.strip().lower() for n in names if n.strip()}


def pipeline_groups(settings: Settings) -> set[str]:
    """The consumer groups the pipeline's workers use (Faust's group is the app id)."""
    return {settings.app_id}


def check_name(settings: Settings, name: str) -> None:
    """Raise ``ReservedName`` for a name reserved for the pipeline, the broker or Kafka."""
    if name.lower() in reserved(settings):
        raise ReservedName(f"{name!r} is reserved (the pipeline's, the broker's or Kafka's own: "
                           f"{', '.join(sorted(reserved(settings)))}); pick another name")


def _allow(resource_type: ResourceType, resource: str, name: str, operation: AclOperation) -> AclBinding:
    return AclBinding(resource_type, resource, ResourcePatternType.LITERAL, f"User:{name}", "*", operation,
                      AclPermissionType.ALLOW)


def bindings(settings: Settings, name: str) -> list[AclBinding]:
    """What integrator ``name`` is allowed."""
    own = topics.camera_events_of(settings.topic(topics.CAMERA_EVENTS.name), name)
    commands = topics.camera_commands_of(settings.topic(topics.CAMERA_COMMANDS.name), name)
    return [_allow(ResourceType.TOPIC, own, name, AclOperation.WRITE),
            _allow(ResourceType.TOPIC, own, name, AclOperation.DESCRIBE),
            _allow(ResourceType.TOPIC, commands, name, AclOperation.READ),
            _allow(ResourceType.TOPIC, commands, name, AclOperation.DESCRIBE),
            _allow(ResourceType.GROUP, name, name, AclOperation.READ)]


def feed_bindings(settings: Settings, kinds: Iterable[topics.Topic], name: str = "") -> list[AclBinding]:
    """What a data platform may do: write (and describe) the reference topics ``kinds``, nothing else.
    (``name`` is filled in by ``grant`` when left empty.)"""
    return [_allow(ResourceType.TOPIC, settings.topic(t.name), name, operation)
            for t in kinds for operation in (AclOperation.WRITE, AclOperation.DESCRIBE)]


def consumer_bindings(settings: Settings, name: str, read: Iterable[topics.Topic]) -> list[AclBinding]:
    """What a city system may do: read (and describe) the topics ``read`` in its own consumer group
    ``name``, nothing else."""
    return [_allow(ResourceType.TOPIC, settings.topic(t.name), name, operation)
            for t in read for operation in (AclOperation.READ, AclOperation.DESCRIBE)] + \
        [_allow(ResourceType.GROUP, name, name, AclOperation.READ)]


def check_bindings(settings: Settings, allowed: list[AclBinding]) -> None:
    """No ACL may name a consumer group of the pipeline (whoever held it could commit its offsets)."""
    groups = {g.lower() for g in pipeline_groups(settings)}
    for binding in allowed:
        if binding.restype == ResourceType.GROUP and binding.name.lower() in groups:
            raise ReservedName(f"refused: an ACL on the pipeline's consumer group {binding.name!r}")


async def grant(settings: Settings, name: str, allowed: list[AclBinding] | None = None,
                produce_bytes_per_second: int | None = None) -> str:
    """Make (or reset) principal ``name``'s SCRAM user with a new password, set its ACLs to exactly
    ``allowed`` (by default an integrator's, ``bindings``; ACLs it had beyond them are deleted) and its
    produce quota (None: none); return the password (shown once, like an API key) once the broker
    takes it (and refuses the old one, for a reset). Raises
    ``ReservedName`` for a reserved name, ``KafkaAccessError`` naming what the broker refused."""
    _need_sasl(settings)
    check_name(settings, name)
    allowed = [_allow(b.restype, b.name, name, b.operation) for b in (allowed or bindings(settings, name))]
    check_bindings(settings, allowed)
    await check_reachable(settings)
    password = secrets.token_urlsafe(24)
    admin = _admin(settings)
    await _set_password(admin, settings, name, password, f"make the SCRAM user {name}")
    await _until_the_brokers_log_in(settings, name, password, f"the new login of {name}")
    existing = await _one(admin.describe_acls(_everything_of(name)), f"read the ACLs of {name}")
    wanted = {_key(b) for b in allowed}
    stale = [b for b in existing if _key(b) not in wanted]
    if stale:
        await _each(admin.delete_acls([_filter_of(b) for b in stale]), f"delete old ACLs of {name}")
    await _each(admin.create_acls(allowed), f"make the ACLs of {name}")
    await set_quota(settings, name, produce_bytes_per_second)
    return password


async def _set_password(admin, settings: Settings, name: str, password: str, what: str) -> None:
    mechanism = ScramMechanism[settings.kafka_sasl_mechanism.replace("-", "_")]
    await _each(admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
        name, ScramCredentialInfo(mechanism, ITERATIONS), password.encode())]), what)


async def _until_the_brokers_log_in(settings: Settings, name: str, password: str, what: str) -> None:
    """Return once every broker of the cluster accepts ``name``'s login with ``password``, i.e. once each
    checks logins against the credential just set (the old password is then refused everywhere). The
    controller has committed a new credential when it answers; each broker applies it to the logins it
    checks a moment later, and under load that moment is long enough for a client to log in with the old
    password. The brokers are those the first accepted login's metadata names."""
    from pipeline.bootstrap import kafka_client_options

    deadline = asyncio.get_running_loop().time() + APPLY_SECONDS
    options = kafka_client_options(settings) | {"sasl_plain_username": name, "sasl_plain_password": password}
    brokers: list[str] | None = None
    refusing: list[str] = []
    while True:
        if brokers is None:
            brokers = await _logs_in(settings, options)
            refusing = list(brokers or [])
        refusing = [b for b in refusing if await _logs_in(settings, options | {"bootstrap_servers": b}) is None]
        if brokers is not None and not refusing:
            return
        if asyncio.get_running_loop().time() > deadline:
            which = ", ".join(refusing) if brokers else "the broker"
            raise KafkaAccessError(f"the controller committed {what} but {which} still refuses it after "
                                   f"{APPLY_SECONDS} s; check the brokers (`parkwarden status`) and run the command again")
        await asyncio.sleep(0.05)


async def _logs_in(settings: Settings, options: dict) -> list[str] | None:
    """The addresses of the cluster's brokers if a login with ``options`` is accepted, else None."""
    client = AIOKafkaClient(request_timeout_ms=5_000, client_id=f"{settings.app_id}-access", **options)
    refusals = logging.getLogger("aiokafka")
    level, refusals.level = refusals.level, logging.CRITICAL  # a refusal here is expected, not an error to show
    try:
        await client.bootstrap()
        return sorted(f"{b.host}:{b.port}" for b in client.cluster.brokers())
    except KafkaConnectionError:
        return None
    finally:
        refusals.setLevel(level)
        await client.close()


async def withdraw(settings: Settings, name: str) -> None:
    """Take principal ``name``'s login away: delete its ACLs and quota and give its SCRAM user a random
    password that nobody is told; return once the broker refuses the old password. Safe to run again (a
    revoke that failed half way is finished by running it again).

    The SCRAM user is overwritten, never deleted: Kafka 3.9 (and 4.0) loses every SCRAM user, the
    pipeline's and the broker's own included, when a broker restarts on a metadata log without a
    snapshot that holds a user's deletion (``ScramDelta.apply`` drops the mechanism's whole map when a
    deletion is applied to an empty one, in hash order), and then refuses every login. A deletion
    record never written cannot do that."""
    _need_sasl(settings)
    check_name(settings, name)
    await check_reachable(settings)
    admin = _admin(settings)
    await _each(admin.delete_acls([_everything_of(name)]), f"delete the ACLs of {name}")
    await set_quota(settings, name, None)
    unknown = secrets.token_urlsafe(32)
    await _set_password(admin, settings, name, unknown, f"take away the SCRAM login of {name}")
    await _until_the_brokers_log_in(settings, name, unknown, f"the withdrawal of {name}'s login")
    # A client already logged in keeps its connection until it reconnects; its ACLs are gone at once.


async def has_login(settings: Settings, name: str) -> bool:
    """Whether the broker holds a SCRAM user ``name``."""
    admin = _admin(settings)
    try:
        await _each(admin.describe_user_scram_credentials([name]), f"read the SCRAM user {name}")
    except KafkaAccessError as exc:
        if isinstance(exc.__cause__, KafkaException) and \
                exc.__cause__.args[0].code() == KafkaError.RESOURCE_NOT_FOUND:
            return False
        raise
    return True


async def acls_of(settings: Settings, name: str) -> list[AclBinding]:
    """The ACLs the broker holds for principal ``name``."""
    admin = _admin(settings)
    return await _one(admin.describe_acls(_everything_of(name)), f"read the ACLs of {name}")


# ── who has a login (PostgreSQL: ``principals``, one namespace for every kind) ──────────────────

KIND_WORDS = {"integrator": "an integrator", "data_platform": "a data platform", "consumer": "a consumer"}


async def registered(conn, name: str):
    """The principal named ``name`` (any kind, revoked too), or None."""
    return await conn.fetchrow("SELECT name, kind, topics, produce_bytes_per_second, created_at, revoked_at "
                               "FROM principals WHERE name = $1", name)


async def active(conn, settings: Settings, name: str, kind: str):
    """Principal ``name`` of ``kind``, not revoked; else ``KafkaAccessError`` saying why not (reserved,
    unknown, another kind, revoked): a login is only ever made or reset for one of these."""
    check_name(settings, name)
    found = await registered(conn, name)
    if found is None:
        raise KafkaAccessError(f"no {KIND_WORDS[kind].split(' ', 1)[1]} named {name!r}")
    if found["kind"] != kind:
        raise KafkaAccessError(f"{name!r} is {KIND_WORDS[found['kind']]}, not {KIND_WORDS[kind]}")
    if found["revoked_at"] is not None:
        raise KafkaAccessError(f"{name!r} was revoked on {found['revoked_at']:%Y-%m-%d %H:%M}; its name stays taken")
    return found


async def register(conn, settings: Settings, name: str, kind: str, topic_names: list[str]) -> bool:
    """Record (or, for an active principal of the same kind, update the topics of) principal ``name``;
    True if it is new. Refuses reserved names and names taken by another kind or revoked."""
    check_name(settings, name)
    if await registered(conn, name) is not None:
        await active(conn, settings, name, kind)
        await conn.execute("UPDATE principals SET topics = $2 WHERE name = $1", name, topic_names)
        return False
    try:
        await conn.execute("INSERT INTO principals (name, kind, topics) VALUES ($1, $2, $3)", name, kind, topic_names)
    except asyncpg.CheckViolationError:
        raise KafkaAccessError(f"name: {NAME_RULE}") from None
    return True


async def revoke(conn, name: str, kind: str) -> str:
    """Mark principal ``name`` of ``kind`` revoked: "revoked" now, "already" (revoked before: its Kafka
    login is withdrawn again), or ``KafkaAccessError`` for no such principal."""
    found = await registered(conn, name)
    if found is None or found["kind"] != kind:
        raise KafkaAccessError(f"no {KIND_WORDS[kind].split(' ', 1)[1]} named {name!r}")
    if found["revoked_at"] is not None:
        return "already"
    await conn.execute("UPDATE principals SET revoked_at = now() WHERE name = $1", name)
    return "revoked"


async def listing(conn, kind: str) -> list:
    return await conn.fetch("SELECT name, topics, produce_bytes_per_second, created_at, revoked_at FROM principals "
                            "WHERE kind = $1 ORDER BY name", kind)


# ── produce quotas (AlterClientQuotas: no Python client library has it, see the module's docstring) ──


class _AlterClientQuotasResponse_v0(Response):
    API_KEY = 49
    API_VERSION = 0
    SCHEMA = Schema(("throttle_time_ms", Int32),
                    ("entries", Array(("error_code", Int16), ("error_message", String("utf-8")),
                                      ("entity", Array(("entity_type", String("utf-8")),
                                                       ("entity_name", String("utf-8")))))))


class _AlterClientQuotasRequest_v0(RequestStruct):
    API_KEY = 49
    API_VERSION = 0
    RESPONSE_TYPE = _AlterClientQuotasResponse_v0
    SCHEMA = Schema(("entries", Array(("entity", Array(("entity_type", String("utf-8")),
                                                       ("entity_name", String("utf-8")))),
                                      ("ops", Array(("key", String("utf-8")), ("value", Float64),
                                                    ("remove", Boolean))))),
                    ("validate_only", Boolean))


class _AlterClientQuotas(Request[_AlterClientQuotasRequest_v0]):
    API_KEY = 49

    def __init__(self, user: str, key: str, value: float | None):
        self.entries = [([("user", user)], [(key, value or 0.0, value is None)])]

    def build(self, request_struct_class: type[_AlterClientQuotasRequest_v0]) -> _AlterClientQuotasRequest_v0:
        return request_struct_class(self.entries, False)


async def set_quota(settings: Settings, name: str, produce_bytes_per_second: int | None) -> None:
    """Set (None: remove) user ``name``'s produce quota on the broker."""
    client = await _protocol_client(settings)
    try:
        response = await client.send(client.get_random_node(),
                                     _AlterClientQuotas(name, PRODUCE_QUOTA, produce_bytes_per_second))
    finally:
        await client.close()
    for error_code, message, _ in response.entries:
        if error_code:
            raise KafkaAccessError(f"the broker refused the produce quota of {name}: {message} (error {error_code})")


async def quotas(settings: Settings, names: Iterable[str] = ()) -> dict[str, int]:
    """Produce quotas (bytes per second) the broker holds per user: of ``names``, or of every user."""
    client = await _protocol_client(settings)
    try:
        components = [[("user", 0, n)] for n in names] or [[("user", 2, None)]]
        found: dict[str, int] = {}
        for component in components:
            response = await client.send(client.get_random_node(), DescribeClientQuotasRequest(component, True))
            if response.error_code:
                raise KafkaAccessError(f"the broker did not say its quotas: {response.error_message}")
            for entity, values in response.entries:
                user = dict(entity).get("user")
                for key, value in values:
                    if key == PRODUCE_QUOTA and user:
                        found[user] = int(value)
        return found
    finally:
        await client.close()


# ── plumbing ──────────────────────────────────────────────────────────────────────────────


def _need_sasl(settings: Settings) -> None:
    if not settings.kafka_sasl_username:
        raise KafkaAccessError("Kafka logins need PW_KAFKA_SASL_USERNAME / PW_KAFKA_SASL_PASSWORD (the pipeline's "
                               "own principal): `eval \"$(scripts/services.sh env)\"`")


async def check_reachable(settings: Settings) -> None:
    """Raise ``KafkaAccessError`` at once when the broker cannot be reached or refuses the pipeline's
    login (librdkafka would only time out, after its whole timeout)."""
    try:
        client = await _protocol_client(settings)
    except Exception as exc:  # noqa: BLE001 - said in the error
        raise KafkaAccessError(f"the broker at {settings.kafka_bootstrap} cannot be reached or refused the "
                               f"pipeline's login ({type(exc).__name__}: {exc}); check PW_KAFKA_BOOTSTRAP and "
                               "PW_KAFKA_SASL_USERNAME / PW_KAFKA_SASL_PASSWORD") from None
    await client.close()


def _admin(settings: Settings):
    from pipeline.bootstrap import admin_client

    return admin_client(settings, "access")


async def _protocol_client(settings: Settings) -> AIOKafkaClient:
    from pipeline.bootstrap import kafka_client_options

    client = AIOKafkaClient(request_timeout_ms=15_000, client_id=f"{settings.app_id}-access",
                            **kafka_client_options(settings))
    await client.bootstrap()
    return client


def _everything_of(name: str) -> AclBindingFilter:
    return AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{name}", None, AclOperation.ANY,
                            AclPermissionType.ANY)


def _filter_of(b: AclBinding) -> AclBindingFilter:
    return AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation,
                            b.permission_type)


def _key(b: AclBinding) -> tuple:
    return (b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type)


async def _one(future, what: str):
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), 30)
    except KafkaException as exc:
        raise KafkaAccessError(f"the broker refused to {what}: {exc.args[0].str()}") from exc
    except TimeoutError:
        raise KafkaAccessError(f"no answer from the broker within 30 s (to {what})") from None


async def _each(futures: dict, what: str, gone_is_fine: bool = False) -> None:
    """Wait for every future of a confluent-kafka admin call; raise the first refusal (a resource
    already gone is fine when ``gone_is_fine``)."""
    for future in futures.values():
        try:
            await _one(future, what)
        except KafkaAccessError as exc:
            cause = exc.__cause__
            if gone_is_fine and isinstance(cause, KafkaException) and \
                    cause.args[0].code() == KafkaError.RESOURCE_NOT_FOUND:
                continue
            raise
