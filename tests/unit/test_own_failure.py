"""The one "transient: re-raise, else set the row aside" rule (``errors.own_failure``), used by the
camera events, the clock, the SMS loop and delivery reports."""

from contextlib import asynccontextmanager

import asyncpg
import pytest

from pipeline.db import errors


class FakeConnection:
    """Counts savepoints and how they ended."""

    def __init__(self):
        self.ended: list[str] = []

    def transaction(self):
        @asynccontextmanager
        async def savepoint():
            try:
                yield
            except BaseException:
                self.ended.append("rolled back")
                raise
            self.ended.append("committed")
        return savepoint()


async def test_a_value_postgresql_refuses_is_the_rows_own_failure_returned_not_raised():
    conn = FakeConnection()
    async with errors.own_failure(conn) as outcome:
        raise asyncpg.NumericValueOutOfRangeError("value out of range")
    assert isinstance(outcome.failure, asyncpg.NumericValueOutOfRangeError) and not outcome.race
    assert "22003" in str(outcome)
    assert conn.ended == ["rolled back"]  # the row's writes are undone, the transaction goes on


async def test_a_bug_on_an_odd_input_is_the_rows_own_failure_too():
    async with errors.own_failure() as outcome:
        {}["missing"]
    assert isinstance(outcome.failure, KeyError)


@pytest.mark.parametrize("fault", [OSError("connection refused"), asyncpg.ReadOnlySQLTransactionError("read only"),
                                   asyncpg.QueryCanceledError("statement timeout"), errors.Stuck("dead letter")])
async def test_the_databases_faults_go_up(fault):
    conn = FakeConnection()
    with pytest.raises(type(fault)):
        async with errors.own_failure(conn):
            raise fault
    assert conn.ended == ["rolled back"]


async def test_a_race_with_another_transaction_is_returned_as_a_race():
    async with errors.own_failure() as outcome:
        raise asyncpg.UniqueViolationError("duplicate key")
    assert outcome.race


async def test_a_block_that_succeeds_commits_and_has_no_failure():
    conn = FakeConnection()
    async with errors.own_failure(conn) as outcome:
        pass
    assert outcome.failure is None and str(outcome) == "ok" and conn.ended == ["committed"]
