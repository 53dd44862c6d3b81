"""The outbox relay: Kafka outputs leave from PostgreSQL, so Kafka says what PostgreSQL holds.

Rows are published in id order and deleted once the broker has acknowledged them. One relay at a
time holds a PostgreSQL advisory lock (released by the server if its worker dies), so outputs keep
their order per key while any number of workers stand by. Delivery is at least once: a crash
between the broker's acknowledgement and the delete publishes those rows again; consumers key
them by ``case_id`` / ``ticket_number``.
"""

import asyncio
import logging

import asyncpg
from aiokafka import AIOKafkaProducer

log = logging.getLogger(__name__)
_LOCK = 0x6F7574  # "out"


class OutboxRelay:
    def __init__(self, pool: asyncpg.Pool, producer: AIOKafkaProducer, batch_size: int = 500):
        self.pool = pool
        self.producer = producer
        self.batch_size = batch_size
        self.published = 0

    async def relay_once(self, conn: asyncpg.Connection) -> int:
        """Publish one batch; the caller holds the advisory lock on ``conn``."""
        rows = await conn.fetch("SELECT id, topic, key, value FROM outbox ORDER BY id LIMIT $1", self.batch_size)
        if not rows:
            return 0
        futures = [await self.producer.send(r["topic"], value=r["value"], key=r["key"]) for r in rows]
        await asyncio.gather(*futures)
        await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows])
        self.published += len(rows)
        return len(rows)

    async def run(self, should_stop, poll_seconds: float) -> None:
        """Wait for the lock, then relay until ``should_stop()``; on a lost connection, start over."""
        while not should_stop():
            try:
                async with self.pool.acquire() as conn:
                    while not should_stop() and not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK):
                        await asyncio.sleep(1.0)
                    try:
                        while not should_stop():
                            if await self.relay_once(conn) < self.batch_size:
                                await asyncio.sleep(poll_seconds)
                    finally:
                        if not conn.is_closed():
                            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the relay must outlive outages
                log.error("outbox relay: %s: %s; retrying in 1s", type(exc).__name__, exc)
                await asyncio.sleep(1.0)
