"""A worker whose database fails while it starts (a failover, a restart) starts again, not exits.

In the cluster chaos run a worker still starting when the PostgreSQL primary was killed got asyncpg's
"cannot switch to state 11" while reading reference data, and ended with exit code 1."""
import asyncio

import asyncpg
import pytest

from pipeline import bootstrap
from pipeline.config import Settings

SETTINGS = Settings(database_url="postgresql://parkwarden:secret@127.0.0.1:56401,127.0.0.1:56402/parkwarden")


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch):
    real_sleep = asyncio.sleep
    monkeypatch.setattr(bootstrap.asyncio, "sleep", lambda _seconds: real_sleep(0))


def test_a_start_the_database_fails_under_is_done_again_from_the_top(caplog):
    attempts = []

    async def start():
        attempts.append(len(attempts))
        if len(attempts) == 1:
            raise asyncpg.InternalClientError("cannot switch to state 11; another operation (2) is in progress")
        if len(attempts) == 2:
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 56401)")

    asyncio.run(bootstrap.start_on_database(SETTINGS, start))
    assert attempts == [0, 1, 2]
    assert "starting again" in caplog.text
    assert "secret" not in caplog.text


def test_a_fault_of_the_data_or_the_settings_still_ends_the_start():
    attempts = []

    async def bad_data():
        attempts.append(1)
        raise asyncpg.exceptions.InvalidTextRepresentationError("invalid input syntax for type uuid")

    with pytest.raises(asyncpg.exceptions.InvalidTextRepresentationError):
        asyncio.run(bootstrap.start_on_database(SETTINGS, bad_data))
    assert attempts == [1]

    async def refused():
        raise SystemExit("PostgreSQL refused the worker: check PW_DATABASE_URL")

    with pytest.raises(SystemExit):
        asyncio.run(bootstrap.start_on_database(SETTINGS, refused))
