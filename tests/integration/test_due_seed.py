"""The due bench's bulk seeding (bench/due.py, ``SEED``) on the real PostgreSQL: it leaves, for each
case, the rows the pipeline would, and its cost stays linear in the chunk's size whatever plan
PostgreSQL keeps for it (a generic plan, after five executions on a connection, once joined two of
the chunk's CTEs by a nested loop: a million cases never finished seeding)."""

import json
from datetime import timedelta

import asyncpg
import pytest

from bench import due
from pipeline.cases.store import init_connection
from pipeline.db.migrate import migrate
from pipeline.demo import city


@pytest.fixture
async def conn(database):
    c = await asyncpg.connect(database)
    await init_connection(c)
    try:
        await migrate(c)
        await city.load(c)
        yield c
    finally:
        await c.close()


def nested_loops(plan: dict):
    if plan["Node Type"] == "Nested Loop":
        yield plan
    for child in plan.get("Plans", []):
        yield from nested_loops(child)


def rescanned(plan: dict) -> list[str]:
    """The CTEs a nested loop scans again for each row of its outer side (its inner side)."""
    found = []
    for loop in nested_loops(plan):
        inner = loop["Plans"][1]
        stack = [inner]
        while stack:
            node = stack.pop()
            if node["Node Type"] == "CTE Scan":
                found.append(node["CTE Name"])
            stack += node.get("Plans", [])
    return found


async def test_the_seed_plan_never_rescans_the_chunk_even_when_postgresql_keeps_a_generic_plan(conn):
    await conn.execute("PREPARE seed AS " + due.SEED)
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    plan = await conn.fetchval(
        """EXPLAIN (FORMAT JSON) EXECUTE seed('{1}'::int[], '{x}'::text[], '{0}'::int[], '{2026-12-07}'::timestamptz[],
                                              '{warned}'::text[], 'demo', 'r', 30, 120, 'camera-events.demo')""")
    plan = plan if isinstance(plan, list) else json.loads(plan)
    assert [name for name in rescanned(plan[0]["Plan"]) if name not in ("cam", "cams")] == []


async def test_seeded_cases_each_have_their_owner_violation_warning_and_audit_entry(conn):
    now = await conn.fetchval("SELECT now()")
    wakes = [now + timedelta(seconds=100 + i) for i in range(6)]
    numbers = list(range(6))
    plates = [due.plate_of(i) for i in numbers]
    await conn.execute(due.SEED, numbers, plates, [due.partition_of(p, 12) for p in plates], wakes,
                       ["warned" if i % 2 == 0 else "rechecking" for i in numbers], city.INTEGRATOR, "r",
                       due.LATENESS, 120.0, "camera-events.demo")
    rows = await conn.fetch(
        """SELECT c.plate, c.state, c.wake_at, c.deadline_at, c.warned_at, s.accepted_at, s.kind, s.case_id IS NOT NULL AS sms,
                  (SELECT count(*) FROM audit_log a WHERE a.case_id = c.id) AS audit,
                  (SELECT count(*) FROM sightings g WHERE g.case_id = c.id) AS sightings,
                  (SELECT count(*) FROM plate_registry p WHERE p.plate = c.plate) AS owners
           FROM cases c LEFT JOIN sms_messages s ON s.case_id = c.id ORDER BY c.wake_at""")
    assert [r["plate"] for r in rows] == plates
    assert [r["state"] for r in rows] == ["warned", "rechecking"] * 3
    for r, wake in zip(rows, wakes):
        assert r["wake_at"] == wake
        assert (r["kind"], r["accepted_at"], r["audit"], r["sightings"], r["owners"]) == ("warning", r["warned_at"], 1, 1, 1)
        extra = 0 if r["state"] == "warned" else 120
        assert r["deadline_at"] == wake - timedelta(seconds=due.LATENESS + extra)
