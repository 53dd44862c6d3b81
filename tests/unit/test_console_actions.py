"""What an operator may do to a case (pipeline/console/actions.py): the rules, without PostgreSQL.

A review case here: a violation at 文一西路海创园南门 with no phone on record, a 10 minute window.
"""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from geopy.distance import geodesic

from pipeline.cases import machine
from pipeline.cases.machine import IssueTicket, Opening, Rules, SendWarning, Sighting, State, WithdrawWarning
from pipeline.console import actions
from pipeline.console.actions import Refused
from pipeline.console.auth import Operator

pytestmark = pytest.mark.unit

RULES = Rules()
WINDOW = timedelta(minutes=10)
SEEN = datetime(2026, 11, 26, 10, 42, tzinfo=UTC)
PLACE = (30.27930, 120.00395)


def capture(taken_at: datetime, meters_away: float = 0.0, event_id: str = "evt-fresh-0001") -> Sighting:
    p = geodesic(meters=meters_away).destination(PLACE, 90)
    return Sighting(event_id, "cam-wenyi-01", taken_at, p.latitude, p.longitude, "文一西路海创园南门", "https://img/x.jpg")


VIOLATION = capture(SEEN, event_id="evt-violation-1")


def review_case():
    return machine.open_case(UUID(int=1), "浙A12345", "yuhang", VIOLATION, Opening(owner_reachable=False),
                             SEEN + timedelta(seconds=1), RULES).case


def warned_case():
    opened = machine.open_case(UUID(int=2), "浙A12345", "yuhang", VIOLATION, Opening(owner_reachable=True),
                               SEEN + timedelta(seconds=1), RULES).case
    return machine.on_warning_accepted(opened, SEEN + timedelta(seconds=2), RULES).case


def test_the_review_case_under_test_is_in_review():
    assert review_case().state == State.REVIEW


# ── reasons and roles ───────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("text", [None, "", "  ", "ok"])
def test_an_action_without_a_real_reason_is_refused(text):
    with pytest.raises(Refused) as refused:
        actions.check_reason(text)
    assert refused.value.key == "reason_missing"


def test_a_reason_is_kept_with_its_whitespace_tidied_and_bounded():
    assert actions.check_reason("  driver  showed\n a permit ") == "driver showed a permit"
    with pytest.raises(Refused, match="reason_too_long"):
        actions.check_reason("x" * 501)


def test_only_a_supervisor_may_act():
    actions.check_can_act(Operator("li", "supervisor"))
    with pytest.raises(Refused, match="supervisors_only"):
        actions.check_can_act(Operator("wang", "viewer"))


def test_operators_are_named_as_actors_in_the_audit_log():
    assert Operator("li", "supervisor").actor == "operator:li"


# ── tickets and closing ─────────────────────────────────────────────────────────────────────


def test_a_ticket_is_voided_once():
    actions.check_voidable({"voided_at": None})
    with pytest.raises(Refused, match="ticket_already_void"):
        actions.check_voidable({"voided_at": SEEN})
    with pytest.raises(Refused, match="no_ticket"):
        actions.check_voidable(None)


def test_closing_an_open_case_cancels_it_and_withdraws_a_pending_warning():
    decision = actions.closing(warned_case(), "wrong plate read", SEEN + timedelta(minutes=1))
    assert decision.case.state == State.CANCELLED
    assert decision.case.reason == "wrong plate read"
    assert decision.effects == (WithdrawWarning(UUID(int=2)),)


def test_a_review_case_can_be_closed_too():
    assert actions.closing(review_case(), "not pursued", SEEN).case.state == State.CANCELLED


def test_a_decided_case_cannot_be_closed():
    ticketed = replace(warned_case(), state=State.TICKETED)
    with pytest.raises(Refused) as refused:
        actions.closing(ticketed, "too late", SEEN)
    assert refused.value.key == "case_not_open" and refused.value.params == {"state": "ticketed"}


# ── warning again ───────────────────────────────────────────────────────────────────────────


def test_warning_again_opens_a_new_case_that_sends_a_warning_and_cancels_the_review_case():
    now = SEEN + timedelta(hours=1)  # long after the violation: the officer decides anyway
    review, opened = actions.warning_again(review_case(), UUID(int=9), True, False, [], RULES, "phone now on record",
                                           now)
    assert review.case.state == State.CANCELLED and str(UUID(int=9)) in review.case.reason
    assert opened.case.state == State.DETECTED and opened.case.violation == VIOLATION
    assert opened.effects == (SendWarning(UUID(int=9)),)


def test_warning_again_needs_a_phone_no_other_open_case_and_no_departure():
    case = review_case()
    with pytest.raises(Refused, match="no_phone"):
        actions.warning_again(case, UUID(int=9), False, False, [], RULES, "try", SEEN)
    with pytest.raises(Refused, match="plate_has_open_case"):
        actions.warning_again(case, UUID(int=9), True, True, [], RULES, "try", SEEN)
    with pytest.raises(Refused, match="car_left"):
        actions.warning_again(case, UUID(int=9), True, False, [SEEN + timedelta(minutes=3)], RULES, "try", SEEN)


