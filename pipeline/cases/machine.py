"""The case: what happens to one illegally parked car, as a pure state machine.

No I/O, no clock, no settings: every function takes the current ``Case`` (or none), what
happened, the ``Rules`` and ``now``, and returns a ``Decision``: the new case and the effects the
caller must carry out in the same transaction. The caller owns persistence and time; the
machine says when it next wants to wake up (``Case.wake_at``).

    detected --warning accepted--> warned --deadline, fresh capture--> ticketed (or cautioned, to_confirm)
        |                            |  \\--deadline, no fresh capture--> rechecking
        |                            |                                   |-- fresh capture --> ticketed (...)
        |                            |                                   |-- departure -----> moved
        |                            |                                   \\-- nothing -------> unconfirmed
        |                            \\-- warning delivered late: the deadline moves to delivered + window
        |-- departure / seen elsewhere before the deadline ------------------------------------> moved
        |-- no phone on record, or the warning failed for good --------------------------------> review
    whitelisted plate or exempt zone ---------------------------------------------------------> exempt
    to_confirm --an officer confirms--> ticketed;  to_confirm --an officer rejects--> rejected

Where a ticket would be issued, a zone's rules may say otherwise (``ZoneRules``, decided when the
case opens): a first offence, or a camera in its first days, gets a warning notice instead
(``cautioned``); with confirmation on, the ticket waits for an officer (``to_confirm``).

Evidence timing, the same everywhere (automatic decisions and an officer's ticket on review):
never a ticket without a warning, and never without a capture at the same place taken no
earlier than the deadline (minus ``Rules.capture_tolerance``), no later than
``Rules.capture_bound`` after it, and before the car was seen leaving. The deadline is
``accepted + window``, or with a gateway that reports delivery ``delivered + window`` when the
phone got the warning later. Decisions follow event time, not arrival order: a departure or a
sighting elsewhere after the deadline is kept on the case (``left_at``) and weighed at the
wake, and the wake decides only on events old enough that none can still be on its way (taken
at least ``Rules.lateness`` before it); it waits for the rest.

One car, one case per stay: a detection at the place of a closed case (``STAY_STATES``) within
the stay (``stay_ends_at``) is evidence for that case, not a new warning (``again_after_close``).
"""

import calendar
import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from enum import StrEnum
from uuid import UUID

from geographiclib.geodesic import Geodesic

from pipeline.cases.reasons import parse, why


class State(StrEnum):
    DETECTED = "detected"
    WARNED = "warned"
    RECHECKING = "rechecking"
    MOVED = "moved"
    TICKETED = "ticketed"
    CAUTIONED = "cautioned"
    """Still there at the deadline, but a warning notice instead of a ticket (first offence, new camera)."""
    TO_CONFIRM = "to_confirm"
    """Still there at the deadline; the ticket takes effect once an officer confirms it."""
    REJECTED = "rejected"
    """An officer rejected the ticket waiting for confirmation: it never took effect."""
    UNCONFIRMED = "unconfirmed"
    REVIEW = "review"
    EXEMPT = "exempt"
    CANCELLED = "cancelled"


OPEN_STATES = frozenset({State.DETECTED, State.WARNED, State.RECHECKING})
WAITING_STATES = frozenset({State.WARNED, State.RECHECKING})
STAY_STATES = frozenset({State.TICKETED, State.CAUTIONED, State.TO_CONFIRM, State.UNCONFIRMED, State.REVIEW,
                         State.EXEMPT})
"""Closed cases whose stay a later detection at the same place continues. Not moved (the car
left), cancelled or rejected (an officer ended the case): a detection after those is a new stay."""
DECIDED_STATES = frozenset({State.TICKETED, State.CAUTIONED, State.TO_CONFIRM})
"""Closed on evidence that the car was still there at the deadline."""


