"""A consumer whose metadata names a partition's old leader finds the new one when it asks for the
partition's offsets (pipeline/aiokafka_leader.py, the workaround for robinhood/aiokafka#9), instead of
waiting for its 5-minute periodic metadata refresh as a restarted worker did in the cluster chaos run.

aiokafka's own fetcher runs against a fake cluster: the consumer's metadata says broker 2 leads the
partition, broker 2 answers NOT_LEADER_FOR_PARTITION, a metadata refresh says broker 1, which answers."""

import asyncio
import os
import subprocess
import sys
from types import SimpleNamespace

from aiokafka.consumer.fetcher import Fetcher
from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.errors import NotLeaderForPartitionError
from aiokafka.protocol.offset import OffsetRequest
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from pipeline import aiokafka_leader
from pipeline.config import ROOT

PARTITION = TopicPartition("camera-events", 3)
OLD_LEADER, NEW_LEADER = 2, 1
EARLIEST_OFFSET = 7


class MovedLeaderCluster:
    """An aiokafka client's surface as the fetcher uses it, for a cluster where the partition's
    leadership moved from broker 2 to broker 1 after the client last read the metadata."""

    def __init__(self):
        self._loop = asyncio.get_running_loop()
        self._metadata_max_age_ms = 300_000
        self.leader = OLD_LEADER  # what the client's metadata says
        self.cluster = SimpleNamespace(leader_for_partition=lambda tp: self.leader,
                                       broker_metadata=lambda node_id: object())
        self.asked = {OLD_LEADER: 0, NEW_LEADER: 0}
        self.refreshes = 0

    def force_metadata_update(self):
        self.refreshes += 1
        self.leader = NEW_LEADER
        done = self._loop.create_future()
        done.set_result(True)
        return done

    async def send(self, node_id, request):
        if not isinstance(request, OffsetRequest):
            await asyncio.sleep(3600)  # a fetch: nothing to read
        self.asked[node_id] += 1
        error = NotLeaderForPartitionError.errno if node_id != NEW_LEADER else 0
        return SimpleNamespace(API_VERSION=1, topics=[
            (PARTITION.topic, [(PARTITION.partition, error, -1, EARLIEST_OFFSET)])])


async def test_a_consumer_asking_the_old_leader_for_offsets_finds_the_new_leader_at_once():
    aiokafka_leader.install()
    client = MovedLeaderCluster()
    subscriptions = SubscriptionState()
    fetcher = Fetcher(client, subscriptions, auto_offset_reset="earliest", retry_backoff_ms=100)
    try:
        subscriptions.assign_from_user({PARTITION})
        assignment = subscriptions.subscription.assignment
        state = assignment.state_value(PARTITION)
        await asyncio.wait_for(assignment.commit_refresh_needed.wait(), 2)  # the fetcher asks the group
        state.update_committed(OffsetAndMetadata(-1, ""))  # nothing committed: reset to the earliest

        for _ in range(40):  # 2 s; without the workaround it asks broker 2 until the 5-minute refresh
            if state.has_valid_position:
                break
            await asyncio.sleep(0.05)

        assert state.has_valid_position and state.position == EARLIEST_OFFSET, (
            f"no position after 2 s: asked the old leader {client.asked[OLD_LEADER]} times, "
            f"metadata refreshed {client.refreshes} times")
        assert client.asked[NEW_LEADER] == 1 and client.refreshes >= 1
    finally:
        await fetcher.close()


def test_installing_twice_wraps_aiokafka_once():
    aiokafka_leader.install()
    wrapped = Fetcher._proc_offset_request
    aiokafka_leader.install()
    assert Fetcher._proc_offset_request is wrapped and wrapped.refreshes_metadata


def test_the_worker_installs_the_workaround():
    loaded = subprocess.run(
        [sys.executable, "-c", "import pipeline.app; from aiokafka.consumer.fetcher import Fetcher; "
                               "print(getattr(Fetcher._proc_offset_request, 'refreshes_metadata', False))"],
        env={"PATH": os.environ["PATH"], "PW_SMS_GATEWAY": "file"}, capture_output=True, text=True, cwd=ROOT)
    assert loaded.stdout.strip() == "True", loaded.stderr[-2000:]
