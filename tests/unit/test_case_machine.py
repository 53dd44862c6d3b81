"""The case state machine (pipeline/cases/machine.py), driven by a fake clock.

Default rules: a 10 minute window from the warning's acceptance, 30 s lateness, 5 s capture
tolerance, 2 min recheck wait, 50 m "same place".
"""

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from geopy.distance import geodesic
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.cases import machine, reasons
from pipeline.cases.machine import (
    Case,
    IssueTicket,
    Opening,
    RequestRecheck,
    Rules,
    SendWarning,
    Sighting,
    State,
    WithdrawWarning,
)

pytestmark = pytest.mark.unit

RULES = Rules()
START = datetime(2026, 11, 26, 10, 42, tzinfo=UTC)
PLACE = (30.27930, 120.00395)  # 文一西路海创园南门 (cam-wenyi-01)
PLATE = "浙A12345"
CASE_ID = UUID(int=1)
_ids = itertools.count(1)


def position(meters_away: float, bearing: float = 90.0) -> tuple[float, float]:
    p = geodesic(meters=meters_away).destination(PLACE, bearing)
    return p.latitude, p.longitude


def capture(taken_at: datetime, meters_away: float = 0.0, bearing: float = 90.0,
            camera_id: str = "cam-wenyi-01", place: str = "文一西路海创园南门") -> Sighting:
    lat, lon = position(meters_away, bearing)
    return Sighting(f"evt-{next(_ids):08d}", camera_id, taken_at, lat, lon, place, "https://img.example/x.jpg")


@dataclass
class Story:
    """A case and the moments that matter in it, as the machine reached them."""

    case: Case
    violation: Sighting
    accepted_at: datetime | None = None

    @property
    def deadline(self) -> datetime:
        return self.accepted_at + RULES.window


def detected(clock) -> Story:
    violation = capture(clock.now)
    clock.advance(seconds=2)
    decision = machine.open_case(CASE_ID, PLATE, "yuhang", violation, Opening(owner_reachable=True), clock.now)
    return Story(decision.case, violation)


def warned(clock, after: timedelta = timedelta(seconds=20)) -> Story:
    story = detected(clock)
    clock.advance(after)
    story.accepted_at = clock.now
    story.case = machine.on_warning_accepted(story.case, clock.now, RULES).case
    return story


def rechecking(clock) -> Story:
    story = warned(clock)
    clock.set(story.case.wake_at)
    story.case = machine.on_wake(story.case, RULES, clock.now).case
    assert story.case.state == State.RECHECKING
    return story


def tickets(decision) -> list[IssueTicket]:
    return [e for e in decision.effects if isinstance(e, IssueTicket)]


# ── opening a case ─────────────────────────────────────────────────────────────────────────


def test_given_a_reachable_owner_when_a_violation_opens_a_case_then_it_is_detected_with_one_warning(clock):
    violation = capture(clock.now)

    decision = machine.open_case(CASE_ID, PLATE, "yuhang", violation, Opening(owner_reachable=True), clock.now)

    assert decision.case.state == State.DETECTED
    assert decision.case.is_open
    assert decision.effects == (SendWarning(CASE_ID),)
    assert decision.case.violation == violation
    assert decision.case.place == "文一西路海创园南门"
    assert decision.case.deadline_at is None and decision.case.wake_at is None


def test_given_no_phone_on_record_when_a_violation_opens_a_case_then_it_goes_to_review_without_a_warning(clock):
    decision = machine.open_case(CASE_ID, "皖A12345", "yuhang", capture(clock.now), Opening(owner_reachable=False),
                                 clock.now)

    assert decision.case.state == State.REVIEW
    assert decision.closed
    assert decision.effects == ()
    assert "phone" in decision.case.reason


