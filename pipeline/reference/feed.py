"""The reference feed: registries, car parks and cameras from their owners' compacted topics, into PostgreSQL.

    reference.<kind> message ──> decode (our JSON | Debezium | tombstone) ──> upsert / remove the row
                                                                    └─> or a dead letter with the reason
    after the batch commits ──> owner cache: forget the plates changed (here at once; other workers
                                via ``reference_changes``) ──> car parks / cameras read again

Guarantees: messages are applied in order per partition (so per key); a batch is one transaction
with a savepoint per message, so a bad message becomes a dead letter and the rest are applied;
``reference_positions`` holds the last offset applied per partition in that same transaction, so a
batch delivered again is not applied again (a row never steps back to an older value). A database
outage raises (the agent tries the batch again); nothing is acknowledged unrecorded.
"""

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg

from pipeline.cases import store
from pipeline.cases.service import Source, printable
from pipeline.db import errors
from pipeline.lookups.owners import scrub
from pipeline.reference import decode, masking, tables
from schemas import events
from schemas.codec import Rejected

log = logging.getLogger(__name__)

CHANGES_KEPT = "1 hour"
FORGET_MARGIN_SECONDS = 30
"""Changes are read again this far back: a transaction that took a row id earlier may commit later."""


def forget(owners, plates: list[str]) -> None:
    """Drop ``plates`` (numbers) from the owner directory's cache (``PostgresOwnerDirectory.invalidate``)."""
    if owners is None:
        return
    for plate in plates:
        owners.invalidate(plate)


