"""The one use of Faust's private parts (pipeline/faust_subscription.py): an integrator registered
while a worker runs is read without a restart. These tests fail when a Faust upgrade changes what
that relies on; fix ``read_topics`` then (or subscribe by pattern)."""

import asyncio
import inspect

import faust
from faust.transport.conductor import Conductor

from pipeline import faust_subscription

NAMES = ["camera-events", "camera-events.acme", "camera-events.newco"]


def _app_with_agent_channel():
    app = faust.App("pw-test-faust-subscription", broker="kafka://127.0.0.1:1")
    topic = app.topic("camera-events", value_serializer="raw")
    agents_copy = topic.clone()  # what an agent reads: Faust clones the channel
    app.topics.add(agents_copy)
    return app, topic, agents_copy


async def test_the_agents_channel_reads_the_new_topics_and_the_conductor_subscribes_to_them():
    app, topic, agents_copy = _app_with_agent_channel()
    conductor = app.topics
    conductor._subscription_changed = changed = asyncio.Event()  # as once the conductor has started

    faust_subscription.read_topics(app, topic, "camera-events", NAMES)

    assert topic.topics == NAMES and agents_copy.topics == NAMES
    assert agents_copy in conductor
    assert changed.is_set(), "the conductor was not told to subscribe again"
    subscribed = await conductor._update_indices()  # what the conductor subscribes the consumer to
    assert set(NAMES) <= set(subscribed)


def test_the_conductor_waits_one_second_not_45_before_it_subscribes_again():
    app, topic, _ = _app_with_agent_channel()
    assert Conductor._resubscribe_sleep_lock_seconds == 45.0, "Faust's default wait changed"
    assert "_resubscribe_sleep_lock_seconds" in inspect.getsource(Conductor._subscriber.fun), \
        "Faust's conductor no longer reads this wait"
    faust_subscription.read_topics(app, topic, "camera-events", NAMES)
    assert app.topics._resubscribe_sleep_lock_seconds == faust_subscription.RESUBSCRIBE_WAIT_SECONDS == 1.0
