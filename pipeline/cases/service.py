"""What happens to a violation: the one place that reads an event, asks the case state machine,
and records the decision with its effects.

    camera events ─> handle_camera_events ──> machine.open_case / on_capture / on_departure (per event, in order)
                                              │   (or again_after_close: evidence for the same stay)
                                              └─> case rows + sightings + SMS rows + outbox rows
                                                  (one transaction and a few statements per batch)
    case due     ──> decide_due_cases ──> machine.on_wake ──> ticket | warning notice | to confirm | recheck | ...

Decisions are recorded with their effects by ``pipeline.cases.effects``; the SMS rows they queue are
sent, settled and reported on by ``pipeline.sms.service``.

Each entry point is safe to run in any number of workers at once and to repeat: rows are claimed
with ``FOR UPDATE SKIP LOCKED`` and every effect is keyed (see ``store``).
"""

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Callable
import asyncpg
from pydantic import BaseModel

from pipeline.cameras import registry
from pipeline.cameras.registry import Camera
from pipeline.cases import due as due_writes, machine, store, watermarks
from pipeline.cases.effects import PIPELINE, CaseEffects, Topics
from pipeline.cases.machine import Case, Rules, Sighting, State
from pipeline.db import errors
from pipeline.lookups.carparks import CarParkIndex, store_count
from pipeline.lookups.owners import OwnerAnswer, OwnerDirectory
from pipeline.lookups.zones import ZoneBook
from pipeline.restore import case_id_for
from pipeline.sms.service import SmsStyle
from schemas import events, topics
from schemas.codec import Rejected

log = logging.getLogger(__name__)

__all__ = ["CaseService", "Source", "Topics", "SmsStyle", "admit", "printable", "store_raw"]


@dataclass(frozen=True)
class Source:
    """Where a message came from on Kafka: its place, key, timestamp (when Kafka took it) and bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp: datetime | None = None
    raw: bytes | None = None


DUE_BATCH = 500
"""The deadline tick's claim: at most this many due cases a round."""


def admit(item, source: Source):
    """The decoded event, or a ``Rejected`` for a message an agent cannot use: no value (a
    tombstone), no key (the contract keys every input message), or not decoded at all."""
    if isinstance(item, Rejected):
        return item
    raw = source.raw or b""
    if item is None:
        return Rejected(raw, "empty message (no value): send one JSON event per message; tombstones are not events",
                        (events.FieldError(field="(value)", message="missing: the message has no value"),))
    if not isinstance(item, BaseModel):
        return Rejected(raw, f"not decoded ({type(item).__name__})", ())
    if not source.key:
        return Rejected(raw or store_raw(item, source), "no key: key the message as docs/integrators.md says "
                        "(camera events by the normalized plate, car-park status by car park id)",
                        (events.FieldError(field="(key)", message="missing: the Kafka message has no key"),))
    return item


def sighting_of(event: events.Capture | events.VehicleDeparted, integrator: str, camera: Camera) -> Sighting:
    """The event as the registry places it: the camera's position and place, never the event's."""
    evidence = getattr(event, "evidence", None)
    return Sighting(event.event_id, event.camera_id, event.taken_at, camera.lat, camera.lon, camera.place,
                    evidence.image_url if evidence else None, integrator)


@dataclass
class Known:
    """What the decisions of a batch of camera events read, loaded for all its plates at once
    (``CaseService._load``) and kept current as the batch is decided, in order."""

    open: dict[str, Case]
    """plate -> its open case."""
    latest: dict[str, Case]
    """plate -> its most recent case, open or closed (plates with a violation in the batch)."""
    owners: dict[int, OwnerAnswer] = field(default_factory=dict)
    """id() of each violation of the batch -> its owner, as the registries say."""
    last_offence: dict[str, datetime | None] = field(default_factory=dict)
    unlinked: dict[str, list[tuple[str, Sighting]]] = field(default_factory=dict)
    """plate -> its captures and departures no case held as the batch began, since its earliest
    violation in the batch, in event-time order."""
    seen: dict[str, tuple] = field(default_factory=dict)
    """plate -> (id of its latest case, departures, captures seen since that case's violation)."""
    linked: set[tuple[str, str]] = field(default_factory=set)
    """(integrator, event id) of the sightings the batch linked to a case."""

    def keep(self, case: Case) -> None:
        """A case as the batch's decisions left it."""
        if case.is_open:
            self.open[case.plate] = case
        elif case.plate in self.open and self.open[case.plate].id == case.id:
            del self.open[case.plate]
        latest = self.latest.get(case.plate)
        if latest is None or latest.id == case.id or case.opened_at >= latest.opened_at:
            self.latest[case.plate] = case