@pytest.mark.parametrize("reachable", [True, False])
def test_given_a_whitelisted_plate_or_exempt_zone_when_a_violation_opens_a_case_then_it_is_exempt(clock, reachable):
    opening = Opening(owner_reachable=reachable, exempt_reason="police vehicle")

    decision = machine.open_case(CASE_ID, "浙A1201警", "yuhang", capture(clock.now), opening, clock.now)

    assert decision.case.state == State.EXEMPT
    assert decision.case.reason == "police vehicle"
    assert decision.effects == ()
    assert decision.closed


# ── the warning ────────────────────────────────────────────────────────────────────────────


def test_given_a_detected_case_when_the_warning_is_accepted_later_then_the_window_starts_at_acceptance(clock):
    story = detected(clock)
    detected_at = story.violation.taken_at
    accepted_at = clock.advance(minutes=3)

    decision = machine.on_warning_accepted(story.case, accepted_at, RULES)

    case = decision.case
    assert case.state == State.WARNED
    assert case.warned_at == accepted_at
    assert case.deadline_at == accepted_at + RULES.window
    assert case.deadline_at != detected_at + RULES.window
    assert case.wake_at == case.deadline_at + RULES.lateness
    assert decision.effects == ()


def test_given_a_zone_with_its_own_window_when_the_warning_is_accepted_then_the_deadline_uses_that_window(clock):
    story = detected(clock)

    case = machine.on_warning_accepted(story.case, clock.now, RULES, window=timedelta(minutes=5)).case

    assert case.deadline_at == clock.now + timedelta(minutes=5)
    assert case.wake_at == clock.now + timedelta(minutes=5) + RULES.lateness


def test_given_a_warned_case_when_the_acceptance_is_reported_again_then_the_deadline_does_not_move(clock):
    story = warned(clock)
    clock.advance(minutes=4)

    decision = machine.on_warning_accepted(story.case, clock.now, RULES)

    assert not decision.changed
    assert decision.case.deadline_at == story.deadline


def test_given_a_detected_case_when_the_warning_fails_for_good_then_an_officer_reviews_it(clock):
    story = detected(clock)

    decision = machine.on_warning_failed(story.case, "number refused", clock.now)

    assert decision.case.state == State.REVIEW
    assert "number refused" in decision.case.reason
    assert decision.effects == ()
    assert decision.closed
    clock.advance(hours=1)
    assert not machine.on_wake(decision.case, RULES, clock.now).changed


def test_given_a_warned_case_when_a_late_failure_report_arrives_then_nothing_changes(clock):
    story = warned(clock)

    decision = machine.on_warning_failed(story.case, "late report", clock.now)

    assert not decision.changed
    assert decision.case.state == State.WARNED


# ── the car leaves ─────────────────────────────────────────────────────────────────────────


def test_given_a_detected_case_when_the_car_departs_then_it_is_moved_and_the_pending_warning_withdrawn(clock):
    story = detected(clock)

    decision = machine.on_departure(story.case, clock.advance(seconds=30), RULES, clock.now)

    assert decision.case.state == State.MOVED
    assert decision.effects == (WithdrawWarning(CASE_ID),)
    assert decision.closed


def test_given_a_warned_case_when_the_car_departs_before_the_deadline_then_it_is_moved_without_a_ticket(clock):
    story = warned(clock)
    clock.advance(minutes=6)

    decision = machine.on_departure(story.case, clock.now, RULES, clock.now)

    assert decision.case.state == State.MOVED
    assert decision.effects == ()
    assert decision.case.wake_at is None
    assert decision.case.closed_at == clock.now


def test_given_a_warned_case_when_the_car_is_seen_elsewhere_then_it_is_moved(clock):
    story = warned(clock)
    clock.advance(minutes=4)

    decision = machine.on_capture(story.case, capture(clock.now, meters_away=200, place="良睦路"), RULES, clock.now)

    assert decision.case.state == State.MOVED
    assert decision.effects == ()
    assert "elsewhere" in decision.case.reason


def test_given_a_detected_case_when_the_car_is_seen_elsewhere_then_it_is_moved_and_the_warning_withdrawn(clock):
    story = detected(clock)

    decision = machine.on_capture(story.case, capture(clock.advance(seconds=40), meters_away=RULES.same_place_m + 30),
                                  RULES, clock.now)

    assert decision.case.state == State.MOVED
    assert decision.effects == (WithdrawWarning(CASE_ID),)


