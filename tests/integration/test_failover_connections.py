"""A worker's connection that lands on a read-only server (a standby, or a primary just demoted
without closing its sessions) is a transient failure, and the pool connects again instead of
handing the same read-only connection back for ever."""

import secrets

import asyncpg
import pytest

from pipeline import bootstrap
from pipeline.config import Settings
from pipeline.db import errors


async def test_a_connection_refused_a_write_as_read_only_is_replaced_and_the_retry_writes():
    pool = await bootstrap.connect_database(Settings(), min_size=1, max_size=1)
    table = f"failover_probe_{secrets.token_hex(4)}"
    try:
        async with pool.acquire() as conn:
            first_backend = await conn.fetchval("SELECT pg_backend_pid()")
            # What a standby says to a write (a session of a demoted primary says the same).
            await conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError) as refused:
                async with conn.transaction():
                    await conn.execute(f"CREATE TABLE {table} (n int)")
        assert errors.is_transient(refused.value), "a read-only server is the database's fault: wait and retry"

        async with pool.acquire() as conn:  # the work's next try
            assert await conn.fetchval("SELECT pg_backend_pid()") != first_backend, "the read-only connection was reused"
            async with conn.transaction():
                await conn.execute(f"CREATE TABLE {table} (n int)")
                await conn.execute(f"INSERT INTO {table} VALUES (1)")
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 1
    finally:
        async with pool.acquire() as conn:
            await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await pool.close()


async def test_other_failures_keep_the_connection():
    pool = await bootstrap.connect_database(Settings(), min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            first_backend = await conn.fetchval("SELECT pg_backend_pid()")
            with pytest.raises(asyncpg.DataError):
                await conn.fetchval("SELECT 'x'::int")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == first_backend
    finally:
        await pool.close()
