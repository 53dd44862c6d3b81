"""The outbox relay: Kafka outputs leave from PostgreSQL, so Kafka says what PostgreSQL holds.

Rows are published in id order, and each row is deleted as soon as the broker has acknowledged
it, so a row that fails never sends the rows before it out again. One relay at a time holds a
PostgreSQL advisory lock (released by the server if its worker dies), so outputs keep their order
per key while any number of workers stand by. Delivery is at least once: a crash between the
broker's acknowledgement and the delete publishes those rows again; consumers key them by
``case_id`` / ``ticket_number``.

A row Kafka refuses for good (larger than the broker takes, an invalid or unknown topic, not
allowed to write there: see ``refusal``) is moved to ``outbox_set_aside`` whole, with the reason,
and the rows after it go on; ``parkwarden status``, the console and /metrics count such rows and
``parkwarden outbox retry`` puts them back once the cause is fixed. Any other failure (the broker
away, a leader moving) keeps the row and tries it again, in order, with a fresh producer.

Setting a row aside is only for what waiting cannot fix, so later rows with the same key are
published without it: a consumer sees that key's outputs in order with a gap where the set-aside
row was, and a row sent again with ``retry`` arrives after them.
"""

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka

from pipeline import restore

log = logging.getLogger(__name__)
_LOCK = 0x6F7574  # "out"

REFUSED = (kafka.MessageSizeTooLargeError, kafka.RecordListTooLargeError, kafka.RecordTooLargeError,
           kafka.InvalidTopicError, kafka.InvalidTimestampError, kafka.UnsupportedForMessageFormatError,
           kafka.PolicyViolationError, kafka.TopicAuthorizationFailedError)
"""Producer errors that say the broker will not take this message as it is, however long we wait."""

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def topic_problem(topic: str) -> str | None:
    """Why Kafka would never accept a topic of this name, or None if the name is legal."""
    if _TOPIC_NAME.fullmatch(topic) and topic not in (".", ".."):
        return None
    return f"invalid topic name {topic[:100]!r}: Kafka takes 1 to 249 of the characters A-Z a-z 0-9 . _ -"


def refusal(exc: BaseException) -> str | None:
    """The reason to set a row aside if ``exc`` says Kafka refuses it for good; None if it may go later."""
    if isinstance(exc, REFUSED):
        return f"refused by Kafka: {exc}"
    return None


@dataclass
class Relayed:
    """What became of a batch: rows the broker acknowledged, rows set aside (id -> reason), rows
    refused inside a record batch that must be tried alone to know which of them is at fault, and
    how many stay in the outbox for the next round."""

    published: list[int] = field(default_factory=list)
    set_aside: dict[int, str] = field(default_factory=dict)
    suspects: list = field(default_factory=list)
    waiting: int = 0

    @property
    def moved(self) -> int:
        return len(self.published) + len(self.set_aside)


