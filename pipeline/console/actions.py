"""What an operator may do to a case, a ticket or the rules, each with a reason and an audit entry.

Two halves. The rules (``check_*``, ``closing``, ``warning_again``, ``ticketing_on_review``) are
pure: they take the case, what was looked up and ``now``, and either refuse (``Refused``) or
return the state machine's ``Decision``. The actions (``void_ticket``, ``close_case``, ...) run
one transaction each: lock the rows, ask the rules, write the change through the case store
(case row, audit entry with the operator as actor, outbox rows), and commit together.

Resolving a review case (no phone on record, or the warning failed):
- warn again (when a phone is on record now, and no departure was seen): the violation gets a new
  case that starts at ``detected`` and sends a fresh warning; the review case closes as cancelled,
  pointing to it. The new case follows the ordinary rules, so it is ticketed only with a fresh
  capture after its own deadline;
- ticket with evidence: only with a capture at the same place taken between the driver's real
  deadline (less the capture tolerance) and ``Rules.capture_bound`` after it, with no departure
  seen in between (never blindly; ``machine.review_evidence_problem``). For a case never warned
  the deadline is a window after the violation. A zone's warning-notice rule still applies;

Confirming a ticket (zones that require it): an officer confirms a ``to_confirm`` case (the ticket
is issued, published and sent) or rejects it with a reason (it never takes effect).
- ask the camera for a fresh capture (its answer is kept on the plate and offered as evidence);
- close: the case is cancelled.
"""

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Awaitable, Callable
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import asyncpg

from pipeline.cameras import registry
from pipeline.cases import machine, store
from pipeline.cases.machine import Case, Decision, Rules, Sighting, State
from pipeline.cases.reasons import why
from pipeline.cases.effects import Topics
from pipeline.console.auth import Operator
from pipeline.lookups.owners import OwnerAnswer
from pipeline.tickets import chain
from schemas import events
from schemas.plates import normalize_plate, plate_problem

REASON_MIN, REASON_MAX = 3, 500


class Refused(Exception):
    """An action that the rules do not allow; ``key`` names the explanation (see ``i18n``)."""

    def __init__(self, key: str, **params):
        super().__init__(key, params)
        self.key = key
        self.params = params


@dataclass(frozen=True)
class Desk:
    """What the actions need from the worker that serves the console."""

    pool: asyncpg.Pool
    topics: Topics
    rules: Rules
    ticket_prefix: str
    timezone: ZoneInfo
    window_for: Callable[[str], float]
    """A zone's warning window in seconds."""
    carry_out: Callable[..., Awaitable[None]]
    """``CaseEffects.carry_out``: a decision's effects (warning SMS, ticket and its SMS), the pipeline's way."""
    owner_of: Callable[..., Awaitable[OwnerAnswer]]
    """``CaseEffects.owner_of``: a case's owner as the registries say now."""


# ── the rules (pure) ─────────────────────────────────────────────────────────────────────────


def check_reason(text: str | None) -> str:
    reason = " ".join((text or "").split())
    if len(reason) < REASON_MIN:
        raise Refused("reason_missing", min=REASON_MIN)
    if len(reason) > REASON_MAX:
        raise Refused("reason_too_long", max=REASON_MAX)
    return reason


def check_can_act(operator: Operator) -> None:
    if not operator.can_act:
        raise Refused("supervisors_only")


def check_voidable(ticket: dict | None) -> None:
    if ticket is None:
        raise Refused("no_ticket")
    if ticket["voided_at"] is not None:
        raise Refused("ticket_already_void")


def closing(case: Case, reason: str, now: datetime) -> Decision:
    """An open case, or one waiting for review, is cancelled."""
    decision = machine.cancel(case, reason, now)
    if not decision.changed:
        raise Refused("case_not_open", state=case.state.value)
    return decision


def _in_review(case: Case) -> None:
    if case.state != State.REVIEW:
        raise Refused("not_in_review", state=case.state.value)


