"""What happens to a violation: the one place that reads an event, asks the case state machine,
and records the decision with its effects.

    camera event ──> handle_camera_events ──> machine.open_case / on_capture / on_departure
                                              │   (or again_after_close: evidence for the same stay)
                                              └─> case row + sighting + SMS row + outbox rows (one transaction)
    SMS row due  ──> send_due_sms ──> gateway.send ──> machine.on_warning_accepted (window starts)
    report       ──> apply_delivery_reports ──> machine.on_warning_delivered (a late delivery moves the deadline)
    case due     ──> decide_due_cases ──> machine.on_wake ──> ticket | warning notice | to confirm | recheck | ...

Each entry point is safe to run in any number of workers at once and to repeat: rows are claimed
with ``FOR UPDATE SKIP LOCKED`` and every effect is keyed (see ``store``).
"""

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Callable
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import asyncpg
from pydantic import BaseModel

from pipeline.cameras import registry
from pipeline.cameras.registry import Camera
from pipeline.cases import machine, store, watermarks
from pipeline.cases.machine import Case, Decision, Rules, Sighting, State
from pipeline.cases.reasons import why
from pipeline.db import errors
from pipeline.lookups.carparks import CarParkIndex, store_count
from pipeline.lookups.owners import OwnerAnswer, OwnerDirectory, scrub
from pipeline.lookups.zones import ZoneBook
from pipeline.sms import texts
from pipeline.tickets import chain
from pipeline.sms.gateway import (Accepted, InDoubt, OutgoingSms, PermanentFailure, SmsGateway,
                                  TemporaryFailure)
from schemas import events, topics
from schemas.codec import Rejected

log = logging.getLogger(__name__)

PIPELINE = "pipeline"


@dataclass(frozen=True)
class Source:
    """Where a message came from on Kafka: its place, key, timestamp (when Kafka took it) and bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp: datetime | None = None
    raw: bytes | None = None


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


@dataclass(frozen=True)
class Topics:
    camera_events: str
    """The bare camera-events topic; integrators write to theirs, ``camera-events.<integrator>``."""
    case_events: str
    tickets: str
    camera_commands: str
    dead_letters: str


@dataclass(frozen=True)
class SmsStyle:
    language: str
    signature: str
    timezone: ZoneInfo
    retry_seconds: float = 2
    """The first wait after the gateway could not take a message; it doubles, up to ``retry_max_seconds``."""
    retry_max_seconds: float = 30
    retry_horizon: dict[str, float] = field(default_factory=lambda: {"warning": 1800, "ticket": 86400})
    """How long each kind of SMS is retried while the gateway is down; other kinds (an appeal's
    decision) take the ticket's."""
    """Seconds, per kind, that a message may wait for a gateway that is down (from its first failure);
    after that it fails for good (a warning's case goes to review)."""
    daily_limit: int = 6
    driver_page: bool = False
    in_doubt_after: timedelta = timedelta(seconds=60)
    """The lease a sender holds on a message it is sending, renewed while its gateway call is
    outstanding (longer than any gateway call)."""
    report_wait: timedelta = timedelta(seconds=120)
    """How long a message whose sender lost its lease, with no answer and no delivery report, waits
    before it is sent again: time for the sender to come back with the gateway's answer, and for the
    gateway to retry its reports."""
    worker: str = PIPELINE
    """This worker's name, written on the messages it is sending."""


def sighting_of(event: events.Capture | events.VehicleDeparted, integrator: str, camera: Camera) -> Sighting:
    """The event as the registry places it: the camera's position and place, never the event's."""
    evidence = getattr(event, "evidence", None)
    return Sighting(event.event_id, event.camera_id, event.taken_at, camera.lat, camera.lon, camera.place,
                    evidence.image_url if evidence else None, integrator)


