"""Kafka logins (pipeline/ingest/principals.py and the commands that make them): no command ever hands
out, resets or deletes a reserved principal's login; no ACL names the pipeline's consumer group. Kafka is
replaced by recorders here: nothing below may reach it for a reserved name."""

import pytest
from aiokafka.errors import KafkaConnectionError
from click.testing import CliRunner
from confluent_kafka.admin import ResourceType

from pipeline import bootstrap
from pipeline.cli import main
from pipeline.config import Settings
from pipeline.ingest import principals
from schemas import topics

pytestmark = pytest.mark.unit

ENV = {"PW_KAFKA_SASL_USERNAME": "parkwarden", "PW_KAFKA_SASL_PASSWORD": "secret", "PW_APP_ID": "parkwarden-city",
       "PW_DATABASE_URL": "postgresql://nobody:nothing@127.0.0.1:9/none"}


@pytest.fixture
def kafka(monkeypatch) -> list[tuple]:
    """Every Kafka administration the commands attempt, recorded instead of done."""
    calls: list[tuple] = []

    async def record(*args, **kwargs):
        calls.append(args)
        return "a-password"
    for module, name in ((principals, "grant"), (principals, "withdraw"), (principals, "set_quota"),
                         (principals, "check_reachable"), (bootstrap, "create_topics")):
        monkeypatch.setattr(module, name, record, raising=False)
    return calls


@pytest.mark.parametrize("args", [
    ("integrators", "kafka-login", "parkwarden"),
    ("integrators", "kafka-login", "BROKER"),
    ("integrators", "add", "parkwarden"),
    ("integrators", "add", "parkwarden-city"),
    ("reference", "kafka-login", "parkwarden", "--kind", "plates"),
    ("reference", "kafka-login", "broker", "--kind", "contacts"),
    ("reference", "revoke", "parkwarden"),
    ("reference", "revoke", "controller"),
    ("consumers", "add", "ANONYMOUS", "--topics", "tickets"),
])
def test_a_reserved_name_is_refused_before_anything_is_made_or_deleted(kafka, args):
    result = CliRunner().invoke(main, list(args), env=ENV)
    assert result.exit_code == 1, result.output
    assert "reserved" in result.output
    assert kafka == [], "no Kafka login was made, reset or deleted"


def test_reserved_names_are_the_super_users_the_pipelines_principal_and_its_app_id():
    settings = Settings(kafka_sasl_username="pw-pipeline", app_id="pw-city", kafka_super_users="broker, ops-admin")
    assert principals.reserved(settings) == {"broker", "ops-admin", "pw-pipeline", "pw-city", "anonymous"}
    for name in ("Pw-Pipeline", "pw-city", "OPS-ADMIN"):
        with pytest.raises(principals.ReservedName):
            principals.check_name(settings, name)
    principals.check_name(settings, "acme")


def test_no_acl_names_a_consumer_group_of_the_pipeline():
    settings = Settings(app_id="pw-city", kafka_sasl_username="pw-pipeline")
    for allowed in (principals.bindings(settings, "pw-city"),
                    principals.consumer_bindings(settings, "pw-city", [topics.TICKETS])):
        with pytest.raises(principals.ReservedName):
            principals.check_bindings(settings, allowed)
    groups = [b.name for b in principals.bindings(settings, "acme") + principals.consumer_bindings(
        settings, "office", [topics.TICKETS]) if b.restype == ResourceType.GROUP]
    assert groups == ["acme", "office"]


def test_a_consumer_may_read_only_the_outputs_to_the_city(kafka):
    result = CliRunner().invoke(main, ["consumers", "add", "office", "--topics", "tickets,camera-events"], env=ENV)
    assert result.exit_code == 2 and "camera-events" in result.output and "--topics" in result.output
    assert kafka == []


def test_integrators_add_help_names_the_topics_as_the_docs_do():
    result = CliRunner().invoke(main, ["integrators", "add", "--help"], terminal_width=80)
    assert result.exit_code == 0
    for topic in ("camera-events.NAME", "camera-commands.NAME", "consumer group NAME"):
        assert topic in result.output, topic
    assert "--json" in result.output and "standard output" in result.output


class Broker:
    """A broker that applies a new SCRAM credential ``lag`` logins after its controller committed it (a
    busy broker): until then it still checks logins against the old one."""

    def __init__(self, lag: int):
        self.lag, self.committed, self.applied = lag, None, None
        self.answered = []

    def alter_user_scram_credentials(self, alterations):
        from concurrent.futures import Future

        [alteration] = alterations
        self.committed, self.behind = alteration.password.decode(), self.lag
        done = Future()
        done.set_result(None)
        return {alteration.user: done}

    def delete_acls(self, filters):
        return {}

    def describe_acls(self, filter):
        from concurrent.futures import Future

        done = Future()
        done.set_result([])
        return done

    def create_acls(self, bindings):
        return {}

    def client(self, *, sasl_plain_password, **options):
        broker = self

        class Client:
            async def bootstrap(self):
                if broker.behind:
                    broker.behind -= 1
                else:
                    broker.applied = broker.committed
                broker.answered.append(sasl_plain_password == broker.applied)
                if not broker.answered[-1]:
                    raise KafkaConnectionError("SaslAuthenticationFailed")

            async def close(self):
                pass
        return Client()


@pytest.fixture
def busy_broker(monkeypatch) -> Broker:
    broker = Broker(lag=3)

    async def nothing(*args, **kwargs):
        pass
    monkeypatch.setattr(principals, "_admin", lambda settings: broker)
    monkeypatch.setattr(principals, "AIOKafkaClient", broker.client)
    monkeypatch.setattr(principals, "check_reachable", nothing)
    monkeypatch.setattr(principals, "set_quota", nothing)
    return broker


async def test_a_revoke_returns_only_once_the_broker_refuses_the_old_password(busy_broker):
    settings = Settings(**{k.removeprefix("PW_").lower(): v for k, v in ENV.items()})
    old = await principals.grant(settings, "acme")
    assert busy_broker.applied == old, "the password handed out works when grant returns"
    await principals.withdraw(settings, "acme")
    assert busy_broker.applied not in (None, old), "the broker checks logins against the withdrawal"
    assert busy_broker.answered.count(False) == 2 * busy_broker.lag