@dataclass(frozen=True)
class Rules:
    window: timedelta = timedelta(minutes=10)
    """How long the driver has to move, counted from the gateway's acceptance of the warning (or
    from its delivery to the phone, when a gateway that reports delivery says it came later)."""
    lateness: timedelta = timedelta(seconds=30)
    """How long after an event's time the decision waits for events taken before it (late events)."""
    capture_tolerance: timedelta = timedelta(seconds=5)
    """A capture this much before the deadline still counts as 'still there at the deadline'."""
    capture_bound: timedelta = timedelta(minutes=10)
    """A capture taken later than this after the deadline shows the car there then, not at the
    deadline: it proves nothing (automatic decisions and an officer's ticket on review alike)."""
    recheck_wait: timedelta = timedelta(minutes=2)
    """How long to wait for a camera's answer to a recheck request."""
    same_place_m: float = 50.0
    """Captures within this distance of the violation are 'at the same place'."""
    require_delivery_report: bool = False
    """Ticket only when the gateway reported the warning delivered to the phone (gateways that report)."""
    delivery_wait: timedelta = timedelta(minutes=10)
    """With ``require_delivery_report``: how long after the deadline (counted from acceptance) a case
    waits for the report that the warning reached the phone; without one by then an officer decides."""
    max_report_delay: timedelta = timedelta(minutes=5)
    """A violation that reaches us later than this after it was seen is not warned about."""
    clock_skew: timedelta = timedelta(seconds=30)
    """A capture stamped later than ``now`` plus this is not trusted as evidence (camera clock ahead)."""
    same_stay: timedelta = timedelta(hours=24)
    """A detection at the place of a closed case within this after it closed (for a ticket: after the
    ticket) belongs to the same stay: one stay, one ticket per 24 hours, whatever the calendar says."""
    timezone: tzinfo = UTC
    """The city's time zone: local days (the same stay, a camera's first days, first offences)."""


@dataclass(frozen=True)
class ZoneRules:
    """A zone's own rules (the ``zones`` table, the city's defaults where a zone has none)."""

    window: timedelta | None = None
    """The zone's window; None: ``Rules.window``."""
    first_offence_months: int = 0
    """A car with no ticket nor warning notice in the last N months gets a warning notice (首违警告)
    instead of a ticket. 0: off."""
    new_camera_days: int = 0
    """A camera in its first N days after commissioning issues warning notices only. 0: off."""
    confirm_tickets: bool = False
    """A ticket takes effect only once an officer confirms it (``to_confirm``)."""


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
    """When the gateway accepted the warning."""
    deadline_at: datetime | None = None
    """The driver's real deadline: ``warned_at + window``, or ``warning_delivered_at + window`` when later."""
    wake_at: datetime | None = None
    latest_capture: Sighting | None = None
    """The latest capture at the same place after the violation (event time)."""
    closed_at: datetime | None = None
    reason: str = ""
    warning_delivered_at: datetime | None = None
    window: timedelta | None = None
    """The zone's window when the case opened; None: ``Rules.window``."""
    fresh_capture: Sighting | None = None
    """The earliest capture at the same place taken no earlier than the deadline less the tolerance:
    the second piece of evidence (``evidence``)."""
    left_at: datetime | None = None
    """The earliest time after the deadline the car was seen leaving or elsewhere."""
    caution: str = ""
    """Why a decision that would ticket gives a warning notice instead (decided at opening); '': a ticket."""
    confirm: bool = False
    """A ticket waits for an officer's confirmation (``to_confirm``) before it takes effect."""
    plate_type: str | None = None
    """The plate type (GA 24.7) the owner was found under when the case opened; None: by number alone."""

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
class IssueCaution:
    """A warning notice instead of a ticket, on the same evidence, told to the owner by SMS."""

    case_id: UUID
    violation: Sighting
    fresh_capture: Sighting
    first_offence: bool
    """True: a first offence; False: a camera in its first days."""


@dataclass(frozen=True)
class RequestRecheck:
    case_id: UUID
    camera_id: str
    answer_by: datetime


