"""Topics on a Kafka cluster: replication factor and min.insync.replicas from the settings, checked at
start (issue 17, must 1)."""

import pytest
from pydantic import ValidationError

from pipeline.bootstrap import TopicReplicationError, check_replicas
from pipeline.config import Settings


def described(name: str, replicas_per_partition: list[int]) -> dict:
    return {"topic": name, "error_code": 0, "partitions": [
        {"partition": i, "replicas": list(range(1, n + 1)), "isr": list(range(1, n + 1))}
        for i, n in enumerate(replicas_per_partition)]}


def test_a_topic_with_fewer_replicas_than_configured_is_an_error_naming_it():
    settings = Settings(topic_replication_factor=3, topic_min_insync_replicas=2)
    with pytest.raises(TopicReplicationError) as refused:
        check_replicas(settings, [described("camera-events", [3, 3, 3, 3]), described("tickets", [3, 1, 3, 3])])
    assert "tickets (1 replicas)" in str(refused.value) and "camera-events" not in str(refused.value)


def test_topics_with_every_partition_replicated_as_configured_pass():
    check_replicas(Settings(topic_replication_factor=3, topic_min_insync_replicas=2),
                   [described("camera-events", [3, 3, 3, 3]), described("tickets", [3, 3])])
    check_replicas(Settings(), [described("camera-events", [1, 1, 1, 1])])  # the single broker, as today


def test_min_insync_replicas_above_the_replication_factor_is_refused_naming_both():
    with pytest.raises(ValidationError) as refused:
        Settings(topic_replication_factor=1, topic_min_insync_replicas=2)
    assert "PW_TOPIC_MIN_INSYNC_REPLICAS" in str(refused.value) and "PW_TOPIC_REPLICATION_FACTOR" in str(refused.value)
