"""The deadline tick's writes, set-based: the decisions on a batch of due cases (``machine.on_wake``,
taken in memory) recorded with their effects in a constant number of statements, whatever the
batch's size (issue 16): one UPDATE of the cases, one INSERT each of audit entries, outbox rows,
SMS rows and evidence fetches, one owner query, and for tickets one each for their serials, their
images' hashes, their rows, their outbox ids and their chain links.

    due rows ──> machine.on_wake (each, in memory) ──> record_due ──> cases, audit, tickets (+ chain),
                                                                      SMS rows, outbox, evidence fetches

The effects and once-only keys are those of ``effects.CaseEffects.record`` for one case (an SMS per
(case, kind), a ticket per case, an evidence fetch per capture): recording a batch here leaves the
same rows as recording its decisions one by one there. The caller runs this in a savepoint and,
if it fails for a reason of one case's own, splits the batch (``CaseService.decide_due_cases``).
"""

import json
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from pipeline import restore
from pipeline.cases import machine, store
from pipeline.cases.effects import CaseEffects
from pipeline.cases.machine import Case, Decision
from pipeline.lookups.owners import OwnerAnswer
from pipeline.restore import sms_id_for
from pipeline.tickets import chain
from schemas import events
from schemas import topics as topic_names
from schemas.codec import encode


@dataclass
class _Writes:
    """What a batch of decisions writes, gathered before any of it is sent."""

    updates: list[Case] = field(default_factory=list)
    audit: list[tuple[UUID, str, dict]] = field(default_factory=list)
    outbox: list[tuple[str, str, object]] = field(default_factory=list)
    """(topic, key, message), in the order ``record`` would add them; a message may still be a
    ticket's place holder (its case id), filled in once its row is inserted."""
    wants: list[tuple[UUID, machine.Sighting]] = field(default_factory=list)
    tickets: list[tuple[Case, machine.IssueTicket]] = field(default_factory=list)
    cautions: list[tuple[Case, machine.IssueCaution]] = field(default_factory=list)
    rechecks: list[tuple[Case, machine.RequestRecheck]] = field(default_factory=list)
    others: list[tuple[Case, Decision]] = field(default_factory=list)


async def record_due(conn, effects: CaseEffects, decided: list[tuple[Case, Decision, list[str]]], now: datetime,
                     cause: str = "deadline") -> None:
    """Record each (case before, decision, topics decided without) as ``effects.record`` would, in
    the caller's transaction, in a constant number of statements. The audit log names the topics of
    stale integrators passed over, for a decision that changed a case."""
    w = _Writes()
    actor, topics = effects.actor, effects.topics
    for before, decision, decided_without in decided:
        if decided_without and decision.changed:
            w.audit.append((before.id, "decided_without", {
                "topics": decided_without,
                "integrators": [topic_names.integrator_of(topics.camera_events, t) for t in decided_without]}))
        if not decision.changed:
            if decision.note:
                w.audit.append((before.id, "noted", {"cause": cause, "note": decision.note}))
            continue
        case = decision.case
        w.updates.append(case)
        if case.fresh_capture is not None:
            w.wants.append((case.id, case.fresh_capture))
        action = f"{before.state}->{case.state}" if case.state != before.state else "updated"
        w.audit.append((case.id, action, {"cause": cause, "reason": case.reason, "note": decision.note}))
        for effect in decision.effects:
            match effect:
                case machine.IssueTicket():
                    w.tickets.append((case, effect))
                    w.wants += [(case.id, effect.violation), (case.id, effect.fresh_capture)]
                    w.outbox.append((topics.tickets, case.plate, case.id))
                case machine.IssueCaution():
                    w.cautions.append((case, effect))
                case machine.RequestRecheck():
                    w.rechecks.append((case, effect))
                    w.outbox.append(("", effect.camera_id, effect))
                case _:
                    w.others.append((case, Decision(case, (effect,))))
        if decision.closed:
            w.outbox.append((topics.case_events, case.plate, events.CaseClosed(
                case_id=str(case.id), plate=case.plate, outcome=case.state, reason=case.reason, closed_at=now)))

    await _update_cases(conn, w.updates, now)
    await _want_evidence(conn, w.wants)
    owners = await _owners(conn, effects, [case for case, _ in w.tickets + w.cautions]) if w.tickets or w.cautions else {}
    issued = await _issue_tickets(conn, effects, w.tickets, now) if w.tickets else {}
    commands = await _commands_topics(conn, topics.camera_commands, [e.camera_id for _, e in w.rechecks]) \
        if w.rechecks else {}
    sms = await _ticket_sms(conn, effects, issued, owners) + _caution_sms(w.cautions, owners)
    await _add_sms(conn, sms, now)
    await _audit(conn, now, actor, w.audit)
    await _outbox(conn, w.outbox, issued, commands, w.rechecks, now)
    for case, decision in w.others:  # not an effect of a deadline; kept correct, one by one
        await effects.carry_out(conn, case, decision, now)


