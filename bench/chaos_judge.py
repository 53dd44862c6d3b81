"""The chaos run's judge: what should have happened to each car of the ground-truth city, and what
did, read from Kafka (camera-events, case-events, tickets, camera-commands, dead-letters) and the
fake SMS centre's log only, never from PostgreSQL. Pure: no I/O, no clock.

Camera events come on each integrator's own topic (``camera-events.<integrator>``: the demo
integrator's on Kafka, the HTTP integrator's through the ingest); an event is taken only from the
integrator its camera is registered to, and its position is the camera's, as registered (``cameras``),
never the event's. The city's event ids are unique across integrators, so the judge keys events by id.

The ground truth, per car (one plate with a phone on record, one place, one violation), in the
rules of README "What happens to a violation" and ``pipeline/cases/machine.py``:

- ``D`` is the deadline announced in ``WarningSent.deadline_at`` (counted from the gateway's
  acceptance; the real one is later by less than ``DELIVERY_SLACK`` when the delivery is reported
  later). The horizon ``H`` of the decision is ``D + lateness``, or ``answer_by + lateness`` once the
  pipeline asked the camera for a recheck (``RecheckRequested.answer_by``). "In Kafka" means the
  broker's append time of the message in its camera-events topic (stamped with LogAppendTime).
- A *fresh capture* is a capture of the plate at its place taken between ``D + DELIVERY_SLACK -
  capture_tolerance`` and ``D + capture_bound`` (and by ``answer_by`` once a recheck was asked). A car
  that stays and has a fresh capture in Kafka before ``H`` must get one ticket (``tickets
  expected``), or, at a camera of a first-offence zone, one warning notice (case ``cautioned``); a car
  that stays without one gets neither (unconfirmed). Cars that leave depart before ``D`` and are never
  captured after ``D - capture_tolerance - 2 s``: a ticket or a notice for a car that left or was
  never captured at its place after ``D - capture_tolerance``, a ticket whose evidence was taken before
  ``TicketIssued.deadline_at - capture_tolerance``, a ticket at a first offence, or a second one for
  a car, is wrong.
- Every car gets exactly one warning at the SMS centre, to its owner's phone, and every ticket or
  notice one SMS of its own.
- Every valid event in camera-events is decided: its violation opens a case (``CaseOpened`` with its
  plate and ``taken_at``), no valid event is a dead letter, and every event acknowledged to a camera
  (by Kafka, or 202 from HTTP ingest) is in camera-events. No decision ignores input already in
  Kafka ("blind"): no recheck is requested although a fresh capture, or a departure taken before
  ``D``, was in Kafka before ``D + lateness``; no case is closed unconfirmed although a fresh capture
  or a departure taken by ``answer_by`` was in Kafka before its ``H``.
- Every message an agent cannot use (no value, no key, not a valid event, or an event for a camera
  not registered to the integrator whose topic it came on) is in dead-letters under its topic,
  partition and offset. Every case opened is closed.
"""

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pipeline.cameras.registry import Camera
from pipeline.cases.machine import Rules, Sighting, distance_m
from schemas import events, topics
from schemas.codec import Rejected, decode_camera_event

STAYS_SEEN = "stays, captured at its deadline"
STAYS_ANSWERS = "stays, answers the recheck"
STAYS_SILENT = "stays, camera silent"
LEAVES_EARLY = "leaves early"
LEAVES_EDGE = "leaves at the edge"
BEHAVIOURS = (STAYS_SEEN, STAYS_ANSWERS, STAYS_SILENT, LEAVES_EARLY, LEAVES_EDGE)
STAYING = frozenset({STAYS_SEEN, STAYS_ANSWERS, STAYS_SILENT})
DELIVERY_SLACK = timedelta(seconds=2)
"""How much later than ``WarningSent.deadline_at`` the real deadline may be: it moves to delivery +
window when the delivery is reported later than the acceptance, and Kannel reports the SMS centre's
time in whole seconds (its fake centre delivers at once), counted as the end of that second, so by
less than 2 s. The city keeps its captures clear of this band; ``TicketIssued.deadline_at`` and
``WarningDelivered.deadline_at`` are the real deadline."""


