"""Delivery reports that arrive together are kept in one statement (issue 16): Kannel posts a report or
more per message, each an HTTP request answered once its report is stored."""

import asyncio
from datetime import UTC, datetime
from uuid import uuid4

import asyncpg

from pipeline.sms.service import SmsService

KNOWN = {uuid4() for _ in range(60)}


class ReportsPool:
    """Stands in for PostgreSQL: messages ``KNOWN`` exist; a detail "\\x00" is refused, as PostgreSQL
    refuses a NUL in text; counts the statements."""

    def __init__(self):
        self.statements = 0
        self.kept: list[tuple] = []

    async def fetch(self, sql, ids, statuses, details, reported):
        self.statements += 1
        await asyncio.sleep(0.01)
        if any("\x00" in d for d in details):
            raise asyncpg.CharacterNotInRepertoireError("invalid byte sequence for encoding \"UTF8\": 0x00")
        rows = [(i, s) for i, s in zip(ids, statuses) if i in KNOWN]
        self.kept += rows
        return [{"sms_id": i} for i, _ in rows]

    async def fetchval(self, sql, sms_id, status, detail, reported_at):
        self.statements += 1
        if "\x00" in detail:
            raise asyncpg.CharacterNotInRepertoireError("invalid byte sequence for encoding \"UTF8\": 0x00")
        if sms_id in KNOWN:
            self.kept.append((sms_id, status))
            return True
        return None


def service(pool) -> SmsService:
    return SmsService(pool, effects=None, sms=None)


async def test_reports_arriving_together_are_kept_in_one_statement_in_order():
    pool = ReportsPool()
    sms = service(pool)
    known = sorted(KNOWN)[:50]
    unknown = uuid4()
    reports = [(i, "delivered" if n % 2 else "smsc_accepted") for n, i in enumerate(known)] + [(unknown, "delivered")]
    answers = await asyncio.gather(*(sms.record_delivery_report(i, s, datetime.now(UTC)) for i, s in reports))
    assert answers == [True] * 50 + [False], "an unknown message is said so, the others are kept"
    assert pool.statements == 1
    assert pool.kept == reports[:50], "kept in the order they came"


async def test_a_report_that_cannot_be_kept_fails_alone_and_the_others_are_kept():
    pool = ReportsPool()
    sms = service(pool)
    ids = sorted(KNOWN)[:5]
    calls = [sms.record_delivery_report(i, "delivered", None, detail="\x00" if n == 2 else "ok") for n, i in enumerate(ids)]
    answers = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(answers[2], asyncpg.CharacterNotInRepertoireError)
    assert [a for n, a in enumerate(answers) if n != 2] == [True] * 4
    assert sorted(i for i, _ in pool.kept) == sorted(ids[:2] + ids[3:])
    later = await sms.record_delivery_report(ids[0], "delivered", None)
    assert later is True, "and the next reports are kept as before"