async def _update_cases(conn, cases: list[Case], now: datetime) -> None:
    if not cases:
        return
    columns = list(zip(*[(c.id, c.state.value, _json(c.latest_capture), c.warned_at, c.deadline_at, c.wake_at,
                          c.closed_at, c.reason, c.warning_delivered_at, _json(c.fresh_capture), c.left_at)
                         for c in cases]))
    await conn.execute(
        """UPDATE cases c SET state = u.state, latest_capture = u.latest_capture::jsonb, warned_at = u.warned_at,
               deadline_at = u.deadline_at, wake_at = u.wake_at, closed_at = u.closed_at, reason = u.reason,
               warning_delivered_at = u.warning_delivered_at, updated_at = $12,
               fresh_capture = u.fresh_capture::jsonb, left_at = u.left_at
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::timestamptz[],
                       $7::timestamptz[], $8::text[], $9::timestamptz[], $10::text[], $11::timestamptz[])
                AS u(id, state, latest_capture, warned_at, deadline_at, wake_at, closed_at, reason,
                     warning_delivered_at, fresh_capture, left_at)
           WHERE c.id = u.id""",
        *columns, now)


async def _want_evidence(conn, wants: list[tuple[UUID, machine.Sighting]]) -> None:
    """``evidence.store.want`` for many captures: each image fetched once."""
    rows = [(s.integrator or "", s.event_id, case_id, s.evidence_url) for case_id, s in wants
            if s is not None and s.evidence_url]
    if not rows:
        return
    await conn.execute(
        """INSERT INTO evidence_fetches (integrator, event_id, case_id, url)
           SELECT DISTINCT ON (integrator, event_id) *
           FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[]) AS u(integrator, event_id, case_id, url)
           ON CONFLICT (integrator, event_id) DO NOTHING""",
        *[list(c) for c in zip(*rows)])


async def _owners(conn, effects: CaseEffects, cases: list[Case]) -> dict[UUID, OwnerAnswer]:
    """Each case's owner as ``CaseEffects.owner_of`` finds it (under the plate type found when it
    opened), for all the cases in one query (``owners_for``)."""
    answers = await effects.owners.owners_for(
        [(c.plate, (c.plate_type,) if c.plate_type else None, None) for c in cases], conn)
    return {c.id: answer for c, answer in zip(cases, answers)}


