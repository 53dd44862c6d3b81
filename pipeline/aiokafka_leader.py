"""A workaround for an aiokafka bug: a consumer that asks an old leader for a partition's offsets waits
for its next periodic metadata refresh (5 minutes) instead of looking the new leader up.

When a consumer has no position for a partition (no committed offset, or a seek to the beginning or
end), aiokafka's fetcher asks the partition's leader for the offset (ListOffsets). If its metadata
names a broker that is no longer the leader (the controller moved the leadership since: a broker's
restart, the preferred leader's election that follows it), the broker answers NOT_LEADER_FOR_PARTITION
and ``Fetcher._update_fetch_positions`` logs ``Failed fetch offsets from N``, waits ``retry_backoff_ms``
and asks the same broker again, without refreshing its metadata; meanwhile it fetches nothing from that
broker for the consumer's other partitions either. Only the periodic refresh (``metadata_max_age_ms``,
5 minutes by default) ends it. The fetch path (``Fetcher._proc_fetch_request``) and ``end_offsets``
(``Fetcher._retrieve_offsets``) do refresh on the same errors; the Java client does here too (KAFKA-9535).

Upstream: robinhood/aiokafka#9 ("While fetching offsets on startup metadata is not refreshed on
error", fixed in Robinhood's fork by its #10, never in aio-libs/aiokafka: 0.14.0 still has it);
faust-streaming/faust#602 shows the same log. Remove this module once aiokafka refreshes there itself.

``install()`` makes a ListOffsets answer that says the metadata is stale (``invalid_metadata``:
NOT_LEADER_FOR_PARTITION, UNKNOWN_TOPIC_OR_PARTITION, a connection lost...) request a metadata refresh
before the fetcher retries, as its fetch path does. tests/unit/test_aiokafka_leader.py fails if an
aiokafka upgrade changes what this relies on.
"""

import functools

from aiokafka.consumer.fetcher import Fetcher
from aiokafka.errors import KafkaError


def install() -> None:
    """Refresh the metadata when a ListOffsets request fails on stale metadata (idempotent)."""
    asks_leader = Fetcher._proc_offset_request
    if getattr(asks_leader, "refreshes_metadata", False):
        return
    if not hasattr(Fetcher, "_update_fetch_positions"):
        raise RuntimeError("aiokafka's Fetcher no longer has _update_fetch_positions: see pipeline/aiokafka_leader.py")

    @functools.wraps(asks_leader)
    async def proc_offset_request(self, node_id, topic_data):
        try:
            return await asks_leader(self, node_id, topic_data)
        except KafkaError as error:
            if error.invalid_metadata:
                self._client.force_metadata_update()
            raise

    proc_offset_request.refreshes_metadata = True
    Fetcher._proc_offset_request = proc_offset_request