def test_given_a_warned_case_when_the_car_is_captured_within_the_same_place_radius_then_it_is_evidence_only(clock):
    story = warned(clock)
    near = capture(clock.advance(minutes=2), meters_away=RULES.same_place_m - 10)

    decision = machine.on_capture(story.case, near, RULES, clock.now)

    assert decision.case.state == State.WARNED
    assert decision.case.latest_capture == near
    assert decision.effects == ()


def test_given_an_open_case_when_captures_and_departures_taken_before_the_violation_arrive_then_they_are_ignored(clock):
    story = warned(clock)
    before = story.violation.taken_at - timedelta(minutes=1)
    clock.advance(minutes=3)

    elsewhere = machine.on_capture(story.case, capture(before, meters_away=500), RULES, clock.now)
    at_the_place = machine.on_capture(story.case, capture(before), RULES, clock.now)
    departure = machine.on_departure(story.case, before, RULES, clock.now)

    for decision in (elsewhere, at_the_place, departure):
        assert not decision.changed
        assert decision.case == story.case
        assert decision.effects == ()


def test_given_a_newer_capture_at_the_place_when_an_older_one_arrives_late_then_the_newer_is_kept(clock):
    story = warned(clock)
    newer = capture(clock.advance(minutes=3))
    case = machine.on_capture(story.case, newer, RULES, clock.now).case

    decision = machine.on_capture(case, capture(clock.now - timedelta(minutes=1)), RULES, clock.advance(seconds=5))

    assert not decision.changed
    assert decision.case.latest_capture == newer


# ── the deadline ───────────────────────────────────────────────────────────────────────────


def test_given_a_warned_case_when_the_clock_wakes_it_before_wake_at_then_nothing_happens(clock):
    story = warned(clock)
    case = machine.on_capture(story.case, capture(story.deadline), RULES, story.deadline).case
    clock.set(story.deadline)  # at the deadline, but the lateness allowance has not passed

    decision = machine.on_wake(case, RULES, clock.now)

    assert not decision.changed
    assert decision.effects == ()
    assert decision.case.state == State.WARNED


@pytest.mark.parametrize("taken", [
    pytest.param(-RULES.capture_tolerance, id="deadline minus tolerance"),
    pytest.param(timedelta(0), id="at the deadline"),
    pytest.param(timedelta(seconds=20), id="after the deadline"),
])
def test_given_a_capture_at_the_place_at_the_deadline_when_the_case_wakes_then_it_is_ticketed_with_both_captures(
        clock, taken):
    story = warned(clock)
    fresh = capture(story.deadline + taken, meters_away=5)
    case = machine.on_capture(story.case, fresh, RULES, clock.set(story.deadline + taken)).case
    clock.set(case.wake_at)

    decision = machine.on_wake(case, RULES, clock.now)

    assert decision.case.state == State.TICKETED
    assert decision.effects == (IssueTicket(CASE_ID, story.violation, fresh),)
    assert decision.closed
    assert decision.case.wake_at is None


def test_given_only_a_capture_before_the_deadline_when_the_case_wakes_then_it_asks_the_camera_for_a_recheck(clock):
    story = warned(clock)
    stale = capture(story.deadline - RULES.capture_tolerance - timedelta(seconds=1))
    case = machine.on_capture(story.case, stale, RULES, clock.set(stale.taken_at)).case
    clock.set(case.wake_at)

    decision = machine.on_wake(case, RULES, clock.now)

    answer_by = clock.now + RULES.recheck_wait
    assert decision.case.state == State.RECHECKING
    assert decision.case.wake_at == answer_by + RULES.lateness, "late answers get the allowance, as at the deadline"
    assert decision.effects == (RequestRecheck(CASE_ID, "cam-wenyi-01", answer_by),)
    assert tickets(decision) == []


