"""A decision on a case, recorded with its effects: below both the case service (camera events,
the clock) and the SMS service (a warning accepted, delivered or failed), which both decide on
cases through the machine and record here.

    decision ──> record: case row + audit entry ──> effects: SMS row, ticket (+ record, SMS),
                                                     warning notice SMS, recheck request, CaseClosed
"""

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from pipeline import restore
from pipeline.cameras import registry
from pipeline.cases import machine, store
from pipeline.cases.machine import Case, Decision, Rules
from pipeline.lookups.carparks import CarParkIndex
from pipeline.lookups.owners import OwnerAnswer, OwnerDirectory
from pipeline.tickets import chain
from schemas import events

PIPELINE = "pipeline"


@dataclass(frozen=True)
class Topics:
    camera_events: str
    """The bare camera-events topic; integrators write to theirs, ``camera-events.<integrator>``."""
    case_events: str
    tickets: str
    camera_commands: str
    dead_letters: str


class CaseEffects:
    """Records decisions on cases in the caller's transaction, with their audit entries and effects."""

    def __init__(self, owners: OwnerDirectory, car_parks: CarParkIndex, rules: Rules, topics: Topics,
                 ticket_prefix: str, timezone: ZoneInfo, driver_page: bool = False, actor: str = PIPELINE):
        self.owners = owners
        self.car_parks = car_parks
        self.rules = rules
        self.topics = topics
        self.ticket_prefix = ticket_prefix
        self.timezone = timezone
        self.driver_page = driver_page
        self.actor = actor

    async def record(self, conn, before: Case, decision: Decision, now: datetime, cause: str) -> None:
        """Save a decision on an existing case (``before`` it), with its audit entry and effects;
        ``cause`` names what led to it (an event id, ``deadline``, ``sms:<id>``)."""
        if not decision.changed:
            if decision.note:
                await store.audit(conn, now, before.id, self.actor, "noted", {"cause": cause, "note": decision.note})
            return
        case = decision.case
        await store.update_case(conn, case, now)
        action = f"{before.state}->{case.state}" if case.state != before.state else "updated"
        await store.audit(conn, now, case.id, self.actor, action,
                          {"cause": cause, "reason": case.reason, "note": decision.note})
        await self.carry_out(conn, case, decision, now)
        if decision.closed:
            await self.publish_closed(conn, case, now)

    async def carry_out(self, conn, case: Case, decision: Decision, now: datetime, owner: OwnerAnswer | None = None) -> None:
        """Carry out a decision's effects (warning SMS, ticket, recheck request) in the caller's
        transaction: ``record`` does it for the decisions it records; the case service for a case it
        opens, and an operator's desk (``pipeline.console.actions``) for decisions taken there."""
        for effect in decision.effects:
            match effect:
                case machine.SendWarning():
                    owner = owner or await self.owner_of(conn, case)
                    params = self._warning_params(case) | {"language": owner.language}
                    if self.driver_page:
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
        before = (await restore.ticket_issued_before(conn, [case.id])).get(case.id)
        if before is not None:  # issued in a stretch a restore lost: as it was, its link already in the chain
            row = await restore.issue_again(conn, before)
            if row is None:
                return
            number = row["number"]
        else:
            evidence = [store.sighting_to_json(effect.violation), store.sighting_to_json(effect.fresh_capture)]
            number = await store.issue_ticket(conn, case, case.deadline_at, evidence, self.ticket_prefix, now,
                                              now.astimezone(self.timezone))
            if number is None:
                return
            await chain.record_issued(conn, self.topics.tickets, number)
        owner = await self.owner_of(conn, case)
        if owner.found:
            params = {"plate": case.plate, "place": case.place, "ticket_number": number, "language": owner.language}
            if self.driver_page:
                params["code"] = await store.keep_driver_code(conn, case.id)
            await store.add_sms(conn, case.id, "ticket", owner.phone, params, now)

    async def _issue_caution(self, conn, case: Case, effect: machine.IssueCaution, now: datetime) -> None:
        """A warning notice: the case (closed as cautioned) holds both captures; the owner is told by SMS."""
        owner = await self.owner_of(conn, case)
        if owner.found:
            await store.add_sms(conn, case.id, "caution", owner.phone, {
                "plate": case.plate, "place": case.place, "first_offence": effect.first_offence,
                "language": owner.language}, now)

    async def publish_closed(self, conn, case: Case, now: datetime) -> None:
        await store.add_outbox(conn, self.topics.case_events, case.plate, events.CaseClosed(
            case_id=str(case.id), plate=case.plate, outcome=case.state, reason=case.reason, closed_at=now))