async def _issue_tickets(conn, effects: CaseEffects, tickets: list[tuple[Case, machine.IssueTicket]],
                         now: datetime) -> dict[UUID, dict]:
    """``store.issue_ticket`` for many cases: returns the rows inserted now, by case id (a case that
    has its ticket already gets none)."""
    again = await restore.ticket_issued_before(conn, [case.id for case, _ in tickets])
    issued_before = {}
    for case_id, message in again.items():  # issued in a stretch a restore lost: as it was (no new link)
        row = await restore.issue_again(conn, message)
        if row is not None:
            issued_before[case_id] = dict(row) | {"again": True}
    tickets = [(case, e) for case, e in tickets if case.id not in again]
    if not tickets:
        return issued_before
    serials = [r[0] for r in await conn.fetch("SELECT nextval('ticket_serial') FROM generate_series(1, $1)",
                                              len(tickets))]
    local_day = f"{now.astimezone(effects.timezone):%y%m%d}"
    evidence = {case.id: [store.sighting_to_json(e.violation), store.sighting_to_json(e.fresh_capture)]
                for case, e in tickets}
    wanted = [(d.get("integrator") or "", d["event_id"]) for ds in evidence.values() for d in ds]
    hashes = {(r["integrator"], r["event_id"]): r["sha256"] for r in await conn.fetch(
        """SELECT integrator, event_id, evidence ->> 'sha256' AS sha256 FROM sightings
           WHERE (integrator, event_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))""",
        [i for i, _ in wanted], [e for _, e in wanted])}
    rows = []
    for serial, (case, _) in zip(serials, tickets):
        v = case.violation
        kept = [d | {"image_sha256": hashes.get((d.get("integrator") or "", d["event_id"]))} for d in evidence[case.id]]
        rows.append((f"{effects.ticket_prefix}{local_day}{serial:06d}", case.id, case.plate, case.deadline_at,
                     case.place, case.zone, v.lat, v.lon, json.dumps(kept), case.reason))
    inserted = await conn.fetch(
        """INSERT INTO tickets (number, case_id, plate, issued_at, deadline_at, place, zone, lat, lon, evidence,
                                reason, warning_accepted_at, warning_delivered_at)
           SELECT t.number, t.case_id, t.plate, $11, t.deadline_at, t.place, t.zone, t.lat, t.lon, t.evidence::jsonb,
                  t.reason, s.accepted_at, s.delivered_at
           FROM unnest($1::text[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::float8[],
                       $8::float8[], $9::text[], $10::text[])
                AS t(number, case_id, plate, deadline_at, place, zone, lat, lon, evidence, reason)
           LEFT JOIN sms_messages s ON s.case_id = t.case_id AND s.kind = 'warning'
           ON CONFLICT (case_id) DO NOTHING RETURNING *""",
        *[list(c) for c in zip(*rows)], now)
    return issued_before | {r["case_id"]: r for r in inserted}


async def _commands_topics(conn, camera_commands: str, camera_ids: list[str]) -> dict[str, str]:
    """``registry.commands_topic`` for many cameras."""
    owners = {r["id"]: r["integrator"] for r in await conn.fetch(
        "SELECT id, integrator FROM cameras WHERE id = ANY($1::text[])", list(set(camera_ids)))}
    return {c: camera_commands if owners.get(c) is None else f"{camera_commands}.{owners[c]}" for c in camera_ids}


async def _ticket_sms(conn, effects: CaseEffects, issued: dict[UUID, dict], owners: dict[UUID, OwnerAnswer]) -> list:
    """The ticket SMS of the tickets issued now, to owners found; with the driver page's codes (kept, or
    given now in one statement) when it is on."""
    found = [(case_id, row) for case_id, row in issued.items() if owners[case_id].found]
    codes = await _driver_codes(conn, [case_id for case_id, _ in found]) if effects.driver_page and found else {}
    sms = []
    for case_id, row in found:
        owner = owners[case_id]
        params = {"plate": row["plate"], "place": row["place"], "ticket_number": row["number"],
                  "language": owner.language}
        if effects.driver_page:
            params["code"] = codes[case_id]
        sms.append((case_id, "ticket", owner.phone, params))
    return sms


def _caution_sms(cautions: list[tuple[Case, machine.IssueCaution]], owners: dict[UUID, OwnerAnswer]) -> list:
    return [(case.id, "caution", owners[case.id].phone,
             {"plate": case.plate, "place": case.place, "first_offence": effect.first_offence,
              "language": owners[case.id].language})
            for case, effect in cautions if owners[case.id].found]


async def _driver_codes(conn, case_ids: list[UUID]) -> dict[UUID, str]:
    """``store.keep_driver_code`` for many cases: a case with no code gets a random one now. A code
    drawn twice (one chance in a billion with a million out) fails the statement on the unique
    index: the caller's batch is then split, and a case alone gets ``store.give_driver_code``'s draws."""
    rows = await conn.fetch(
        """WITH given AS (
               UPDATE cases c SET driver_code = u.code FROM unnest($1::uuid[], $2::text[]) AS u(id, code)
               WHERE c.id = u.id AND c.driver_code IS NULL RETURNING c.id, c.driver_code)
           SELECT id, driver_code FROM cases WHERE id = ANY($1::uuid[]) AND driver_code IS NOT NULL
           UNION ALL SELECT id, driver_code FROM given""",
        case_ids, [store.new_driver_code() for _ in case_ids])
    return {r["id"]: r["driver_code"] for r in rows}