class CaseService:
    def __init__(self, pool: asyncpg.Pool, owners: OwnerDirectory, car_parks: CarParkIndex, zones: ZoneBook,
                 rules: Rules, topics: Topics, sms: SmsStyle, ticket_prefix: str, actor: str = PIPELINE,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), parallel: int = 4,
                 integrator_stale_seconds: float | None = None, dead_letter_raw_bytes_per_day: int | None = None,
                 sms_queued: Callable[[], None] = lambda: None, outbox_written: Callable[[], None] = lambda: None):
        self.pool = pool
        self.sms_queued = sms_queued
        """Called after a batch of camera events that queued SMS committed (wakes the SMS loop)."""
        self.outbox_written = outbox_written
        """Called after a batch of camera events that wrote outbox rows committed (wakes the relay)."""
        self.owners = owners
        self.car_parks = car_parks
        self.zones = zones
        self.rules = rules
        self.topics = topics
        self.sms = sms
        self.ticket_prefix = ticket_prefix
        self.clock = clock
        self.actor = actor
        self.parallel = parallel
        self.integrator_stale_seconds = integrator_stale_seconds
        """An integrator's camera-events topic read further behind than this is stale (``watermarks.mark_stale``)."""
        self.dead_letter_raw_bytes_per_day = dead_letter_raw_bytes_per_day
        """Raw bytes of dead letters kept per source topic (one per integrator) per UTC day; None: all."""
        self.database_waits = 0
        self.effects = CaseEffects(owners, car_parks, rules, topics, ticket_prefix, sms.timezone,
                                   driver_page=sms.driver_page, actor=actor)

    # ── camera events ────────────────────────────────────────────────────────────────────────

    async def handle_camera_events(self, batch: list[tuple[object, Source]]) -> None:
        """Record every event of a batch, decided or as a dead letter with its reason; return only then.

        A message that cannot be used (no value, no key, not JSON, invalid) is a dead letter. While
        the database fails for reasons of its own (unreachable, read-only after a failover, full,
        a cancelled statement: ``pipeline.db.errors``) this waits and tries again, so the batch is
        not acknowledged and nothing is lost. An event that keeps failing for a reason of its own
        (a value PostgreSQL refuses, a bug on an odd input) becomes a dead letter with that reason.
        """
        groups: dict[int, list] = {}
        parallel = self.transactions_for(len(batch))
        for item, source in batch:
            item = admit(item, source)
            key = 0 if isinstance(item, Rejected) else hash(item.plate) % parallel
            groups.setdefault(key, []).append((item, source))
        # One plate's events stay in one group, in order; groups commit independently, in parallel.
        await asyncio.gather(*(self._until_database_answers(self._decide_batch, g) for g in groups.values()))
        await self._until_database_answers(self._note_progress, batch)

    EVENTS_PER_TRANSACTION = 100
    """A batch is split into parallel transactions only when each gets at least this many events: the
    statements of a transaction cost the same for 1 event as for 200 (issue 16), so a small batch
    split four ways would cost four times the round trips for no gain."""

    def transactions_for(self, events_in_batch: int) -> int:
        """How many transactions, side by side, decide a batch of this many events (1 to ``parallel``)."""
        return max(1, min(self.parallel, events_in_batch // self.EVENTS_PER_TRANSACTION))

    async def _note_progress(self, batch: list[tuple[object, Source]]) -> None:
        """Every event of the batch is recorded: move the partitions' watermarks (``watermarks``)."""
        progress: dict[tuple[str, int], tuple[int, datetime | None]] = {}
        for _, source in batch:
            if not topics.is_camera_events(self.topics.camera_events, source.topic):
                continue
            offset, at = progress.get((source.topic, source.partition), (-1, None))
            newest = max((t for t in (at, source.timestamp) if t is not None), default=None)
            progress[(source.topic, source.partition)] = (max(offset, source.offset), newest)
        if progress:
            async with self.pool.acquire() as conn:
                await watermarks.recorded(conn, progress)

    async def mark_current_partitions(self, end_offsets, stale: bool = True) -> int:
        """The tick that keeps idle partitions current: ``end_offsets`` is a coroutine function that
        asks the broker for the end offset of each partition of every camera-events topic (after
        PostgreSQL's now()). ``stale``: also mark integrators stale or current again."""
        async with self.pool.acquire() as conn:
            as_of = await conn.fetchval("SELECT now()")
            ends = await end_offsets()
            current = await watermarks.current_as_of(conn, ends, as_of) if ends else 0
            if stale and self.integrator_stale_seconds is not None:
                await watermarks.mark_stale(conn, self.topics.camera_events, self.integrator_stale_seconds, self.actor)
            return current

    async def _decide_batch(self, batch: list[tuple[object, Source]]) -> None:
        """One transaction for the batch. If an event fails for a reason of its own, the batch is split
        in halves, in order, each decided the same way, down to the one event, which is tried alone
        and then kept as a dead letter. Raises only what ``errors.is_transient`` calls the database's
        fault (the caller waits)."""
        async with errors.own_failure() as outcome, self.pool.acquire() as conn, conn.transaction():
            written = await self._decide(conn, batch)
        if outcome.failure is None:
            self._committed(written)
            return
        if len(batch) == 1:
            await self._decide_alone(*batch[0])
            return
        log.warning("batch of %d camera events failed (%s); deciding it in halves", len(batch), outcome)
        half = len(batch) // 2
        await self._decide_batch(batch[:half])
        await self._decide_batch(batch[half:])

    async def _decide_alone(self, item, source: Source, tries: int = 3) -> None:
        for attempt in range(tries):
            async with errors.own_failure() as outcome, self.pool.acquire() as conn, conn.transaction():
                written = await self._decide(conn, [(item, source)])
            if outcome.failure is None:
                self._committed(written)
                return
            if outcome.race:
                await asyncio.sleep(0.05 * (attempt + 1))
        log.error("camera event at %s:%d@%d failed %d times: %s", source.topic, source.partition, source.offset,
                  tries, outcome)
        await self._dead_letter_alone(Rejected(store_raw(item, source), f"processing failed: {outcome}", ()), source)

    def _committed(self, written: set[str]) -> None:
        """A batch's transaction committed what it ``written``: wake the loops that send it on."""
        if store.ADD_SMS in written:
            self.sms_queued()
        if store.ADD_OUTBOX in written:
            self.outbox_written()

    async def _dead_letter_alone(self, rejected: Rejected, source: Source) -> None:
        """Keep a dead letter in its own transaction. If even that fails for a reason of its own,
        keep it with the reason and the bytes only; if that fails too, wait and try again (as for an
        outage): an event is never acknowledged unrecorded."""
        for attempt in (rejected, Rejected(rejected.raw, rejected.reason, ())):
            async with errors.own_failure() as outcome, self.pool.acquire() as conn, conn.transaction():
                await self._dead_letter(conn, attempt, source)
            if outcome.failure is None:
                return
            log.error("dead letter from %s:%d@%d could not be kept: %s", source.topic, source.partition,
                      source.offset, outcome)
        raise errors.Stuck(f"dead letter refused by PostgreSQL: {outcome}")

    async def _until_database_answers(self, work, *args) -> None:
        delay = 0.5
        while True:
            try:
                return await work(*args)
            except Exception as exc:  # noqa: BLE001 - only the database's faults reach here
                if not errors.is_transient(exc):
                    raise
                self.database_waits += 1
                log.error("PostgreSQL is not taking writes (%s); retrying in %.1fs. Is it running and writable? "
                          "scripts/services.sh status", errors.describe(exc)[:200], delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def _decide(self, conn, batch: list[tuple[object, Source]]) -> set[str]:
        """Decide a batch of camera events, in order, in the caller's transaction, in a constant number
        of statements for the batch (issue 16): PostgreSQL's clock, the cameras, the revoked
        integrators, the sightings (replays skipped), what the decisions read (``_load``), then the
        decisions' writes, each kind in one statement (``store.Batch``). Unusable events are dead
        letters. Each event is decided by ``_decide_one`` on what the batch's earlier events left.
        Returns the kinds of writes it made (``store.Batch.written``)."""
        conn = store.Batch(conn)
        now = await store.database_now(conn)
        cameras = await registry.registered_many(
            conn, [item.camera_id for item, _ in batch if not isinstance(item, Rejected)])
        revoked = await registry.revoked_among(
            conn, [topics.integrator_of(self.topics.camera_events, source.topic) for _, source in batch])
        usable = []
        for item, source in batch:
            if isinstance(item, Rejected):
                await self._dead_letter(conn, item, source, now)
                continue
            camera, refusal = self._provenance(item, source, cameras, revoked)
            if refusal is not None:
                await self._dead_letter(conn, refusal, source, now)
                continue
            usable.append((item, source, sighting_of(item, topics.integrator_of(self.topics.camera_events, source.topic), camera), camera))
        recorded = await store.add_sightings(
            conn, [(item.type, item, sighting, camera.zone) for item, _, sighting, camera in usable], now) if usable else set()
        fresh = []
        for event in usable:
            key = (event[2].integrator, event[0].event_id)
            if key in recorded:  # not a replay, nor a repeat of an earlier event of the batch
                recorded.discard(key)
                fresh.append(event)
        known = await self._load(conn, fresh)
        for item, source, sighting, camera in fresh:
            await self._decide_one(conn, known, item, source, sighting, camera, now)
        await conn.flush()
        return conn.written

    async def _load(self, conn, fresh: list[tuple]) -> "Known":
        """What the decisions of a batch read, in one query each (none when no event needs it)."""
        violations = [(item, sighting, camera) for item, _, sighting, camera in fresh
                      if isinstance(item, events.ViolationDetected)]
        violating = {item.plate for item, _, _ in violations}
        open_cases, latest = await store.cases_of_plates(conn, [item.plate for item, *_ in fresh], list(violating)) \
            if fresh else ({}, {})
        known = Known(open_cases, latest)
        if not violations:
            return known
        answers = await self.owners.owners_for(
            [(item.plate, item.plate_types_read, item.vehicle_colour) for item, _, _ in violations], conn)
        known.owners = {id(item): answer for (item, _, _), answer in zip(violations, answers)}
        counted = [item.plate for item, _, camera in violations if self.zones.rules_for(camera.zone).first_offence_months]
        if counted:
            known.last_offence = await store.last_offences(conn, counted)
        since: dict[str, datetime] = {}
        until: dict[str, datetime] = {}
        for item, _, _ in violations:
            since[item.plate] = min(since.get(item.plate, item.taken_at), item.taken_at)
            until[item.plate] = max(until.get(item.plate, item.taken_at), item.taken_at)
        known.unlinked = await store.unlinked_sightings_of(conn, since)
        stays = {plate: case for plate, case in latest.items()
                 if plate not in open_cases and case.state in machine.STAY_STATES}
        if stays:
            seen = await store.seen_between_many(conn, {
                plate: (case.violation.taken_at, until[plate], case.violation.camera_id) for plate, case in stays.items()})
            known.seen = {plate: (stays[plate].id, *found) for plate, found in seen.items()}
        return known

    async def _decide_one(self, conn, known: "Known", item, source: Source, sighting: Sighting, camera: Camera,
                          now: datetime) -> None:
        """What happens to a camera event (kept as a sighting already), on what the batch knows."""
        if (sighting.integrator, item.event_id) in known.linked:
            return  # decided already, as an earlier arrival of the case its violation opened
        case = known.open.get(item.plate)
        if isinstance(item, events.ViolationDetected):
            if case is not None:
                decision = machine.on_violation(case, sighting, self.rules, now)
                await self._record(conn, known, case, decision, now, item.event_id)
                if not machine.needs_new_case(decision, sighting, self.rules):
                    await self._link(conn, known, sighting, case)
                    return
            elif await self._same_stay(conn, known, item, sighting, camera, now):
                return
            await self._open(conn, known, item, sighting, camera, now, source)
        elif case is None:
            return  # a sighting or a departure with no open case: kept as a sighting only
        elif isinstance(item, events.VehicleObserved):
            await self._link(conn, known, sighting, case)
            await self._record(conn, known, case, machine.on_capture(case, sighting, self.rules, now), now, item.event_id)
        else:
            await self._link(conn, known, sighting, case)
            await self._record(conn, known, case, machine.on_departure(case, sighting, self.rules, now), now,
                               item.event_id)

    async def _record(self, conn, known: "Known", case: Case, decision: machine.Decision, now: datetime,
                      cause: str) -> None:
        await self.effects.record(conn, case, decision, now, cause)
        known.keep(decision.case)

    async def _link(self, conn, known: "Known", sighting: Sighting, case: Case) -> None:
        await store.link_sighting(conn, sighting.integrator, sighting.event_id, case.id)
        known.linked.add((sighting.integrator, sighting.event_id))

    def _provenance(self, item, source: Source, cameras: dict[str, Camera],
                    revoked: dict[str, datetime]) -> tuple[Camera | None, Rejected | None]:
        """The event's camera as registered, or why the event is refused: it came on a topic that names
        no integrator, its camera is unknown, removed, or another integrator's, or its integrator is revoked
        (``pipeline.cameras``). ``cameras``: the registered cameras of its batch, ``revoked``: its revoked
        integrators."""
        integrator = topics.integrator_of(self.topics.camera_events, source.topic)
        if integrator is None:
            reason = (f"{source.topic} names no integrator: publish camera events to "
                      f"{topics.camera_events_of(self.topics.camera_events, '<your integrator name>')}, "
                      "with your own credentials (docs/integrators.md)")
            return None, Rejected(store_raw(item, source), reason, (events.FieldError(field="(topic)", message=reason),))
        if integrator in revoked:
            camera, problem = None, registry.revoked_refusal(integrator, revoked[integrator])
        else:
            camera = cameras.get(item.camera_id)
            problem = registry.refusal(camera, item.camera_id, integrator)
        if problem is not None:
            return None, Rejected(store_raw(item, source), problem, (events.FieldError(field="camera_id", message=problem),))
        return camera, None

    async def _same_stay(self, conn, known: "Known", event: events.ViolationDetected, sighting: Sighting,
                         camera: Camera, now: datetime) -> bool:
        """One car, one case per stay: a violation at the place of the plate's closed case, within the
        stay, is added to that case as evidence (linked, noted in the audit log, nothing sent)."""
        latest = known.latest.get(event.plate)
        if latest is None or latest.is_open or latest.state not in machine.STAY_STATES:
            return False
        exempt_now = latest.state != State.EXEMPT or self._exemption(event, camera.zone) is not None
        case_id, departures, captures = known.seen.get(event.plate, (None, [], []))
        if case_id == latest.id:
            departures = [at for at in departures if at <= event.taken_at]
            captures = [c for c in captures if c.taken_at <= event.taken_at]
        else:  # a case the batch closed: read what was seen since
            departures, captures = await store.seen_between(conn, event.plate, latest.violation.taken_at,
                                                            event.taken_at, latest.violation.camera_id)
        decision = machine.again_after_close(latest, sighting, departures, captures, exempt_now, self.rules)
        if decision is None:
            return False
        await self._link(conn, known, sighting, latest)
        await store.audit(conn, now, latest.id, self.actor, "evidence",
                          {"cause": event.event_id, "integrator": sighting.integrator, "note": decision.note})
        return True

    def _exemption(self, event: events.ViolationDetected, zone: str) -> str | None:
        return self.zones.exemption(event.plate, zone, event.taken_at.astimezone(self.sms.timezone).hour)

    async def _open(self, conn, known: "Known", event: events.ViolationDetected, sighting: Sighting, camera: Camera,
                    now: datetime, source: Source) -> None:
        """A new case in the zone of the violation's camera, as registered (never a zone the event names)."""
        exemption = self._exemption(event, camera.zone)
        owner = None if exemption else known.owners[id(event)]
        zone = self.zones.rules_for(camera.zone)
        opening = machine.Opening(
            owner_reachable=owner is not None and owner.found, exempt_reason=exemption, reported_at=source.timestamp,
            owner_problem=(owner and owner.review_reason) or "no_phone", plate_type=owner and owner.plate_type,
            zone=zone,
            last_offence_at=known.last_offence.get(event.plate) if zone.first_offence_months else None,
            camera_commissioned=camera.commissioned_on if zone.new_camera_days else None)
        decision = machine.open_case(case_id_for(sighting.integrator, event.event_id), event.plate, camera.zone, sighting, opening, now, self.rules)
        case = decision.case
        from_camera_events = topics.is_camera_events(self.topics.camera_events, source.topic)
        await store.insert_case(conn, case, self.zones.window_seconds(camera.zone), now,
                                source.partition if from_camera_events else None,
                                source.topic if from_camera_events else None)
        known.keep(case)
        await self._link(conn, known, sighting, case)
        await store.add_outbox(conn, self.topics.case_events, case.plate, events.CaseOpened(
            case_id=str(case.id), plate=case.plate, state=case.state, place=case.place, zone=case.zone,
            location=events.Location(lat=camera.lat, lon=camera.lon), camera_id=event.camera_id,
            detected_at=event.taken_at, opened_at=now))
        await store.audit(conn, now, case.id, self.actor, f"opened:{case.state}",
                          {"event_id": event.event_id, "integrator": sighting.integrator, "reason": case.reason})
        await self.effects.carry_out(conn, case, decision, now, owner=owner)
        if decision.closed:
            await self.effects.publish_closed(conn, case, now)
        else:
            await self._decide_earlier_arrivals(conn, known, case, now)

    async def _decide_earlier_arrivals(self, conn, known: "Known", case: Case, now: datetime) -> None:
        """Out of order (integrators, issue 3): sightings and departures of the plate that arrived
        before their violation (in an earlier batch, or earlier or later in this one) but were taken
        after it are decided now, in event-time order, so a departure that overtook its violation
        closes the new case as moved before any SMS leaves."""
        for kind, sighting in known.unlinked.get(case.plate, []):
            if sighting.taken_at < case.violation.taken_at or (sighting.integrator, sighting.event_id) in known.linked:
                continue
            if not case.is_open:
                return
            await self._link(conn, known, sighting, case)
            decision = (machine.on_departure(case, sighting, self.rules, now) if kind == "VehicleDeparted"
                        else machine.on_capture(case, sighting, self.rules, now))
            await self._record(conn, known, case, decision, now, sighting.event_id)
            case = decision.case

    async def _dead_letter(self, conn, rejected: Rejected, source: Source, now: datetime | None = None) -> None:
        now = now or self.clock()
        rejected = Rejected(rejected.raw, printable(rejected.reason), tuple(
            events.FieldError(field=printable(e.field), message=printable(e.message)) for e in rejected.errors))
        field_errors = [e.model_dump() for e in rejected.errors]
        key, raw, reason = source.key, rejected.raw, rejected.reason
        if self.dead_letter_raw_bytes_per_day is not None and not await store.dead_letter_raw_allowed(
                conn, source.topic, len(raw) + len(key or b""), self.dead_letter_raw_bytes_per_day):
            reason = (f"[{len(raw)} bytes not kept, sha256 {hashlib.sha256(raw).hexdigest()}: this topic's dead "
                      f"letters reached PW_DEAD_LETTER_RAW_BYTES_PER_DAY today] {reason}")
            key, raw = None, b""
        if await store.add_dead_letter(conn, source.topic, source.partition, source.offset, key,
                                       reason, field_errors, raw, now):
            await store.add_outbox(conn, self.topics.dead_letters, source.topic, events.DeadLetter.capped(
                source.topic, source.partition, source.offset, key or None, reason,
                rejected.errors, raw, now))
            log.warning("dead letter from %s:%d@%d: %s", source.topic, source.partition, source.offset, rejected.reason)

    # ── car-park counts ──────────────────────────────────────────────────────────────────────

    async def handle_car_park_statuses(self, batch: list[tuple[object, Source]]) -> None:
        """Keep live free-space counts; like camera events, every message is kept or dead-lettered."""
        batch = [(admit(item, source), source) for item, source in batch]
        await self._until_database_answers(self._store_counts, batch)

    async def _store_counts(self, batch: list[tuple[object, Source]]) -> None:
        async with errors.own_failure() as outcome, self.pool.acquire() as conn, conn.transaction():
            for item, source in batch:
                await self._store_count(conn, item, source)
        if outcome.failure is None:
            return
        log.warning("batch of %d car-park counts failed (%s); one by one", len(batch), outcome)
        for item, source in batch:
            async with errors.own_failure() as outcome, self.pool.acquire() as conn, conn.transaction():
                await self._store_count(conn, item, source)
            if outcome.failure is not None:
                await self._dead_letter_alone(Rejected(store_raw(item, source), f"processing failed: {outcome}", ()),
                                              source)

    async def _store_count(self, conn, item, source: Source) -> None:
        if isinstance(item, Rejected):
            await self._dead_letter(conn, item, source)
        elif not self.car_parks.update_count(item.car_park_id, item.free_spaces, item.reported_at):
            await self._dead_letter(conn, Rejected(
                store_raw(item, source), f"unknown car park id {item.car_park_id!r}: register it in car_parks first",
                (events.FieldError(field="car_park_id", message="unknown car park"),)), source)
        else:
            await store_count(conn, item.car_park_id, item.free_spaces, item.reported_at)

    # ── the clock ────────────────────────────────────────────────────────────────────────────

    async def decide_due_cases(self, limit: int = DUE_BATCH) -> int:
        """Decide every case whose deadline (or recheck wait) has passed, ``limit`` at a time. Returns how many.

        Set-based (``pipeline.cases.due``): one query claims the due cases, the machine decides each in
        memory with PostgreSQL's ``now``, and the decisions are written with their effects in a
        constant number of statements. If the batch fails for a reason of one case's own, it is split
        in halves, each decided the same way, down to that case, which goes to review with the problem
        (``_per_row``); the cases claimed with it are decided as usual."""
        async with self.pool.acquire() as conn, conn.transaction():
            now, due = await store.claim_due_cases(conn, self.topics.camera_events, limit, self.rules.same_place_m)
            readable, unreadable = [], []
            for row in due:
                try:
                    readable.append((store.case_from_row(row), list(row["decided_without"])))
                except Exception as exc:  # noqa: BLE001 - an unreadable row waits, the rest are decided
                    log.error("case %s is unreadable (%s); it waits 5 minutes", row["id"], errors.describe(exc))
                    unreadable.append(row["id"])
            for case_id in unreadable:
                await store.postpone(conn, case_id)
            await self._decide_due(conn, readable, now)
            return len(due)

    async def seconds_to_next_wake(self, least: float, most: float) -> float:
        """How long until the next open case is due (``wake_at`` still ahead), between ``least`` and
        ``most`` seconds: the deadline loop sleeps that long when it found none due."""
        ahead = await self.pool.fetchval(
            """SELECT extract(epoch FROM min(wake_at) - now())::float8 FROM cases
               WHERE state IN ('warned', 'rechecking') AND wake_at > now()""")
        return most if ahead is None else min(most, max(least, ahead))

    async def _decide_due(self, conn, due: list[tuple[Case, list[str]]], now: datetime) -> None:
        """Decide and record a batch of due cases in a savepoint; split it on a failure of its own."""
        if not due:
            return
        async with errors.own_failure(conn) as outcome:
            await due_writes.record_due(conn, self.effects, [
                (case, machine.on_wake(case, self.rules, now), without) for case, without in due], now)
        if outcome.failure is None:
            return
        if len(due) == 1:
            case, without = due[0]
            await self._per_row(conn, case, lambda: self._wake(conn, case, without, now), now, "deadline")
            return
        log.warning("batch of %d due cases failed (%s); deciding it in halves", len(due), outcome)
        half = len(due) // 2
        await self._decide_due(conn, due[:half], now)
        await self._decide_due(conn, due[half:], now)

    async def _wake(self, conn, case: Case, decided_without: list[str], now: datetime) -> None:
        """Decide a due case; if stale integrators' topics were passed over, the case's audit log says so."""
        decision = machine.on_wake(case, self.rules, now)
        if decided_without and decision.changed:
            await store.audit(conn, now, case.id, self.actor, "decided_without", {
                "topics": decided_without, "integrators": [topics.integrator_of(self.topics.camera_events, t)
                                                           for t in decided_without]})
        await self.effects.record(conn, case, decision, now, "deadline")

    async def _per_row(self, conn, case: Case, decide, now: datetime, cause: str) -> bool:
        """Run ``decide()`` in a savepoint; on a failure of the case's own, set the case aside for an
        officer (in a second savepoint) and return False. The database's faults are raised."""
        async with errors.own_failure(conn) as outcome:
            await decide()
        if outcome.failure is None:
            return True
        problem = str(outcome)[:200]
        log.error("case %s could not be decided (%s): %s; it goes to review", case.id, cause, problem)
        async with errors.own_failure(conn) as set_aside:
            await self.effects.record(conn, case, machine.set_aside(case, problem, now), now, cause)
        if set_aside.failure is not None:
            log.error("case %s could not be set aside either (%s); it waits 5 minutes", case.id, set_aside)
            await store.postpone(conn, case.id)
        return False



def printable(text: str) -> str:
    """Text PostgreSQL keeps in text and jsonb columns (no NUL characters, no lone surrogates)."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def store_raw(item, source: Source | None = None) -> bytes:
    if isinstance(item, Rejected):
        return item.raw
    if source is not None and source.raw:
        return source.raw
    return item.model_dump_json().encode()