def test_given_no_capture_at_all_when_the_case_wakes_then_it_asks_for_a_recheck_and_does_not_ticket(clock):
    story = warned(clock)
    clock.set(story.case.wake_at)

    decision = machine.on_wake(story.case, RULES, clock.now)

    assert decision.case.state == State.RECHECKING
    assert [type(e) for e in decision.effects] == [RequestRecheck]


def test_given_a_rechecking_case_when_a_fresh_capture_arrives_then_it_is_ticketed_at_once(clock):
    story = rechecking(clock)
    fresh = capture(clock.advance(seconds=40), camera_id="cam-wenyi-01")

    decision = machine.on_capture(story.case, fresh, RULES, clock.advance(seconds=1))

    assert decision.case.state == State.TICKETED
    assert tickets(decision) == [IssueTicket(CASE_ID, story.violation, fresh)]


def test_given_a_rechecking_case_when_the_car_departs_then_it_is_moved_without_a_ticket(clock):
    story = rechecking(clock)

    decision = machine.on_departure(story.case, clock.advance(seconds=30), RULES, clock.now)

    assert decision.case.state == State.MOVED
    assert decision.effects == ()


def test_given_a_rechecking_case_when_the_camera_never_answers_then_it_is_unconfirmed_at_the_next_wake(clock):
    story = rechecking(clock)
    answer_by = story.case.wake_at

    too_early = machine.on_wake(story.case, RULES, clock.set(answer_by - timedelta(seconds=1)))
    decision = machine.on_wake(story.case, RULES, clock.set(answer_by))

    assert not too_early.changed
    assert decision.case.state == State.UNCONFIRMED
    assert decision.effects == ()
    assert decision.closed


def test_given_a_rechecking_case_when_only_a_stale_capture_arrives_then_it_is_unconfirmed_not_ticketed(clock):
    story = rechecking(clock)
    stale = capture(story.deadline - timedelta(minutes=1))
    case = machine.on_capture(story.case, stale, RULES, clock.advance(seconds=10)).case
    assert case.state == State.RECHECKING

    decision = machine.on_wake(case, RULES, clock.set(case.wake_at))

    assert decision.case.state == State.UNCONFIRMED
    assert tickets(decision) == []


def test_given_a_deadline_missed_by_hours_when_the_case_finally_wakes_without_a_fresh_capture_then_it_rechecks(clock):
    story = warned(clock)
    old = capture(clock.advance(minutes=5))
    case = machine.on_capture(story.case, old, RULES, clock.now).case
    clock.set(story.deadline + timedelta(hours=3))  # the workers were down

    decision = machine.on_wake(case, RULES, clock.now)

    assert decision.case.state == State.RECHECKING
    assert decision.effects == (RequestRecheck(CASE_ID, "cam-wenyi-01", clock.now + RULES.recheck_wait),)
    assert decision.case.wake_at == clock.now + RULES.recheck_wait + RULES.lateness

    unanswered = machine.on_wake(decision.case, RULES, clock.advance(RULES.recheck_wait + RULES.lateness))
    assert unanswered.case.state == State.UNCONFIRMED
    assert tickets(unanswered) == []


# ── closed cases and operators ─────────────────────────────────────────────────────────────


def _ticketed(clock) -> Case:
    story = rechecking(clock)
    return machine.on_capture(story.case, capture(clock.advance(seconds=10)), RULES, clock.now).case


def _moved(clock) -> Case:
    story = warned(clock)
    return machine.on_departure(story.case, clock.advance(minutes=1), RULES, clock.now).case


def _review(clock) -> Case:
    return machine.on_warning_failed(detected(clock).case, "number refused", clock.now).case


def _exempt(clock) -> Case:
    return machine.open_case(CASE_ID, PLATE, "hospital", capture(clock.now), Opening(True, "emergency access"),
                             clock.now).case


def _unconfirmed(clock) -> Case:
    story = rechecking(clock)
    return machine.on_wake(story.case, RULES, clock.set(story.case.wake_at)).case


