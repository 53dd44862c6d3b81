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
