"""After PostgreSQL is restored to a point in time T: the workers replay what it lost, from Kafka,
and redo nothing the outside world already had.

Run ``parkwarden after-restore --to T`` on the restored database, with every worker stopped, before
starting them (README, "Backups and restore"). What it does, and why each step is enough:

1. **Inputs are read again from where the database stopped.** The committed offsets of the
   consumer group are ahead of the restored database. Each camera-events partition is moved back to
   its watermark's ``next_offset`` in the restored database (``pipeline.cases.watermarks``: every
   message before it was recorded by T, exactly). The other inputs (car-park counts, reference
   topics) and partitions without a watermark go back to the first offset at ``T - margin`` (Kafka's
   timestamps), never forward. Replays are harmless: a sighting is kept once per (integrator,
   event id), a dead letter once per (topic, partition, offset), a reference row per key.
2. **The replay makes the same identities.** A case opened by a violation has the id
   ``case_id_for(integrator, event_id)`` and its SMS ``sms_id_for(case, kind)`` (``uuid5``), so the
   case and the warning the replay makes are the ones the lost stretch made.
3. **Outputs already on Kafka are not published again.** Every message on the output topics from
   ``T - margin`` to their end is recorded by ``identity`` in ``published_before_restore``; the outbox
   relay deletes an outbox row with such an identity instead of publishing it (``drop_published``).
4. **SMS already sent are not sent again.** ``WarningSent`` (and ``WarningDelivered``) on case-events
   say which warning SMS the gateway accepted after T, when, and when the phone had it; ``SmsSent``
   the same of every other kind (ticket, caution, appeal, withdrawal). They are kept in
   ``sms_sent_before_restore``, and the SMS loop records such a message as accepted at that time
   (and delivered) without calling the gateway (``sms_sent_before``).
5. **Tickets keep their number and link.** The links on ``tickets`` after the restored chain head are
   appended to the chain as published (``links_to_keep``, ``_keep_links``: sealed in order, they get
   the same hashes); when the replay issues the ticket of such a case it inserts it as its
   ``TicketIssued`` says (``issue_again``), with no new link and nothing published. ``ticket_serial``
   moves past the numbers on Kafka (``highest_serial``).
6. **The reconciliation ends.** Workers read whether one is on at most once a second
   (``reconciling``); ``settle`` marks it caught up when the watermarks reach the camera-events ends
   after-restore saw, and ends it and deletes its rows no sooner than ``settle_seconds`` later and only
   once the replay has made again what Kafka had: every SMS named there recorded (or its case closed
   without it), every case Kafka shows decided closed again, the outbox rows made until then relayed.
   A deadline loop that comes round late delays the end; it never lets an SMS through twice.

What the topics do not hold cannot be reconciled (README): officers' and drivers' actions after T
(voids, appeals: their links stay in the chain as published), an SMS whose acceptance never reached
Kafka, delivery reports of other kinds than warnings. ``after_restore`` counts what it saw of them for
the operator.
"""

import asyncio
import json
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid5

import asyncpg

from pipeline.cases import machine
from pipeline.config import Settings
from schemas import topics

log = logging.getLogger(__name__)

NAMESPACE = UUID("5b1c3f0e-7d2a-4c55-9a61-70a1c0e5d001")
"""parkwarden's uuid5 namespace for the ids a replay must make again."""


def case_id_for(integrator: str, event_id: str) -> UUID:
    """The id of the case a violation opens: the same whenever the violation is decided (a replay)."""
    return uuid5(NAMESPACE, f"case/{integrator}/{event_id}")


def sms_id_for(case_id: UUID, kind: str) -> UUID:
    """The id of a case's SMS of one kind (one per case and kind): the same when a replay queues it."""
    return uuid5(case_id, f"sms/{kind}")