def warning_again(case: Case, new_case_id: UUID, phone_on_record: bool, plate_has_open_case: bool,
                  departures: list[datetime], rules: Rules, reason: str, now: datetime,
                  plate_type: str | None = None) -> tuple[Decision, Decision]:
    """Warn the owner of a review case now: (the review case cancelled, a new case sending the warning)."""
    _in_review(case)
    if any(d >= case.violation.taken_at for d in departures):
        raise Refused("car_left")
    if not phone_on_record:
        raise Refused("no_phone")
    if plate_has_open_case:
        raise Refused("plate_has_open_case")
    # An officer warns on purpose, however long ago the violation was reported: no report-delay rule.
    opened = machine.open_case(new_case_id, case.plate, case.zone, case.violation,
                               machine.Opening(owner_reachable=True), now, replace(rules, max_report_delay=timedelta.max))
    # The new case keeps the zone's rules decided for the violation (warning notice, confirmation).
    opened = Decision(replace(opened.case, window=case.window, caution=case.caution, confirm=case.confirm,
                              plate_type=plate_type or case.plate_type), opened.effects)
    return machine.cancel(case, why("warned_again", case_id=new_case_id, detail=reason), now), opened


def evidence_problem(case: Case, capture: Sighting, departures: list[datetime], rules: Rules,
                     window: timedelta, now: datetime) -> str | None:
    """Why ``capture`` cannot serve as the fresh capture for a ticket on review (a key), or None:
    the machine's evidence timing (``machine.review_evidence_problem``), with the case's window."""
    return machine.review_evidence_problem(replace(case, window=case.window or window), capture, departures, rules,
                                           now)


def evidence_bounds(case: Case, rules: Rules, window: timedelta) -> tuple[datetime, datetime]:
    """The earliest and latest time a fresh capture for a ticket on review may have been taken."""
    return machine.evidence_window(machine.review_deadline(replace(case, window=case.window or window), rules), rules)


def ticketing_on_review(case: Case, capture: Sighting, departures: list[datetime], rules: Rules,
                        window: timedelta, reason: str, now: datetime) -> Decision:
    """Ticket a review case on an officer's decision, with a fresh capture as the second piece of evidence."""
    _in_review(case)
    problem = evidence_problem(case, capture, departures, rules, window, now)
    if problem:
        raise Refused(problem)
    return machine.ticket_on_review(replace(case, window=case.window or window), capture, rules, reason, now)


def confirming(case: Case, reason: str, now: datetime) -> Decision:
    """A ticket waiting for confirmation takes effect."""
    decision = machine.confirm_ticket(case, reason, now)
    if not decision.changed:
        raise Refused("not_to_confirm", state=case.state.value)
    return decision


def rejecting(case: Case, reason: str, now: datetime) -> Decision:
    """A ticket waiting for confirmation never takes effect."""
    decision = machine.reject_ticket(case, reason, now)
    if not decision.changed:
        raise Refused("not_to_confirm", state=case.state.value)
    return decision


def checked_zone_rules(first_offence_months: str, new_camera_days: str, confirm_tickets: str) -> dict:
    """A zone's own rules from the rules page: a number of months / days (empty: the city's
    default), and 'yes', 'no' or '' (the city's default) for confirmation."""
    rules = {}
    for name, text, top in (("first_offence_months", first_offence_months, 120), ("new_camera_days", new_camera_days, 3650)):
        text = (text or "").strip()
        if text:
            if not text.isdigit() or int(text) > top:
                raise Refused("bad_zone_rule", name=name, top=top)
            rules[name] = int(text)
        else:
            rules[name] = None
    if confirm_tickets not in ("", "yes", "no", None):
        raise Refused("bad_zone_rule", name="confirm_tickets", top="yes/no")
    rules["confirm_tickets"] = None if not confirm_tickets else confirm_tickets == "yes"
    return rules