def _cancelled(clock) -> Case:
    return machine.cancel(warned(clock).case, "wrong plate read", clock.now).case


CLOSED = {State.TICKETED: _ticketed, State.MOVED: _moved, State.REVIEW: _review, State.EXEMPT: _exempt,
          State.UNCONFIRMED: _unconfirmed, State.CANCELLED: _cancelled}


@pytest.mark.parametrize("state", list(CLOSED))
def test_given_a_closed_case_when_any_event_arrives_then_nothing_changes(clock, state):
    case = CLOSED[state](clock)
    assert case.state == state and not case.is_open
    clock.advance(hours=2)
    fresh = capture(clock.now - timedelta(seconds=10))

    decisions = [
        machine.on_capture(case, fresh, RULES, clock.now),
        machine.on_capture(case, capture(clock.now, meters_away=300), RULES, clock.now),
        machine.on_violation(case, fresh, RULES, clock.now),
        machine.on_departure(case, clock.now, RULES, clock.now),
        machine.on_warning_accepted(case, clock.now, RULES),
        machine.on_warning_failed(case, "late", clock.now),
        machine.on_wake(case, RULES, clock.now),
    ]

    for decision in decisions:
        assert not decision.changed
        assert decision.case == case
        assert decision.effects == ()


@pytest.mark.parametrize("make", [detected, warned, rechecking], ids=["detected", "warned", "rechecking"])
def test_given_an_open_case_when_an_operator_cancels_it_then_it_is_cancelled_with_the_reason(clock, make):
    story = make(clock)

    decision = machine.cancel(story.case, "wrong plate read", clock.advance(seconds=5))

    assert decision.case.state == State.CANCELLED
    assert decision.case.reason == "wrong plate read"
    assert decision.case.closed_at == clock.now
    assert decision.case.wake_at is None
    assert decision.effects == (WithdrawWarning(CASE_ID),)


def test_given_a_case_under_review_when_an_operator_cancels_it_then_it_is_cancelled(clock):
    decision = machine.cancel(_review(clock), "owner identified as exempt", clock.now)

    assert decision.case.state == State.CANCELLED


def test_given_a_ticketed_case_when_an_operator_cancels_it_then_nothing_changes(clock):
    case = _ticketed(clock)

    decision = machine.cancel(case, "too late", clock.now)

    assert not decision.changed
    assert decision.case.state == State.TICKETED


# ── a further violation for the same plate ─────────────────────────────────────────────────


def test_given_an_open_case_when_a_violation_is_detected_elsewhere_then_the_case_moves_and_a_new_case_is_needed(clock):
    story = warned(clock)
    elsewhere = capture(clock.advance(minutes=3), meters_away=800, camera_id="cam-liangmu-02", place="良睦路")

    decision = machine.on_violation(story.case, elsewhere, RULES, clock.now)

    assert decision.case.state == State.MOVED
    assert machine.needs_new_case(decision, elsewhere, RULES)


def test_given_an_open_case_when_a_violation_is_detected_at_the_same_place_then_it_only_adds_evidence(clock):
    story = warned(clock)
    again = capture(clock.advance(minutes=3), meters_away=10)

    decision = machine.on_violation(story.case, again, RULES, clock.now)

    assert decision.case.state == State.WARNED
    assert decision.case.latest_capture == again
    assert not machine.needs_new_case(decision, again, RULES)


def test_given_a_rechecking_case_when_a_violation_at_the_same_place_answers_then_it_tickets_without_a_new_case(clock):
    """The same event must not both prove the ticket and open a second case (with a second warning)."""
    story = rechecking(clock)
    again = capture(clock.advance(seconds=30), meters_away=10)

    decision = machine.on_violation(story.case, again, RULES, clock.now)

    assert decision.case.state == State.TICKETED
    assert tickets(decision) == [IssueTicket(CASE_ID, story.violation, again)]
    assert not machine.needs_new_case(decision, again, RULES)