def identity(topic: str, value: bytes) -> str:
    """What makes an output message the same output when a replay makes it again: its topic, type and
    the ids it is about (case, SMS, recheck, appeal; a dead letter's source). A ticket counts by its
    case (its number is issued again by a replay). Anything else: its bytes."""
    try:
        message = json.loads(value)
    except (ValueError, TypeError):
        message = None
    if not isinstance(message, dict):
        return f"{topic}|sha256:{hashlib.sha256(value or b'').hexdigest()}"
    kind = message.get("type", "")
    if kind == "DeadLetter":
        about = [message.get("source_topic"), message.get("partition"), message.get("offset")]
    elif message.get("case_id"):
        about = [message.get(k) for k in ("case_id", "sms_id", "recheck_id", "appeal_id") if message.get(k)]
    else:
        return f"{topic}|{kind}|sha256:{hashlib.sha256(value).hexdigest()}"
    return f"{topic}|{kind}|" + "|".join(str(a) for a in about)


# ── used by the workers ─────────────────────────────────────────────────────────────────────


async def drop_published(conn: asyncpg.Connection, rows: list) -> tuple[list, list[int]]:
    """Outbox ``rows`` (id, topic, value) less those already on Kafka before a restore, which are
    deleted from the outbox here; returns (the rows to publish, the ids deleted)."""
    if not await reconciling(conn) or not rows:  # asked every round: the relay moves a reconciliation to its end
        return rows, []
    ids = {r["id"]: identity(r["topic"], r["value"]) for r in rows}
    known = {r["identity"] for r in await conn.fetch(
        "SELECT identity FROM published_before_restore WHERE identity = ANY($1::text[])", list(set(ids.values())))}
    dropped = [i for i, ident in ids.items() if ident in known]
    if not dropped:
        return rows, []
    await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", dropped)
    log.warning("outbox: %d rows were already on Kafka before the database was restored; not published again",
                len(dropped))
    gone = set(dropped)
    return [r for r in rows if r["id"] not in gone], dropped


@dataclass(frozen=True)
class SentBefore:
    """An SMS the gateway accepted in the stretch a restore lost (from WarningSent/WarningDelivered
    for a warning, SmsSent for the other kinds)."""

    accepted_at: datetime
    delivered_at: datetime | None


async def sms_sent_before(conn: asyncpg.Connection, sms_ids: list[UUID]) -> dict[UUID, SentBefore]:
    """Those of ``sms_ids`` the gateway had already accepted before the database was restored (looked
    up only while a restore's reconciliation is on: ``reconciling``)."""
    if not sms_ids or not await reconciling(conn):
        return {}
    rows = await conn.fetch("SELECT sms_id, accepted_at, delivered_at FROM sms_sent_before_restore "
                            "WHERE sms_id = ANY($1::uuid[])", sms_ids)
    return {r["sms_id"]: SentBefore(r["accepted_at"], r["delivered_at"]) for r in rows}


async def ticket_issued_before(conn, case_ids: list[UUID]) -> dict[UUID, dict]:
    """The ``TicketIssued`` Kafka already had for those of ``case_ids`` whose ticket was issued in the
    stretch a restore lost (their link is already in the ticket record: ``after_restore``)."""
    if not case_ids or not await reconciling(conn):
        return {}
    rows = await conn.fetch("SELECT case_id, message::text AS message FROM tickets_issued_before_restore "
                            "WHERE case_id = ANY($1::uuid[])", case_ids)
    return {r["case_id"]: json.loads(r["message"]) for r in rows}


async def issue_again(conn, message: dict) -> dict | None:
    """Insert the ``tickets`` row of a ticket issued before the restore, as ``message`` (its
    ``TicketIssued``) published it: the same number, times, evidence and reason, so that its
    record is the one its link (already in the chain) holds. Returns the row, or None if the case
    has its ticket already."""
    from pipeline.evidence import store as evidence_images
    from pipeline.cases.store import sighting_from_json

    row = await conn.fetchrow(
        """INSERT INTO tickets (number, case_id, plate, issued_at, deadline_at, place, zone, lat, lon, evidence,
                                reason, warning_accepted_at, warning_delivered_at)
           SELECT m.ticket_number, m.case_id, m.plate, m.issued_at, m.deadline_at, m.place, m.zone,
                  ($1::text::jsonb -> 'location' ->> 'lat')::float8, ($1::text::jsonb -> 'location' ->> 'lon')::float8,
                  $1::text::jsonb -> 'evidence', m.reason, m.warning_accepted_at, m.warning_delivered_at
           FROM jsonb_to_record($1::text::jsonb) AS m(ticket_number text, case_id uuid, plate text, issued_at timestamptz,
                deadline_at timestamptz, place text, zone text, reason text, warning_accepted_at timestamptz,
                warning_delivered_at timestamptz)
           ON CONFLICT (case_id) DO NOTHING RETURNING *""", json.dumps(message))
    if row is not None:
        for e in message["evidence"]:
            await evidence_images.want(conn, UUID(message["case_id"]), sighting_from_json(e))
        log.warning("ticket %s (case %s): issued before the database was restored; issued again as it was",
                    message["ticket_number"], message["case_id"])
    return row


