"""The case: what happens to one illegally parked car, as a pure state machine.

No I/O, no clock, no settings: every function takes the current ``Case`` (or none), what
happened, the ``Rules`` and ``now``, and returns a ``Decision``: the new case and the effects the
caller must carry out in the same transaction. The caller owns persistence and time; the
machine says when it next wants to wake up (``Case.wake_at``).

    detected --warning accepted--> warned --deadline, fresh capture--> ticketed
        |                            |  \\--deadline, no fresh capture--> rechecking
        |                            |                                   |-- fresh capture --> ticketed
        |                            |                                   |-- departure -----> moved
        |                            |                                   \\-- nothing -------> unconfirmed
        |-- departure / seen elsewhere (before the decision) ----------------------------------> moved
        |-- no phone on record, or the warning failed for good --------------------------------> review
    whitelisted plate or exempt zone ---------------------------------------------------------> exempt

Never a ticket without a warning, and never without a capture at the same place taken no earlier
than the deadline (minus ``Rules.capture_tolerance``).
"""

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from uuid import UUID

from geopy.distance import geodesic

from pipeline.cases.reasons import why


class State(StrEnum):
    DETECTED = "detected"
    WARNED = "warned"
    RECHECKING = "rechecking"
    MOVED = "moved"
    TICKETED = "ticketed"
    UNCONFIRMED = "unconfirmed"
    REVIEW = "review"
    EXEMPT = "exempt"
    CANCELLED = "cancelled"


OPEN_STATES = frozenset({State.DETECTED, State.WARNED, State.RECHECKING})
WAITING_STATES = frozenset({State.WARNED, State.RECHECKING})


@dataclass(frozen=True)
class Rules:
    window: timedelta = timedelta(minutes=10)
    """How long the driver has to move, counted from the gateway's acceptance of the warning."""
    lateness: timedelta = timedelta(seconds=30)
    """How long after the deadline the decision waits for late events."""
    capture_tolerance: timedelta = timedelta(seconds=5)
    """A capture this much before the deadline still counts as 'still there at the deadline'."""
    recheck_wait: timedelta = timedelta(minutes=2)
    """How long to wait for a camera's answer to a recheck request."""
    same_place_m: float = 50.0
    """Captures within this distance of the violation are 'at the same place'."""
    require_delivery_report: bool = False
    """Ticket only when the gateway reported the warning delivered to the phone (gateways that report)."""
    max_report_delay: timedelta = timedelta(minutes=5)
    """A violation that reaches us later than this after it was seen is not warned about."""
    clock_skew: timedelta = timedelta(seconds=30)
    """A capture stamped later than ``now`` plus this is not trusted as evidence (camera clock ahead)."""


@dataclass(frozen=True)
class Sighting:
    """One capture of the plate by a camera (event time, place, evidence)."""

    event_id: str
    camera_id: str
    taken_at: datetime
    lat: float
    lon: float
    place: str = ""
    evidence_url: str | None = None
    integrator: str = ""
    """Who sent it: event ids are unique per integrator. Place and position are its camera's, as registered."""


@dataclass(frozen=True)
class Case:
    id: UUID
    plate: str
    state: State
    zone: str
    place: str
    violation: Sighting
    opened_at: datetime
    warned_at: datetime | None = None
    deadline_at: datetime | None = None
    wake_at: datetime | None = None
    latest_capture: Sighting | None = None
    """The latest capture at the same place after the violation (event time)."""
    closed_at: datetime | None = None
    reason: str = ""
    warning_delivered_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES


# Effects: what the caller must do, in the same transaction as saving the case.


@dataclass(frozen=True)
class SendWarning:
    case_id: UUID


@dataclass(frozen=True)
class WithdrawWarning:
    """The warning is no longer needed (the car left before it was sent)."""

    case_id: UUID


@dataclass(frozen=True)
class IssueTicket:
    case_id: UUID
    violation: Sighting
    fresh_capture: Sighting


@dataclass(frozen=True)
class RequestRecheck:
    case_id: UUID
    camera_id: str
    answer_by: datetime


Effect = SendWarning | WithdrawWarning | IssueTicket | RequestRecheck


@dataclass(frozen=True)
class Decision:
    case: Case
    effects: tuple[Effect, ...] = ()
    changed: bool = True
    note: str = ""

    @property
    def closed(self) -> bool:
        return self.changed and not self.case.is_open


