"""What makes the replay after a restore reproduce what the lost stretch did (pipeline/restore.py)."""

import json
from uuid import uuid4

import pytest
from click.testing import CliRunner

from pipeline.restore import case_id_for, identity, sms_id_for
from pipeline.restore_cli import after_restore


def test_a_violation_opens_the_same_case_and_queues_the_same_sms_whenever_it_is_decided():
    case = case_id_for("hikvision-yuhang", "evt-1")
    assert case == case_id_for("hikvision-yuhang", "evt-1")
    assert case != case_id_for("hikvision-yuhang", "evt-2") != case_id_for("other-integrator", "evt-1")
    assert sms_id_for(case, "warning") == sms_id_for(case, "warning") != sms_id_for(case, "ticket")


def test_an_output_made_again_by_a_replay_has_the_identity_it_had_on_kafka():
    case, sms = str(uuid4()), str(uuid4())
    sent = {"type": "WarningSent", "case_id": case, "sms_id": sms, "accepted_at": "2026-12-07T10:00:00+00:00"}
    again = dict(sent, accepted_at="2026-12-07T10:05:00+00:00", free_spaces=3)
    assert identity("case-events", json.dumps(sent).encode()) == identity("case-events", json.dumps(again).encode())
    opened = {"type": "CaseOpened", "case_id": case}
    assert identity("case-events", json.dumps(opened).encode()) != identity("case-events", json.dumps(sent).encode())
    ticket = {"type": "TicketIssued", "case_id": case, "ticket_number": "YH-1"}
    renumbered = dict(ticket, ticket_number="YH-2")  # a replay issues the number again
    assert identity("tickets", json.dumps(ticket).encode()) == identity("tickets", json.dumps(renumbered).encode())
    letter = {"type": "DeadLetter", "source_topic": "camera-events.x", "partition": 1, "offset": 7, "reason": "a"}
    assert identity("dead-letters", json.dumps(letter).encode()) == \
        identity("dead-letters", json.dumps(dict(letter, reason="b")).encode())
    assert identity("dead-letters", json.dumps(letter).encode()) != \
        identity("dead-letters", json.dumps(dict(letter, offset=8)).encode())
    assert identity("x", b"\xff not json").startswith("x|sha256:")


@pytest.mark.parametrize("given, problem", [("2026-12-07T18:30:00", "time zone"), ("yesterday", "Invalid value")])
def test_after_restore_wants_the_restore_point_with_its_time_zone(given, problem):
    result = CliRunner().invoke(after_restore, ["--to", given])
    assert result.exit_code == 2 and problem in result.output