@dataclass(frozen=True)
class Car:
    """A car of the ground-truth city: what it does, whatever the pipeline does."""

    plate: str
    phone: str
    behaviour: str
    answers_rechecks: bool
    via_http: bool = False
    camera_id: str = ""
    first_offence_zone: bool = False
    """At a camera of a zone that gives a first offence a warning notice instead of a ticket (the demo
    city's liangzhu): a car that stays gets a notice (case ``cautioned``, its own SMS), never a ticket."""

    @property
    def stays(self) -> bool:
        return self.behaviour in STAYING


@dataclass(frozen=True)
class Record:
    """One message of a topic as Kafka holds it."""

    partition: int
    offset: int
    appended_at: datetime
    key: bytes | None
    value: bytes | None
    topic: str = ""
    """The camera-events topic it was read from (``camera-events.<integrator>``)."""


@dataclass
class Report:
    """Each counter with what it counts (plates, case ids, partition@offset), and notes for the reader."""

    cars: int = 0
    tickets_expected: list[str] = field(default_factory=list)
    tickets_issued: list[str] = field(default_factory=list)
    notices_expected: list[str] = field(default_factory=list)
    notices_issued: list[str] = field(default_factory=list)
    tickets_wrong: list[str] = field(default_factory=list)
    tickets_missed: list[str] = field(default_factory=list)
    warnings_duplicated: list[str] = field(default_factory=list)
    warnings_lost: list[str] = field(default_factory=list)
    ticket_sms_duplicated: list[str] = field(default_factory=list)
    ticket_sms_lost: list[str] = field(default_factory=list)
    never_decided: list[str] = field(default_factory=list)
    blind_decisions: list[str] = field(default_factory=list)
    malformed_missing: list[str] = field(default_factory=list)
    cases_left_open: list[str] = field(default_factory=list)
    outcomes: dict[str, Counter] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    worker_exits: list[str] = field(default_factory=list)
    """Set by the run: workers that exited on their own and were started again (not a counter of the
    judge: the outputs above say whether anything was lost with them)."""
    warning_delays: list[tuple[datetime, float]] = field(default_factory=list)
    """(violation taken at, seconds from then to the warning's acceptance by the gateway), per warned case."""
    windows: list[tuple[str, datetime, datetime]] = field(default_factory=list)
    """Set by the run: its faults (label, began, ended), to split ``warning_delays`` by them."""

    FAILURES = ("tickets_wrong", "tickets_missed", "warnings_duplicated", "warnings_lost", "ticket_sms_duplicated",
                "ticket_sms_lost", "never_decided", "blind_decisions", "malformed_missing", "cases_left_open")

    def all_zeros(self) -> bool:
        return not any(getattr(self, name) for name in self.FAILURES)

    def table(self, show: int = 12) -> str:
        def row(label: str, items: list[str], failure: bool = True) -> str:
            mark = "" if not failure else ("  ok" if not items else "  <-- " + ", ".join(items[:show]) +
                                           (f" (+{len(items) - show} more)" if len(items) > show else ""))
            return f"  {label:<52} {len(items):>6}{mark}"

        lines = [f"chaos run: {self.cars} cars",
                 row("tickets expected", self.tickets_expected, failure=False),
                 row("tickets issued", self.tickets_issued, failure=False),
                 row("warning notices expected (first offence)", self.notices_expected, failure=False),
                 row("warning notices issued", self.notices_issued, failure=False),
                 row("tickets (or notices) wrong", self.tickets_wrong),
                 row("tickets (or notices) missed", self.tickets_missed),
                 row("warnings duplicated (at the SMS centre)", self.warnings_duplicated),
                 row("warnings lost (none at the SMS centre)", self.warnings_lost),
                 row("ticket / notice SMS duplicated", self.ticket_sms_duplicated),
                 row("ticket / notice SMS lost", self.ticket_sms_lost),
                 row("acknowledged events never decided", self.never_decided),
                 row("decisions taken blind (input already in Kafka)", self.blind_decisions),
                 row("malformed or refused events not in the dead letters", self.malformed_missing),
                 row("cases left open", self.cases_left_open),
                 row("workers that exited on their own (started again)", self.worker_exits, failure=False),
                 *(f"    {e}" for e in self.worker_exits),
                 "outcomes by behaviour:"]
        for behaviour in BEHAVIOURS:
            counts = self.outcomes.get(behaviour, Counter())
            lines.append(f"  {behaviour:<36} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        lines += [f"  note: {n}" for n in self.notes]
        lines.append("ALL ZEROS" if self.all_zeros() else "NOT ALL ZEROS: see the counters marked <--")
        return "\n".join(lines)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def same_phone(receiver: str, phone: str) -> bool:
    """The SMS centre's receiver and a registry phone are the same number (country code or not)."""
    digits = "".join(ch for ch in receiver if ch.isdigit())
    return digits[-11:] == "".join(ch for ch in phone if ch.isdigit())[-11:]


def sms_kind_and_plate(text: str) -> tuple[str, str] | None:
    """('warning' | 'ticket' | 'caution', plate) of one of our SMS texts (zh-CN: 【signature】<plate>在<place>…)."""
    if "】" not in text or "在" not in text:
        return None
    plate = text.split("】", 1)[1].split("在", 1)[0]
    kind = "ticket" if "告知单" in text else "caution" if "警告不罚款" in text else "warning"
    return kind, plate


def judge(cars: list[Car], camera_events: list[Record], case_events: list[dict], tickets: list[dict],
          camera_commands: list[dict], dead_letters: list[dict], sms: list[tuple[str, str]], rules: Rules,
          camera_events_base: str, cameras: dict[str, Camera], acknowledged: set[str] | None = None,
          outages: Sequence[tuple[datetime, datetime]] = ()) -> Report:
    """Compare what the city did (``cars``, and the events in every integrator's camera-events topic,
    ``camera_events_base``.<integrator>) with the pipeline's outputs and what reached the SMS centre
    (``sms``: (receiver, text) pairs). ``cameras``: the camera registry, by camera id. ``outages``:
    when the SMS gateway was down (begin, end): the warnings' latency is also given apart for the
    warnings whose violation -> acceptance span does not overlap one."""
    report = Report()

    # Inputs: valid events (first arrival of each event id) and messages no agent can use or may take.
    valid: dict[str, tuple[events.PlateEvent, datetime]] = {}
    malformed: list[tuple[str, int, int]] = []
    valid_at: dict[tuple[str, int, int], str] = {}
    for r in camera_events:
        event = decode_camera_event(r.value) if r.value is not None and r.key else None
        camera = cameras.get(event.camera_id) if event is not None and not isinstance(event, Rejected) else None
        if camera is None or camera.integrator != topics.integrator_of(camera_events_base, r.topic):
            malformed.append((r.topic, r.partition, r.offset))
            continue
        valid_at[(r.topic, r.partition, r.offset)] = event.event_id
        if event.event_id not in valid or r.appended_at < valid[event.event_id][1]:
            valid[event.event_id] = (event, r.appended_at)
    by_plate: dict[str, list[tuple[events.PlateEvent, datetime]]] = defaultdict(list)
    for event, appended_at in valid.values():
        by_plate[event.plate].append((event, appended_at))

    dead = {(d["source_topic"], d["partition"], d["offset"]) for d in dead_letters
            if topics.is_camera_events(camera_events_base, d["source_topic"])}
    report.malformed_missing = [f"{t} {p}@{o}" for t, p, o in malformed if (t, p, o) not in dead]
    report.never_decided += [f"{valid_at[po]} (dead letter)" for po in sorted(dead & set(valid_at))]
    if acknowledged is not None:
        report.never_decided += [f"{e} (acknowledged, not in camera-events)" for e in sorted(acknowledged - set(valid))]

    # Outputs, by case.
    opened: dict[str, dict] = {}
    warned: dict[str, dict] = {}
    closed: dict[str, dict] = {}
    for m in case_events:
        target = {"CaseOpened": opened, "WarningSent": warned, "CaseClosed": closed}.get(m["type"])
        if target is not None:
            target.setdefault(m["case_id"], m)
    rechecks: dict[str, dict] = {}
    for m in camera_commands:
        rechecks.setdefault(m["case_id"], m)
    issued: dict[str, dict] = {}
    for m in tickets:
        if m["type"] == "TicketIssued":
            issued.setdefault(m["ticket_number"], m)
    report.tickets_issued = sorted(issued)
    numbers_by_case: dict[str, set[str]] = defaultdict(set)
    for number, m in issued.items():
        numbers_by_case[m["case_id"]].add(number)
    cases_by_plate: dict[str, list[str]] = defaultdict(list)
    for case_id, m in opened.items():
        cases_by_plate[m["plate"]].append(case_id)

    # What reached the SMS centre.
    warnings_to: Counter = Counter()
    ticket_sms: Counter = Counter()
    caution_sms: Counter = Counter()
    for receiver, text in sms:
        got = sms_kind_and_plate(text)
        if got is None:
            continue
        kind, plate = got
        if kind == "warning":
            warnings_to[(plate, receiver)] += 1
        elif kind == "caution":
            caution_sms[plate] += 1
        else:
            ticket_sms[next((n for n in issued if n in text), text)] += 1

    lateness, tolerance = rules.lateness, rules.capture_tolerance
    arrived = late_evidence = 0
    review_reasons: Counter = Counter()
    warning_delays: list[float] = []
    clear_of_outages: list[float] = []
    for car in cars:
        mine = sorted(by_plate.get(car.plate, []), key=lambda pair: pair[1])
        violations = [(e, t) for e, t in mine if isinstance(e, events.ViolationDetected)]
        if not violations:
            continue  # the car never arrived (the run ended first)
        arrived += 1
        violation = violations[0][0]
        outcome = report.outcomes.setdefault(car.behaviour, Counter())

        # The warning.
        n = sum(c for (plate, receiver), c in warnings_to.items() if plate == car.plate and same_phone(receiver, car.phone))
        if n == 0:
            report.warnings_lost.append(car.plate)
        report.warnings_duplicated += [car.plate] * max(0, n - 1)

        case_ids = [c for c in cases_by_plate.get(car.plate, [])
                    if when(opened[c]["detected_at"]) == violation.taken_at]
        if not case_ids:
            report.never_decided.append(f"{violation.event_id} (violation of {car.plate}: no case opened)")
            outcome["no case"] += 1
            continue
        case_id = case_ids[0]
        state = closed[case_id]["outcome"] if case_id in closed else "open"
        outcome[state] += 1
        if state == "review":
            review_reasons[closed[case_id].get("reason", "")[:90]] += 1
        numbers = set().union(*(numbers_by_case[c] for c in cases_by_plate[car.plate]))
        cautioned = [c for c in cases_by_plate[car.plate] if closed.get(c, {}).get("outcome") == "cautioned"]
        if case_id not in warned:
            report.tickets_wrong += [f"{car.plate} {n} (no warning)" for n in sorted(numbers)]
            report.tickets_wrong += [f"{car.plate} warning notice (no warning)" for _ in cautioned]
            continue
        deadline = when(warned[case_id]["deadline_at"])
        accepted = when(warned[case_id]["accepted_at"])
        warning_delays.append((accepted - violation.taken_at).total_seconds())
        report.warning_delays.append((violation.taken_at, warning_delays[-1]))
        if not any(violation.taken_at <= end and accepted >= begin for begin, end in outages):
            clear_of_outages.append(warning_delays[-1])
        recheck = rechecks.get(case_id)
        answer_by = when(recheck["answer_by"]) if recheck else None
        horizon = (answer_by or deadline) + lateness

        def sighting(e) -> Sighting:  # where the registry puts its camera, whatever the event says
            camera = cameras[e.camera_id]
            return Sighting(e.event_id, e.camera_id, e.taken_at, camera.lat, camera.lon)

        place = sighting(violation)

        def at_place(e) -> bool:
            return distance_m(place, sighting(e)) <= rules.same_place_m

        captures = [(e, t) for e, t in mine if isinstance(e, events.VehicleObserved) and at_place(e)]
        fresh = [(e, t) for e, t in captures if deadline + DELIVERY_SLACK - tolerance <= e.taken_at
                 <= deadline + rules.capture_bound]
        in_time = [(e, t) for e, t in fresh if t < horizon and (answer_by is None or e.taken_at <= answer_by)]
        departures = [(e, t) for e, t in mine if isinstance(e, events.VehicleDeparted)]
        expected = car.stays and bool(in_time)
        if expected:
            (report.notices_expected if car.first_offence_zone else report.tickets_expected).append(car.plate)

        # Tickets and warning notices.
        real_deadline = max([deadline] + [when(issued[n]["deadline_at"]) for n in numbers])
        for i, number in enumerate(sorted(numbers)):
            evidence = issued[number]["evidence"]
            fresh_evidence = len(evidence) == 2 and when(evidence[1]["taken_at"]) >= real_deadline - tolerance
            if i > 0:
                report.tickets_wrong.append(f"{car.plate} {number} (a second ticket)")
            elif not car.stays or not captures:
                report.tickets_wrong.append(f"{car.plate} {number} ({car.behaviour})")
            elif car.first_offence_zone:
                report.tickets_wrong.append(f"{car.plate} {number} (a ticket for a first offence)")
            elif not fresh_evidence:
                report.tickets_wrong.append(f"{car.plate} {number} (evidence taken before the deadline)")
        for i, c in enumerate(cautioned):
            if i > 0 or not car.stays or not captures or not car.first_offence_zone:
                report.tickets_wrong.append(f"{car.plate} warning notice, case {c[:8]} ({car.behaviour}"
                                            f"{'' if car.first_offence_zone else ', not a first-offence zone'})")
        if cautioned:
            report.notices_issued.append(car.plate)
            n = caution_sms[car.plate]
            if n == 0:
                report.ticket_sms_lost.append(f"warning notice of {car.plate}")
            report.ticket_sms_duplicated += [f"warning notice of {car.plate}"] * max(0, n - 1)
        if expected and not (cautioned if car.first_offence_zone else numbers):
            report.tickets_missed.append(f"{car.plate} case {case_id[:8]} {state}")
        if (numbers or cautioned) and not expected and car.stays and fresh:
            late_evidence += 1

        # Blind decisions: input that was in Kafka before the decision's horizon, ignored.
        before_deadline = [t for _, t in fresh] + [t for e, t in departures if e.taken_at < deadline]
        if recheck and any(t < deadline + lateness for t in before_deadline):
            report.blind_decisions.append(f"case {case_id[:8]} ({car.plate}): recheck requested although a capture "
                                          f"or departure was in Kafka before deadline + lateness")
        answers = [t for _, t in in_time] + [t for e, t in departures if answer_by and e.taken_at <= answer_by]
        if state == "unconfirmed" and any(t < horizon for t in answers):
            report.blind_decisions.append(f"case {case_id[:8]} ({car.plate}): unconfirmed although a capture or "
                                          f"departure was in Kafka before answer_by + lateness")

    report.cars = arrived
    for number in issued:
        if ticket_sms[number] == 0:
            report.ticket_sms_lost.append(number)
        report.ticket_sms_duplicated += [number] * max(0, ticket_sms[number] - 1)
    report.cases_left_open = sorted(f"{c[:8]} ({opened[c]['plate']})" for c in opened if c not in closed)
    report.notes += [f"review ({n}): {reason}" for reason, n in review_reasons.most_common(5)]
    if warning_delays:
        d = sorted(warning_delays)
        report.notes.append(f"violation taken -> warning accepted by the gateway: p50 {d[len(d) // 2]:.1f} s, "
                            f"p99 {d[max(0, int(len(d) * 0.99) - 1)]:.1f} s, max {d[-1]:.1f} s")
    if outages and clear_of_outages:
        d = sorted(clear_of_outages)
        report.notes.append(f"of which the {len(d)} clear of the SMS gateway's outage (violation -> acceptance not "
                            f"overlapping it): p50 {d[len(d) // 2]:.1f} s, p99 {d[max(0, int(len(d) * 0.99) - 1)]:.1f} s, "
                            f"max {d[-1]:.1f} s (target p99 < 30 s)")
    if late_evidence:
        report.notes.append(f"{late_evidence} ticket(s) on a capture that reached Kafka after the horizon, "
                            "before the decision (allowed)")
    report.notes.insert(0, f"camera-events: {len(valid)} valid events, {len(malformed)} messages no agent can use or may take; "
                           f"{len(dead)} dead letters from camera-events")
    return report