@dataclass(frozen=True)
class Opening:
    """What the caller looked up before opening a case."""

    owner_reachable: bool
    exempt_reason: str | None = None
    reported_at: datetime | None = None
    """When the violation reached us (Kafka's timestamp); the camera's delay is ``reported_at - taken_at``.
    None: ``now`` (the time we read it) stands in."""


def unchanged(case: Case, note: str) -> Decision:
    return Decision(case, (), changed=False, note=note)


def distance_m(a: Sighting, b: Sighting) -> float:
    return geodesic((a.lat, a.lon), (b.lat, b.lon)).meters


def _close(case: Case, state: State, reason: str, now: datetime, *effects: Effect) -> Decision:
    return Decision(replace(case, state=state, closed_at=now, wake_at=None, reason=reason), effects)


def open_case(case_id: UUID, plate: str, zone: str, violation: Sighting, opening: Opening, now: datetime,
              rules: Rules | None = None) -> Decision:
    """A new violation for a plate with no open case.

    A violation the camera reported later than ``rules.max_report_delay`` after it was seen is not
    warned about (the car may be long gone): an officer decides. Only the camera's delay counts
    (from capture to Kafka), not ours (a backlog after our own outage), which the window absorbs:
    it starts when the warning is accepted.
    """
    rules = rules or Rules()
    case = Case(id=case_id, plate=plate, state=State.DETECTED, zone=zone, place=violation.place,
                violation=violation, opened_at=now)
    if opening.exempt_reason:
        return _close(case, State.EXEMPT, opening.exempt_reason, now)
    delay = (opening.reported_at or now) - violation.taken_at
    if delay > rules.max_report_delay:
        minutes = int(delay.total_seconds() // 60)
        return _close(case, State.REVIEW, why("too_late", minutes=minutes), now)
    if not opening.owner_reachable:
        return _close(case, State.REVIEW, why("no_phone"), now)
    return Decision(case, (SendWarning(case_id),))


def on_violation(case: Case, violation: Sighting, rules: Rules, now: datetime) -> Decision:
    """Another ViolationDetected for a plate with an open case.

    At the same place it is more evidence. Elsewhere the car has moved: this case closes as
    moved and the caller opens a new one for the new place (see ``needs_new_case``).
    """
    return on_capture(case, violation, rules, now)


def needs_new_case(decision: Decision, violation: Sighting, rules: Rules) -> bool:
    """After ``on_violation``: did the car move, so that this violation needs a case of its own?"""
    return decision.closed and decision.case.state == State.MOVED and \
        distance_m(decision.case.violation, violation) > rules.same_place_m


def on_capture(case: Case, capture: Sighting, rules: Rules, now: datetime) -> Decision:
    """The plate was captured (VehicleObserved, or a further ViolationDetected)."""
    if not case.is_open:
        return unchanged(case, why("already", state=case.state))
    if capture.taken_at < case.violation.taken_at:
        return unchanged(case, why("capture_before_violation"))
    if distance_m(case.violation, capture) > rules.same_place_m:
        if case.deadline_at and capture.taken_at >= case.deadline_at and case.state == State.RECHECKING:
            reason = why("seen_elsewhere_after_deadline")
        else:
            reason = why("seen_elsewhere", where=capture.place or capture.camera_id)
        effects = (WithdrawWarning(case.id),) if case.state == State.DETECTED else ()
        return _close(case, State.MOVED, reason, now, *effects)
    if case.latest_capture and case.latest_capture.taken_at >= capture.taken_at:
        return unchanged(case, why("older_capture"))
    case = replace(case, latest_capture=capture)
    if case.state == State.RECHECKING and _is_fresh(case, capture, rules, now):
        return _ticket(case, capture, rules, now, why("still_there_recheck"))
    return Decision(case, (), note=why("capture_same_place"))


def on_departure(case: Case, taken_at: datetime, rules: Rules, now: datetime) -> Decision:
    """A camera saw the car leave. Before the decision this closes the case as moved."""
    if not case.is_open:
        if case.state == State.TICKETED and case.deadline_at and taken_at < case.deadline_at:
            return unchanged(case, why("departure_after_ticket"))
        return unchanged(case, why("already", state=case.state))
    if taken_at < case.violation.taken_at:
        return unchanged(case, why("departure_before_violation"))
    effects = (WithdrawWarning(case.id),) if case.state == State.DETECTED else ()
    if case.deadline_at and taken_at >= case.deadline_at:
        reason = why("left_after_deadline")
    else:
        reason = why("left_in_window")
    return _close(case, State.MOVED, reason, now, *effects)


def on_warning_accepted(case: Case, accepted_at: datetime, rules: Rules, window: timedelta | None = None) -> Decision:
    """The SMS gateway accepted the warning: the window starts now."""
    if case.state != State.DETECTED:
        return unchanged(case, why("accepted_already", state=case.state))
    deadline = accepted_at + (window or rules.window)
    return Decision(replace(case, state=State.WARNED, warned_at=accepted_at, deadline_at=deadline,
                            wake_at=deadline + rules.lateness))


def on_warning_failed(case: Case, reason: str, now: datetime) -> Decision:
    """The warning could not be delivered for good: no automatic ticket, an officer decides."""
    if case.state != State.DETECTED:
        return unchanged(case, why("failed_already", state=case.state))
    return _close(case, State.REVIEW, why("warning_failed", detail=reason), now)


def on_warning_delivered(case: Case, delivered_at: datetime) -> Decision:
    """The SMS centre reported the warning delivered to the phone."""
    if case.warning_delivered_at is not None:
        return unchanged(case, why("delivery_known"))
    return Decision(replace(case, warning_delivered_at=delivered_at), note=why("delivered"))


def on_warning_undelivered(case: Case, reason: str, now: datetime) -> Decision:
    """The SMS centre reported that the accepted warning never reached the phone.

    Before the decision this sends the case to review: no automatic ticket without a warning.
    """
    if case.state not in (State.DETECTED, State.WARNED, State.RECHECKING):
        return unchanged(case, why("undelivered_already", state=case.state))
    return _close(case, State.REVIEW, why("undelivered", detail=reason), now)


def on_wake(case: Case, rules: Rules, now: datetime) -> Decision:
    """The clock reached ``case.wake_at`` (or later, after downtime).

    The caller wakes a case only once the input that could still change it has been read: the
    partition carrying its plate read up to ``wake_at`` (``pipeline.cases.watermarks``). A recheck
    waits for ``answer_by`` plus the lateness allowance, like the deadline."""
    if case.wake_at is None or now < case.wake_at or case.state not in WAITING_STATES:
        return unchanged(case, why("not_due"))
    capture = case.latest_capture
    if capture and _is_fresh(case, capture, rules, now):
        return _ticket(case, capture, rules, now, why("still_there"))
    if case.state == State.WARNED:
        answer_by = now + rules.recheck_wait
        return Decision(replace(case, state=State.RECHECKING, wake_at=answer_by + rules.lateness),
                        (RequestRecheck(case.id, case.violation.camera_id, answer_by),),
                        note=why("recheck_requested"))
    return _close(case, State.UNCONFIRMED, why("unconfirmed"), now)


def set_aside(case: Case, problem: str, now: datetime) -> Decision:
    """The pipeline failed to decide this case (a fault of this case's data, not an outage): it
    goes to an officer with the problem, and no automatic effect follows."""
    if not case.is_open:
        return unchanged(case, why("already", state=case.state))
    return _close(case, State.REVIEW, why("decision_failed", detail=problem), now, WithdrawWarning(case.id))


def cancel(case: Case, reason: str, now: datetime) -> Decision:
    """An operator closes an open case."""
    if not case.is_open and case.state != State.REVIEW:
        return unchanged(case, why("already", state=case.state))
    return _close(case, State.CANCELLED, reason, now, WithdrawWarning(case.id))


def _is_fresh(case: Case, capture: Sighting, rules: Rules, now: datetime) -> bool:
    """Taken no earlier than the deadline (less the tolerance), and not stamped in the future."""
    return (case.deadline_at is not None and capture.taken_at >= case.deadline_at - rules.capture_tolerance
            and capture.taken_at <= now + rules.clock_skew)


def _ticket(case: Case, capture: Sighting, rules: Rules, now: datetime, reason: str) -> Decision:
    if rules.require_delivery_report and case.warning_delivered_at is None:
        return _close(case, State.REVIEW, why("never_delivered"), now)
    return _close(case, State.TICKETED, reason, now, IssueTicket(case.id, case.violation, capture))