CHECK_EVERY_SECONDS = 1.0
"""How often a process reads whether a restore's reconciliation is on (``reconciling``)."""


@dataclass
class _Flag:
    active: bool = False
    checked_at: float = float("-inf")


_flag = _Flag()


async def reconciling(conn, clock: Callable[[], float] = time.monotonic) -> bool:
    """True while a restore's reconciliation is on: ``after-restore`` ran and the replayed stretch is
    not past yet (``settle``). Only then do the workers look up what the outside world already had.
    Read from the database at most every ``CHECK_EVERY_SECONDS`` in a process: a reconciliation only
    begins while every worker is stopped (``after_restore`` refuses otherwise), so a worker reads it
    when it starts; a worker that still believes it on after it ended makes one lookup that finds nothing."""
    now = clock()
    if now - _flag.checked_at < CHECK_EVERY_SECONDS:
        return _flag.active
    _flag.active = await settle(conn)
    _flag.checked_at = now
    return _flag.active


def forget() -> None:
    """Read the flag again at the next ``reconciling`` (tests)."""
    _flag.checked_at = float("-inf")


_WAITING = """(
    EXISTS (SELECT 1 FROM sms_sent_before_restore b
            LEFT JOIN sms_messages m ON m.id = b.sms_id
            LEFT JOIN cases c ON c.id = b.case_id
            WHERE b.restore_id = r.id
              AND (m.status IN ('pending', 'sending')
                   OR m.id IS NULL AND c.state = ANY($2::text[])
                   OR EXISTS (SELECT 1 FROM sms_delivery_reports d WHERE d.sms_id = b.sms_id AND d.applied_at IS NULL)))
    OR EXISTS (SELECT 1 FROM tickets_issued_before_restore t JOIN cases c ON c.id = t.case_id
               WHERE t.restore_id = r.id AND c.state = ANY($2::text[]))
    OR EXISTS (SELECT 1 FROM published_before_restore p JOIN cases c ON c.id = p.case_id
               WHERE p.restore_id = r.id AND p.type IN ('CaseClosed', 'TicketIssued', 'RecheckRequested')
                 AND c.state = ANY($2::text[]) AND (p.type <> 'RecheckRequested' OR c.state <> 'rechecking')))"""
"""True while the replay has not yet made again what Kafka had of a restore ``r``'s lost stretch: an SMS
Kafka named is still pending or being sent, or not made yet while its case is open (the ticket or caution
its deadline makes), or its delivery from WarningDelivered not yet applied; a case Kafka shows ticketed,
closed or rechecked is still open short of that. Each such case is closed, or its SMS recorded, in the
same transaction that makes its outputs, so whatever a reader sees as done has its outputs in the outbox."""