class OutboxRelay:
    """Publishes the outbox through its own producer, made by ``new_producer`` (not started)."""

    def __init__(self, pool: asyncpg.Pool, new_producer: Callable[[], AIOKafkaProducer], batch_size: int = 500):
        self.pool = pool
        self.new_producer = new_producer
        self.batch_size = batch_size
        self.producer: AIOKafkaProducer | None = None
        self.published = 0
        self.set_aside = 0

    async def relay_once(self, conn: asyncpg.Connection) -> Relayed:
        """Publish one batch; the caller holds the advisory lock on ``conn``."""
        rows = await conn.fetch("SELECT id, topic, key, value FROM outbox ORDER BY id LIMIT $1", self.batch_size)
        rows, already = await restore.drop_published(conn, rows)  # on Kafka before a restore (pipeline/restore.py)
        if not rows:
            return Relayed(published=already)
        batch = await self.publish(rows)
        await self._settle(conn, batch, rows)
        batch.published += already
        for i, row in enumerate(batch.suspects):
            alone = await self.publish([row])
            await self._settle(conn, alone, [row])
            batch.published += alone.published
            batch.set_aside |= alone.set_aside
            if alone.waiting:
                batch.waiting += len(batch.suspects) - i
                break
        return batch

    async def publish(self, rows) -> Relayed:
        """Send ``rows`` in order and wait for the broker's answers. A broker refuses a whole record
        batch, so a row refused with others is only a suspect; a row sent alone is judged alone."""
        producer = await self._producer()
        result = Relayed()
        sent = []
        missing: set[str] = set()
        for i, row in enumerate(rows):
            topic = row["topic"]
            reason = topic_problem(topic) or (f"unknown topic {topic!r}" if topic in missing else None)
            if reason is None:
                try:
                    sent.append((row, await producer.send(topic, value=row["value"], key=row["key"])))
                    continue
                except kafka.UnknownTopicOrPartitionError:
                    if not await self._unknown(producer, topic):
                        result.waiting = len(rows) - i
                        break
                    missing.add(topic)
                    reason = f"unknown topic {topic!r}: the broker does not have it and did not create it"
                except Exception as exc:  # noqa: BLE001 - whatever it is, the rows sent so far are settled first
                    reason = refusal(exc)
                    if reason is None:
                        log.warning("outbox relay: %s: %s; %d rows wait", type(exc).__name__, exc, len(rows) - i)
                        result.waiting = len(rows) - i
                        break
            result.set_aside[row["id"]] = reason
        answers = await asyncio.gather(*(future for _, future in sent), return_exceptions=True)
        failed = []
        for (row, _), answer in zip(sent, answers, strict=True):
            if not isinstance(answer, BaseException):
                result.published.append(row["id"])
            elif (reason := refusal(answer)) is not None and len(rows) == 1:
                result.set_aside[row["id"]] = reason
            elif reason is not None:
                result.suspects.append(row)
            else:
                failed.append((row["id"], answer))
        if failed:
            row_id, answer = failed[0]
            log.warning("outbox relay: %d rows wait, the first (%d) for %s: %s",
                        len(failed), row_id, type(answer).__name__, answer)
            result.waiting += len(failed)
        if len(result.published) < len(sent):
            await self.close()  # an idempotent producer whose batch failed is behind the broker's sequence
        return result

    async def _unknown(self, producer: AIOKafkaProducer, topic: str) -> bool:
        """True if the broker answers and does not know ``topic``; False if it may be away."""
        try:
            metadata = await producer.client.fetch_all_metadata()
        except Exception:  # noqa: BLE001 - no answer: the broker is away, not the topic
            return False
        return topic not in metadata.topics()

    async def _settle(self, conn: asyncpg.Connection, result: Relayed, rows) -> None:
        if result.published:
            await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", result.published)
            self.published += len(result.published)
        if result.set_aside:
            await conn.execute(
                """WITH refused AS (SELECT * FROM unnest($1::bigint[], $2::text[]) AS r (id, reason)),
                        moved AS (DELETE FROM outbox o USING refused r WHERE o.id = r.id
                                  RETURNING o.id, o.topic, o.key, o.value, o.created_at, r.reason)
                   INSERT INTO outbox_set_aside (id, topic, key, value, created_at, set_aside_at, reason)
                   SELECT id, topic, key, value, created_at, now(), reason FROM moved""",
                list(result.set_aside), list(result.set_aside.values()))
            self.set_aside += len(result.set_aside)
            sizes = {r["id"]: (r["topic"], len(r["value"])) for r in rows}
            for row_id, reason in result.set_aside.items():
                topic, size = sizes[row_id]
                log.error("outbox row %d (%d bytes to %s) set aside: %s", row_id, size, topic, reason)

    async def _producer(self) -> AIOKafkaProducer:
        if self.producer is None:
            producer = self.new_producer()
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self.producer = producer
        return self.producer

    async def close(self) -> None:
        """Stop the producer; the next batch starts a fresh one."""
        producer, self.producer = self.producer, None
        if producer is not None:
            await producer.stop()

    async def run(self, should_stop, poll_seconds: float, wake: asyncio.Event | None = None) -> None:
        """Wait for the lock, then relay until ``should_stop()``; on a lost connection, start over.
        Between rounds with nothing more to relay it waits ``poll_seconds``, or less if ``wake`` is set."""
        try:
            while not should_stop():
                try:
                    async with self.pool.acquire() as conn:
                        while not should_stop() and not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK):
                            await asyncio.sleep(1.0)
                        try:
                            while not should_stop():
                                if wake is not None:
                                    wake.clear()
                                relayed = await self.relay_once(conn)
                                if relayed.waiting:
                                    await asyncio.sleep(1.0)
                                elif relayed.moved < self.batch_size:
                                    await woken(wake, poll_seconds)
                        finally:
                            if not conn.is_closed():
                                await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the relay must outlive outages
                    log.error("outbox relay: %s: %s; retrying in 1s", type(exc).__name__, exc)
                    await asyncio.sleep(1.0)
        finally:
            await self.close()


async def woken(wake: asyncio.Event | None, seconds: float) -> None:
    """Wait ``seconds``, or less if ``wake`` is set meanwhile (a loop's poll, woken by a writer)."""
    if wake is None:
        await asyncio.sleep(seconds)
        return
    try:
        await asyncio.wait_for(wake.wait(), seconds)
    except TimeoutError:
        pass


# ── set-aside rows, for operators ───────────────────────────────────────────────────────────


async def set_aside_rows(conn: asyncpg.Connection, limit: int = 100) -> list:
    """The rows Kafka refused, oldest first, without their values (``size`` in bytes instead)."""
    return await conn.fetch(
        """SELECT id, topic, key, octet_length(value) AS size, created_at, set_aside_at, reason
           FROM outbox_set_aside ORDER BY id LIMIT $1""", limit)


async def send_again(conn: asyncpg.Connection, ids: list[int] | None) -> list[int]:
    """Put set-aside rows (all of them if ``ids`` is None) back in the outbox, in their old place
    in the order; return their ids. A row refused again is set aside again."""
    rows = await conn.fetch(
        """WITH back AS (DELETE FROM outbox_set_aside WHERE $1::bigint[] IS NULL OR id = ANY($1)
                         RETURNING id, topic, key, value, created_at)
           INSERT INTO outbox (id, topic, key, value, created_at) SELECT * FROM back RETURNING id""", ids)
    return sorted(r["id"] for r in rows)
