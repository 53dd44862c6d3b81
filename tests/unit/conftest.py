"""Unit tier: pure tests, no services. Shared here: a fake clock the tests advance by hand."""

from datetime import UTC, datetime, timedelta

import pytest

START = datetime(2026, 11, 26, 10, 42, tzinfo=UTC)


class FakeClock:
    """A fixed UTC time that only moves when a test says so."""

    def __init__(self, start: datetime = START):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        self.now += delta if delta is not None else timedelta(**kwargs)
        return self.now

    def set(self, moment: datetime) -> datetime:
        assert moment >= self.now, "the fake clock never goes back"
        self.now = moment
        return self.now


class Ticking:
    """A monotonic clock (seconds, like ``time.monotonic``) the test moves by hand with ``now``."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