class CaseService:
    def __init__(self, pool: asyncpg.Pool, owners: OwnerDirectory, car_parks: CarParkIndex, zones: ZoneBook,
                 rules: Rules, topics: Topics, sms: SmsStyle, ticket_prefix: str, actor: str = PIPELINE,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), parallel: int = 4):
        self.pool = pool
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
        self.database_waits = 0

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
        for item, source in batch:
            item = admit(item, source)
            key = 0 if isinstance(item, Rejected) else hash(item.plate) % self.parallel
            groups.setdefault(key, []).append((item, source))
        # One plate's events stay in one group, in order; groups commit independently, in parallel.
        await asyncio.gather(*(self._until_database_answers(self._decide_batch, g) for g in groups.values()))
        await self._until_database_answers(self._note_progress, batch)

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

    async def mark_current_partitions(self, end_offsets) -> int:
        """The tick that keeps idle partitions current: ``end_offsets`` is a coroutine function that
        asks the broker for the end offset of each partition of every camera-events topic (after
        PostgreSQL's now())."""
        async with self.pool.acquire() as conn:
            as_of = await conn.fetchval("SELECT now()")
            ends = await end_offsets()
            return await watermarks.current_as_of(conn, ends, as_of) if ends else 0

    async def _decide_batch(self, batch: list[tuple[object, Source]]) -> None:
        """One transaction for the batch; if an event fails for a reason of its own, each on its own.
        Raises only what ``errors.is_transient`` calls the database's fault (the caller waits)."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                for item, source in batch:
                    await self._handle_one(conn, item, source)
            return
        except Exception as exc:  # noqa: BLE001 - sorted out below
            if errors.is_transient(exc):
                raise
            log.warning("batch of %d camera events failed (%s); deciding one by one", len(batch),
                        errors.describe(exc))
        for item, source in batch:
            await self._decide_alone(item, source)

    async def _decide_alone(self, item, source: Source, tries: int = 3) -> None:
        failure = None
        for attempt in range(tries):
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    await self._handle_one(conn, item, source)
                return
            except Exception as exc:  # noqa: BLE001 - sorted out below
                if errors.is_transient(exc):
                    raise
                failure = exc
                if errors.is_race(exc):
                    await asyncio.sleep(0.05 * (attempt + 1))
        log.error("camera event at %s:%d@%d failed %d times: %s", source.topic, source.partition, source.offset,
                  tries, errors.describe(failure))
        await self._dead_letter_alone(Rejected(store_raw(item, source), f"processing failed: {errors.describe(failure)}",
                                               ()), source)

    async def _dead_letter_alone(self, rejected: Rejected, source: Source) -> None:
        """Keep a dead letter in its own transaction. If even that fails for a reason of its own,
        keep it with the reason and the bytes only; if that fails too, wait and try again (as for an
        outage): an event is never acknowledged unrecorded."""
        for attempt in (rejected, Rejected(rejected.raw, rejected.reason, ())):
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    await self._dead_letter(conn, attempt, source)
                return
            except Exception as exc:  # noqa: BLE001 - sorted out below
                if errors.is_transient(exc):
                    raise
                log.error("dead letter from %s:%d@%d could not be kept: %s", source.topic, source.partition,
                          source.offset, errors.describe(exc))
                failure = exc
        raise errors.Stuck(f"dead letter refused by PostgreSQL: {errors.describe(failure)}")

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

    async def _handle_one(self, conn, item, source: Source) -> None:
        now = self.clock()
        if isinstance(item, Rejected):
            await self._dead_letter(conn, item, source)
            return
        camera, refusal = await self._provenance(conn, item, source)
        if refusal is not None:
            await self._dead_letter(conn, refusal, source)
            return
        sighting = sighting_of(item, topics.integrator_of(self.topics.camera_events, source.topic), camera)
        if not await store.add_sighting(conn, item.type, item, sighting, camera.zone, now):
            return  # a replay of an event already decided
        case = await store.open_case_for(conn, item.plate)
        if isinstance(item, events.ViolationDetected):
            if case is not None:
                decision = machine.on_violation(case, sighting, self.rules, now)
                await self._record(conn, case, decision, now, item.event_id)
                if not machine.needs_new_case(decision, sighting, self.rules):
                    await store.link_sighting(conn, sighting.integrator, item.event_id, case.id)
                    return
            elif await self._same_stay(conn, item, sighting, camera, now):
                return
            await self._open(conn, item, sighting, camera, now, source)
        elif case is None:
            return  # a sighting or a departure with no open case: kept as a sighting only
        elif isinstance(item, events.VehicleObserved):
            await store.link_sighting(conn, sighting.integrator, item.event_id, case.id)
            await self._record(conn, case, machine.on_capture(case, sighting, self.rules, now), now, item.event_id)
        else:
            await store.link_sighting(conn, sighting.integrator, item.event_id, case.id)
            await self._record(conn, case, machine.on_departure(case, item.taken_at, self.rules, now), now,
                               item.event_id)

    async def _provenance(self, conn, item, source: Source) -> tuple[Camera | None, Rejected | None]:
        """The event's camera as registered, or why the event is refused: it came on a topic that names
        no integrator, or its camera is unknown, removed, or another integrator's (``pipeline.cameras``)."""
        integrator = topics.integrator_of(self.topics.camera_events, source.topic)
        if integrator is None:
            reason = (f"{source.topic} names no integrator: publish camera events to "
                      f"{topics.camera_events_of(self.topics.camera_events, '<your integrator name>')}, "
                      "with your own credentials (docs/integrators.md)")
            return None, Rejected(store_raw(item, source), reason, (events.FieldError(field="(topic)", message=reason),))
        camera = await registry.registered(conn, item.camera_id)
        if (problem := registry.refusal(camera, item.camera_id, integrator)) is not None:
            return None, Rejected(store_raw(item, source), problem, (events.FieldError(field="camera_id", message=problem),))
        return camera, None

    async def _same_stay(self, conn, event: events.ViolationDetected, sighting: Sighting, camera: Camera,
                         now: datetime) -> bool:
        """One car, one case per stay: a violation at the place of the plate's closed case, within the
        stay, is added to that case as evidence (linked, noted in the audit log, nothing sent)."""
        latest = await store.latest_case(conn, event.plate)
        if latest is None or latest.is_open or latest.state not in machine.STAY_STATES:
            return False
        exempt_now = latest.state != State.EXEMPT or self._exemption(event, camera.zone) is not None
        departures, captures = await store.seen_between(conn, event.plate, latest.violation.taken_at, event.taken_at,
                                                        latest.violation.camera_id)
        decision = machine.again_after_close(latest, sighting, departures, captures, exempt_now, self.rules)
        if decision is None:
            return False
        await store.link_sighting(conn, sighting.integrator, event.event_id, latest.id)
        await store.audit(conn, now, latest.id, self.actor, "evidence",
                          {"cause": event.event_id, "integrator": sighting.integrator, "note": decision.note})
        return True

    def _exemption(self, event: events.ViolationDetected, zone: str) -> str | None:
        return self.zones.exemption(event.plate, zone, event.taken_at.astimezone(self.sms.timezone).hour)

    async def _open(self, conn, event: events.ViolationDetected, sighting: Sighting, camera: Camera, now: datetime,
                    source: Source) -> None:
        """A new case in the zone of the violation's camera, as registered (never a zone the event names)."""
        exemption = self._exemption(event, camera.zone)
        owner = None if exemption else await self.owners.owner_for(event.plate, conn, event.plate_types_read,
                                                                    event.vehicle_colour)
        zone = self.zones.rules_for(camera.zone)
        opening = machine.Opening(
            owner_reachable=owner is not None and owner.found, exempt_reason=exemption, reported_at=source.timestamp,
            owner_problem=(owner and owner.review_reason) or "no_phone", plate_type=owner and owner.plate_type,
            zone=zone,
            last_offence_at=await store.last_offence(conn, event.plate) if zone.first_offence_months else None,
            camera_commissioned=camera.commissioned_on if zone.new_camera_days else None)
        decision = machine.open_case(uuid4(), event.plate, camera.zone, sighting, opening, now, self.rules)
        case = decision.case
        from_camera_events = topics.is_camera_events(self.topics.camera_events, source.topic)
        await store.insert_case(conn, case, self.zones.window_seconds(camera.zone), now,
                                source.partition if from_camera_events else None,
                                source.topic if from_camera_events else None)
        await store.link_sighting(conn, sighting.integrator, event.event_id, case.id)
        await store.add_outbox(conn, self.topics.case_events, case.plate, events.CaseOpened(
            case_id=str(case.id), plate=case.plate, state=case.state, place=case.place, zone=case.zone,
            location=events.Location(lat=camera.lat, lon=camera.lon), camera_id=event.camera_id,
            detected_at=event.taken_at, opened_at=now))
        await store.audit(conn, now, case.id, self.actor, f"opened:{case.state}",
                          {"event_id": event.event_id, "integrator": sighting.integrator, "reason": case.reason})
        await self._apply(conn, case, decision, now, owner=owner)
        if decision.closed:
            await self._publish_closed(conn, case, now)
        else:
            await self._decide_earlier_arrivals(conn, case, now)

    async def _decide_earlier_arrivals(self, conn, case: Case, now: datetime) -> None:
        """Out of order (integrators, issue 3): sightings and departures of the plate that arrived
        before their violation but were taken after it are decided now, in event-time order, so a
        departure that overtook its violation closes the new case as moved before any SMS leaves."""
        for kind, sighting in await store.unlinked_sightings_since(conn, case.plate, case.violation.taken_at):
            if not case.is_open:
                return
            await store.link_sighting(conn, sighting.integrator, sighting.event_id, case.id)
            decision = (machine.on_departure(case, sighting.taken_at, self.rules, now) if kind == "VehicleDeparted"
                        else machine.on_capture(case, sighting, self.rules, now))
            await self._record(conn, case, decision, now, sighting.event_id)
            case = decision.case

    async def _record(self, conn, before: Case, decision: Decision, now: datetime, cause: str) -> None:
        """Save a decision on an existing case, with its audit entry and effects."""
        if not decision.changed:
            if decision.note:
                await store.audit(conn, now, before.id, self.actor, "noted", {"cause": cause, "note": decision.note})
            return
        case = decision.case
        await store.update_case(conn, case, now)
        action = f"{before.state}->{case.state}" if case.state != before.state else "updated"
        await store.audit(conn, now, case.id, self.actor, action,
                          {"cause": cause, "reason": case.reason, "note": decision.note})
        await self._apply(conn, case, decision, now)
        if decision.closed:
            await self._publish_closed(conn, case, now)

    async def _apply(self, conn, case: Case, decision: Decision, now: datetime, owner: OwnerAnswer | None = None) -> None:
        for effect in decision.effects:
            match effect:
                case machine.SendWarning():
                    owner = owner or await self.owner_of(conn, case)
                    params = self._warning_params(case) | {"language": owner.language}
                    if self.sms.driver_page:
                        params["code"] = await store.give_driver_code(conn, case.id)
                    await store.add_sms(conn, case.id, "warning", owner.phone, params, now)
                case machine.WithdrawWarning():
                    await store.withdraw_warning(conn, case.id)
                case machine.IssueTicket():
                    await self._issue_ticket(conn, case, effect, now)
                case machine.IssueCaution():
                    await self._issue_caution(conn, case, effect, now)
                case machine.RequestRecheck():
                    v = case.violation
                    commands = await registry.commands_topic(conn, self.topics.camera_commands, effect.camera_id)
                    await store.add_outbox(conn, commands, effect.camera_id, events.RecheckRequested(
                        recheck_id=f"{case.id}:1", case_id=str(case.id), camera_id=effect.camera_id,
                        plate=case.plate, location=events.Location(lat=v.lat, lon=v.lon), requested_at=now,
                        answer_by=effect.answer_by))

    async def carry_out(self, conn, case: Case, decision: Decision, now: datetime, owner: OwnerAnswer | None = None) -> None:
        """Carry out a decision's effects (warning SMS, ticket, recheck request) in the caller's
        transaction: for decisions taken elsewhere, e.g. by an operator (``pipeline.console.actions``)."""
        await self._apply(conn, case, decision, now, owner=owner)

    async def owner_of(self, conn, case: Case, fresh: bool = False) -> OwnerAnswer:
        """The case's owner as the registries say now: under the plate type found when it opened.
        ``fresh``: past the owner cache (an officer acts on what the registry holds this moment)."""
        if fresh:
            self.owners.invalidate(case.plate)
        return await self.owners.owner_for(case.plate, conn, (case.plate_type,) if case.plate_type else None)

    def _warning_params(self, case: Case) -> dict:
        v = case.violation
        nearest = self.car_parks.nearest(v.lat, v.lon)
        params = {"plate": case.plate, "place": case.place}
        if nearest:
            params |= {"car_park_id": nearest.car_park.id, "car_park": nearest.car_park.short_name,
                       "free_spaces": nearest.free_spaces, "counted_at": nearest.counted_at.isoformat(),
                       "distance_m": round(nearest.distance_m)}
        return params

    async def _issue_ticket(self, conn, case: Case, effect: machine.IssueTicket, now: datetime) -> None:
        evidence = [store.sighting_to_json(effect.violation), store.sighting_to_json(effect.fresh_capture)]
        number = await store.issue_ticket(conn, case, case.deadline_at, evidence, self.ticket_prefix, now,
                                          now.astimezone(self.sms.timezone))
        if number is None:
            return
        await chain.record_issued(conn, self.topics.tickets, number)
        owner = await self.owner_of(conn, case)
        if owner.found:
            await store.add_sms(conn, case.id, "ticket", owner.phone, {
                "plate": case.plate, "place": case.place, "ticket_number": number, "language": owner.language}, now)

    async def _issue_caution(self, conn, case: Case, effect: machine.IssueCaution, now: datetime) -> None:
        """A warning notice: the case (closed as cautioned) holds both captures; the owner is told by SMS."""
        owner = await self.owner_of(conn, case)
        if owner.found:
            await store.add_sms(conn, case.id, "caution", owner.phone, {
                "plate": case.plate, "place": case.place, "first_offence": effect.first_offence,
                "language": owner.language}, now)

    async def _publish_closed(self, conn, case: Case, now: datetime) -> None:
        await store.add_outbox(conn, self.topics.case_events, case.plate, events.CaseClosed(
            case_id=str(case.id), plate=case.plate, outcome=case.state, reason=case.reason, closed_at=now))

    async def _dead_letter(self, conn, rejected: Rejected, source: Source) -> None:
        now = self.clock()
        rejected = Rejected(rejected.raw, printable(rejected.reason), tuple(
            events.FieldError(field=printable(e.field), message=printable(e.message)) for e in rejected.errors))
        field_errors = [e.model_dump() for e in rejected.errors]
        if await store.add_dead_letter(conn, source.topic, source.partition, source.offset, source.key,
                                       rejected.reason, field_errors, rejected.raw, now):
            await store.add_outbox(conn, self.topics.dead_letters, source.topic, events.DeadLetter.capped(
                source.topic, source.partition, source.offset, source.key or None, rejected.reason,
                rejected.errors, rejected.raw, now))
            log.warning("dead letter from %s:%d@%d: %s", source.topic, source.partition, source.offset, rejected.reason)

    # ── car-park counts ──────────────────────────────────────────────────────────────────────

    async def handle_car_park_statuses(self, batch: list[tuple[object, Source]]) -> None:
        """Keep live free-space counts; like camera events, every message is kept or dead-lettered."""
        batch = [(admit(item, source), source) for item, source in batch]
        await self._until_database_answers(self._store_counts, batch)

    async def _store_counts(self, batch: list[tuple[object, Source]]) -> None:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                for item, source in batch:
                    await self._store_count(conn, item, source)
            return
        except Exception as exc:  # noqa: BLE001 - sorted out below
            if errors.is_transient(exc):
                raise
            log.warning("batch of %d car-park counts failed (%s); one by one", len(batch), errors.describe(exc))
        for item, source in batch:
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    await self._store_count(conn, item, source)
            except Exception as exc:  # noqa: BLE001 - sorted out below
                if errors.is_transient(exc):
                    raise
                await self._dead_letter_alone(Rejected(store_raw(item, source),
                                                       f"processing failed: {errors.describe(exc)}", ()), source)

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

    async def decide_due_cases(self, limit: int = 100) -> int:
        """Decide every case whose deadline (or recheck wait) has passed. Returns how many.

        Each case is decided in a savepoint of its own: a case that cannot be decided for a reason
        of its own (``errors.is_transient`` is false) goes to review with the problem, and the
        cases claimed with it are decided as usual."""
        async with self.pool.acquire() as conn, conn.transaction():
            now, due = await store.claim_due_cases(conn, self.topics.camera_events, limit)
            for row in due:
                try:
                    case = store.case_from_row(row)
                except Exception as exc:  # noqa: BLE001 - an unreadable row waits, the rest are decided
                    log.error("case %s is unreadable (%s); it waits 5 minutes", row["id"], errors.describe(exc))
                    await store.postpone(conn, row["id"])
                    continue
                await self._per_row(conn, case, lambda: self._record(
                    conn, case, machine.on_wake(case, self.rules, now), now, "deadline"), now, "deadline")
            return len(due)

    async def _per_row(self, conn, case: Case, decide, now: datetime, cause: str) -> bool:
        """Run ``decide()`` in a savepoint; on a failure of the case's own, set the case aside for an
        officer (in a second savepoint) and return False. The database's faults are raised."""
        try:
            async with conn.transaction():
                await decide()
            return True
        except Exception as exc:  # noqa: BLE001 - sorted out below
            if errors.is_transient(exc):
                raise
            problem = errors.describe(exc)[:200]
        log.error("case %s could not be decided (%s): %s; it goes to review", case.id, cause, problem)
        try:
            async with conn.transaction():
                await self._record(conn, case, machine.set_aside(case, problem, now), now, cause)
        except Exception as exc:  # noqa: BLE001 - sorted out below
            if errors.is_transient(exc):
                raise
            log.error("case %s could not be set aside either (%s); it waits 5 minutes", case.id,
                      errors.describe(exc))
            await store.postpone(conn, case.id)
        return False

    # ── SMS ──────────────────────────────────────────────────────────────────────────────────

    async def send_due_sms(self, gateway: SmsGateway, limit: int = 50) -> int:
        """Send pending SMS that are due; a warning's acceptance starts its case's window.

        Three steps, so that no lock is held while the gateway answers and a sender that dies
        mid-send leaves a trace: claim the due messages and mark them ``sending`` under this
        worker's lease (committed); ask the gateway, renewing the lease meanwhile; record each
        answer (an answer that comes after the lease ran out still counts if the message was not
        sent again). Messages whose lease ran out are settled by ``settle_in_doubt_sms``.

        Each message is prepared on its own (a savepoint): one that cannot be (its text cannot be
        rendered, say) is set aside with the reason, its case goes to review, and the others go on.
        A phone that already had ``daily_limit`` messages today gets no more: a warning over the
        limit fails for good (its case goes to review).
        """
        async with self.pool.acquire() as conn, conn.transaction():
            now = await store.database_now(conn)
            rows = await store.claim_due_sms(conn, limit)
            sent_today = await store.sms_sent_since(conn, [r["phone"] for r in rows], self._local_midnight(now))
            to_send: list[tuple[OutgoingSms, int]] = []
            for row in rows:
                outgoing = await self._each_row(conn, row, now, self._prepare, sent_today)
                if outgoing is not None:
                    to_send.append(outgoing)
        if not to_send:
            return len(rows)
        async with self._leases_held([sms.id for sms, _ in to_send]):
            results = await asyncio.gather(*(gateway.send(sms) for sms, _ in to_send), return_exceptions=True)
        await self._record_answers(to_send, results)
        return len(rows)

    async def _prepare(self, conn, row, now: datetime, sent_today: dict[str, int]) -> tuple[OutgoingSms, int] | None:
        """What to send for a claimed message (with its attempt number), or None when it is settled here."""
        if row["kind"] == "warning" and row["case_state"] != State.DETECTED:
            await store.sms_withdrawn(conn, row["id"])
        elif row["first_report_at"] is not None:
            await self._after_send(conn, row, now, row["text"], self._reported(row))
        elif sent_today.get(row["phone"], 0) >= self.sms.daily_limit:
            await self._give_up(conn, row, why("daily_limit", n=self.sms.daily_limit), now)
        else:
            text = self._render(row, now)
            attempt = await store.sms_sending(conn, row["id"], text, self.sms.worker,
                                              self.sms.in_doubt_after.total_seconds())
            sent_today[row["phone"]] = sent_today.get(row["phone"], 0) + 1
            return OutgoingSms(row["id"], row["phone"], text), attempt
        return None

    async def _each_row(self, conn, row, now: datetime, work, *args, skip_races: bool = True):
        """Run ``work`` for one message in a savepoint. A message it fails on for a reason of its own
        (``errors.is_transient`` is false) is set aside: failed, with the reason, and a warning's case
        goes to review, so that the rest of the claim goes on. The database's faults go up (nothing
        can be recorded now); a race with another transaction leaves the message for the next round
        (``skip_races``) or goes up too."""
        try:
            async with conn.transaction():
                return await work(conn, row, now, *args)
        except Exception as exc:  # noqa: BLE001 - sorted out below
            if errors.is_race(exc) and skip_races:
                log.warning("SMS %s: %s; left for the next round", row["id"], errors.describe(exc))
                return None
            if errors.is_race(exc) or errors.is_transient(exc):
                raise
            reason = why("set_aside", error=scrub(errors.describe(exc))[:300])
        log.error("SMS %s (%s) set aside: %s", row["id"], row["kind"], reason)
        try:
            async with conn.transaction():
                await self._give_up(conn, row, reason, now)
        except Exception as exc:  # noqa: BLE001 - sorted out below
            if errors.is_transient(exc):
                raise
            log.error("SMS %s: its case could not be sent to review (%s); the message alone is set aside",
                      row["id"], errors.describe(exc))
            async with conn.transaction():
                await store.sms_failed(conn, row["id"], reason, now)
        return None

    @asynccontextmanager
    async def _leases_held(self, sms_ids: list[UUID]):
        """Renew this worker's lease on ``sms_ids`` while the block (its gateway calls) runs."""
        lease = self.sms.in_doubt_after.total_seconds()

        async def renew():
            while True:
                await asyncio.sleep(lease / 3)
                try:
                    async with self.pool.acquire() as conn:
                        await store.renew_sms_leases(conn, sms_ids, self.sms.worker, lease)
                except Exception as exc:  # noqa: BLE001 - the next renewal may get through
                    log.warning("could not renew the lease on %d SMS being sent: %s", len(sms_ids),
                                type(exc).__name__)
        renewing = asyncio.create_task(renew())
        try:
            yield
        finally:
            renewing.cancel()

    async def _record_answers(self, sent: list[tuple[OutgoingSms, int]], results: list) -> None:
        """Record the gateway's answers, waiting for PostgreSQL as long as it takes: an answer the
        gateway gave is a fact (an accepted warning left), and is kept unless the message was
        settled or sent again meanwhile."""
        delay = 0.2
        while True:
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    now = await store.database_now(conn)
                    for (sms, attempt), result in zip(sent, results):
                        row = await store.lock_answered_sms(conn, sms.id, attempt, self.sms.worker)
                        if row is None:
                            log.warning("SMS %s: the gateway answered (%s) after the message was settled or "
                                        "sent again", sms.id, type(result).__name__)
                        elif isinstance(result, InDoubt):
                            log.warning("SMS %s (%s): %s; its delivery reports will settle it", sms.id,
                                        row["kind"], result)
                        elif row["status"] == "pending" and not isinstance(result, (Accepted, PermanentFailure)):
                            continue  # put back after being in doubt: it goes again as planned
                        else:
                            if isinstance(result, Accepted):
                                result = Accepted(now, result.gateway_ref)  # on PostgreSQL's clock
                            await self._each_row(conn, row, now, self._after_send, sms.text, result,
                                                 skip_races=False)
                return
            except Exception as exc:  # noqa: BLE001 - sorted out below
                if not (errors.is_transient(exc) or errors.is_race(exc)):
                    raise
                log.error("cannot record the gateway's answers for %d SMS (%s); trying again in %.1fs",
                          len(sent), errors.describe(exc), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def settle_in_doubt_sms(self, limit: int = 50) -> int:
        """Settle messages whose sender's lease ran out (on PostgreSQL's clock): the sender died, lost
        PostgreSQL, or had no answer from the gateway (``InDoubt``), and stopped renewing.

        A delivery report on the message proves the gateway took it: it counts as accepted at the
        first report's arrival (the window starts no earlier than the driver could have read it).
        Without a report it is put back to ``pending``, due after ``SmsStyle.report_wait``: its
        sender may still come back with the gateway's answer (``_record_answers`` keeps it), and
        the gateway retries its reports; both are checked again just before it is sent again.
        Pending messages a report arrived for are settled here too, without waiting.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            now = await store.database_now(conn)
            rows = await store.claim_in_doubt_sms(conn, limit)
            for row in rows:
                await self._each_row(conn, row, now, self._settle)
            reported = await store.claim_reported_pending_sms(conn, limit)
            for row in reported:
                await self._each_row(conn, row, now, self._settle)
            return len(rows) + len(reported)

    async def _settle(self, conn, row, now: datetime) -> None:
        if row["first_report_at"] is not None:
            log.warning("SMS %s (%s): in doubt; a delivery report shows the gateway took it", row["id"], row["kind"])
            await self._after_send(conn, row, now, row["text"], self._reported(row))
        elif row["status"] == "sending":
            await self._retry(conn, row, why("sent_again"), self.sms.report_wait.total_seconds(), now)

    @staticmethod
    def _reported(row) -> Accepted:
        return Accepted(row["first_report_at"], "in-doubt:reported")

    def _local_midnight(self, now: datetime) -> datetime:
        local = now.astimezone(self.sms.timezone)
        return local.replace(hour=0, minute=0, second=0, microsecond=0)

    async def record_delivery_report(self, sms_id: UUID, status: str, reported_at: datetime | None,
                                     detail: str = "") -> bool:
        """Keep a gateway's report on a message we sent; False when the message is unknown.

        ``status`` is one of delivered, failed, queued, smsc_accepted, smsc_rejected. The report is
        only stored here (it never waits for a lock); ``apply_delivery_reports`` acts on it.
        """
        return await store.keep_delivery_report(self.pool, sms_id, status, reported_at, detail)

    async def apply_delivery_reports(self, limit: int = 200) -> int:
        """Apply kept reports in order: message status, and for a warning its case (delivered, or
        failed for good -> review). Reports on a message another transaction holds wait for the next
        round. A report that cannot be applied for a reason of its own is set aside with the
        problem (``sms_delivery_reports.problem``), and the rest are applied."""
        async with self.pool.acquire() as conn, conn.transaction():
            now = self.clock()
            reports = await store.claim_delivery_reports(conn, limit)
            for report in reports:
                try:
                    async with conn.transaction():
                        await self._apply_report(conn, report, now)
                except Exception as exc:  # noqa: BLE001 - sorted out below
                    if errors.is_transient(exc):
                        raise
                    log.error("delivery report %s could not be applied: %s; set aside", report["id"],
                              errors.describe(exc))
                    await store.set_report_aside(conn, report["id"], errors.describe(exc))
            return len(reports)

    async def _apply_report(self, conn, report, now: datetime) -> None:
        row = await store.apply_delivery(conn, report)
        status, reported_at = report["status"], report["reported_at"]
        if row["kind"] == "warning" and status in ("delivered", "failed", "smsc_rejected"):
            case = await store.get_case(conn, row["case_id"], lock=True)
            if status == "delivered":
                decision = machine.on_warning_delivered(case, reported_at or report["received_at"], self.rules, now)
            else:
                decision = machine.on_warning_undelivered(case, f"{status} {report['detail']}".strip(), now)
            await self._record(conn, case, decision, now, f"delivery-report:{report['sms_id']}")

    def _render(self, row, now: datetime) -> str:
        p = row["params"]
        tz = self.sms.timezone
        language = texts.OWNER_LANGUAGES.get(p.get("language"), self.sms.language)
        if row["kind"] == "ticket":
            return texts.ticket_text(texts.TicketFacts(p["plate"], p["place"], p["ticket_number"]),
                                     language, self.sms.signature)
        if row["kind"] == "appeal_decision":
            return texts.appeal_decision_text(texts.AppealFacts(p["plate"], p["ticket_number"], p["outcome"]),
                                              language, self.sms.signature)
        if row["kind"] == "ticket_withdrawn":
            return texts.withdrawal_text(p["plate"], p["ticket_number"], language, self.sms.signature)
        if row["kind"] == "caution":
            return texts.caution_text(texts.CautionFacts(p["plate"], p["place"], p["first_offence"]),
                                      language, self.sms.signature)
        # The text shows the earliest the deadline can be, rounded down to the minute: the real one counts
        # from acceptance (later than now), or from delivery when the phone got it later: never earlier.
        deadline = (now + timedelta(seconds=row["window_seconds"])).astimezone(tz)
        counted = datetime.fromisoformat(p["counted_at"]).astimezone(tz) if "counted_at" in p else None
        return texts.warning_text(texts.WarningFacts(p["plate"], p["place"], deadline, p.get("car_park"),
                                                     p.get("free_spaces"), counted, p.get("code")),
                                  language, self.sms.signature)

    async def _after_send(self, conn, row, now: datetime, text: str | None, result) -> None:
        """Record the gateway's answer. Taken: the message is accepted (a warning's window starts).
        The gateway is down or busy (``TemporaryFailure``, or an error of ours): sent again after a
        backoff, until the kind's retry horizon; no window starts meanwhile. The message is refused
        (``PermanentFailure``): it fails at once, and a warning's case goes to review."""
        if isinstance(result, BaseException) and not isinstance(result, (TemporaryFailure, PermanentFailure)):
            log.error("SMS %s: unexpected gateway error %s", row["id"], type(result).__name__)
            result = TemporaryFailure(scrub(f"{type(result).__name__}: {result}"))
        if isinstance(result, TemporaryFailure):
            delay = store.backoff_seconds(row["attempts"], self.sms.retry_seconds, self.sms.retry_max_seconds)
            await self._retry(conn, row, str(result), delay, now)
        elif isinstance(result, PermanentFailure):
            await self._give_up(conn, row, str(result), now)
        else:
            await self._accepted(conn, row, text, result, now)

    async def _retry(self, conn, row, reason: str, delay_seconds: float, now: datetime) -> None:
        horizon = self.sms.retry_horizon.get(row["kind"], self.sms.retry_horizon["ticket"])
        if await store.sms_retry(conn, row["id"], reason, delay_seconds, horizon):
            log.warning("SMS %s (%s): %s; sent again in %.1fs", row["id"], row["kind"], reason, delay_seconds)
        else:
            await self._give_up(conn, row, why("gateway_horizon", seconds=f"{horizon:g}", detail=reason), now)

    async def _give_up(self, conn, row, reason: str, now: datetime) -> None:
        """The message fails for good with ``reason``; a warning's case goes to review."""
        await store.sms_failed(conn, row["id"], reason, now)
        if row["kind"] == "warning":
            case = await store.get_case(conn, row["case_id"], lock=True)
            await self._record(conn, case, machine.on_warning_failed(case, reason, now), now, f"sms:{row['id']}")

    async def _accepted(self, conn, row, text: str | None, result: Accepted, now: datetime) -> None:
        await store.sms_accepted(conn, row["id"], text, result.at, result.gateway_ref)
        if row["kind"] == "warning":
            case = await store.get_case(conn, row["case_id"], lock=True)
            window = timedelta(seconds=row["window_seconds"])
            decision = machine.on_warning_accepted(case, result.at, self.rules, window)
            await self._record(conn, case, decision, now, f"sms:{row['id']}")
            if decision.changed:
                p = row["params"]
                await store.add_outbox(conn, self.topics.case_events, case.plate, events.WarningSent(
                    case_id=str(case.id), plate=case.plate, sms_id=str(row["id"]), accepted_at=result.at,
                    deadline_at=decision.case.deadline_at, car_park_id=p.get("car_park_id"),
                    free_spaces=p.get("free_spaces")))


def printable(text: str) -> str:
    """Text PostgreSQL keeps in text and jsonb columns (no NUL characters, no lone surrogates)."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def store_raw(item, source: Source | None = None) -> bytes:
    if isinstance(item, Rejected):
        return item.raw
    if source is not None and source.raw:
        return source.raw
    return item.model_dump_json().encode()
