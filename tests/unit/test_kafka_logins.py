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

    def __init__(self, port: int, lag: int):
        self.host, self.port, self.lag = "127.0.0.1", port, lag
        self.committed = self.applied = None
        self.behind = 0
        self.answered = []

    def logs_in(self, password: str) -> bool:
        if self.behind:
            self.behind -= 1
        else:
            self.applied = self.committed
        self.answered.append(password == self.applied)
        return self.answered[-1]


class Cluster:
    """Brokers behind one controller; a client bootstraps from the first broker that accepts its login,
    as aiokafka does, and learns every broker's address from it."""

    def __init__(self, *lags: int):
        self.brokers = [Broker(9092 + i, lag) for i, lag in enumerate(lags)]

    def alter_user_scram_credentials(self, alterations):
        from concurrent.futures import Future

        [alteration] = alterations
        for broker in self.brokers:
            broker.committed, broker.behind = alteration.password.decode(), broker.lag
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

    def client(self, *, bootstrap_servers, sasl_plain_password, **options):
        cluster = self
        tried = [b for b in self.brokers if f"{b.host}:{b.port}" == bootstrap_servers] or self.brokers

        class Client:
            class cluster:
                @staticmethod
                def brokers():
                    return cluster.brokers

            async def bootstrap(self):
                if not any(broker.logs_in(sasl_plain_password) for broker in tried):
                    raise KafkaConnectionError("SaslAuthenticationFailed")

            async def close(self):
                pass
        return Client()


def _with(monkeypatch, cluster: Cluster) -> Cluster:
    async def nothing(*args, **kwargs):
        pass
    monkeypatch.setattr(principals, "_admin", lambda settings: cluster)
    monkeypatch.setattr(principals, "AIOKafkaClient", cluster.client)
    monkeypatch.setattr(principals, "check_reachable", nothing)
    monkeypatch.setattr(principals, "set_quota", nothing)
    return cluster


SETTINGS = {k.removeprefix("PW_").lower(): v for k, v in ENV.items()}


async def test_a_revoke_returns_only_once_the_broker_refuses_the_old_password(monkeypatch):
    [busy] = _with(monkeypatch, Cluster(3)).brokers
    old = await principals.grant(Settings(**SETTINGS), "acme")
    assert busy.applied == old, "the password handed out works when grant returns"
    await principals.withdraw(Settings(**SETTINGS), "acme")
    assert busy.applied not in (None, old), "the broker checks logins against the withdrawal"
    assert busy.answered.count(False) == 2 * busy.lag


async def test_on_a_cluster_grant_and_revoke_return_only_once_every_broker_checks_the_new_password(monkeypatch):
    cluster = _with(monkeypatch, Cluster(0, 4, 2))
    old = await principals.grant(Settings(**SETTINGS), "acme")
    assert [b.applied for b in cluster.brokers] == [old] * 3, "the password handed out works on every broker"
    await principals.withdraw(Settings(**SETTINGS), "acme")
    assert all(b.applied not in (None, old) for b in cluster.brokers), "no broker still takes the old password"
