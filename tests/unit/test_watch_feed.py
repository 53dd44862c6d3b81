"""The demo's live feed names what an SmsSent says (not the bare event type), and never a phone."""

from zoneinfo import ZoneInfo

from pipeline.watch import describe


def test_an_sms_sent_reads_as_its_kind_and_time_in_the_city():
    line, _ = describe({"type": "SmsSent", "case_id": "c1", "plate": "浙A12345", "sms_id": "s1", "kind": "ticket",
                        "accepted_at": "2026-12-07T23:43:43+00:00"}, ZoneInfo("Asia/Shanghai"))
    assert line == "SMS SENT   浙A12345: the ticket SMS, taken by the gateway at 07:43:43"
    line, _ = describe({"type": "SmsSent", "plate": "浙A12345", "kind": "appeal_received",
                        "accepted_at": "2026-12-07T23:43:43+00:00"}, ZoneInfo("Asia/Shanghai"))
    assert "the appeal received SMS" in line
