"""How far the camera events have been read: decisions wait for the input already on its way.

A deadline (or a recheck's ``answer_by``) must not be decided while an answer that reached Kafka
before it is still unread, e.g. while a dead worker's partitions wait for the group to notice, or
while the broker restarts. So each partition of the camera events has a watermark in PostgreSQL,
where every worker sees it:

- ``next_offset``: every message before it has been recorded (decided or dead-lettered);
- ``read_to``: every message Kafka took before this time has been recorded.

A worker's agent moves both forward after it has recorded a batch (``read_to`` to the newest
Kafka timestamp in it: the topic stamps messages with the broker's append time, so they are in
order per partition). A partition with nothing left to read counts as current: every worker's
tick takes PostgreSQL's ``now()``, then asks the broker for each partition's end offset; where
``next_offset`` has reached it, ``read_to`` becomes that ``now()``. An idle partition never holds
decisions; a partition nobody reads, or a broker that does not answer, does.

A case is woken only when its partition's ``read_to`` has passed its ``wake_at`` (which already
includes the lateness allowance): ``store.claim_due_cases``. Cases held so are counted for the
console and /metrics (``held``).

Camera events come on one topic per integrator (``camera-events.<integrator>``, the bare
``camera-events`` too): watermarks are kept per (topic, partition), and a case waits for the
partition carrying its plate in every one of them (the plate's key picks the same partition
number in each).
"""

from datetime import datetime

import asyncpg


TopicPartition = tuple[str, int]


async def recorded(conn: asyncpg.Connection, progress: dict[TopicPartition, tuple[int, datetime | None]]) -> None:
    """After a batch is recorded: per (topic, partition), (the last offset recorded, its Kafka timestamp)."""
    keys = list(progress)
    await conn.execute(
        """INSERT INTO partition_watermarks AS w (topic, partition, next_offset, read_to)
           SELECT tp, p, o + 1, coalesce(t, '-infinity')
           FROM unnest($1::text[], $2::int[], $3::bigint[], $4::timestamptz[]) AS b(tp, p, o, t)
           ON CONFLICT (topic, partition) DO UPDATE
           SET next_offset = greatest(w.next_offset, excluded.next_offset),
               read_to = greatest(w.read_to, excluded.read_to), updated_at = now()""",
        [k[0] for k in keys], [k[1] for k in keys], [progress[k][0] for k in keys], [progress[k][1] for k in keys])


async def current_as_of(conn: asyncpg.Connection, end_offsets: dict[TopicPartition, int], as_of: datetime) -> int:
    """Partitions whose ``next_offset`` has reached the broker's end offset (asked after ``as_of``, a
    PostgreSQL ``now()``) are read to ``as_of``. Returns how many were."""
    keys = list(end_offsets)
    topics, partitions, ends = [k[0] for k in keys], [k[1] for k in keys], [end_offsets[k] for k in keys]
    await conn.execute(
        """INSERT INTO partition_watermarks (topic, partition, next_offset, read_to)
           SELECT tp, p, 0, '-infinity' FROM unnest($1::text[], $2::int[]) AS e(tp, p) ON CONFLICT DO NOTHING""",
        topics, partitions)
    return await conn.fetchval(
        """WITH moved AS (
               UPDATE partition_watermarks w SET read_to = $4, updated_at = now()
               FROM unnest($1::text[], $2::int[], $3::bigint[]) AS e(tp, p, end_offset)
               WHERE w.topic = e.tp AND w.partition = e.p AND w.next_offset >= e.end_offset AND w.read_to < $4
               RETURNING 1)
           SELECT count(*) FROM moved""",
        topics, partitions, ends, as_of)