# ── properties ─────────────────────────────────────────────────────────────────────────────

bearings = st.floats(min_value=0, max_value=360)
STEPS = {
    "advance": st.tuples(st.just("advance"), st.integers(min_value=1, max_value=900)),
    "accept": st.tuples(st.just("accept")),
    # a capture near the place (either side of the same-place radius), taken shortly before now
    "capture_near": st.tuples(st.just("capture"), st.floats(min_value=0, max_value=60), bearings,
                              st.integers(min_value=-120, max_value=0)),
    # a capture anywhere, possibly long ago (even before the violation)
    "capture_any": st.tuples(st.just("capture"), st.floats(min_value=0, max_value=2000), bearings,
                             st.integers(min_value=-1200, max_value=0)),
    # a capture taken around the deadline, arriving then or later
    "capture_near_deadline": st.tuples(st.just("capture_near_deadline"), st.floats(min_value=0, max_value=60),
                                       bearings, st.integers(min_value=-30, max_value=30)),
    "departure": st.tuples(st.just("departure"), st.integers(min_value=-1200, max_value=0)),
    "wake": st.tuples(st.just("wake")),
    "wake_when_due": st.tuples(st.just("wake_when_due"), st.integers(min_value=0, max_value=4 * 3600)),
    "fail": st.tuples(st.just("fail")),
}
# Weighted so that long stories (warned, captured at the deadline, woken) are common.
WEIGHTS = {"advance": 2, "accept": 2, "capture_near": 3, "capture_any": 1, "capture_near_deadline": 3,
           "departure": 1, "wake": 1, "wake_when_due": 3, "fail": 1}
events = st.sampled_from([k for k, w in WEIGHTS.items() for _ in range(w)]).flatmap(STEPS.__getitem__)


@settings(max_examples=300, deadline=None)
@given(st.lists(events, min_size=3, max_size=30), st.sampled_from([True, True, True, False]))
def test_whatever_happens_a_ticket_needs_a_warning_and_a_fresh_capture_at_the_place_and_comes_at_most_once(
        script, reachable):
    now = START
    violation = capture(now)
    now += timedelta(seconds=1)
    decision = machine.open_case(CASE_ID, PLATE, "yuhang", violation, Opening(owner_reachable=reachable), now)
    case = decision.case
    fed: list[Sighting] = []
    deadline: datetime | None = None
    issued: list[IssueTicket] = []

    for step in script:
        kind = step[0]
        before = case
        if kind == "advance":
            now += timedelta(seconds=step[1])
            continue
        if kind == "accept":
            decision = machine.on_warning_accepted(case, now, RULES)
            if before.state == State.DETECTED:
                deadline = now + RULES.window
        elif kind in ("capture", "capture_near_deadline"):
            _, meters, bearing, offset = step
            if kind == "capture_near_deadline" and case.deadline_at is not None:
                taken_at = case.deadline_at + timedelta(seconds=offset)
                now = max(now, taken_at)
            else:
                taken_at = now + timedelta(seconds=offset)
            seen = capture(taken_at, meters_away=meters, bearing=bearing)
            fed.append(seen)
            decision = machine.on_capture(case, seen, RULES, now)
        elif kind == "departure":
            decision = machine.on_departure(case, now + timedelta(seconds=step[1]), RULES, now)
        elif kind == "wake":
            decision = machine.on_wake(case, RULES, now)
        elif kind == "wake_when_due":
            if case.wake_at is not None:
                now = max(now, case.wake_at + timedelta(seconds=step[1]))
            decision = machine.on_wake(case, RULES, now)
        else:
            decision = machine.on_warning_failed(case, "number refused", now)

        if not before.is_open:
            assert not decision.changed and decision.effects == (), f"{kind} changed a {before.state} case"
        for effect in decision.effects:
            if isinstance(effect, IssueTicket):
                issued.append(effect)
                assert deadline is not None, "ticket without an accepted warning"
                assert effect.violation == violation
                assert effect.fresh_capture in fed
                fresh = effect.fresh_capture
                assert geodesic((violation.lat, violation.lon), (fresh.lat, fresh.lon)).meters <= RULES.same_place_m
                assert effect.fresh_capture.taken_at >= deadline - RULES.capture_tolerance
                assert effect.fresh_capture.taken_at >= violation.taken_at
                assert now >= deadline + RULES.lateness
                assert decision.case.state == State.TICKETED
        for text in (decision.case.reason, decision.note):
            assert not text or reasons.parse(text), f"{text!r} is not from the reasons catalogue (the console cannot translate it)"
        case = decision.case

    assert len(issued) <= 1


