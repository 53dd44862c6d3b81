"""The console's figures (``metrics.Refreshed``): a page or a scrape does not wait for a slow count
while a recent value is there; after an operator's action it does."""

import asyncio

from pipeline.console.metrics import Refreshed


class SlowRead:
    """A read that takes as long as the test says: each read waits for ``release``."""

    def __init__(self):
        self.reads = 0
        self.release = asyncio.Event()
        self.fail = False

    async def __call__(self) -> int:
        self.reads += 1
        await self.release.wait()
        if self.fail:
            raise ConnectionError("database gone")
        return self.reads


async def test_a_recent_value_is_served_at_once_while_it_is_read_again_behind():
    read = SlowRead()
    value = Refreshed(0.05, read, stale_seconds=10)
    read.release.set()
    assert await value.get() == 1
    read.release.clear()
    await asyncio.sleep(0.06)
    assert await asyncio.wait_for(value.get(), 0.5) == 1, "the held value, without waiting for the slow read"
    assert await asyncio.wait_for(value.get(), 0.5) == 1
    assert read.reads == 2, "one read behind, however many ask"
    read.release.set()
    await asyncio.sleep(0.01)
    assert await value.get() == 2


async def test_a_value_older_than_its_stale_limit_or_none_is_waited_for():
    read = SlowRead()
    value = Refreshed(0.01, read, stale_seconds=0.05)
    waiting = asyncio.create_task(value.get())
    await asyncio.sleep(0.05)
    assert not waiting.done(), "nothing held yet: the first caller waits"
    read.release.set()
    assert await waiting == 1
    await asyncio.sleep(0.1)
    assert await value.get() == 2, "too old to show: read afresh"


async def test_after_an_action_the_next_caller_waits_for_a_fresh_value():
    read = SlowRead()
    read.release.set()
    value = Refreshed(3600, read, stale_seconds=3600)
    assert await value.get() == 1
    value.invalidate()
    assert await value.get() == 2 and read.reads == 2


async def test_a_read_behind_that_fails_keeps_the_value_and_the_next_caller_reads_again():
    read = SlowRead()
    read.release.set()
    value = Refreshed(0.01, read, stale_seconds=10)
    assert await value.get() == 1
    read.fail = True
    await asyncio.sleep(0.02)
    assert await value.get() == 1
    await asyncio.sleep(0.02)
    read.fail = False
    assert await value.get() == 1, "still the held value, while it is read again behind"
    await asyncio.sleep(0.02)
    assert await value.get() == 3 and read.reads == 3