async def lag(conn: asyncpg.Connection, camera_events: str) -> list:
    """Per partition number, over the camera-events topics (bare ``camera_events`` and every
    integrator's): how far behind PostgreSQL's now() its slowest topic is read (None: never read),
    and how many due cases it holds."""
    return await conn.fetch(
        """WITH family AS (
               SELECT partition, read_to FROM partition_watermarks
               WHERE topic = $1 OR left(topic, length($1) + 1) = $1 || '.')
           SELECT f.partition,
                  max(CASE WHEN isfinite(f.read_to) THEN extract(epoch FROM now() - f.read_to)::float8 END)
                      AS behind_seconds,
                  (SELECT count(*) FROM cases c WHERE c.state IN ('warned', 'rechecking') AND c.wake_at <= now()
                     AND c.source_partition = f.partition AND c.wake_at > min(f.read_to)) AS held
           FROM family f GROUP BY f.partition ORDER BY f.partition""",
        camera_events)


async def mark_stale(conn: asyncpg.Connection, camera_events: str, stale_after_seconds: float, actor: str) -> list:
    """One integrator cannot hold the city's decisions: an integrator's camera-events topic read
    further behind PostgreSQL's now() than ``stale_after_seconds`` on any partition (a partition with
    messages never read: since it was first seen) is marked stale (``stale_topics``); caught up within the
    limit on every partition, it is no longer. Each change writes an audit row (``integrator_stale``,
    ``integrator_current``), once whichever worker saw it. Returns the topics stale now.

    A case is never held by a stale topic unless that integrator has a camera within reach of its
    place (``store.claim_due_cases``), so the others' cars are decided at most this long late."""
    now = await conn.fetchval("SELECT now()")
    rows = await conn.fetch(
        """SELECT topic, max(extract(epoch FROM $2 - CASE WHEN isfinite(read_to) THEN read_to ELSE updated_at END)
                            )::float8 AS behind
           FROM partition_watermarks
           WHERE topic = $1 OR left(topic, length($1) + 1) = $1 || '.'
           GROUP BY topic""",
        camera_events, now)
    lagging = {r["topic"]: r["behind"] for r in rows if r["behind"] > stale_after_seconds}
    became = await conn.fetch(
        """INSERT INTO stale_topics (topic, integrator, since, behind_seconds)
           SELECT t, nullif(substr(t, length($3) + 2), ''), $4, b FROM unnest($1::text[], $2::float8[]) AS s(t, b)
           ON CONFLICT (topic) DO UPDATE SET behind_seconds = excluded.behind_seconds
           RETURNING topic, integrator, behind_seconds, (xmax = 0) AS new""",
        list(lagging), list(lagging.values()), camera_events, now)
    caught_up = await conn.fetch(
        "DELETE FROM stale_topics WHERE NOT (topic = ANY($1::text[])) RETURNING topic, integrator, since",
        list(lagging))
    for r in became:
        if r["new"]:
            await _audit(conn, now, actor, "integrator_stale",
                         {"integrator": r["integrator"], "topic": r["topic"], "behind_seconds": r["behind_seconds"],
                          "limit_seconds": stale_after_seconds})
    for r in caught_up:
        await _audit(conn, now, actor, "integrator_current",
                     {"integrator": r["integrator"], "topic": r["topic"], "stale_since": r["since"].isoformat()})
    return [r["topic"] for r in became]


async def stale(conn: asyncpg.Connection) -> list:
    """The integrators marked stale now (``mark_stale``): integrator, topic, since, behind_seconds."""
    return await conn.fetch("SELECT integrator, topic, since, behind_seconds FROM stale_topics ORDER BY topic")


async def input_read(conn: asyncpg.Connection, camera_events: str) -> dict:
    """For the console and /metrics: ``partitions`` (``lag``) and the ``stale`` integrators."""
    return {"partitions": await lag(conn, camera_events), "stale": await stale(conn)}


async def _audit(conn: asyncpg.Connection, at: datetime, actor: str, action: str, detail: dict) -> None:
    await conn.execute("INSERT INTO audit_log (at, case_id, actor, action, detail) VALUES ($1, NULL, $2, $3, $4)",
                       at, actor, action, detail)
