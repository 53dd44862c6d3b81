"""The ticket record's canonical form and links (pure), the evidence pack's rule text, and the
notice rendered from a pack (no services)."""

import io
import json
from datetime import UTC, datetime

import pytest
from pypdf import PdfReader

from pipeline.cases.machine import Rules
from pipeline.tickets import chain
from pipeline.tickets.pack import rule_for
from schemas import events

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("number, written", [
    # RFC 8785, appendix B and section 3.2.2.3 (ECMAScript's Number.prototype.toString)
    (333333333.33333329, "333333333.3333333"), (1e30, "1e+30"), (4.50, "4.5"), (2e-3, "0.002"),
    (0.000000000000000000000000001, "1e-27"), (1e21, "1e+21"), (1e20, "100000000000000000000"),
    (120.0, "120"), (-0.0, "0"), (30.2793, "30.2793"), (1e-7, "1e-7"), (1.5e-7, "1.5e-7"),
    (0.000001, "0.000001"), (123456789012345680000.0, "123456789012345680000"), (5e-324, "5e-324"),
    (-1.75, "-1.75"), (7, "7"),
])
def test_numbers_are_written_as_ecmascript_writes_them(number, written):
    assert chain.canonical(number) == written


def test_objects_have_sorted_keys_no_whitespace_and_utf8_strings_with_only_the_needed_escapes():
    value = {"b": [1, 2.5, None, True], "a": {"z": "浙A12345", "y": "line\nbreak \"quoted\" \\ /"}, "€": 1, "\u00e9": 0}
    assert chain.canonical(value) == ('{"a":{"y":"line\\nbreak \\"quoted\\" \\\\ /","z":"浙A12345"},'
                                      '"b":[1,2.5,null,true],"é":0,"€":1}')
    with pytest.raises(ValueError):
        chain.canonical(float("nan"))


def test_a_links_hash_is_sha256_of_the_canonical_prev_record_seq_object():
    record = {"type": "TicketVoided", "ticket_number": "YH261126000042", "reason": "ambulance"}
    body = chain.canonical(record)
    wrapper = chain.canonical({"seq": 3, "record": record, "prev": "a" * 64})
    import hashlib
    assert chain.link_hash(3, "a" * 64, body) == hashlib.sha256(wrapper.encode()).hexdigest()
    assert chain.verification_code("4b868e907d364d9eed27415de6390a0c") == "4B86-8E90-7D36-4D9E"


def ticket_row(**changes) -> dict:
    row = {"number": "YH261126000042", "case_id": "0b6c3f4e-8a51-4d7e-9c1a-2f3b4c5d6e7f", "plate": "浙A12345",
           "issued_at": datetime(2026, 11, 26, 2, 53, 1, 250000, tzinfo=UTC),
           "deadline_at": datetime(2026, 11, 26, 2, 52, 1, tzinfo=UTC), "place": "文一西路", "zone": "yuhang",
           "lat": 30.2793, "lon": 120.0,
           "evidence": [{"event_id": "e1", "integrator": "acme", "lat": 30.2793, "lon": 120.0, "image_sha256": "a" * 64}],
           "voided_at": None, "void_reason": None, "voided_by": None, "reason": "still at the place at the deadline",
           "warning_accepted_at": datetime(2026, 11, 26, 2, 42, 1, tzinfo=UTC),
           "warning_delivered_at": datetime(2026, 11, 26, 2, 42, 3, tzinfo=UTC)}
    return {**row, **changes}


def link_row(seq: int, prev: str, record: dict, ticket: dict) -> dict:
    body = chain.canonical(record)
    return {"seq": seq, "kind": record["type"], "ticket_number": ticket["number"], "appeal_id": None, "body": body,
            "prev": prev, "hash": chain.link_hash(seq, prev, body), **ticket, "a_id": None}


