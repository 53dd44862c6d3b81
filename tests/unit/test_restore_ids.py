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


def _seen(*messages: dict) -> dict:
    """``_read_outputs``' answer for ``messages``: identity -> (topic, partition, offset, time, message)."""
    return {f"{i}": ("t", 0, i, None, m) for i, m in enumerate(messages)}


def test_every_sms_the_gateway_accepted_after_t_is_known_from_kafka_whatever_its_kind():
    from pipeline.restore import sms_sent

    case, warning, ticket = uuid4(), uuid4(), uuid4()
    seen = _seen(
        {"type": "WarningSent", "case_id": str(case), "sms_id": str(warning), "accepted_at": "2026-12-07T10:00:00+00:00"},
        {"type": "WarningDelivered", "case_id": str(case), "sms_id": str(warning),
         "accepted_at": "2026-12-07T10:00:00+00:00", "delivered_at": "2026-12-07T10:00:02+00:00"},
        {"type": "SmsSent", "case_id": str(case), "sms_id": str(ticket), "kind": "ticket",
         "accepted_at": "2026-12-07T10:11:00+00:00"},
        {"type": "CaseOpened", "case_id": str(case)})
    sent = sms_sent(seen)
    assert {k: (v[0], v[1], v[2].minute, v[3] and v[3].second) for k, v in sent.items()} == {
        warning: (case, "warning", 0, 2), ticket: (case, "ticket", 11, None)}


def test_an_sms_sent_event_never_holds_a_phone_number():
    from schemas.events import SmsSent

    assert "phone" not in SmsSent.model_fields and not any("phone" in f for f in SmsSent.model_fields)
    with pytest.raises(ValueError):
        SmsSent(case_id="c", plate="浙A12345", sms_id="s", kind="ticket", accepted_at="2026-12-07T10:00:00Z",
                phone="+8613800000000")


def _links(n: int, head: tuple[int, str] = (0, "0" * 64)) -> list[dict]:
    """``n`` messages on tickets continuing the chain from ``head``, as the database would have sealed them."""
    from pipeline.tickets import chain

    seq, prev, out = *head, []
    for i in range(n):
        m = {"type": "TicketIssued", "ticket_number": f"YH261208{seq + 1:06d}", "case_id": str(uuid4()),
             "plate": "浙A12345", "issued_at": "2026-12-07T10:00:00Z"}
        seq += 1
        m["chain"] = {"seq": seq, "prev": prev, "hash": chain.link_hash(seq, prev, chain.canonical(chain.record_of(m)))}
        prev = m["chain"]["hash"]
        out.append(m)
    return out


def test_the_links_kept_are_those_that_continue_the_restored_chain_without_a_gap():
    from pipeline.restore import links_to_keep

    links = _links(4)
    head = (1, links[0]["chain"]["hash"])  # the restored database had the first link
    kept, after_gap = links_to_keep(_seen(*reversed(links)), *head)
    assert [m["chain"]["seq"] for m in kept] == [2, 3, 4] and after_gap == 0
    kept, after_gap = links_to_keep(_seen(links[0], links[1], links[3]), *head)  # link 3 never reached Kafka
    assert [m["chain"]["seq"] for m in kept] == [2] and after_gap == 1
    forged = dict(links[1], plate="浙B00000")  # its hash no longer matches its record
    kept, after_gap = links_to_keep(_seen(forged, links[2]), *head)
    assert kept == [] and after_gap == 2


def test_new_tickets_after_a_restore_take_numbers_past_those_issued_in_the_lost_stretch():
    from pipeline.restore import highest_serial

    seen = _seen(*_links(3), {"type": "TicketIssued", "ticket_number": "XX261208000099"},
                 {"type": "TicketVoided", "ticket_number": "YH261208000777"})
    assert highest_serial(seen, "YH") == 3
    assert highest_serial(_seen({"type": "TicketIssued", "ticket_number": "YH2612081234567"}), "YH") == 1234567
    assert highest_serial(_seen(), "YH") is None


class _FakeConn:
    """Answers ``settle``'s first query (the open restores) and counts the queries."""

    def __init__(self, open_ids: list[int]):
        self.open_ids, self.queries = open_ids, 0

    async def fetch(self, sql, *args):
        self.queries += 1
        return [{"id": i} for i in self.open_ids]


async def test_the_workers_read_whether_a_restore_is_being_reconciled_at_most_once_a_second():
    from pipeline import restore

    restore.forget()
    conn, now = _FakeConn([]), [100.0]
    assert not await restore.reconciling(conn, clock=lambda: now[0])
    for _ in range(50):  # a busy second of SMS claims and outbox batches
        assert not await restore.reconciling(conn, clock=lambda: now[0])
    assert conn.queries == 1
    now[0] += restore.CHECK_EVERY_SECONDS
    assert not await restore.reconciling(conn, clock=lambda: now[0])
    assert conn.queries == 2
    restore.forget()
