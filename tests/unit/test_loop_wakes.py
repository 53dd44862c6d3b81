"""The worker's loops wait for work without polling often: woken by the writer (issue 16)."""

import asyncio

from pipeline.outbox import OutboxRelay, Relayed


class LockedPool:
    """A pool whose one connection always gets the relay's advisory lock."""

    class Conn:
        async def fetchval(self, sql, *args):
            return True

        async def execute(self, sql, *args):
            return None

        def is_closed(self):
            return False

    def __init__(self):
        self.conn = self.Conn()

    def acquire(self):
        pool = self

        class Acquire:
            async def __aenter__(self):
                return pool.conn

            async def __aexit__(self, *exc):
                return False
        return Acquire()


async def test_the_outbox_relay_goes_again_as_soon_as_it_is_woken_not_after_its_poll():
    relay = OutboxRelay(LockedPool(), new_producer=None)
    rounds = []

    async def relay_once(conn):
        rounds.append(asyncio.get_running_loop().time())
        return Relayed()
    relay.relay_once = relay_once
    wake, stop = asyncio.Event(), False
    running = asyncio.create_task(relay.run(lambda: stop, poll_seconds=3600, wake=wake))
    await asyncio.sleep(0.1)
    assert len(rounds) == 1, "one round, then it waits (for up to an hour)"
    wake.set()
    await asyncio.sleep(0.1)
    assert len(rounds) == 2, "woken: a second round at once"
    await asyncio.sleep(0.1)
    assert len(rounds) == 2, "and then it waits again"
    running.cancel()