def test_only_a_review_case_is_warned_again():
    with pytest.raises(Refused, match="not_in_review"):
        actions.warning_again(warned_case(), UUID(int=9), True, False, [], RULES, "try", SEEN)


# ── ticketing on review: never blindly ──────────────────────────────────────────────────────


def test_a_capture_at_the_place_a_window_after_the_violation_tickets_a_review_case():
    fresh = capture(SEEN + WINDOW + timedelta(seconds=5))
    now = SEEN + WINDOW + timedelta(minutes=1)
    decision = actions.ticketing_on_review(review_case(), fresh, [], RULES, WINDOW, "officer confirmed on site", now)
    assert decision.case.state == State.TICKETED
    assert decision.case.deadline_at == SEEN + WINDOW
    assert decision.effects == (IssueTicket(UUID(int=1), VIOLATION, fresh),)


@pytest.mark.parametrize("evidence, departures, problem", [
    (VIOLATION, [], "evidence_is_the_violation"),
    (capture(SEEN + timedelta(minutes=5)), [], "evidence_too_early"),
    (capture(SEEN + timedelta(minutes=12), meters_away=200), [], "evidence_elsewhere"),
    (capture(SEEN + timedelta(minutes=12)), [SEEN + timedelta(minutes=3)], "evidence_after_departure"),
    (capture(SEEN + timedelta(minutes=17)), [], "evidence_in_future"),
])
def test_a_ticket_on_review_without_fresh_evidence_is_refused(evidence, departures, problem):
    now = SEEN + timedelta(minutes=15)
    with pytest.raises(Refused) as refused:
        actions.ticketing_on_review(review_case(), evidence, departures, RULES, WINDOW, "sure", now)
    assert refused.value.key == problem


@pytest.mark.parametrize("taken, problem", [
    pytest.param(WINDOW - RULES.capture_tolerance - timedelta(seconds=1), "evidence_too_early", id="before the deadline"),
    pytest.param(WINDOW - RULES.capture_tolerance, None, id="the deadline less the tolerance"),
    pytest.param(WINDOW + RULES.capture_bound, None, id="the bound after the deadline"),
    pytest.param(WINDOW + RULES.capture_bound + timedelta(seconds=1), "evidence_too_late", id="after the bound"),
    pytest.param(timedelta(days=2), "evidence_too_late", id="two days later"),
])
def test_a_ticket_on_review_takes_only_a_capture_between_the_deadline_and_the_bound_after_it(taken, problem):
    """Issue 10: 'any capture one window after the violation, even two days later' no longer does."""
    fresh = capture(SEEN + taken)
    now = SEEN + timedelta(days=3)

    assert actions.evidence_problem(review_case(), fresh, [], RULES, WINDOW, now) == problem


def test_a_ticket_on_review_measures_the_capture_against_the_real_deadline_moved_by_a_late_delivery():
    warned = warned_case()  # accepted at SEEN + 2 s
    phone_got_it = SEEN + timedelta(minutes=8)
    moved = machine.on_warning_delivered(warned, phone_got_it, RULES, phone_got_it).case
    review = machine.on_warning_undelivered(moved, "later report: handset full", phone_got_it).case
    assert review.state == State.REVIEW and review.deadline_at == phone_got_it + WINDOW

    at_first_deadline = capture(SEEN + timedelta(seconds=2) + WINDOW + timedelta(seconds=10))
    after_real_deadline = capture(phone_got_it + WINDOW + timedelta(seconds=10))
    now = SEEN + timedelta(hours=1)

    assert actions.evidence_problem(review, at_first_deadline, [], RULES, WINDOW, now) == "evidence_too_early"
    assert actions.evidence_problem(review, after_real_deadline, [], RULES, WINDOW, now) is None
    assert actions.evidence_bounds(review, RULES, WINDOW) == (phone_got_it + WINDOW - RULES.capture_tolerance,
                                                              phone_got_it + WINDOW + RULES.capture_bound)


def test_a_ticket_on_review_in_a_first_offence_zone_is_a_warning_notice():
    case = replace(review_case(), caution="no ticket nor warning notice in the last 12 months: "
                                          "a first-offence warning notice instead of a ticket")
    fresh = capture(SEEN + WINDOW + timedelta(seconds=5))

    decision = actions.ticketing_on_review(case, fresh, [], RULES, WINDOW, "seen on site", SEEN + timedelta(minutes=15))

    assert decision.case.state == State.CAUTIONED
    assert [type(e) for e in decision.effects] == [machine.IssueCaution]