async def settle(conn) -> bool:
    """Whether a restore's reconciliation is on, moving each open one on (in a savepoint of the caller's
    transaction). It has caught up when every camera-events partition's watermark has reached the end
    ``after_restore`` saw (``replay_to``). It ends once ``settle_seconds`` have passed since then and the
    replay has made again everything Kafka had of the lost stretch (``_WAITING``: never on time alone, so
    no SMS is sent and no output published twice however late a loop comes round), and the outbox rows
    made until then (``outbox_mark``) are relayed: its rows are deleted then. Safe in any number of
    workers at once."""
    open_ids = [r["id"] for r in await conn.fetch("SELECT id FROM restores WHERE done_at IS NULL")]
    if not open_ids:
        return False
    async with conn.transaction():
        free = [r["id"] for r in await conn.fetch(  # another worker moving one on: it is left to that worker
            "SELECT id FROM restores WHERE id = ANY($1::bigint[]) AND done_at IS NULL FOR UPDATE SKIP LOCKED", open_ids)]
        await conn.execute(
            """UPDATE restores r SET caught_up_at = now()
               WHERE r.id = ANY($1::bigint[]) AND r.caught_up_at IS NULL AND NOT EXISTS (
                   SELECT 1 FROM jsonb_each_text(coalesce(r.replay_to, '{}'::jsonb)) AS e(tp, end_offset)
                   WHERE coalesce((SELECT w.next_offset FROM partition_watermarks w
                                   WHERE w.topic || ':' || w.partition = e.tp), 0) < e.end_offset::bigint)""",
            free)
        done = [r["id"] for r in await conn.fetch(
            f"""SELECT r.id FROM restores r
                WHERE r.id = ANY($1::bigint[]) AND r.caught_up_at <= now() - make_interval(secs => r.settle_seconds)
                  AND NOT {_WAITING}""", free, sorted(s.value for s in machine.OPEN_STATES))]
        ended = []
        if done:
            await conn.execute("UPDATE restores SET outbox_mark = (SELECT coalesce(max(id), 0) FROM outbox) "
                               "WHERE id = ANY($1::bigint[]) AND outbox_mark IS NULL", done)
            ended = [r["id"] for r in await conn.fetch(
                """UPDATE restores r SET done_at = now()
                   WHERE r.id = ANY($1::bigint[]) AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.id <= r.outbox_mark)
                   RETURNING r.id""", done)]
        if ended:
            for table in ("published_before_restore", "sms_sent_before_restore", "tickets_issued_before_restore"):
                await conn.execute(f"DELETE FROM {table} WHERE restore_id = ANY($1::bigint[])", ended)
            log.warning("restore %s: the replayed stretch is past; reconciliation ended, its records deleted",
                        ", ".join(map(str, ended)))
    return len(ended) < len(open_ids)


# ── the restore step ────────────────────────────────────────────────────────────────────────


class RestoreError(RuntimeError):
    """The restore step cannot go on (workers still running, a topic missing, Kafka away): the message says why."""


@dataclass
class Plan:
    """What ``after_restore`` found and did."""

    offsets: dict[tuple[str, int], tuple[int | None, int]] = field(default_factory=dict)
    """(topic, partition) -> (the group's committed offset or None, the offset it is moved to)."""
    published: int = 0
    outputs_by_type: dict[str, int] = field(default_factory=dict)
    sms_sent: dict[str, int] = field(default_factory=dict)
    """SMS the gateway accepted after T - margin, by kind (from WarningSent, WarningDelivered, SmsSent)."""
    tickets_again: int = 0
    """Tickets Kafka has from the lost stretch, issued again as they were by the replay."""
    links_kept: int = 0
    """Links of the ticket record Kafka has from the lost stretch, put back in the chain as published."""
    replay_to: dict[str, int] = field(default_factory=dict)
    """camera-events "topic:partition" -> its end offset now: the replay has caught up when the
    watermarks reach them (``settle``)."""
    not_reconciled: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict:
        moved = {f"{t}:{p}": {"committed": c, "to": o} for (t, p), (c, o) in sorted(self.offsets.items())}
        return {"offsets": moved, "published_after": self.published, "outputs": self.outputs_by_type,
                "sms_sent_after": self.sms_sent, "tickets_again": self.tickets_again, "links_kept": self.links_kept,
                "not_reconciled": self.not_reconciled}


NOT_RECONCILED = {
    "TicketVoided": "voids by officers after T: lost with the database (their link stays in the ticket record "
                    "as published); void them again",
    "AppealDecided": "appeal decisions after T: lost with the database (their link stays in the ticket record "
                     "as published); decide them again",
    "TicketIssued:unlinked": "tickets after a gap in the ticket record on Kafka: issued again with a new number "
                             "and link",
}