def test_the_record_is_the_messages_recorded_fields_and_a_changed_ticket_breaks_its_link():
    ticket = ticket_row()
    message = chain.issued_message(ticket)
    record = chain.record_of(message)
    assert set(record) == set(chain.RECORD_FIELDS["TicketIssued"])
    assert record["issued_at"] == "2026-11-26T02:53:01.250000Z" and record["location"]["lon"] == 120.0
    published = json.loads(message.model_copy(update={"chain": events.ChainLink(seq=1, prev=chain.GENESIS,
                                                                                 hash="f" * 64)}).model_dump_json())
    assert chain.record_of(published) == record, "a consumer gets the same record from the message"

    row = link_row(1, chain.GENESIS, record, ticket)
    assert chain._check_link(row, 1, chain.GENESIS) is None
    assert chain._check_link({**row, "place": "别处"}, 1, chain.GENESIS) == \
        "link 1 (TicketIssued YH261126000042): the stored ticket differs from its record (place)"
    assert "the link was altered" in chain._check_link({**row, "body": row["body"].replace("yuhang", "hospital")}, 1,
                                                       chain.GENESIS)
    assert chain._check_link(row, 1, "0" * 63 + "1").startswith("link 1 (TicketIssued YH261126000042) does not follow")
    assert chain._check_link(row, 2, chain.GENESIS) == "link 2 is missing (the next link is 1)"
    voided = ticket_row(voided_at=datetime(2026, 11, 27, tzinfo=UTC), void_reason="x", voided_by="operator:li")
    void_link = link_row(2, row["hash"], chain.record_of(chain.voided_message(voided)), voided)
    assert chain._check_link(void_link, 2, row["hash"]) is None
    assert "no longer void" in chain._check_link({**void_link, "voided_at": None}, 2, row["hash"])


def test_the_record_holds_what_the_notice_shows_and_a_ticket_recorded_before_those_fields_still_verifies():
    ticket = ticket_row()
    record = chain.record_of(chain.issued_message(ticket))
    assert record["evidence"][0]["image_sha256"] == "a" * 64
    assert (record["reason"], record["warning_accepted_at"], record["warning_delivered_at"]) == \
        ("still at the place at the deadline", "2026-11-26T02:42:01Z", "2026-11-26T02:42:03Z")
    row = link_row(1, chain.GENESIS, record, ticket)
    for field, changed in (("reason", "an officer's say-so"), ("warning_delivered_at", None),
                           ("warning_accepted_at", datetime(2026, 11, 26, 2, 40, tzinfo=UTC)),
                           ("evidence", [{**ticket["evidence"][0], "image_sha256": "b" * 64}])):
        assert chain._check_link({**row, field: changed}, 1, chain.GENESIS) == \
            f"link 1 (TicketIssued YH261126000042): the stored ticket differs from its record ({field})"

    before = ticket_row(reason=None, warning_accepted_at=None, warning_delivered_at=None)
    old_record = chain.record_of(chain.issued_message(before))
    assert not {"reason", "warning_accepted_at", "warning_delivered_at"} & set(old_record)
    assert chain._check_link(link_row(1, chain.GENESIS, old_record, before), 1, chain.GENESIS) is None


def test_the_pack_names_the_rule_that_decided_in_both_languages():
    rule = rule_for("still at the place at the deadline", Rules())
    assert rule["key"] == "still_there" and "within 50 m" in rule["en"] and "容差5秒" in rule["zh"]
    assert rule_for("ticketed on review: seen by officer", Rules())["key"] == "ticketed_on_review"


def test_the_notice_renders_a_pack_in_chinese_and_english():
    from pipeline.tickets import notice

    capture = {"event_id": "e1", "camera_id": "cam-wenyi-01", "integrator": None, "taken_at": "2026-11-26T10:42:00+08:00",
               "received_at": None, "position": {"lat": 30.2793, "lon": 120.0}, "place": "文一西路",
               "image_url": "https://evidence.example.com/1.jpg", "image_sha256": None}
    pack = {"generated_at": "2026-11-26T11:00:00+08:00",
            "ticket": {"number": "YH261126000042", "plate": "浙A12345", "case_id": "c", "place": "文一西路", "zone": "yuhang",
                       "position": {"lat": 30.2793, "lon": 120.0}, "issued_at": "2026-11-26T10:53:02+08:00",
                       "deadline_at": "2026-11-26T10:52:30+08:00", "authority": "杭州城管", "status": "voided",
                       "voided_at": "2026-11-27T09:00:00+08:00", "void_reason": "救护车执行任务"},
            "captures": [{**capture, "role": "violation"}, {**capture, "role": "still_there", "event_id": "e2"}],
            "between": {"distance_m": 0, "interval_seconds": 631},
            "warning": None, "decision": {"rule": rule_for("still at the place at the deadline", Rules())},
            "appeal": {"until": "2026-12-11T10:53:02+08:00", "how": {"url": None, "phone": "12345"}, "filed": None},
            "record": {"verification_code": None, "links": []}}
    text = PdfReader(io.BytesIO(notice.render(pack))).pages[0].extract_text()
    for words in ("电子违停告知单", "YH261126000042", "浙A12345", "已撤销", "救护车执行任务", "2026-12-11 10:53:02",
                  "拨打 12345", "issued before the ticket record began"):
        assert words in text, words