def usable_evidence(case: Case, captures: list[Sighting], departures: list[datetime], rules: Rules,
                    window: timedelta, now: datetime) -> list[Sighting]:
    """The captures an officer may pick as the fresh evidence for a ticket on review."""
    if case.state != State.REVIEW:
        return []
    return [c for c in captures if evidence_problem(case, c, departures, rules, window, now) is None]


def checked_plate(raw: str) -> str:
    plate = normalize_plate(raw or "")
    problem = plate_problem(plate)
    if problem:
        raise Refused("bad_plate", problem=problem)
    return plate


# ── the actions (one transaction each) ─────────────────────────────────────────────────────


async def void_ticket(desk: Desk, operator: Operator, number: str, reason: str, now: datetime) -> dict:
    """Void a ticket and tell the owner, in one transaction: the ticket's own SMS, if it has not left
    yet, is withdrawn (the owner never hears of the ticket); otherwise one SMS says the notice is
    withdrawn (kind ``ticket_withdrawn``, once per case like every SMS). ``owner_told``: ``sms``,
    ``not_sent`` (the ticket's SMS was withdrawn instead) or ``no_phone``."""
    check_can_act(operator)
    reason = check_reason(reason)
    async with desk.pool.acquire() as conn, conn.transaction():
        ticket = await conn.fetchrow("SELECT * FROM tickets WHERE number = $1 FOR UPDATE", number.strip().upper())
        check_voidable(dict(ticket) if ticket else None)
        await chain.void(conn, desk.topics.tickets, ticket["number"], reason, operator.actor, now)
        case = await _locked_case(conn, ticket["case_id"])
        unsent = await conn.fetchval(
            """UPDATE sms_messages SET status = 'withdrawn' WHERE case_id = $1 AND kind = 'ticket'
               AND status = 'pending' RETURNING id""", case.id)
        owner = None if unsent else await desk.owner_of(conn, case, fresh=True)
        if unsent:
            told = "not_sent"
        elif owner.found:
            await store.add_sms(conn, case.id, "ticket_withdrawn", owner.phone,
                                {"plate": case.plate, "ticket_number": ticket["number"],
                                 "language": owner.language}, now)
            told = "sms"
        else:
            told = "no_phone"
        await store.audit(conn, now, ticket["case_id"], operator.actor, "void_ticket",
                          {"reason": reason, "ticket_number": ticket["number"], "owner_told": told})
        return {"case_id": ticket["case_id"], "ticket_number": ticket["number"], "owner_told": told}


async def close_case(desk: Desk, operator: Operator, case_id: UUID, reason: str, now: datetime) -> dict:
    check_can_act(operator)
    reason = check_reason(reason)
    async with desk.pool.acquire() as conn, conn.transaction():
        case = await _locked_case(conn, case_id)
        decision = closing(case, reason, now)
        await _save(desk, conn, operator, case, decision, "close_case", {"reason": reason}, now)
        return {"case_id": case.id}


async def warn_again(desk: Desk, operator: Operator, case_id: UUID, reason: str, now: datetime) -> dict:
    check_can_act(operator)
    reason = check_reason(reason)
    async with desk.pool.acquire() as conn, conn.transaction():
        case = await _locked_case(conn, case_id)
        owner = await desk.owner_of(conn, case, fresh=True)
        open_elsewhere = await conn.fetchval(
            "SELECT true FROM cases WHERE plate = $1 AND state IN ('detected', 'warned', 'rechecking')", case.plate)
        departures = await _departures(conn, case)
        review, opened = warning_again(case, uuid4(), owner.found, bool(open_elsewhere), departures, desk.rules,
                                       reason, now, owner.plate_type)
        new = opened.case
        await _save(desk, conn, operator, case, review, "warn_again", {"reason": reason, "new_case_id": str(new.id)}, now)
        await store.insert_case(conn, new, desk.window_for(new.zone), now)
        v = new.violation
        await store.add_outbox(conn, desk.topics.case_events, new.plate, events.CaseOpened(
            case_id=str(new.id), plate=new.plate, state=new.state, place=new.place, zone=new.zone,
            location=events.Location(lat=v.lat, lon=v.lon), camera_id=v.camera_id, detected_at=v.taken_at,
            opened_at=now))
        await store.audit(conn, now, new.id, operator.actor, "opened:detected",
                          {"reason": reason, "warned_again_from": str(case.id), "event_id": v.event_id})
        await desk.carry_out(conn, new, opened, now, owner=owner)
        return {"case_id": new.id, "review_case_id": case.id}