async def after_restore(settings: Settings, restored_to: datetime, margin: timedelta, actor: str,
                        progress: Callable[[str], None] = lambda line: None, dry_run: bool = False,
                        settle_after: timedelta = timedelta(minutes=10)) -> Plan:
    """Prepare the restored database (``settings.database_url``) and the consumer group
    (``settings.app_id``) for the workers: see the module's docstring. Refuses while the group has
    members. ``dry_run``: say what would be done, change nothing. ``settle_after``: how long after the
    replay has caught up the workers keep reconciling (``settle``)."""
    from aiokafka import AIOKafkaConsumer

    from pipeline import bootstrap

    admin = bootstrap.admin_client(settings, "restore")
    group = settings.app_id
    members = await _group_members(admin, group)
    if members:
        raise RestoreError(f"consumer group {group!r} has {len(members)} members ({', '.join(members)}): stop "
                           "every worker before after-restore (they would go on from offsets past the restored database)")
    metadata = (await asyncio.to_thread(admin.list_topics, timeout=30)).topics
    names = set(metadata)
    base = settings.topic(topics.CAMERA_EVENTS.name)
    commands = settings.topic(topics.CAMERA_COMMANDS.name)
    inputs = sorted(n for n in names if topics.is_camera_events(base, n)
                    or n in {settings.topic(t.name) for t in (topics.CAR_PARK_STATUS, *topics.REFERENCE)})
    outputs = sorted(n for n in names if n in {settings.topic(t.name) for t in (topics.CASE_EVENTS, topics.TICKETS,
                                                                               topics.DEAD_LETTERS)}
                     or n.startswith(commands + "."))
    for wanted in (base, settings.topic(topics.CASE_EVENTS.name)):
        if wanted not in names:
            raise RestoreError(f"topic {wanted} not found on {settings.kafka_bootstrap}: is PW_TOPIC_PREFIX right?")
    since_ms = int((restored_to - margin).timestamp() * 1000)
    plan = Plan()
    conn = await asyncpg.connect(settings.database_url.get_secret_value())
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **bootstrap.kafka_client_options(settings))
    await consumer.start()
    try:
        if await conn.fetchval("SELECT to_regclass('published_before_restore')") is None:
            raise RestoreError("the restored database lacks this version's migrations: run `parkwarden setup` first")
        watermarks = {(r["topic"], r["partition"]): r["next_offset"] for r in await conn.fetch(
            "SELECT topic, partition, next_offset FROM partition_watermarks")}
        committed = await _committed(admin, group)
        progress(f"restored to {restored_to.isoformat()}; reading Kafka from {margin.total_seconds():g}s before it")
        await _plan_offsets(consumer, _partitions(metadata, inputs), base, watermarks, committed, since_ms, plan)
        moved = sum(1 for c, o in plan.offsets.values() if c is None or o < c)
        progress(f"inputs: {len(plan.offsets)} partitions of {len(inputs)} topics; {moved} go back "
                 f"({sum(c - o for c, o in plan.offsets.values() if c is not None and o < c)} messages to replay)")
        seen = await _read_outputs(consumer, _partitions(metadata, outputs), since_ms,
                                  await _retention_ms(admin, outputs))
        plan.published = len(seen)
        for ident, (topic, partition, offset, at, message) in seen.items():
            kind = message.get("type", "?") if isinstance(message, dict) else "?"
            plan.outputs_by_type[kind] = plan.outputs_by_type.get(kind, 0) + 1
            key = kind if kind != "CaseClosed" else f"CaseClosed:{message.get('outcome')}"
            if key in NOT_RECONCILED:
                plan.not_reconciled[key] = plan.not_reconciled.get(key, 0) + 1
        sent = sms_sent(seen)
        for _case, kind, _accepted, _delivered in sent.values():
            plan.sms_sent[kind] = plan.sms_sent.get(kind, 0) + 1
        head = await conn.fetchrow("SELECT seq, hash FROM ticket_chain_head")
        links, unlinked = links_to_keep(seen, head["seq"], head["hash"])
        again = {UUID(m["case_id"]): m for m in links if m["type"] == "TicketIssued"}
        plan.links_kept, plan.tickets_again = len(links), len(again)
        if unlinked:
            plan.not_reconciled["TicketIssued:unlinked"] = unlinked
        serial = highest_serial(seen, settings.ticket_prefix)
        progress(f"outputs: {plan.published} messages published since then "
                 f"({', '.join(f'{n} {k}' for k, n in sorted(plan.outputs_by_type.items())) or 'none'}); "
                 f"SMS accepted by the gateway: {', '.join(f'{n} {k}' for k, n in sorted(plan.sms_sent.items())) or 'none'}; "
                 f"{plan.tickets_again} tickets to issue again as they were ({plan.links_kept} links of the ticket record "
                 f"kept as published)")
        for key, n in sorted(plan.not_reconciled.items()):
            progress(f"NOT reconciled: {n} {NOT_RECONCILED[key]}")
        if dry_run:
            progress("dry run: nothing changed")
            return plan
        async with conn.transaction():
            restore_id = await conn.fetchval(
                "INSERT INTO restores (restored_to, margin_seconds, actor, summary, replay_to, settle_seconds) "
                "VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6) RETURNING id", restored_to, margin.total_seconds(),
                actor, json.dumps(plan.summary()), json.dumps(plan.replay_to), settle_after.total_seconds())
            await conn.executemany(
                """INSERT INTO published_before_restore (identity, topic, partition, "offset", published_at, restore_id,
                                                         case_id, type)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (identity) DO NOTHING""",
                [(ident, t, p, o, at, restore_id, *_about(m)) for ident, (t, p, o, at, m) in seen.items()])
            await conn.executemany(
                """INSERT INTO sms_sent_before_restore (sms_id, case_id, kind, accepted_at, delivered_at, restore_id)
                   VALUES ($1, $2, $3, $4, $5, $6)
                   ON CONFLICT (sms_id) DO UPDATE SET delivered_at = coalesce(excluded.delivered_at,
                                                                             sms_sent_before_restore.delivered_at)""",
                [(sms_id, case_id, kind, accepted, delivered, restore_id)
                 for sms_id, (case_id, kind, accepted, delivered) in sent.items()])
            await _keep_links(conn, links, head["seq"])
            await conn.executemany(
                """INSERT INTO tickets_issued_before_restore (case_id, number, message, restore_id)
                   VALUES ($1, $2, $3::jsonb, $4) ON CONFLICT DO NOTHING""",
                [(case_id, m["ticket_number"], json.dumps(m), restore_id) for case_id, m in again.items()])
            if serial is not None:  # new tickets after the replay take numbers past those already issued
                await conn.execute("SELECT setval('ticket_serial', greatest($1, (SELECT last_value FROM ticket_serial)))",
                                   serial)
        progress(f"recorded in the database (restores.id {restore_id})")
        await _move_offsets(admin, group, plan)
        progress(f"consumer group {group!r}: offsets moved; start the workers")
        return plan
    finally:
        await consumer.stop()
        await conn.close()


