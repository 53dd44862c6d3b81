"""SMS: sending the messages the case service queued, settling those in doubt, rendering their text,
and applying delivery reports; a warning's answers decide its case (through ``CaseEffects``).

    SMS row due  ──> send_due_sms ──> gateway.send ──> machine.on_warning_accepted (window starts)
    lease ran out ──> settle_in_doubt_sms (a delivery report proves it left; else sent again later)
    report       ──> apply_delivery_reports ──> machine.on_warning_delivered (a late delivery moves the deadline)

Each entry point is safe to run in any number of workers at once and to repeat: rows are claimed
with ``FOR UPDATE SKIP LOCKED`` and every effect is keyed (see ``pipeline.cases.store``).
"""

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Callable
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg

from pipeline.cases import machine, store
from pipeline.cases.effects import PIPELINE, CaseEffects
from pipeline.cases.machine import State
from pipeline.cases.reasons import why
from pipeline.db import errors
from pipeline import restore
from pipeline.lookups.owners import scrub
from pipeline.sms import texts
from pipeline.sms.gateway import (Accepted, InDoubt, OutgoingSms, PermanentFailure, SmsGateway,
                                  TemporaryFailure)
from schemas import events

log = logging.getLogger(__name__)


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
    driver_link: str = ""
    """What comes before a driver-page code in an SMS link (``PW_PUBLIC_BASE_URL`` + ``/d/``)."""
    in_doubt_after: timedelta = timedelta(seconds=60)
    """The lease a sender holds on a message it is sending, renewed while its gateway call is
    outstanding (longer than any gateway call)."""
    report_wait: timedelta = timedelta(seconds=120)
    """How long a message whose sender lost its lease, with no answer and no delivery report, waits
    before it is sent again: time for the sender to come back with the gateway's answer, and for the
    gateway to retry its reports."""
    worker: str = PIPELINE
    """This worker's name, written on the messages it is sending."""


