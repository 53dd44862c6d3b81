"""Retention's pure parts: partition days and months, masking the audit log's details, the settings."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from pipeline.config import Settings
from pipeline.lookups.owners import mask_phone
from pipeline.retention import job


def test_a_sighting_partition_is_a_utc_day_and_an_audit_partition_a_utc_month():
    at = datetime(2026, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=8)))  # 15:30 UTC
    day = job.SIGHTINGS.start_of(at)
    assert (day, job.SIGHTINGS.after(day), job.SIGHTINGS.name_of(day)) == (
        datetime(2026, 12, 31, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC), "sightings_unlinked_20261231")
    month = job.AUDIT.start_of(at)
    assert (month, job.AUDIT.after(month), job.AUDIT.name_of(month)) == (
        datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC), "audit_log_202612")


def test_the_audit_log_keeps_whole_months():
    at = datetime(2027, 3, 15, 12, tzinfo=UTC)
    assert job._months_before(at, 24) == datetime(2025, 3, 1, tzinfo=UTC)
    assert job._months_before(at, 3) == datetime(2026, 12, 1, tzinfo=UTC)


def test_phone_numbers_are_masked_anywhere_in_an_audit_entry_and_nothing_else_changes():
    detail = {"note": "owner called from 13800138000", "cause": "event-0001", "n": 3,
              "list": ["+8613912345678", {"deep": "call 13700001111 back"}]}
    assert job._scrubbed(detail) == {"note": "owner called from 138****8000", "cause": "event-0001", "n": 3,
                                     "list": [mask_phone("+8613912345678"), {"deep": "call 137****1111 back"}]}


def test_evidence_cannot_be_set_to_go_before_an_appeal_could_be_decided():
    with pytest.raises(ValidationError, match="PW_RETENTION_DECIDED_CASE_DAYS"):
        Settings(retention_decided_case_days=20, appeal_window_days=15, appeal_decision_days=10)
    with pytest.raises(ValidationError, match="PW_RETENTION_EVENT_IDS_DAYS"):
        Settings(retention_event_ids_days=1, retention_unlinked_sightings_hours=36)
    with pytest.raises(ValidationError, match="PW_RETENTION_UNLINKED_SIGHTINGS_HOURS"):
        Settings(same_stay_minutes=48 * 60)  # sightings in between would go before the stay ends
    assert job.Policy.of(Settings()) == job.Policy()