async def _group_members(admin, group: str) -> list[str]:
    from confluent_kafka import KafkaException

    future = admin.describe_consumer_groups([group], request_timeout=30)[group]
    try:
        description = await asyncio.wrap_future(future)
    except KafkaException as exc:
        raise RestoreError(f"cannot describe consumer group {group!r}: {exc}") from exc
    return sorted(f"{m.client_id}@{m.host}" for m in description.members)


async def _retention_ms(admin, names: list[str]) -> dict[str, int]:
    """Each topic's retention.ms (-1: kept for ever)."""
    from confluent_kafka.admin import ConfigResource, ResourceType

    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in names], request_timeout=30)
    return {resource.name: int((await asyncio.wrap_future(future))["retention.ms"].value)
            for resource, future in futures.items()}


async def _committed(admin, group: str) -> dict[tuple[str, int], int]:
    from confluent_kafka import ConsumerGroupTopicPartitions

    futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=30)
    result = await asyncio.wrap_future(futures[group])
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions if tp.offset >= 0}


def _partitions(metadata: dict, names: list[str]) -> list:
    """aiokafka's TopicPartitions of the topics ``names`` (confluent-kafka's ``list_topics`` metadata)."""
    from aiokafka import TopicPartition

    return [TopicPartition(name, p) for name in names for p in sorted(metadata[name].partitions)]