class ReportKeeper:
    """Keeps the delivery reports that arrive while one statement is writing in the next one: a
    gateway posts a report or more per message, each an HTTP request answered only once its report is
    stored, so under load many wait at once (group commit). If a statement fails, its reports are
    kept one by one, so a report that cannot be kept fails alone."""

    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool
        self.waiting: list[tuple[tuple, asyncio.Future]] = []
        self.writing: asyncio.Task | None = None

    async def keep(self, sms_id: UUID, status: str, detail: str, reported_at: datetime | None) -> bool:
        answer = asyncio.get_running_loop().create_future()
        self.waiting.append(((sms_id, status, detail, reported_at), answer))
        if self.writing is None:
            self.writing = asyncio.ensure_future(self._write())
        return await answer

    async def _write(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting, []
                try:
                    known = await store.keep_delivery_reports(self.pool, [report for report, _ in batch])
                except Exception:  # noqa: BLE001 - each report is tried alone below, and fails alone
                    known = None
                for i, (report, answer) in enumerate(batch):
                    if answer.done():
                        continue
                    if known is not None:
                        answer.set_result(known[i])
                        continue
                    sms_id, status, detail, reported_at = report
                    try:
                        answer.set_result(await store.keep_delivery_report(self.pool, sms_id, status, reported_at, detail))
                    except Exception as exc:  # noqa: BLE001 - the request that brought it answers with it
                        answer.set_exception(exc)
        finally:
            self.writing = None


class SmsService:
    def __init__(self, pool: asyncpg.Pool, effects: CaseEffects, sms: SmsStyle,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), in_flight: int = 1,
                 outbox_written: Callable[[], None] = lambda: None):
        self.pool = pool
        self.effects = effects
        self.sms = sms
        self.clock = clock
        self.in_flight = in_flight
        """Claims whose gateway calls may be outstanding at once (``send_due_sms(wait=False)``)."""
        self.outbox_written = outbox_written
        """Called after a transaction that wrote outbox rows (a warning's WarningSent) committed."""
        self._reports = ReportKeeper(pool)
        self._rounds: asyncio.Semaphore | None = None
        self._recording: asyncio.Lock | None = None
        self.sending: set[asyncio.Task] = set()
        """Claims being sent and recorded in the background (``send_due_sms(wait=False)``)."""

    async def send_due_sms(self, gateway: SmsGateway, limit: int = 50, wait: bool = True) -> int:
        """Send pending SMS that are due; a warning's acceptance starts its case's window.

        Three steps, so that no lock is held while the gateway answers and a sender that dies
        mid-send leaves a trace: claim the due messages and mark them ``sending`` under this
        worker's lease (committed); ask the gateway, renewing the lease meanwhile; record each
        answer (an answer that comes after the lease ran out still counts if the message was not
        sent again). Messages whose lease ran out are settled by ``settle_in_doubt_sms``.

        The messages to send are marked ``sending`` in one statement (``_mark_sending``); a message
        that cannot be prepared (its text cannot be rendered, say) is set aside with the reason, its
        case goes to review, and the others go on. A phone that already had ``daily_limit`` messages
        today gets no more: a warning over the limit fails for good (its case goes to review).

        With ``wait=False`` it returns once the claim is committed, and the gateway calls and the
        recording of their answers go on in the background (``sending``), so that the next claim is
        made while the gateway answers: up to ``in_flight`` claims are outstanding at once (it waits
        for one to finish before it claims more). Claims are made one at a time (a phone's count for
        the day sees the messages the previous claim marked ``sending``), and answers are recorded
        one claim at a time, so the loop holds at most two connections.
        """
        if self._rounds is None:
            self._rounds, self._recording = asyncio.Semaphore(self.in_flight), asyncio.Lock()
        await self._rounds.acquire()
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                now = await store.database_now(conn)
                rows = await store.claim_due_sms(conn, limit)
                sent_today = await store.sms_sent_since(conn, [r["phone"] for r in rows], self._local_midnight(now))
                sent_before = await restore.sms_sent_before(conn, [r["id"] for r in rows])
                to_send = await self._mark_sending(conn, rows, now, sent_today, sent_before)
        except BaseException:
            self._rounds.release()
            raise
        if not to_send:
            self._rounds.release()
            return len(rows)
        sending = asyncio.ensure_future(self._send_and_record(gateway, to_send))
        if wait:
            await sending
        else:
            self.sending.add(sending)
            sending.add_done_callback(self._sent)
        return len(rows)

    async def _send_and_record(self, gateway: SmsGateway, to_send: list[tuple[OutgoingSms, int]]) -> None:
        try:
            async with self._leases_held([sms.id for sms, _ in to_send]):
                results = await asyncio.gather(*(gateway.send(sms) for sms, _ in to_send), return_exceptions=True)
            async with self._recording:
                await self._record_answers(to_send, results)
        finally:
            self._rounds.release()

    def _sent(self, task: asyncio.Task) -> None:
        self.sending.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("sending a claim of SMS failed: %s: %s; its messages are settled when their lease runs out",
                      type(exc).__name__, exc)

    async def stop_sending(self) -> None:
        """Cancel the claims still being sent (their messages are settled when their lease runs out)."""
        for task in list(self.sending):
            task.cancel()
        await asyncio.gather(*self.sending, return_exceptions=True)

    async def _mark_sending(self, conn, rows, now: datetime, sent_today: dict[str, int],
                            sent_before: dict[UUID, restore.SentBefore]) -> list[tuple[OutgoingSms, int]]:
        """The claimed messages to send now, with their attempt numbers: those rendered here are marked
        ``sending`` in one statement (in a savepoint). The rest (settled without sending, or that
        cannot be rendered, or were accepted before the database was restored: ``sent_before``), and all
        of them if that statement fails, go one by one (``_prepare``)."""
        before = dict(sent_today)
        texts_of, one_by_one = {}, []
        for row in rows:
            text = None
            if row["id"] not in sent_before and not self._settles_without_sending(row, sent_today):
                try:
                    text = self._render(row, now)
                except Exception:  # noqa: BLE001 - prepared alone below, and set aside with the reason
                    pass
            if text is None:
                one_by_one.append(row)
            else:
                texts_of[row["id"]] = text
                sent_today[row["phone"]] = sent_today.get(row["phone"], 0) + 1
        attempts = {}
        if texts_of:
            async with errors.own_failure(conn) as outcome:
                attempts = await store.sms_sending_many(conn, texts_of, self.sms.worker,
                                                        self.sms.in_doubt_after.total_seconds())
            if outcome.failure is not None:
                log.warning("marking %d SMS as sending failed (%s); one by one", len(texts_of), outcome)
                sent_today.clear()
                sent_today.update(before)
                texts_of, attempts, one_by_one = {}, {}, list(rows)
        to_send = [(OutgoingSms(row["id"], row["phone"], texts_of[row["id"]]), attempts[row["id"]])
                   for row in rows if row["id"] in attempts]
        for row in one_by_one:
            outgoing = await self._each_row(conn, row, now, self._prepare, sent_today, sent_before)
            if outgoing is not None:
                to_send.append(outgoing)
        return to_send

    def _settles_without_sending(self, row, sent_today: dict[str, int]) -> bool:
        """``_prepare`` settles this message without sending it (withdrawn, reported, over the daily limit)."""
        return (row["kind"] == "warning" and row["case_state"] != State.DETECTED or row["first_report_at"] is not None
                or sent_today.get(row["phone"], 0) >= self.sms.daily_limit)

    async def _prepare(self, conn, row, now: datetime, sent_today: dict[str, int],
                       sent_before: dict[UUID, restore.SentBefore]) -> tuple[OutgoingSms, int] | None:
        """What to send for a claimed message (with its attempt number), or None when it is settled here.
        A message the gateway accepted before the database was restored (``sent_before``) is recorded
        as it was then, and not sent again."""
        if (before := sent_before.get(row["id"])) is not None:
            await self._accepted_before_restore(conn, row, before, now)
        elif row["kind"] == "warning" and row["case_state"] != State.DETECTED:
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

    async def _accepted_before_restore(self, conn, row, before: restore.SentBefore, now: datetime) -> None:
        """Record a message accepted in the stretch a restore lost at the time it was accepted (its
        text as it was rendered then), with its delivery report if WarningDelivered said it arrived."""
        log.warning("SMS %s (%s): accepted by the gateway before the database was restored; not sent again",
                    row["id"], row["kind"])
        await self._accepted(conn, row, self._render(row, before.accepted_at),
                             Accepted(before.accepted_at, "before-restore"), now)
        if before.delivered_at is not None:
            await conn.execute(
                """INSERT INTO sms_delivery_reports (sms_id, status, detail, reported_at, received_at)
                   VALUES ($1, 'delivered', 'from WarningDelivered, before the restore', $2, clock_timestamp())""",
                row["id"], before.delivered_at)

    async def _each_row(self, conn, row, now: datetime, work, *args, skip_races: bool = True):
        """Run ``work`` for one message in a savepoint. A message it fails on for a reason of its own
        (``errors.own_failure``) is set aside: failed, with the reason, and a warning's case goes to
        review, so that the rest of the claim goes on. The database's faults go up (nothing can be
        recorded now); a race with another transaction leaves the message for the next round
        (``skip_races``) or goes up too."""
        async with errors.own_failure(conn) as outcome:
            return await work(conn, row, now, *args)
        if outcome.race and skip_races:
            log.warning("SMS %s: %s; left for the next round", row["id"], outcome)
            return None
        if outcome.race:
            raise outcome.failure
        reason = why("set_aside", error=scrub(str(outcome))[:300])
        log.error("SMS %s (%s) set aside: %s", row["id"], row["kind"], reason)
        async with errors.own_failure(conn) as given_up:
            await self._give_up(conn, row, reason, now)
        if given_up.failure is not None:
            log.error("SMS %s: its case could not be sent to review (%s); the message alone is set aside",
                      row["id"], given_up)
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
                    rows = await store.lock_answered_many(conn, [(sms.id, attempt) for sms, attempt in sent],
                                                          self.sms.worker)
                    accepted = [(rows[sms.id], sms.text, Accepted(now, result.gateway_ref))
                                for (sms, _), result in zip(sent, results)
                                if sms.id in rows and isinstance(result, Accepted)]
                    answers = list(zip(sent, results))
                    if accepted and await self._all_accepted(conn, accepted, now):
                        recorded = {row["id"] for row, _, _ in accepted}
                        answers = [((sms, attempt), result) for (sms, attempt), result in answers
                                   if sms.id not in recorded]
                    for (sms, attempt), result in answers:
                        row = rows.get(sms.id)
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
                self.outbox_written()
                return
            except Exception as exc:  # noqa: BLE001 - sorted out below
                if not (errors.is_transient(exc) or errors.is_race(exc)):
                    raise
                log.error("cannot record the gateway's answers for %d SMS (%s); trying again in %.1fs",
                          len(sent), errors.describe(exc), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _all_accepted(self, conn, accepted: list[tuple], now: datetime) -> bool:
        """Record acceptances (row, text, ``Accepted``) in a constant number of statements, in a
        savepoint: the messages, their warnings' cases (``machine.on_warning_accepted``), audit and
        outbox rows (``store.Batch``). False, with nothing recorded, if that fails for a reason of
        its own: the caller records them one by one."""
        async with errors.own_failure(conn) as outcome:
            batch = store.Batch(conn)
            cases = await store.cases_by_id(conn, [row["case_id"] for row, _, _ in accepted if row["kind"] == "warning"])
            for row, text, result in accepted:
                await store.sms_accepted(batch, row["id"], text, result.at, result.gateway_ref)
                if row["kind"] == "warning":
                    cases[row["case_id"]] = await self._warning_accepted(batch, row, cases[row["case_id"]], result, now)
                else:
                    await self._sms_sent(batch, row, result)
            await batch.flush()
        if outcome.failure is not None:
            log.warning("recording %d acceptances failed (%s); one by one", len(accepted), outcome)
            return False
        return True

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
        if (before := (await restore.sms_sent_before(conn, [row["id"]])).get(row["id"])) is not None:
            await self._accepted_before_restore(conn, row, before, now)  # in doubt at the restore point
        elif row["first_report_at"] is not None:
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
        return await self._reports.keep(sms_id, status, detail, reported_at)

    async def apply_delivery_reports(self, limit: int = 200) -> int:
        """Apply kept reports in order: message status, and for a warning its case (delivered, or
        failed for good -> review). Reports on a message another transaction holds wait for the next
        round. A report that cannot be applied for a reason of its own is set aside with the
        problem (``sms_delivery_reports.problem``), and the rest are applied."""
        async with self.pool.acquire() as conn, conn.transaction():
            now = self.clock()
            reports = await store.claim_delivery_reports(conn, limit)
            if reports and await self._apply_all_reports(conn, reports, now):
                return len(reports)
            for report in reports:
                async with errors.own_failure(conn) as outcome:
                    await self._apply_report(conn, report, now)
                if outcome.failure is not None:
                    log.error("delivery report %s could not be applied: %s; set aside", report["id"], outcome)
                    await store.set_report_aside(conn, report["id"], str(outcome))
            return len(reports)

    async def _apply_all_reports(self, conn, reports, now: datetime) -> bool:
        """Apply a claim of reports, in order, in a constant number of statements, in a savepoint: the
        messages, the reports, their warnings' cases (``store.Batch``). False, with nothing applied,
        if that fails for a reason of its own: the caller applies them one by one."""
        async with errors.own_failure(conn) as outcome:
            batch = store.Batch(conn)
            cases = await store.cases_by_id(conn, [r["case_id"] for r in reports if self._decides_case(r)])
            messages: dict[UUID, dict] = {}
            for report in reports:
                sms = messages.get(report["sms_id"])
                messages[report["sms_id"]] = sms = await store.apply_delivery(batch, report, sms)
                if self._decides_case(report):
                    case = cases[sms["case_id"]]
                    cases[case.id] = await self._decide_on_report(batch, report, sms, case, now)
            await batch.flush()
        if outcome.failure is not None:
            log.warning("applying %d delivery reports failed (%s); one by one", len(reports), outcome)
            return False
        return True

    @staticmethod
    def _decides_case(report) -> bool:
        return report["kind"] == "warning" and report["status"] in ("delivered", "failed", "smsc_rejected")

    async def _apply_report(self, conn, report, now: datetime) -> None:
        sms = await store.apply_delivery(conn, report)
        if self._decides_case(report):
            await self._decide_on_report(conn, report, sms, await store.get_case(conn, sms["case_id"], lock=True), now)

    async def _decide_on_report(self, conn, report, sms: dict, case: machine.Case, now: datetime) -> machine.Case:
        """A warning's delivery report decides its case: delivered (a late delivery moves the deadline),
        or failed for good (review). Returns the case."""
        status = report["status"]
        if status == "delivered":
            decision = machine.on_warning_delivered(case, sms["delivered_at"], self.effects.rules, now)
        else:
            decision = machine.on_warning_undelivered(case, f"{status} {report['detail']}".strip(), now)
        await self.effects.record(conn, case, decision, now, f"delivery-report:{report['sms_id']}")
        if status == "delivered" and decision.changed:
            await store.publish_delivered(conn, self.effects.topics.case_events, case, decision.case, sms)
        return decision.case

    def _render(self, row, now: datetime) -> str:
        p = row["params"]
        tz = self.sms.timezone
        language = texts.OWNER_LANGUAGES.get(p.get("language"), self.sms.language)
        if row["kind"] == "ticket":
            return texts.ticket_text(texts.TicketFacts(p["plate"], p["place"], p["ticket_number"], self._link(p)),
                                     language, self.sms.signature)
        if row["kind"] == "appeal_decision":
            return texts.appeal_decision_text(texts.AppealFacts(p["plate"], p["ticket_number"], p["outcome"]),
                                              language, self.sms.signature)
        if row["kind"] == "ticket_withdrawn":
            return texts.withdrawal_text(p["plate"], p["ticket_number"], language, self.sms.signature)
        if row["kind"] == "appeal_received":
            return texts.appeal_received_text(p["plate"], p["reference"], datetime.fromisoformat(p["due_at"]).astimezone(tz),
                                              language, self.sms.signature)
        if row["kind"] == "caution":
            return texts.caution_text(texts.CautionFacts(p["plate"], p["place"], p["first_offence"]),
                                      language, self.sms.signature)
        # The text shows the earliest the deadline can be, rounded down to the minute: the real one counts
        # from acceptance (later than now), or from delivery when the phone got it later: never earlier.
        deadline = (now + timedelta(seconds=row["window_seconds"])).astimezone(tz)
        counted = datetime.fromisoformat(p["counted_at"]).astimezone(tz) if "counted_at" in p else None
        return texts.warning_text(texts.WarningFacts(p["plate"], p["place"], deadline, p.get("car_park"),
                                                     p.get("free_spaces"), counted, self._link(p)),
                                  language, self.sms.signature)

    def _link(self, params: dict) -> str | None:
        return f"{self.sms.driver_link}{params['code']}" if params.get("code") and self.sms.driver_link else None

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
            await self.effects.record(conn, case, machine.on_warning_failed(case, reason, now), now, f"sms:{row['id']}")

    async def _accepted(self, conn, row, text: str | None, result: Accepted, now: datetime) -> None:
        await store.sms_accepted(conn, row["id"], text, result.at, result.gateway_ref)
        if row["kind"] == "warning":
            await self._warning_accepted(conn, row, await store.get_case(conn, row["case_id"], lock=True), result, now)
        else:
            await self._sms_sent(conn, row, result)

    async def _sms_sent(self, conn, row, result: Accepted) -> None:
        """Publish ``SmsSent`` for an SMS other than a warning: after a restore, it tells which were sent
        (pipeline/restore.py). No phone number in it."""
        await store.add_outbox(conn, self.effects.topics.case_events, row["plate"], events.SmsSent(
            case_id=str(row["case_id"]), plate=row["plate"], sms_id=str(row["id"]), kind=row["kind"],
            accepted_at=result.at))

    async def _warning_accepted(self, conn, row, case: machine.Case, result: Accepted, now: datetime) -> machine.Case:
        """The gateway took a warning: its case's window starts (``machine.on_warning_accepted``). Returns the case."""
        window = timedelta(seconds=row["window_seconds"])
        decision = machine.on_warning_accepted(case, result.at, self.effects.rules, window)
        await self.effects.record(conn, case, decision, now, f"sms:{row['id']}")
        if decision.changed:
            p = row["params"]
            await store.add_outbox(conn, self.effects.topics.case_events, case.plate, events.WarningSent(
                case_id=str(case.id), plate=case.plate, sms_id=str(row["id"]), accepted_at=result.at,
                deadline_at=decision.case.deadline_at, car_park_id=p.get("car_park_id"),
                free_spaces=p.get("free_spaces")))
        return decision.case