Effect = SendWarning | WithdrawWarning | IssueTicket | IssueCaution | RequestRecheck


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
    owner_problem: str = "no_phone"
    """Why the owner cannot be warned, when not reachable: a reasons key (``owners.REVIEW_REASONS``)."""
    plate_type: str | None = None
    """The plate type the owner was found under (kept on the case)."""
    reported_at: datetime | None = None
    """When the violation reached us (Kafka's timestamp); the camera's delay is ``reported_at - taken_at``.
    None: ``now`` (the time we read it) stands in."""
    zone: ZoneRules = ZoneRules()
    last_offence_at: datetime | None = None
    """The plate's latest ticket (not voided) or warning notice, if any (for first offences)."""
    camera_commissioned: date | None = None
    """The day the violation's camera was commissioned (camera registry). None: not known, so not new."""


def unchanged(case: Case, note: str) -> Decision:
    return Decision(case, (), changed=False, note=note)


def distance_m(a: Sighting, b: Sighting) -> float:
    """Metres between two sightings on the WGS-84 ellipsoid (geographiclib, which geopy's geodesic uses;
    geopy itself would import its geocoders and aiohttp at every command's start)."""
    return _metres(a.lat, a.lon, b.lat, b.lon)


@functools.lru_cache(maxsize=65536)
def _metres(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Remembered: sightings are placed at their cameras' registered positions, so the same pairs of
    points come again and again, and geographiclib is pure Python."""
    return Geodesic.WGS84.Inverse(lat1, lon1, lat2, lon2, Geodesic.DISTANCE)["s12"]


def _close(case: Case, state: State, reason: str, now: datetime, *effects: Effect) -> Decision:
    return Decision(replace(case, state=state, closed_at=now, wake_at=None, reason=reason), effects)


def months_before(moment: datetime, months: int) -> datetime:
    """The same local time ``months`` calendar months earlier (the last day of a shorter month)."""
    year, month = divmod(moment.year * 12 + moment.month - 1 - months, 12)
    month += 1
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


def caution_for(violation: Sighting, opening: Opening, rules: Rules) -> str:
    """Why a decision on this violation would give a warning notice instead of a ticket ('' if not)."""
    zone = opening.zone
    local = violation.taken_at.astimezone(rules.timezone)
    commissioned = opening.camera_commissioned
    if zone.new_camera_days and commissioned is not None and \
            local.date() < commissioned + timedelta(days=zone.new_camera_days):
        return why("new_camera", where=violation.camera_id, day=commissioned.isoformat(), n=zone.new_camera_days)
    if zone.first_offence_months:
        since = months_before(local, zone.first_offence_months)
        if opening.last_offence_at is None or opening.last_offence_at < since:
            return why("first_offence", n=zone.first_offence_months)
    return ""


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
                violation=violation, opened_at=now, window=opening.zone.window,
                caution=caution_for(violation, opening, rules), confirm=opening.zone.confirm_tickets,
                plate_type=opening.plate_type)
    if opening.exempt_reason:
        return _close(case, State.EXEMPT, opening.exempt_reason, now)
    delay = (opening.reported_at or now) - violation.taken_at
    if delay > rules.max_report_delay:
        minutes = int(delay.total_seconds() // 60)
        return _close(case, State.REVIEW, why("too_late", minutes=minutes), now)
    if not opening.owner_reachable:
        return _close(case, State.REVIEW, why(opening.owner_problem), now)
    return Decision(case, (SendWarning(case_id),))


def on_violation(case: Case, violation: Sighting, rules: Rules, now: datetime) -> Decision:
    """Another ViolationDetected for a plate with an open case.

    At the same place it is more evidence. Elsewhere the car has moved, and the new place needs a
    case of its own (``needs_new_case``), so this one is decided now on what is known: moved if
    it was seen elsewhere before the deadline, else ticketed only with a fresh capture taken
    before it was seen elsewhere. (Captures of the old place still on their way are not waited
    for here: the one place where arrival order can matter.)
    """
    decision = on_capture(case, violation, rules, now)
    left_at = decision.case.left_at
    if decision.case.is_open and left_at is not None and left_at <= violation.taken_at \
            and distance_m(case.violation, violation) > rules.same_place_m:
        return _decide_now(decision.case, rules, now)
    return decision


def needs_new_case(decision: Decision, violation: Sighting, rules: Rules) -> bool:
    """After ``on_violation``: did the car move, so that this violation needs a case of its own?"""
    return decision.closed and distance_m(decision.case.violation, violation) > rules.same_place_m


def on_capture(case: Case, capture: Sighting, rules: Rules, now: datetime) -> Decision:
    """The plate was captured (VehicleObserved, or a further ViolationDetected).

    Elsewhere: the car moved (before the deadline it is closed as moved; after it, kept as
    ``left_at`` for the wake). At the place: the latest capture is kept, and the earliest taken
    no earlier than the deadline less the tolerance (``fresh_capture``). A rechecking case then
    wakes once no earlier event can still be on its way (``lateness`` after the capture).
    """
    if not case.is_open:
        return unchanged(case, why("already", state=case.state))
    if capture.taken_at < case.violation.taken_at:
        return unchanged(case, why("capture_before_violation"))
    if _in_future(capture.taken_at, rules, now):
        return unchanged(case, why("capture_in_future"))
    if distance_m(case.violation, capture) > rules.same_place_m:
        return _left(case, capture.taken_at, rules, now, why("seen_elsewhere", where=capture.place or capture.camera_id))
    before = case
    note = why("capture_same_place")
    if case.latest_capture is None or _order(capture) > _order(case.latest_capture):
        case = replace(case, latest_capture=capture)
    else:
        note = why("older_capture")
    if case.deadline_at is not None and may_become_evidence(capture.taken_at, case.deadline_at, rules, now) and \
            (case.fresh_capture is None or _order(capture) < _order(case.fresh_capture)):
        case = replace(case, fresh_capture=capture)
    if case == before:
        return unchanged(case, note)
    return Decision(_answered_sooner(case, rules), note=note)


def _order(capture: Sighting) -> tuple[datetime, str, str]:
    """Captures in event-time order (ties by event id, so that arrival order never decides)."""
    return capture.taken_at, capture.integrator, capture.event_id


def on_departure(case: Case, departure: Sighting, rules: Rules, now: datetime) -> Decision:
    """A camera saw the car leave (``departure``: its camera's place and the time).

    A departure counts only where the car was: from a camera within ``rules.same_place_m`` of the
    violation. Before the deadline it closes the case as moved; after it, it is kept (``left_at``):
    a fresh capture taken before it still proves the car was there. A departure from a camera
    elsewhere is a sighting elsewhere (``on_capture``), weighed with its time like any capture."""
    if distance_m(case.violation, departure) > rules.same_place_m:
        return on_capture(case, departure, rules, now)
    taken_at = departure.taken_at
    if not case.is_open:
        if case.state in DECIDED_STATES and case.deadline_at and taken_at < _evidence_time(case):
            return unchanged(case, why("departure_after_ticket"))
        return unchanged(case, why("already", state=case.state))
    if taken_at < case.violation.taken_at:
        return unchanged(case, why("departure_before_violation"))
    return _left(case, taken_at, rules, now, why("left_in_window"))


def _evidence_time(case: Case) -> datetime:
    return max(case.deadline_at, case.fresh_capture.taken_at) if case.fresh_capture else case.deadline_at


def _left(case: Case, taken_at: datetime, rules: Rules, now: datetime, reason: str) -> Decision:
    """The car was seen leaving, or elsewhere, at ``taken_at`` (after the violation)."""
    if case.deadline_at is None or taken_at < case.deadline_at:
        effects = (WithdrawWarning(case.id),) if case.state == State.DETECTED else ()
        return _close(case, State.MOVED, reason, now, *effects)
    if case.left_at is not None and case.left_at <= taken_at:
        return unchanged(case, why("left_known"))
    case = replace(case, left_at=taken_at)
    return Decision(_answered_sooner(case, rules), note=why("left_after_deadline_kept"))


def _answered_sooner(case: Case, rules: Rules) -> Case:
    """A rechecking case with its answer in hand (a fresh capture, or the car seen leaving) wakes as
    soon as the events taken before that answer have had time to arrive."""
    if case.state != State.RECHECKING or case.wake_at is None:
        return case
    capture = evidence(case, rules)
    times = [t for t in (capture.taken_at if capture else None, case.left_at) if t is not None]
    if not times:
        return case
    return replace(case, wake_at=min(case.wake_at, min(times) + rules.lateness))


def on_warning_accepted(case: Case, accepted_at: datetime, rules: Rules, window: timedelta | None = None) -> Decision:
    """The SMS gateway accepted the warning: the window starts now.

    When the acceptance is recorded late (a replay after a restore records the time the gateway
    accepted it then), a capture at the place already kept may be taken late enough to be the
    fresh capture: it is kept as such, as it would have been had it come after the acceptance."""
    if case.state != State.DETECTED:
        return unchanged(case, why("accepted_already", state=case.state))
    window = window or case.window or rules.window
    deadline = accepted_at + window
    case = replace(case, state=State.WARNED, warned_at=accepted_at, deadline_at=deadline,
                   wake_at=deadline + rules.lateness, window=window)
    latest = case.latest_capture
    if case.fresh_capture is None and latest is not None and latest.taken_at >= evidence_window(deadline, rules)[0]:
        case = replace(case, fresh_capture=latest)
    return Decision(case)


def on_warning_failed(case: Case, reason: str, now: datetime) -> Decision:
    """The warning could not be delivered for good: no automatic ticket, an officer decides."""
    if case.state != State.DETECTED:
        return unchanged(case, why("failed_already", state=case.state))
    return _close(case, State.REVIEW, why("warning_failed", detail=reason), now)


def on_warning_delivered(case: Case, delivered_at: datetime, rules: Rules, now: datetime) -> Decision:
    """The SMS centre reported the warning delivered to the phone.

    The driver gets the whole window from the moment the phone had the warning: a delivery later
    than the acceptance moves the deadline to ``delivered + window`` (and the wake with it), never
    earlier. A delivery time later than ``now`` is taken as ``now``. A case waiting for review
    gets the moved deadline too, for the officer's evidence rules. A case that was waiting for this
    report is decided as soon as its evidence has settled.
    """
    if case.warning_delivered_at is not None:
        return unchanged(case, why("delivery_known"))
    delivered = min(delivered_at, now)
    case = replace(case, warning_delivered_at=delivered)
    if case.warned_at is None or case.deadline_at is None or \
            case.state not in (State.WARNED, State.RECHECKING, State.REVIEW):
        return Decision(case, note=why("delivered"))
    deadline = delivered + (case.window or case.deadline_at - case.warned_at)
    if deadline <= case.deadline_at:
        return Decision(_delivery_awaited(case, rules), note=why("delivered"))
    note = why("delivered_late", deadline=deadline.isoformat(timespec="seconds"))
    if case.state == State.REVIEW:
        return Decision(replace(case, deadline_at=deadline), note=note)
    fresh = [c for c in (case.fresh_capture, case.latest_capture)
             if c is not None and may_become_evidence(c.taken_at, deadline, rules, now)]
    case = replace(case, state=State.WARNED, deadline_at=deadline, wake_at=deadline + rules.lateness,
                   fresh_capture=min(fresh, key=_order, default=None))
    if case.left_at is not None and case.left_at < deadline:
        return _close(case, State.MOVED, why("left_in_window"), now)
    return Decision(case, note=note)


def delivery_moment(reported_at: datetime | None, accepted_at: datetime | None, arrived_at: datetime) -> datetime:
    """When the phone had a message, as its delivery report shows it: the SMS centre's time, no
    earlier than the gateway's acceptance and no later than the report's arrival (an SMS-centre
    clock that runs slow cannot shorten the driver's window, nor one that runs fast lengthen it
    beyond what the report proves). A time in whole seconds (Kannel's) may stand for any moment of
    that second: it counts as the second's end."""
    at = reported_at or arrived_at
    if reported_at is not None and reported_at.microsecond == 0:
        at += timedelta(seconds=1)
    if accepted_at is not None:
        at = max(at, accepted_at)
    return min(at, max(arrived_at, accepted_at or arrived_at))


def _delivery_awaited(case: Case, rules: Rules) -> Case:
    """A case that waited for this report (``_await_delivery``: its wake put off by ``delivery_wait``)
    is decided as soon as its evidence has settled, not at the end of the wait. A rechecking case
    without an answer still waits for the camera."""
    if case.state not in WAITING_STATES or case.wake_at is None or case.deadline_at is None:
        return case
    capture = evidence(case, rules)
    if case.state == State.RECHECKING and capture is None:
        return case
    due = max(case.deadline_at, capture.taken_at if capture else case.deadline_at) + rules.lateness
    return replace(case, wake_at=min(case.wake_at, due))


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
    partition carrying its plate read up to ``wake_at`` (``pipeline.cases.watermarks``). So every
    event taken before ``settled = wake_at - lateness`` is known, and the decision rests on those
    alone: a fresh capture (``evidence``) -> ticket; the car seen leaving after the deadline ->
    moved. At the deadline, an answer taken after ``settled`` is waited for (until the events
    taken before it have had time to arrive), a warning not yet reported delivered (gateways that
    report) waits for its report and then goes to review, and otherwise the camera is asked
    (warned -> rechecking). A recheck waits for ``answer_by`` plus the lateness allowance, like
    the deadline; without an answer taken by ``answer_by`` -> unconfirmed."""
    if case.wake_at is None or now < case.wake_at or case.state not in WAITING_STATES:
        return unchanged(case, why("not_due"))
    settled = case.wake_at - rules.lateness
    capture = evidence(case, rules)
    if capture is not None and capture.taken_at <= settled:
        reason = why("still_there") if case.state == State.WARNED else why("still_there_recheck")
        return _decide(case, capture, rules, now, reason, can_wait=True)
    if case.left_at is not None and case.left_at <= settled:
        return _close(case, State.MOVED, why("left_after_deadline"), now)
    if case.state == State.RECHECKING:
        return _close(case, State.UNCONFIRMED, why("unconfirmed"), now)
    later = [t for t in (capture.taken_at if capture else None, case.left_at) if t is not None]
    if later:
        return Decision(replace(case, wake_at=min(later) + rules.lateness), note=why("settling"))
    if rules.require_delivery_report and case.warning_delivered_at is None:
        return _await_delivery(case, rules, now, why("delivery_unknown"))
    answer_by = now + rules.recheck_wait
    return Decision(replace(case, state=State.RECHECKING, wake_at=answer_by + rules.lateness),
                    (RequestRecheck(case.id, case.violation.camera_id, answer_by),),
                    note=why("recheck_requested"))


def evidence_window(deadline: datetime, rules: Rules) -> tuple[datetime, datetime]:
    """The evidence timing rule, the one place it is written: a capture proves the car was still at
    the place at ``deadline`` when it was taken between these two moments (the deadline less
    ``capture_tolerance``, and ``capture_bound`` after it)."""
    return deadline - rules.capture_tolerance, deadline + rules.capture_bound


def evidence_timing(taken_at: datetime, deadline: datetime, rules: Rules, now: datetime | None = None) -> str | None:
    """Why a capture taken at ``taken_at`` cannot prove the car was there at ``deadline`` (a reason
    key: evidence_too_early, evidence_too_late, evidence_in_future when ``now`` is given and the
    capture is stamped later than ``now`` plus the clock skew), or None (``evidence_window``)."""
    earliest, latest = evidence_window(deadline, rules)
    if taken_at < earliest:
        return "evidence_too_early"
    if taken_at > latest:
        return "evidence_too_late"
    if now is not None and _in_future(taken_at, rules, now):
        return "evidence_in_future"
    return None


def may_become_evidence(taken_at: datetime, deadline: datetime, rules: Rules, now: datetime) -> bool:
    """A capture worth keeping as the case's fresh capture (``evidence_timing``): not too early and not
    in the future. One taken too late is kept too: a late delivery report moves the deadline later."""
    return taken_at >= evidence_window(deadline, rules)[0] and not _in_future(taken_at, rules, now)


def _in_future(taken_at: datetime, rules: Rules, now: datetime) -> bool:
    """Stamped later than any camera's clock can be ahead of PostgreSQL's (``Rules.clock_skew``)."""
    return taken_at > now + rules.clock_skew


def evidence(case: Case, rules: Rules) -> Sighting | None:
    """The capture that proves the car was at the place at the deadline, if any: the earliest at the
    place taken no earlier than the deadline less the tolerance, if it is no later than
    ``capture_bound`` after the deadline and earlier than the car was seen leaving."""
    capture = case.fresh_capture
    if capture is None or case.deadline_at is None:
        return None
    if evidence_timing(capture.taken_at, case.deadline_at, rules) is not None:
        return None
    if case.left_at is not None and capture.taken_at >= case.left_at:
        return None
    return capture


def _decide_now(case: Case, rules: Rules, now: datetime) -> Decision:
    """Decide an open case at once on what is known (the car is parked elsewhere now)."""
    capture = evidence(case, rules)
    if capture is None:
        return _close(case, State.MOVED, why("seen_elsewhere_after_deadline"), now)
    return _decide(case, capture, rules, now, why("still_there"), can_wait=False)


def _decide(case: Case, capture: Sighting, rules: Rules, now: datetime, reason: str, can_wait: bool) -> Decision:
    """The car was still there at the deadline: a ticket, a warning notice, or a ticket to confirm."""
    if rules.require_delivery_report and case.warning_delivered_at is None:
        if can_wait:
            return _await_delivery(case, rules, now, why("never_delivered"))
        return _close(case, State.REVIEW, why("never_delivered"), now)
    if case.caution:
        first = (parse(case.caution) or ("",))[0] == "first_offence"
        return _close(replace(case, fresh_capture=capture), State.CAUTIONED, case.caution, now,
                      IssueCaution(case.id, case.violation, capture, first_offence=first))
    if case.confirm:
        return _close(replace(case, fresh_capture=capture), State.TO_CONFIRM, why("to_confirm", detail=reason), now)
    return _close(replace(case, fresh_capture=capture), State.TICKETED, reason, now,
                  IssueTicket(case.id, case.violation, capture))


def _await_delivery(case: Case, rules: Rules, now: datetime, reason: str) -> Decision:
    """No report yet that the warning reached the phone: wait for it up to ``delivery_wait`` after the
    deadline (a delivery moves the deadline, ``on_warning_delivered``), then an officer decides."""
    until = case.deadline_at + rules.delivery_wait
    if case.wake_at < until:
        return Decision(replace(case, wake_at=until), note=why("awaiting_delivery"))
    return _close(case, State.REVIEW, reason, now)


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


# ── officers ─────────────────────────────────────────────────────────────────────────────────


def confirm_ticket(case: Case, note: str, now: datetime) -> Decision:
    """An officer confirms a ticket waiting for confirmation: it takes effect now (issued, published, sent)."""
    if case.state != State.TO_CONFIRM or case.fresh_capture is None:
        return unchanged(case, why("already", state=case.state))
    return _close(case, State.TICKETED, why("confirmed", detail=note), now,
                  IssueTicket(case.id, case.violation, case.fresh_capture))


def reject_ticket(case: Case, reason: str, now: datetime) -> Decision:
    """An officer rejects a ticket waiting for confirmation: it never takes effect."""
    if case.state != State.TO_CONFIRM:
        return unchanged(case, why("already", state=case.state))
    return _close(case, State.REJECTED, why("rejected", detail=reason), now)


def review_deadline(case: Case, rules: Rules) -> datetime:
    """The deadline an officer's evidence is measured against: the case's real deadline, or for a
    case never warned, a window after the violation."""
    return case.deadline_at or case.violation.taken_at + (case.window or rules.window)


def review_evidence_problem(case: Case, capture: Sighting, departures: Sequence[datetime], rules: Rules,
                            now: datetime) -> str | None:
    """Why ``capture`` cannot be the fresh capture for an officer's ticket on a review case (a key), or
    None. The same timing as automatic decisions: at the place, taken between the deadline less
    the tolerance and ``capture_bound`` after it, not stamped in the future, and no departure seen
    between the violation and the capture."""
    if (capture.integrator, capture.event_id) == (case.violation.integrator, case.violation.event_id):
        return "evidence_is_the_violation"
    if distance_m(case.violation, capture) > rules.same_place_m:
        return "evidence_elsewhere"
    if (problem := evidence_timing(capture.taken_at, review_deadline(case, rules), rules, now)) is not None:
        return problem
    if any(case.violation.taken_at <= d <= capture.taken_at for d in departures):
        return "evidence_after_departure"
    return None


def ticket_on_review(case: Case, capture: Sighting, rules: Rules, reason: str, now: datetime) -> Decision:
    """An officer tickets a review case with a fresh capture (checked by ``review_evidence_problem``).
    The officer's decision is the confirmation; a warning notice rule of the zone still applies."""
    if case.state != State.REVIEW:
        return unchanged(case, why("already", state=case.state))
    case = replace(case, deadline_at=review_deadline(case, rules), wake_at=None, latest_capture=capture, fresh_capture=capture)
    if case.caution:
        first = (parse(case.caution) or ("",))[0] == "first_offence"
        return _close(case, State.CAUTIONED, case.caution, now,
                      IssueCaution(case.id, case.violation, capture, first_offence=first))
    return _close(case, State.TICKETED, why("ticketed_on_review", detail=reason), now,
                  IssueTicket(case.id, case.violation, capture))


# ── one car, one case per stay ───────────────────────────────────────────────────────────────


def stay_ends_at(case: Case, rules: Rules) -> datetime:
    """Until when a detection at the place of this closed case belongs to the same stay:
    ``rules.same_stay`` (24 hours by default) after it closed, i.e. after its ticket or warning
    notice. Not the end of a calendar day: a car ticketed at 23:55 and seen again at 00:01 is the
    same stay, with no second warning nor ticket."""
    return (case.closed_at or case.opened_at) + rules.same_stay


def again_after_close(case: Case, violation: Sighting, departures: Sequence[datetime], captures: Sequence[Sighting],
                      exempt_now: bool, rules: Rules) -> Decision | None:
    """A ViolationDetected for a plate whose latest case (``case``) is closed: the same stay, or a new one?

    The same stay (cameras may keep reporting a parked car): the case is in ``STAY_STATES``, the
    detection is at its place and before ``stay_ends_at``, the car was not seen leaving nor
    elsewhere in between (``departures``, ``captures`` of the plate since the case's violation),
    and an exempt case is still exempt (``exempt_now``: not when its exempt hours have ended).
    Then it is evidence for that case, unchanged (returned, with a note): the caller links the
    sighting and sends nothing. None: a new stay, the caller opens a new case.
    """
    if case.is_open or case.state not in STAY_STATES:
        return None
    if case.state == State.EXEMPT and not exempt_now:
        return None
    if violation.taken_at >= stay_ends_at(case, rules) or distance_m(case.violation, violation) > rules.same_place_m:
        return None
    start, end = case.violation.taken_at, violation.taken_at
    if any(start <= d <= end for d in departures):
        return None
    if any(start <= c.taken_at <= end and distance_m(case.violation, c) > rules.same_place_m for c in captures):
        return None
    return unchanged(case, why("same_stay", state=case.state))