async def _plan_offsets(consumer, partitions: list, base: str, watermarks: dict, committed: dict,
                        since_ms: int, plan: Plan) -> None:
    if not partitions:
        return
    at_time = await consumer.offsets_for_times({tp: since_ms for tp in partitions})
    ends = await consumer.end_offsets(partitions)
    starts = await consumer.beginning_offsets(partitions)
    lost = []
    for tp in partitions:
        key = (tp.topic, tp.partition)
        was = committed.get(key)
        if topics.is_camera_events(base, tp.topic) and key in watermarks:
            to = watermarks[key]  # everything before it is in the restored database; nothing after it is sure to be
            if to < starts[tp]:
                lost.append(f"{tp.topic}:{tp.partition} (offsets {to} to {starts[tp] - 1})")
            if to < ends[tp]:
                plan.replay_to[f"{tp.topic}:{tp.partition}"] = ends[tp]
        elif was is None:
            continue  # never committed: the workers read it from the earliest offset anyway
        else:
            found = at_time.get(tp)
            to = min(was, found.offset if found is not None else ends[tp])
        plan.offsets[key] = (was, to)
    if lost:
        raise RestoreError("camera events the restored database lacks are no longer in Kafka (deleted by the "
                           f"topics' retention.ms): {', '.join(lost)}; their violations would be lost. Restore to a "
                           "later point, or raise retention.ms (README: Backups and restore)")


async def _read_outputs(consumer, partitions: list, since_ms: int, retention_ms: dict[str, int]) -> dict:
    """Every message on ``partitions`` from ``since_ms`` to the end now: identity -> (topic, partition,
    offset, Kafka time, decoded value)."""
    if not partitions:
        return {}
    starts = await consumer.offsets_for_times({tp: since_ms for tp in partitions})
    ends = await consumer.end_offsets(partitions)
    kept_from = await consumer.beginning_offsets(partitions)
    gone = [f"{tp.topic}:{tp.partition}" for tp, found in starts.items()
            if kept_from[tp] > 0 and (found is None or found.offset == kept_from[tp])
            and retention_ms.get(tp.topic, -1) >= 0 and since_ms < time.time() * 1000 - retention_ms[tp.topic]]
    if gone:
        raise RestoreError(f"outputs published after the restore point may be gone from Kafka: {', '.join(gone)} "
                           "deleted messages from that time (retention.ms); what they held cannot be reconciled "
                           "(README: Backups and restore)")
    todo = {tp: (found.offset, ends[tp]) for tp, found in starts.items() if found is not None and found.offset < ends[tp]}
    seen: dict = {}
    if not todo:
        return seen
    consumer.assign(list(todo))
    for tp, (start, _) in todo.items():
        consumer.seek(tp, start)
    left, idle = dict(todo), 0
    while left:
        batches = await consumer.getmany(*left, timeout_ms=1000)
        idle = 0 if batches else idle + 1
        if idle > 30:
            raise RestoreError(f"reading {', '.join(sorted({tp.topic for tp in left}))} stopped before its end "
                               "for 30 s: is Kafka up?")
        for tp, records in batches.items():
            for r in records:
                if r.offset >= todo[tp][1]:
                    continue
                try:
                    message = json.loads(r.value)
                except (ValueError, TypeError):
                    message = None
                at = datetime.fromtimestamp(r.timestamp / 1000, UTC) if r.timestamp and r.timestamp > 0 else None
                seen[identity(tp.topic, r.value)] = (tp.topic, tp.partition, r.offset, at, message)
        for tp in list(left):
            if await consumer.position(tp) >= todo[tp][1]:
                del left[tp]
    return seen


def _about(message) -> tuple[UUID | None, str | None]:
    """The case an output read back names (None if none, or not a valid id) and its message type."""
    if not isinstance(message, dict):
        return None, None
    try:
        case_id = UUID(str(message["case_id"])) if message.get("case_id") else None
    except ValueError:
        case_id = None
    kind = message.get("type")
    return case_id, kind if isinstance(kind, str) else None