async def _add_sms(conn, sms: list[tuple[UUID, str, str, dict]], now: datetime) -> None:
    """``store.add_sms`` for many: one per (case, kind), due at once on PostgreSQL's clock."""
    if not sms:
        return
    await conn.execute(
        """INSERT INTO sms_messages (id, case_id, kind, phone, params, next_attempt_at, created_at)
           SELECT u.id, u.case_id, u.kind, u.phone, u.params::jsonb, now(), $6
           FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[]) AS u(id, case_id, kind, phone, params)
           ON CONFLICT (case_id, kind) DO NOTHING""",
        [sms_id_for(s[0], s[1]) for s in sms], [s[0] for s in sms], [s[1] for s in sms], [s[2] for s in sms],
        [json.dumps(s[3]) for s in sms], now)


async def _audit(conn, now: datetime, actor: str, entries: list[tuple[UUID, str, dict]]) -> None:
    if not entries:
        return
    await conn.execute(
        """INSERT INTO audit_log (at, case_id, actor, action, detail)
           SELECT $1, u.case_id, $2, u.action, u.detail::jsonb FROM unnest($3::uuid[], $4::text[], $5::text[])
                WITH ORDINALITY AS u(case_id, action, detail, n) ORDER BY u.n""",
        now, actor, [e[0] for e in entries], [e[1] for e in entries], [json.dumps(e[2]) for e in entries])


async def _outbox(conn, rows: list[tuple[str, str, object]], issued: dict[UUID, dict], commands: dict[str, str],
                  rechecks: list, now: datetime) -> None:
    """The batch's outbox rows in ``record``'s order (ids drawn first, so that each ticket's chain link
    names its row), then the tickets' chain links (``chain.append``: placed at commit)."""
    out, links = [], []
    recheck_of = {id(effect): case for case, effect in rechecks}
    for topic, key, message in rows:
        if isinstance(message, UUID):  # a ticket: published only if issued now (and not before a restore)
            if message not in issued or issued[message].get("again"):
                continue
            ticket = chain.issued_message(issued[message])
            links.append((len(out), ticket))
            out.append((topic, ticket.plate.encode(), ticket.model_dump_json(exclude={"chain"}).encode()))
        elif isinstance(message, machine.RequestRecheck):
            case = recheck_of[id(message)]
            v = case.violation
            out.append((commands[message.camera_id], message.camera_id.encode(), encode(events.RecheckRequested(
                recheck_id=f"{case.id}:1", case_id=str(case.id), camera_id=message.camera_id, plate=case.plate,
                location=events.Location(lat=v.lat, lon=v.lon), requested_at=now, answer_by=message.answer_by))))
        else:
            out.append((topic, key.encode(), encode(message)))
    if not out:
        return
    ids = [r[0] for r in await conn.fetch("SELECT nextval('outbox_id_seq') FROM generate_series(1, $1)", len(out))]
    await conn.execute(
        """INSERT INTO outbox (id, topic, key, value)
           SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::bytea[])""",
        ids, [o[0] for o in out], [o[1] for o in out], [o[2] for o in out])
    if links:
        await conn.execute(
            """INSERT INTO ticket_chain (kind, ticket_number, body, outbox_id)
               SELECT k, t, b, o FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
                    WITH ORDINALITY AS u(k, t, b, o, n) ORDER BY n""",
            [t.type for _, t in links], [t.ticket_number for _, t in links],
            [chain.canonical(chain.record_of(t)) for _, t in links], [ids[i] for i, _ in links])


def _json(s: machine.Sighting | None) -> str | None:
    d = store.sighting_to_json(s)
    return None if d is None else json.dumps(d)