# ── gateways that report delivery ─────────────────────────────────────────────────────────

STRICT = Rules(require_delivery_report=True)


def test_given_a_gateway_that_reports_delivery_when_the_warning_was_never_reported_delivered_then_no_ticket_but_review(clock):
    story = warned(clock)
    clock.advance(RULES.window)
    story.case = machine.on_capture(story.case, capture(clock.now), STRICT, clock.now).case
    clock.advance(RULES.lateness)

    decision = machine.on_wake(story.case, STRICT, clock.now)

    assert decision.case.state == State.REVIEW
    assert tickets(decision) == []
    assert "never reported delivered" in decision.case.reason


def test_given_a_gateway_that_reports_delivery_when_the_warning_was_delivered_then_the_car_still_there_is_ticketed(clock):
    story = warned(clock)
    clock.advance(seconds=3)
    story.case = machine.on_warning_delivered(story.case, clock.now).case
    clock.advance(RULES.window)
    fresh = capture(clock.now)
    story.case = machine.on_capture(story.case, fresh, STRICT, clock.now).case
    clock.advance(RULES.lateness)

    decision = machine.on_wake(story.case, STRICT, clock.now)

    assert decision.case.state == State.TICKETED
    assert tickets(decision) == [IssueTicket(CASE_ID, story.violation, fresh)]


def test_given_a_warned_case_when_the_warning_is_reported_undelivered_then_it_goes_to_review(clock):
    story = warned(clock)
    clock.advance(seconds=30)

    decision = machine.on_warning_undelivered(story.case, "absent subscriber", clock.now)

    assert decision.case.state == State.REVIEW and decision.closed
    assert "absent subscriber" in decision.case.reason


def test_given_a_violation_reported_long_after_it_was_seen_when_opened_then_no_warning_but_review(clock):
    violation = capture(clock.now)
    clock.advance(RULES.max_report_delay + timedelta(minutes=1))

    decision = machine.open_case(CASE_ID, PLATE, "yuhang", violation, Opening(owner_reachable=True), clock.now, RULES)

    assert decision.case.state == State.REVIEW
    assert decision.effects == ()
    assert "too late to warn" in decision.case.reason


def test_given_a_camera_that_reported_late_when_opened_then_review_even_if_we_read_it_at_once(clock):
    violation = capture(clock.now)
    reported_at = clock.now + RULES.max_report_delay + timedelta(seconds=1)
    clock.set(reported_at + timedelta(seconds=1))

    decision = machine.open_case(CASE_ID, PLATE, "yuhang", violation,
                                 Opening(owner_reachable=True, reported_at=reported_at), clock.now, RULES)

    assert decision.case.state == State.REVIEW and "too late to warn" in decision.case.reason


def test_given_our_own_backlog_when_a_violation_the_camera_reported_at_once_is_read_late_then_it_is_warned(clock):
    """Our outage is not the camera's lateness: the window starts at acceptance anyway."""
    violation = capture(clock.now)
    reported_at = clock.now + timedelta(seconds=2)
    clock.advance(RULES.max_report_delay + timedelta(minutes=10))

    decision = machine.open_case(CASE_ID, PLATE, "yuhang", violation,
                                 Opening(owner_reachable=True, reported_at=reported_at), clock.now, RULES)

    assert decision.case.state == State.DETECTED
    assert decision.effects == (SendWarning(CASE_ID),)
