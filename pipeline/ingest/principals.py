"""An integrator's Kafka login: a SCRAM user of its own and the ACLs that let it write its camera
events and read the camera commands, nothing else.

For an integrator NAME (topic names with ``PW_TOPIC_PREFIX``):

    topic camera-events.NAME   WRITE, DESCRIBE    its camera events (the topic says who wrote them)
    topic camera-commands.NAME READ, DESCRIBE     recheck requests to its cameras
    group NAME                 READ               its consumer group (named exactly NAME: a prefix would
                                                  also match another integrator's, e.g. NAME2)

A data platform feeding reference data (``parkwarden reference kafka-login NAME --kind ...``) gets
WRITE and DESCRIBE on the reference topics of those kinds only (``feed_bindings``).

Everything else is refused by the broker's authorizer (``allow.everyone.if.no.acl.found=false``):
another integrator's topic, case-events, tickets, the bare camera-events.

How: the SCRAM user is made with Kafka's own ``kafka.admin.ConfigCommand`` (from the jars
``scripts/services.sh`` resolves, ``PW_KAFKA_TOOLS_CLASSPATH``), because no Python Kafka client
speaks AlterUserScramCredentials; the ACLs with CreateAcls/DeleteAcls requests from aiokafka's
protocol classes, in one connection. Both run as the pipeline's own principal (a super user).
"""

import asyncio
import os
import secrets
import tempfile

from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.admin import CreateAclsRequest, DeleteAclsRequest

from pipeline.config import ROOT, Settings
from schemas import topics

TOPIC, GROUP, ANY = 2, 3, 1
READ, WRITE, DESCRIBE = 3, 4, 8
ALLOW = 3
LITERAL = 3
ITERATIONS = 8192


class KafkaAccessError(RuntimeError):
    """The broker (or Kafka's tool) refused to make or withdraw an integrator's login."""


def bindings(settings: Settings, name: str) -> list[tuple[int, str, int, int]]:
    """(resource type, resource name, pattern type, operation) allowed to integrator ``name``."""
    own = topics.camera_events_of(settings.topic(topics.CAMERA_EVENTS.name), name)
    commands = topics.camera_commands_of(settings.topic(topics.CAMERA_COMMANDS.name), name)
    return [(TOPIC, own, LITERAL, WRITE), (TOPIC, own, LITERAL, DESCRIBE),
            (TOPIC, commands, LITERAL, READ), (TOPIC, commands, LITERAL, DESCRIBE),
            (GROUP, name, LITERAL, READ)]


def feed_bindings(settings: Settings, kinds: list[topics.Topic]) -> list[tuple[int, str, int, int]]:
    """What a data platform may do: write (and describe) the reference topics ``kinds``, nothing else."""
    return [(TOPIC, settings.topic(t.name), LITERAL, operation) for t in kinds for operation in (WRITE, DESCRIBE)]


async def grant(settings: Settings, name: str, allowed: list[tuple[int, str, int, int]] | None = None) -> str:
    """Make (or reset) principal ``name``'s SCRAM user with a new password, and its ACLs (``allowed``;
    by default an integrator's, ``bindings``); return the password (shown once, like an API key)."""
    _need_sasl(settings)
    password = secrets.token_urlsafe(24)
    # In a config file the value has no brackets (on a command line: SCRAM-SHA-512=[iterations=…,password=…]).
    await _scram(settings, name, f"{settings.kafka_sasl_mechanism}=iterations={ITERATIONS},password={password}",
                 "--add-config-file", secret=password)
    client = await _client(settings)
    try:
        for resource_type, resource, pattern, operation in allowed or bindings(settings, name):
            response = await client.send(client.get_random_node(), CreateAclsRequest(
                resource_type, resource, pattern, f"User:{name}", "*", operation, ALLOW))
            for error_code, message in response.creation_responses:
                if error_code:
                    raise KafkaAccessError(f"the broker refused an ACL for {name} on {resource}: {message} "
                                           f"(error {error_code})")
    finally:
        await client.close()
    return password


async def withdraw(settings: Settings, name: str) -> None:
    """Delete integrator ``name``'s SCRAM user and every ACL of its principal."""
    _need_sasl(settings)
    client = await _client(settings)
    try:
        await client.send(client.get_random_node(), DeleteAclsRequest(ANY, None, ANY, f"User:{name}", None, ANY, ANY))
    finally:
        await client.close()
    await _scram(settings, name, settings.kafka_sasl_mechanism, "--delete-config")
    # A client already logged in keeps its connection until it reconnects; its ACLs are gone at once.


def _need_sasl(settings: Settings) -> None:
    if not settings.kafka_sasl_username:
        raise KafkaAccessError("Kafka logins need PW_KAFKA_SASL_USERNAME / PW_KAFKA_SASL_PASSWORD (the pipeline's "
                               "own principal): `eval \"$(scripts/services.sh env)\"`")


async def _client(settings: Settings) -> AIOKafkaClient:
    from pipeline.bootstrap import kafka_client_options

    client = AIOKafkaClient(request_timeout_ms=15_000, client_id=f"{settings.app_id}-access",
                            **kafka_client_options(settings))
    await client.bootstrap()
    return client


async def _scram(settings: Settings, name: str, config: str, how: str, secret: str = "") -> None:
    """Run ConfigCommand on user ``name``: ``--add-config-file`` (``config`` written to a private file,
    never on a command line) or ``--delete-config``."""
    with tempfile.TemporaryDirectory(prefix="pw-kafka-") as folder:
        login = os.path.join(folder, "login.properties")
        _private(login, "security.protocol=SASL_PLAINTEXT\n"
                        f"sasl.mechanism={settings.kafka_sasl_mechanism}\n"
                        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
                        f'username="{settings.kafka_sasl_username}" '
                        f'password="{settings.kafka_sasl_password.get_secret_value()}";\n')
        argument = config
        if how == "--add-config-file":
            argument = os.path.join(folder, "scram.properties")
            _private(argument, config + "\n")
        proc = await asyncio.create_subprocess_exec(
            "java", "-Xmx256m", f"-Dlog4j.configuration=file:{ROOT / 'scripts/services/kafka-tools-log4j.properties'}",
            "-cp", settings.kafka_tools_classpath, "kafka.admin.ConfigCommand",
            "--bootstrap-server", settings.kafka_bootstrap, "--command-config", login,
            "--alter", how, argument, "--entity-type", "users", "--entity-name", name,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
    if proc.returncode != 0:
        text = out.decode(errors="replace").replace(secret or "\0", "***").strip().splitlines()  # it echoes the password
        raise KafkaAccessError(f"Kafka's ConfigCommand could not {'make' if how != '--delete-config' else 'delete'} "
                               f"the SCRAM user {name}: {' '.join(text[-3:])[:500]}")


def _private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
