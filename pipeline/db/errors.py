"""Whose fault is a failure: the event's (it will fail again the same way) or the database's (wait).

PostgreSQL says which with its SQLSTATE. Only a data error (class 22: a value the column refuses,
class 23: a constraint the row breaks, class 54: a program limit such as a value too large) is
the input's fault; everything else (a lost connection, a read-only server after a failover, a
full disk, a cancelled statement, a lock or statement timeout, a serialization failure, a missing
table during a deployment) passes, so the work waits and is tried again, never thrown away.
A Python exception raised by our own code on one input (a ``KeyError`` on an odd value) is that
input's fault too: it would fail again the same way.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

DATA_ERROR_CLASSES = ("22", "23", "54")
RACES = ("23505", "40001", "40P01")
"""A unique violation, a serialization failure or a deadlock: another worker got there first; try again."""


class Stuck(RuntimeError):
    """Work that cannot be recorded even as a dead letter: waited on and tried again, like an outage."""


def sqlstate(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None


def is_transient(exc: BaseException) -> bool:
    """The database (or the connection to it) failed, not the input: wait and try the same work again."""
    if isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.InterfaceError, asyncpg.InternalClientError, Stuck)):
        return True
    state = sqlstate(exc)
    if state is None:
        return isinstance(exc, asyncpg.PostgresError)
    return not state.startswith(DATA_ERROR_CLASSES)


def is_race(exc: BaseException) -> bool:
    return sqlstate(exc) in RACES


def describe(exc: BaseException) -> str:
    """A short description for logs and dead letters: the class, the SQLSTATE and the message."""
    state = sqlstate(exc)
    text = f"{type(exc).__name__}{f' [{state}]' if state else ''}: {exc}"
    return text.replace("\x00", "")[:500]


@dataclass
class Outcome:
    """What became of a block run under ``own_failure``: ``failure`` is None when it succeeded."""

    failure: BaseException | None = None

    @property
    def race(self) -> bool:
        """The failure was a race with another transaction (``is_race``)."""
        return self.failure is not None and is_race(self.failure)

    def __str__(self) -> str:
        return describe(self.failure) if self.failure is not None else "ok"


@asynccontextmanager
async def own_failure(conn=None) -> AsyncIterator[Outcome]:
    """The one rule for a row (an event, a case, a message) that fails: "the database's fault: re-raise,
    else set the row aside". Runs the block (in a savepoint when ``conn`` is given); the database's
    faults (``is_transient``) go up; any other failure is the row's own and is returned as
    ``Outcome.failure``, for the caller to set the row aside with ``describe(failure)`` while the
    others go on (or, for a race with another transaction, ``Outcome.race``, to try it again)."""
    outcome = Outcome()
    try:
        if conn is None:
            yield outcome
        else:
            async with conn.transaction():
                yield outcome
    except Exception as exc:  # noqa: BLE001 - sorted out here
        if is_transient(exc):
            raise
        outcome.failure = exc
