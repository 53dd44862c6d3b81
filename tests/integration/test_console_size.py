"""The console at a province's size (issue 16): what the live page and /metrics read every refresh
reads an index over the rows it shows, not a sort or a visit of every open case. Checked on the
plans PostgreSQL chooses (a few rows here: sequential scans and sorts are switched off, so only a
missing index leaves one in the plan); the figures at a million open cases are ``./dev bench console``."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bench.console_size import Explaining
from pipeline.cases import watermarks
from pipeline.console import queries
from schemas import topics

from .conftest import Stack


async def plans_of(stack: Stack, read) -> list[tuple[str, str]]:
    async with stack.pool.acquire() as conn:
        await conn.execute("SET enable_seqscan = off")
        await conn.execute("SET enable_sort = off")
        await conn.execute("SET enable_bitmapscan = off")
        try:
            explaining = Explaining(conn)
            await read(explaining)
        finally:
            await conn.execute("RESET ALL")
    return explaining.plans


def plan_of(plans: list[tuple[str, str]], words: str) -> str:
    found = [plan for sql, plan in plans if words in " ".join(sql.split())]
    assert len(found) == 1, words
    return found[0]


async def test_the_live_pages_open_cases_read_the_soonest_deadlines_from_an_index_not_a_sort_of_all(stack: Stack):
    now = datetime.now(UTC)
    counts = await queries.counts(stack.pool, now, ZoneInfo(stack.settings.timezone))
    plans = await plans_of(stack, lambda conn: queries.overview(conn, now, counts, {}))
    plan = plan_of(plans, "ORDER BY c.deadline_at NULLS LAST, c.detected_at LIMIT")
    assert "cases_open_by_deadline" in plan and "Sort" not in plan, plan


async def test_decisions_held_are_counted_per_partition_from_an_index_without_visiting_each_due_case(stack: Stack):
    plans = await plans_of(stack, lambda conn: watermarks.lag(conn, stack.topic(topics.CAMERA_EVENTS)))
    plan = plan_of(plans, "AS held")
    assert "Index Only Scan using cases_due_by_partition" in plan, plan


async def test_the_drive_away_rate_looks_for_departures_in_an_index_of_departures_only(stack: Stack):
    plans = await plans_of(stack, lambda conn: queries.drive_away_rate(conn, datetime.now(UTC) - timedelta(hours=24),
                                                                     ZoneInfo(stack.settings.timezone)))
    plan = plan_of(plans, "VehicleDeparted")
    assert "Index Only Scan using sightings_of_cases_case_id_taken_at_idx" in plan, plan  # its partition's part


async def test_the_figures_read_every_refresh_count_no_open_case_nor_the_days_traffic(stack: Stack):
    """``live_counts`` (every refresh) leaves today's totals and the open cases to ``day_totals``
    (every 15 s): its statement names neither the day's start nor the open states."""
    plans = await plans_of(stack, lambda conn: queries.live_counts(conn, datetime.now(UTC)))
    assert len(plans) == 1
    sql, plan = plans[0]
    assert "'detected'" not in sql and ">= $" not in sql, sql
    assert "Seq Scan" not in plan, plan