def sms_sent(seen: dict) -> dict[UUID, tuple[UUID, str, datetime, datetime | None]]:
    """sms id -> (case id, kind, accepted at, delivered at) of the SMS the gateway accepted, from the
    outputs read (``_read_outputs``): WarningSent and WarningDelivered (warnings), SmsSent (the others)."""
    sent: dict[UUID, tuple[UUID, str, datetime, datetime | None]] = {}
    for _topic, _p, _o, _at, m in seen.values():
        if not isinstance(m, dict) or m.get("type") not in ("WarningSent", "WarningDelivered", "SmsSent"):
            continue
        sms_id, case_id = UUID(m["sms_id"]), UUID(m["case_id"])
        kind = m.get("kind", "warning")
        accepted = datetime.fromisoformat(m["accepted_at"])
        delivered = datetime.fromisoformat(m["delivered_at"]) if m.get("delivered_at") else None
        before = sent.get(sms_id)
        sent[sms_id] = (case_id, kind, accepted, delivered or (before[3] if before else None))
    return sent


def links_to_keep(seen: dict, head_seq: int, head_hash: str) -> tuple[list[dict], int]:
    """The messages on ``tickets`` whose links continue the restored chain (head ``head_seq``,
    ``head_hash``) without a gap, in chain order, each checked as a consumer would; and how many
    TicketIssued come after a gap (their links cannot be put back: they are issued again anew)."""
    from pipeline.tickets import chain

    linked = sorted((m for _t, _p, _o, _at, m in seen.values() if isinstance(m, dict)
                     and isinstance(m.get("chain"), dict) and int(m["chain"].get("seq", 0)) > head_seq),
                    key=lambda m: int(m["chain"]["seq"]))
    kept, seq, prev = [], head_seq, head_hash
    for m in linked:
        link = chain.published_link(m)
        if link is None or link["seq"] != seq + 1 or link["prev"] != prev or not link["holds"]:
            break
        kept.append(m)
        seq, prev = link["seq"], link["hash"]
    return kept, sum(1 for m in linked[len(kept):] if m["type"] == "TicketIssued")


async def _keep_links(conn, messages: list[dict], head_seq: int) -> None:
    """Append the links of ``messages`` (``links_to_keep``) to the ticket record as they were published:
    sealed now, in order, they get the same place, previous link and hash (checked)."""
    from pipeline.tickets import chain

    if not messages:
        return
    await conn.executemany(
        "INSERT INTO ticket_chain (kind, ticket_number, appeal_id, body) VALUES ($1, $2, $3, $4)",
        [(m["type"], m["ticket_number"], UUID(m["appeal_id"]) if m.get("appeal_id") else None,
          chain.canonical(chain.record_of(m))) for m in messages])
    await conn.execute("SET CONSTRAINTS ticket_chain_sealed IMMEDIATE")
    made = {r["seq"]: r["hash"] for r in await conn.fetch("SELECT seq, hash FROM ticket_chain WHERE seq > $1", head_seq)}
    wrong = [m["chain"]["seq"] for m in messages if made.get(m["chain"]["seq"]) != m["chain"]["hash"]]
    if wrong:
        raise RestoreError(f"the ticket record's links {wrong} could not be put back as published: nothing changed")


def highest_serial(seen: dict, prefix: str) -> int | None:
    """The highest serial of the ticket numbers on ``tickets`` (``PREFIX`` + local date ``yymmdd`` +
    serial: ``store.issue_ticket``), or None."""
    serials = [int(n[len(prefix) + 6:]) for _t, _p, _o, _at, m in seen.values()
               if isinstance(m, dict) and m.get("type") == "TicketIssued"
               and isinstance(n := m.get("ticket_number"), str) and n.startswith(prefix) and n[len(prefix) + 6:].isdigit()]
    return max(serials, default=None)


async def _move_offsets(admin, group: str, plan: Plan) -> None:
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition

    moves = [TopicPartition(t, p, to) for (t, p), (_, to) in sorted(plan.offsets.items())]
    if not moves:
        return
    futures = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, moves)], request_timeout=30)
    try:
        result = await asyncio.wrap_future(futures[group])
    except KafkaException as exc:
        raise RestoreError(f"Kafka refused to move the offsets of consumer group {group!r}: {exc}") from exc
    failed = [f"{tp.topic}:{tp.partition} ({tp.error})" for tp in result.topic_partitions if tp.error]
    if failed:
        raise RestoreError(f"consumer group {group!r}: offsets not moved for {', '.join(failed)}")
