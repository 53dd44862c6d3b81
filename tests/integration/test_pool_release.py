"""A worker's connection goes back to its pool without a reset round trip (one fewer statement for
every batch of camera events), yet nothing a session can keep passes to the connection's next user:
a session advisory lock its holder did not release, a setting, an open transaction."""

import asyncpg

from pipeline import bootstrap
from pipeline.config import Settings
from pipeline.db import primary

LOCK = 0x5057_7465_7374  # a key no pipeline lock uses


async def _last_statement(pid: int) -> str:
    """What PostgreSQL says the backend ``pid`` ran last (seen from another session)."""
    other = await asyncpg.connect(Settings().database_url.get_secret_value())
    try:
        return await other.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid)
    finally:
        await other.close()


async def test_a_connection_goes_back_to_the_pool_without_a_statement():
    pool = await bootstrap.connect_database(Settings(), min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid() /* the work */")
            async with conn.transaction():
                await conn.fetchval("SELECT $1::int + 1", 1)
        assert await _last_statement(pid) == "COMMIT;", "the release sent a reset statement"
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid, "the connection was not kept"
    finally:
        await pool.close()


async def test_a_session_lock_left_behind_is_released_with_the_connection():
    pool = await bootstrap.connect_database(Settings(), min_size=1, max_size=1)
    rival = await asyncpg.connect(Settings().database_url.get_secret_value())
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK)
            assert not await rival.fetchval("SELECT pg_try_advisory_lock($1)", LOCK)
            # its holder never gets to pg_advisory_unlock (cancelled, say)
        assert await rival.fetchval("SELECT pg_try_advisory_lock($1)", LOCK), \
            "the pool kept a session advisory lock for the connection's next user"
        await rival.execute("SELECT pg_advisory_unlock($1)", LOCK)
        async with pool.acquire() as conn:  # and the connection is clean again: no reset next time
            pid = await conn.fetchval("SELECT pg_backend_pid()")
        assert await _last_statement(pid) == "SELECT pg_backend_pid()"
    finally:
        await rival.close()
        await pool.close()


async def test_settings_and_open_transactions_do_not_pass_to_the_next_user():
    pool = await bootstrap.connect_database(Settings(), min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            default = await conn.fetchval("SHOW work_mem")
            await conn.execute("SET work_mem = '77MB'")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW work_mem") == default
            await conn.execute("BEGIN")
            await conn.execute("SET LOCAL work_mem = '66MB'")
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SHOW work_mem") == default
    finally:
        await pool.close()


def test_which_statements_may_leave_session_state():
    leaves = ["SELECT pg_try_advisory_lock($1)", "SELECT pg_advisory_lock($1)", "select pg_advisory_lock_shared(1)",
              "SET lock_timeout = 0; SET statement_timeout = 0", "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
              "SELECT set_config('x.y', 'z', false)", "LISTEN changes", "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
              "BEGIN; SET work_mem = '1MB'", "RESET ALL"]
    clean = ["SELECT pg_advisory_xact_lock($1)", "SELECT pg_try_advisory_xact_lock($1)", "SELECT pg_advisory_unlock($1)",
             "SET LOCAL lock_timeout = '100ms'", "UPDATE cases SET state = $1 WHERE id = $2",
             "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET n = excluded.n", "SELECT 1"]
    assert [q for q in leaves if not primary.leaves_session_state(q)] == []
    assert [q for q in clean if primary.leaves_session_state(q)] == []
