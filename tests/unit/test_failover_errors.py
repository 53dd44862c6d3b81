"""What a worker meets while PostgreSQL fails over is the database's fault (wait and try again), never
the event's: work is not dead-lettered because the primary changed."""

import asyncpg
import pytest
from asyncpg import exceptions

from pipeline.db import errors


@pytest.mark.parametrize("failure", [
    exceptions.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"),  # 25006: a standby
    exceptions.AdminShutdownError("terminating connection due to administrator command"),  # 57P01: demoted
    exceptions.CrashShutdownError("terminating connection because of crash of another server process"),  # 57P02
    exceptions.CannotConnectNowError("the database system is starting up"),  # 57P03
    exceptions.ConnectionFailureError("server closed the connection"),  # 08006
    exceptions.TargetServerAttributeNotMatched("None of the hosts match the target attribute requirement"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    ConnectionRefusedError(111, "Connect call failed"),
], ids=lambda e: type(e).__name__)
def test_failover_errors_are_transient(failure):
    assert errors.is_transient(failure)


def test_a_data_error_is_still_the_inputs_fault():
    assert not errors.is_transient(exceptions.StringDataRightTruncationError("value too long"))