async def ticket_on_review(desk: Desk, operator: Operator, case_id: UUID, evidence_event_id: str, reason: str,
                           now: datetime) -> dict:
    check_can_act(operator)
    reason = check_reason(reason)
    async with desk.pool.acquire() as conn, conn.transaction():
        case = await _locked_case(conn, case_id)
        # "integrator/event_id" (event ids are unique per integrator); a bare event id is still understood.
        integrator, _, event_id = evidence_event_id.rpartition("/")
        row = await conn.fetchrow(
            """SELECT * FROM sightings WHERE event_id = $1 AND ($4::text = '' OR integrator = $4) AND plate = $2
               AND (case_id = $3 OR case_id IS NULL) AND kind IN ('ViolationDetected', 'VehicleObserved')
               ORDER BY taken_at LIMIT 1""", event_id, case.plate, case.id, integrator)
        if row is None:
            raise Refused("evidence_unknown")
        capture = Sighting(row["event_id"], row["camera_id"], row["taken_at"], row["lat"], row["lon"],
                           row["place"] or "", (row["evidence"] or {}).get("image_url"), row["integrator"])
        departures = await _departures(conn, case)
        window = timedelta(seconds=await conn.fetchval("SELECT window_seconds FROM cases WHERE id = $1", case.id))
        decision = ticketing_on_review(case, capture, departures, desk.rules, window, reason, now)
        await store.link_sighting(conn, capture.integrator, capture.event_id, case.id)
        await _save(desk, conn, operator, case, decision, "ticket_on_review",
                    {"reason": reason, "evidence_event_id": capture.event_id, "evidence_integrator": capture.integrator},
                    now)
        return {"case_id": case.id}


async def confirm_ticket(desk: Desk, operator: Operator, case_id: UUID, reason: str, now: datetime) -> dict:
    """Confirm a ticket waiting for an officer: issued, published on ``tickets`` and sent to the owner."""
    check_can_act(operator)
    reason = check_reason(reason)
    async with desk.pool.acquire() as conn, conn.transaction():
        case = await _locked_case(conn, case_id)
        decision = confirming(case, reason, now)
        await _save(desk, conn, operator, case, decision, "confirm_ticket", {"reason": reason}, now)
        return {"case_id": case.id}


async def reject_ticket(desk: Desk, operator: Operator, case_id: UUID, reason: str, now: datetime) -> dict:
    """Reject a ticket waiting for an officer: it never takes effect (the case closes as rejected)."""
    check_can_act(operator)
    reason = check_reason(reason)
    async with desk.pool.acquire() as conn, conn.transaction():
        case = await _locked_case(conn, case_id)
        decision = rejecting(case, reason, now)
        await _save(desk, conn, operator, case, decision, "reject_ticket", {"reason": reason}, now)
        return {"case_id": case.id}


async def request_recheck(desk: Desk, operator: Operator, case_id: UUID, reason: str, now: datetime) -> dict:
    """Ask the violation's camera for a fresh capture of a review case's plate."""
    check_can_act(operator)
    reason = check_reason(reason)
    async with desk.pool.acquire() as conn, conn.transaction():
        case = await _locked_case(conn, case_id)
        _in_review(case)
        asked = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE case_id = $1 AND action = 'request_recheck'", case.id)
        v = case.violation
        answer_by = now + desk.rules.recheck_wait
        recheck_id = f"{case.id}:review{asked + 1}"
        commands = await registry.commands_topic(conn, desk.topics.camera_commands, v.camera_id)
        await store.add_outbox(conn, commands, v.camera_id, events.RecheckRequested(
            recheck_id=recheck_id, case_id=str(case.id), camera_id=v.camera_id, plate=case.plate,
            location=events.Location(lat=v.lat, lon=v.lon), requested_at=now, answer_by=answer_by))
        await store.audit(conn, now, case.id, operator.actor, "request_recheck",
                          {"reason": reason, "recheck_id": recheck_id, "camera_id": v.camera_id})
        return {"case_id": case.id}


