"""SMS retries are counted in time, not attempts (pipeline/config.py, pipeline/cases/store.py)."""

import pytest

from pipeline.cases.store import backoff_seconds
from pipeline.config import Settings

pytestmark = pytest.mark.unit


def test_the_wait_between_tries_doubles_up_to_its_cap_however_long_the_outage():
    waits = [backoff_seconds(n, 2, 30) for n in (1, 2, 3, 4, 5, 6, 10_000)]
    assert waits == [2, 4, 8, 16, 30, 30, 30]


def test_the_old_attempt_count_setting_is_refused_with_its_replacement_named(monkeypatch):
    monkeypatch.setenv("PW_SMS_MAX_ATTEMPTS", "6")
    with pytest.raises(ValueError, match="PW_SMS_RETRY_HORIZON_SECONDS"):
        Settings()