def test_a_ticket_to_confirm_is_confirmed_or_rejected_once_and_nothing_else_is():
    opening = Opening(owner_reachable=True, zone=machine.ZoneRules(confirm_tickets=True))
    case = machine.open_case(UUID(int=3), "浙A12345", "yuhang", VIOLATION, opening, SEEN, RULES).case
    case = machine.on_warning_accepted(case, SEEN + timedelta(seconds=2), RULES).case
    case = machine.on_capture(case, capture(case.deadline_at), RULES, case.deadline_at).case
    pending = machine.on_wake(case, RULES, case.wake_at).case
    assert pending.state == State.TO_CONFIRM

    confirmed = actions.confirming(pending, "evidence checked", SEEN + timedelta(minutes=20))
    rejected = actions.rejecting(pending, "plate misread", SEEN + timedelta(minutes=20))

    assert confirmed.case.state == State.TICKETED and [type(e) for e in confirmed.effects] == [IssueTicket]
    assert rejected.case.state == State.REJECTED and rejected.effects == ()
    for act in (actions.confirming, actions.rejecting):
        with pytest.raises(Refused, match="not_to_confirm"):
            act(confirmed.case, "again", SEEN + timedelta(minutes=21))


@pytest.mark.parametrize("months, days, confirm, expected", [
    ("12", "", "yes", {"first_offence_months": 12, "new_camera_days": None, "confirm_tickets": True}),
    ("", "30", "no", {"first_offence_months": None, "new_camera_days": 30, "confirm_tickets": False}),
    (" 0 ", "0", "", {"first_offence_months": 0, "new_camera_days": 0, "confirm_tickets": None}),
])
def test_a_zones_own_rules_are_read_from_the_form(months, days, confirm, expected):
    assert actions.checked_zone_rules(months, days, confirm) == expected


@pytest.mark.parametrize("months, days, confirm", [("-1", "", ""), ("twelve", "", ""), ("", "99999", ""),
                                                   ("", "", "maybe")])
def test_a_zone_rule_that_is_not_a_number_in_range_is_refused(months, days, confirm):
    with pytest.raises(Refused, match="bad_zone_rule"):
        actions.checked_zone_rules(months, days, confirm)


def test_the_zone_book_fills_in_the_citys_rules_where_a_zone_has_none():
    from pipeline.lookups.zones import ZoneBook

    book = ZoneBook(600, windows={"school": 300}, defaults=machine.ZoneRules(confirm_tickets=True),
                    own_rules={"liangzhu": {"first_offence_months": 12}, "school": {"confirm_tickets": False}})

    assert book.rules_for("liangzhu") == machine.ZoneRules(window=WINDOW, first_offence_months=12, confirm_tickets=True)
    assert book.rules_for("school") == machine.ZoneRules(window=timedelta(minutes=5), confirm_tickets=False)
    assert book.rules_for("yuhang").confirm_tickets


def test_a_departure_after_the_fresh_capture_does_not_undo_it():
    fresh = capture(SEEN + timedelta(minutes=12))
    decision = actions.ticketing_on_review(review_case(), fresh, [SEEN + timedelta(minutes=13)], RULES, WINDOW, "seen",
                                           SEEN + timedelta(minutes=15))
    assert decision.case.state == State.TICKETED


def test_only_a_review_case_is_ticketed_by_an_officer():
    with pytest.raises(Refused, match="not_in_review"):
        actions.ticketing_on_review(warned_case(), capture(SEEN + timedelta(minutes=12)), [], RULES, WINDOW, "x",
                                    SEEN + timedelta(minutes=15))


def test_the_console_offers_only_usable_captures_as_evidence():
    usable = capture(SEEN + timedelta(minutes=11), event_id="evt-usable-01")
    early = capture(SEEN + timedelta(minutes=2), event_id="evt-early-001")
    now = SEEN + timedelta(minutes=15)
    assert actions.usable_evidence(review_case(), [VIOLATION, early, usable], [], RULES, WINDOW, now) == [usable]
    assert actions.usable_evidence(warned_case(), [usable], [], RULES, WINDOW, now) == []


# ── whitelist ───────────────────────────────────────────────────────────────────────────────


def test_a_whitelisted_plate_is_normalized_and_must_be_valid():
    assert actions.checked_plate("浙a·0120f") == "浙A0120F"
    with pytest.raises(Refused) as refused:
        actions.checked_plate("ABC123")
    assert refused.value.key == "bad_plate" and "province" in refused.value.params["problem"]


def test_a_zone_exempt_overnight_is_exempt_at_night_and_pursued_by_day():
    from pipeline.lookups.zones import ZoneBook

    book = ZoneBook(600, exempt_zones={"market": "night deliveries"}, exempt_hours={"market": (22, 7)})

    assert book.exemption("浙A12345", "market", 23) and book.exemption("浙A12345", "market", 6)
    assert book.exemption("浙A12345", "market", 7) is None
    assert book.exemption("浙A12345", "market", 14) is None
    assert book.exemption("浙A12345", "yuhang", 23) is None