def check_period(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and end <= start:
        raise Refused("bad_period")


async def whitelist_plate(desk: Desk, operator: Operator, raw_plate: str, reason: str, now: datetime,
                          valid_from: datetime | None = None, valid_until: datetime | None = None) -> dict:
    """Whitelist a plate, from ``valid_from`` (None: now) until ``valid_until`` (None: until removed)."""
    check_can_act(operator)
    reason = check_reason(reason)
    plate = checked_plate(raw_plate)
    check_period(valid_from, valid_until)
    async with desk.pool.acquire() as conn, conn.transaction():
        added = await conn.fetchval(
            """INSERT INTO whitelisted_plates (plate, reason, added_at, valid_from, valid_until, added_by)
               VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (plate) DO NOTHING RETURNING true""",
            plate, reason, now, valid_from, valid_until, operator.actor)
        if not added:
            raise Refused("already_whitelisted", plate=plate)
        await store.audit(conn, now, None, operator.actor, "whitelist_add",
                          {"reason": reason, "plate": plate, "valid_from": valid_from and valid_from.isoformat(),
                           "valid_until": valid_until and valid_until.isoformat()})
        return {"plate": plate}


async def unwhitelist_plate(desk: Desk, operator: Operator, plate: str, reason: str, now: datetime) -> dict:
    check_can_act(operator)
    reason = check_reason(reason)
    plate = normalize_plate(plate or "")
    async with desk.pool.acquire() as conn, conn.transaction():
        was = await conn.fetchval("DELETE FROM whitelisted_plates WHERE plate = $1 RETURNING reason", plate)
        if was is None:
            raise Refused("not_whitelisted", plate=plate)
        await store.audit(conn, now, None, operator.actor, "whitelist_remove",
                          {"reason": reason, "plate": plate, "whitelisted_for": was})
        return {"plate": plate}


async def exempt_zone(desk: Desk, operator: Operator, zone: str, hours: tuple[int, int] | None, reason: str,
                      now: datetime, starts: datetime | None = None, ends: datetime | None = None) -> dict:
    """New violations in the zone (only between ``hours``, local, when given) are not pursued (cases
    open as exempt) from ``starts`` (None: now) until ``ends`` (None: until the exemption is lifted)."""
    check_can_act(operator)
    reason = check_reason(reason)
    check_period(starts, ends)
    if hours is not None and not (0 <= hours[0] <= 23 and 0 <= hours[1] <= 24 and hours[0] != hours[1]):
        raise Refused("bad_hours")
    async with desk.pool.acquire() as conn, conn.transaction():
        before = await conn.fetchrow("SELECT id, exempt_reason FROM zones WHERE id = $1 FOR UPDATE", zone)
        if before is None:
            raise Refused("unknown_zone", zone=zone)
        await conn.execute(
            """UPDATE zones SET exempt_reason = $2, exempt_from_hour = $3, exempt_until_hour = $4,
                                exempt_starts_at = $5, exempt_ends_at = $6, exempt_by = $7 WHERE id = $1""",
            zone, reason, hours[0] if hours else None, hours[1] if hours else None, starts, ends, operator.actor)
        await store.audit(conn, now, None, operator.actor, "zone_exempt",
                          {"reason": reason, "zone": zone, "previous": before["exempt_reason"],
                           "hours": list(hours) if hours else None, "starts": starts and starts.isoformat(),
                           "ends": ends and ends.isoformat()})
        return {"zone": zone}


async def set_zone_rules(desk: Desk, operator: Operator, zone: str, rules: dict, reason: str, now: datetime) -> dict:
    """Set a zone's own rules (``checked_zone_rules``; None: the city's default) for cases opened from now."""
    check_can_act(operator)
    reason = check_reason(reason)
    async with desk.pool.acquire() as conn, conn.transaction():
        before = await conn.fetchrow(
            "SELECT id, first_offence_months, new_camera_days, confirm_tickets FROM zones WHERE id = $1 FOR UPDATE", zone)
        if before is None:
            raise Refused("unknown_zone", zone=zone)
        await conn.execute(
            "UPDATE zones SET first_offence_months = $2, new_camera_days = $3, confirm_tickets = $4 WHERE id = $1",
            zone, rules["first_offence_months"], rules["new_camera_days"], rules["confirm_tickets"])
        await store.audit(conn, now, None, operator.actor, "zone_rules",
                          {"reason": reason, "zone": zone, "rules": rules,
                           "previous": {k: before[k] for k in rules}})
        return {"zone": zone}


async def lift_zone_exemption(desk: Desk, operator: Operator, zone: str, reason: str, now: datetime) -> dict:
    check_can_act(operator)
    reason = check_reason(reason)
    async with desk.pool.acquire() as conn, conn.transaction():
        before = await conn.fetchrow("SELECT id, exempt_reason FROM zones WHERE id = $1 FOR UPDATE", zone)
        if before is None:
            raise Refused("unknown_zone", zone=zone)
        if before["exempt_reason"] is None:
            raise Refused("zone_not_exempt", zone=zone)
        await conn.execute(
            """UPDATE zones SET exempt_reason = NULL, exempt_from_hour = NULL, exempt_until_hour = NULL,
                                exempt_starts_at = NULL, exempt_ends_at = NULL, exempt_by = NULL WHERE id = $1""",
            zone)
        await store.audit(conn, now, None, operator.actor, "zone_exemption_lifted",
                          {"reason": reason, "zone": zone, "previous": before["exempt_reason"]})
        return {"zone": zone}


# ── helpers ─────────────────────────────────────────────────────────────────────────────────


async def _locked_case(conn, case_id: UUID) -> Case:
    case = await store.get_case(conn, case_id, lock=True)
    if case is None:
        raise Refused("unknown_case")
    return case


async def _departures(conn, case: Case) -> list[datetime]:
    """When the plate was seen leaving, since the case's violation."""
    return [r["taken_at"] for r in await conn.fetch(
        "SELECT taken_at FROM sightings WHERE plate = $1 AND kind = 'VehicleDeparted' AND taken_at >= $2",
        case.plate, case.violation.taken_at)]


async def _save(desk: Desk, conn, operator: Operator, before: Case, decision: Decision, action: str, detail: dict,
                now: datetime) -> None:
    """Write an operator's decision on a case: the case row, its audit entry, its effects, its outbox rows."""
    case = decision.case
    await store.update_case(conn, case, now)
    await store.audit(conn, now, case.id, operator.actor, action,
                      {**detail, "from": before.state.value, "to": case.state.value})
    if any(isinstance(e, machine.IssueTicket) for e in decision.effects) and \
            await conn.fetchval("SELECT true FROM tickets WHERE case_id = $1", case.id):
        raise Refused("already_ticketed")
    await desk.carry_out(conn, case, decision, now)
    if case.state != before.state and not case.is_open:
        await store.add_outbox(conn, desk.topics.case_events, case.plate, events.CaseClosed(
            case_id=str(case.id), plate=case.plate, outcome=case.state, reason=case.reason, closed_at=now))


async def claim_review(desk: Desk, operator: Operator, case_id: UUID, now: datetime) -> dict:
    """Take a case waiting for review (others see who has it); refused when another officer has it."""
    check_can_act(operator)
    async with desk.pool.acquire() as conn, conn.transaction():
        case = await _locked_case(conn, case_id)
        if case.state != State.REVIEW:
            raise Refused("case_not_in_review", state=case.state.value)
        holder = await conn.fetchval(
            """INSERT INTO review_claims (case_id, operator, claimed_at) VALUES ($1, $2, now())
               ON CONFLICT (case_id) DO UPDATE SET operator = review_claims.operator RETURNING operator""",
            case_id, operator.name)
        if holder != operator.name:
            raise Refused("review_claimed", name=holder)
        await store.audit(conn, now, case_id, operator.actor, "claim_review", {})
        return {"case_id": case_id}


async def release_review(desk: Desk, operator: Operator, case_id: UUID, now: datetime) -> dict:
    """Give a claimed case back to the queue (only the officer who has it)."""
    check_can_act(operator)
    async with desk.pool.acquire() as conn, conn.transaction():
        released = await conn.fetchval("DELETE FROM review_claims WHERE case_id = $1 AND operator = $2 RETURNING 1",
                                       case_id, operator.name)
        if released:
            await store.audit(conn, now, case_id, operator.actor, "release_review", {})
        return {"case_id": case_id}


async def close_reviews(desk: Desk, operator: Operator, case_ids: list[UUID], reason: str, now: datetime) -> dict:
    """Close several cases waiting for review with one reason: each in its own transaction and audit
    entry (``close_case``); a case another officer has claimed, or no longer in review, is left."""
    check_can_act(operator)
    reason = check_reason(reason)
    if not case_ids:
        raise Refused("none_chosen")
    closed, left = [], []
    for case_id in case_ids:
        async with desk.pool.acquire() as conn, conn.transaction():
            case = await _locked_case(conn, case_id)
            holder = await conn.fetchval("SELECT operator FROM review_claims WHERE case_id = $1", case_id)
            if case.state != State.REVIEW or holder not in (None, operator.name):
                left.append(case_id)
                continue
            decision = closing(case, reason, now)
            await _save(desk, conn, operator, case, decision, "close_case", {"reason": reason, "bulk": True}, now)
            await conn.execute("DELETE FROM review_claims WHERE case_id = $1", case_id)
            closed.append(case_id)
    return {"closed": closed, "left": left}


async def replay_dead_letter(desk: Desk, operator: Operator, dead_letter_id: int, replayable: Callable[[str], bool],
                             reason: str, now: datetime) -> dict:
    """Send a dead letter's bytes (and key) again to the topic it came from, through the outbox: the
    workers read it like any message and run the same checks (it may land in dead_letters again,
    under its new offset). Only from the topics ``replayable`` allows (camera events and car-park
    status: a reference feed's dead letter may keep a masked copy, not the original). Once per dead
    letter; audited with the reason."""
    check_can_act(operator)
    reason = check_reason(reason)
    async with desk.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT * FROM dead_letters WHERE id = $1 FOR UPDATE", dead_letter_id)
        if row is None:
            raise Refused("no_dead_letter")
        if not replayable(row["source_topic"]):
            raise Refused("dead_letter_not_replayable", topic=row["source_topic"])
        if row["replayed_at"] is not None:
            raise Refused("dead_letter_replayed", name=row["replayed_by"])
        if row["raw_removed_at"] is not None or not row["raw"]:
            raise Refused("dead_letter_raw_removed")
        await conn.execute("INSERT INTO outbox (topic, key, value) VALUES ($1, $2, $3)",
                           row["source_topic"], row["key"], row["raw"])
        await conn.execute("UPDATE dead_letters SET replayed_at = $2, replayed_by = $3 WHERE id = $1",
                           dead_letter_id, now, operator.actor)
        await store.audit(conn, now, None, operator.actor, "replay_dead_letter",
                          {"reason": reason, "dead_letter_id": dead_letter_id, "topic": row["source_topic"]})
        return {"dead_letter_id": dead_letter_id}