class ReferenceFeed:
    def __init__(self, pool: asyncpg.Pool, topic_kinds: dict[str, tables.Kind], columns: tables.Columns,
                 dead_letters_topic: str, owners=None, reload: Callable[[set[str]], Awaitable[None]] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.pool = pool
        self.topic_kinds = topic_kinds
        """Each reference topic (prefixed) and its kind."""
        self.columns = columns
        self.dead_letters_topic = dead_letters_topic
        self.owners = owners
        self.reload = reload
        """Called with the kinds a batch changed ("car-parks", "cameras"), after it commits."""
        self.clock = clock
        self._since: datetime | None = None
        self._seen: set[int] = set()

    async def handle(self, batch: list[tuple[object, Source]]) -> dict[str, int]:
        """Apply every message of a batch, or dead-letter it; returns counts by outcome."""
        counts = {"applied": 0, "dead_letters": 0, "already_applied": 0}
        plates: set[str] = set()
        kinds: set[str] = set()
        async with self.pool.acquire() as conn, conn.transaction():
            applied_up_to = await self._positions(conn, {(s.topic, s.partition) for _, s in batch})
            for value, source in batch:
                position = (source.topic, source.partition)
                if source.offset <= applied_up_to.get(position, -1):
                    counts["already_applied"] += 1
                    continue
                applied_up_to[position] = source.offset
                kind = self.topic_kinds[source.topic]
                change = decode.decode(kind, source.key, value, self.columns)
                if not isinstance(change, Rejected):
                    try:
                        async with conn.transaction():
                            changed = await self._apply(conn, change)
                    except Exception as exc:  # noqa: BLE001 - sorted out below
                        if errors.is_transient(exc):
                            raise
                        change = Rejected(value or b"", f"not applied: {errors.describe(exc)}", ())
                    else:
                        counts["applied"] += 1
                        plates.update(changed)
                        kinds.add(kind.name)
                        continue
                await self._dead_letter(conn, kind, change, source)
                counts["dead_letters"] += 1
            await self._record(conn, applied_up_to, sorted(plates))
        forget(self.owners, sorted(plates))
        if self.reload is not None and kinds & {"car-parks", "cameras"}:
            await self.reload(kinds)
        return counts

    async def _apply(self, conn, change: decode.Upsert | decode.Delete) -> list[str]:
        """Write one change; return the plates whose owner lookup it may change (before and after)."""
        kind = change.kind
        before = await tables.plates_of(conn, kind, change.key)
        if isinstance(change, decode.Upsert):
            await kind.upsert(conn, change.record)
        else:
            await kind.delete(conn, change.key)
        return sorted(set(before) | set(await tables.plates_of(conn, kind, change.key)))

    async def _positions(self, conn, positions: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
        rows = await conn.fetch(
            """SELECT topic, partition, "offset" FROM reference_positions
               WHERE (topic, partition) IN (SELECT * FROM unnest($1::text[], $2::int[])) FOR UPDATE""",
            [t for t, _ in positions], [p for _, p in positions])
        return {(r["topic"], r["partition"]): r["offset"] for r in rows}

    async def _record(self, conn, applied_up_to: dict[tuple[str, int], int], plates: list[str]) -> None:
        await conn.executemany(
            """INSERT INTO reference_positions (topic, partition, "offset") VALUES ($1, $2, $3)
               ON CONFLICT (topic, partition) DO UPDATE SET "offset" = greatest(reference_positions."offset",
                                                                                excluded."offset")""",
            [(t, p, o) for (t, p), o in applied_up_to.items()])
        if plates:
            await conn.execute("INSERT INTO reference_changes (plates) VALUES ($1)", plates)
            await conn.execute(f"DELETE FROM reference_changes WHERE at < now() - interval '{CHANGES_KEPT}'")

    async def _dead_letter(self, conn, kind: tables.Kind, rejected: Rejected, source: Source) -> None:
        """As the camera events' dead letters (``CaseService._dead_letter``): the row and the DeadLetter
        message in the outbox, once per (topic, partition, offset), but keeping no personal data: the key,
        the message, the reason and the errors masked (``masking``), with the SHA-256 of the original bytes.
        A dead letter that cannot be written as it is (a data error) is written without the message."""
        key, rejected, digest = masking.masked(kind, self.columns, source.key, rejected)
        try:
            async with conn.transaction():
                await self._write_dead_letter(conn, key, rejected, digest, source)
        except Exception as exc:  # noqa: BLE001 - a data error here must not hold the batch up
            if errors.is_transient(exc):
                raise
            log.exception("dead letter from %s:%d@%d could not be kept whole", source.topic, source.partition,
                          source.offset)
            await self._write_dead_letter(conn, None, Rejected(b"", rejected.reason[:500], ()), digest, source)

    async def _write_dead_letter(self, conn, key: bytes | None, rejected: Rejected, digest: bytes,
                                 source: Source) -> None:
        now = self.clock()
        reason = scrub(printable(rejected.reason))
        field_errors = tuple(events.FieldError(field=printable(e.field), message=scrub(printable(e.message)))
                             for e in rejected.errors)
        if await store.add_dead_letter(conn, source.topic, source.partition, source.offset, key, reason,
                                       [e.model_dump() for e in field_errors], rejected.raw, now, digest):
            await store.add_outbox(conn, self.dead_letters_topic, source.topic, events.DeadLetter.capped(
                source.topic, source.partition, source.offset, key or None, reason, field_errors,
                rejected.raw, now, raw_sha256=digest))
            log.warning("dead letter from %s:%d@%d: %s", source.topic, source.partition, source.offset, reason)

    async def forget_changed_elsewhere(self) -> int:
        """Forget the plates other workers' batches changed since the last call; returns how many.
        (The first call only notes where to start: a worker's cache is empty when it starts.)"""
        async with self.pool.acquire() as conn:
            if self._since is None:
                self._since = await conn.fetchval("SELECT clock_timestamp()")
                return 0
            rows = await conn.fetch("""SELECT id, plates, at FROM reference_changes
                                       WHERE at > $1::timestamptz - make_interval(secs => $2::double precision)
                                       ORDER BY id""", self._since, FORGET_MARGIN_SECONDS)
        fresh = [r for r in rows if r["id"] not in self._seen]
        self._seen = {r["id"] for r in rows}
        if rows:
            self._since = max(self._since, max(r["at"] for r in rows))
        plates = sorted({p for r in fresh for p in r["plates"]})
        forget(self.owners, plates)
        return len(plates)
