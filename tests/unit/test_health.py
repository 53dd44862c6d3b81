"""The health strip's judgement: Kannel's status.xml read as it is (samples taken from Kannel 1.4.5
with its fake SMS centre connected, and after the fake SMS centre was stopped), and each component's
level against its threshold."""

from datetime import UTC, datetime
from pathlib import Path

from pipeline.console import health
from pipeline.console.health import BAD, OK, UNKNOWN, WARN, KannelStatus, assess, parse_kannel_status, status_xml_url

HERE = Path(__file__).parent / "kannel"
NOW = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
QUIET = {"dead_letters_last_hour": 0, "reports_pending": 0, "oldest_report_seconds": 0.0}
COUNTS = {"outbox_oldest_age": 0.0, "outbox_backlog": 0, "outbox_set_aside": 0}


def test_kannel_with_its_sms_centre_connected_is_up_and_online():
    status = parse_kannel_status((HERE / "status_online.xml").read_text())
    assert status.answered and status.smsboxes == 1
    assert [(link[0], link[1]) for link in status.links] == [("FAKE", True)]
    h = assess(NOW, status, QUIET, COUNTS, [])
    assert h.components["sms_gateway"].level == OK and h.components["smsc_link"].level == OK
    assert h.degraded == [] and h.worst == OK


def test_an_sms_centre_link_that_is_re_connecting_turns_the_link_red_while_the_gateway_stays_up():
    status = parse_kannel_status((HERE / "status_link_down.xml").read_text())
    assert [(link[0], link[1], link[2]) for link in status.links] == [("FAKE", False, "re-connecting")]
    h = assess(NOW, status, QUIET, COUNTS, [])
    assert h.components["sms_gateway"].level == OK
    assert h.components["smsc_link"].level == BAD and h.components["smsc_link"].value == 1
    assert h.sms_centre_down and not h.gateway_down
    assert h.degraded == ["smsc_link"] and h.worst == BAD
    assert h.as_json()["smsc_link"]["links"][0]["status"] == "re-connecting"


def test_a_gateway_that_does_not_answer_is_red_and_its_link_unknown():
    h = assess(NOW, KannelStatus(False, "ClientConnectorError"), QUIET, COUNTS, [])
    assert h.components["sms_gateway"].level == BAD and h.gateway_down
    assert h.components["smsc_link"].level == UNKNOWN
    assert set(h.degraded) == {"sms_gateway", "smsc_link"}


def test_without_kannel_status_the_gateway_is_not_watched_and_never_red():
    h = assess(NOW, None, QUIET, COUNTS, [])
    assert h.components["sms_gateway"].detail == {"not_watched": True}
    assert h.degraded == []


def test_each_figure_turns_amber_then_red_at_its_threshold():
    cases = {  # component: (figures, counts, partitions) for amber, for red
        "delivery_reports": lambda v: ({**QUIET, "reports_pending": 3, "oldest_report_seconds": v}, COUNTS, []),
        "camera_events": lambda v: (QUIET, COUNTS, [{"partition": 0, "behind_seconds": v, "held": 0}]),
        "decisions_held": lambda v: (QUIET, COUNTS, [{"partition": 0, "behind_seconds": 1.0, "held": v}]),
        "outbox": lambda v: (QUIET, {**COUNTS, "outbox_backlog": 4, "outbox_oldest_age": v}, []),
        "dead_letters": lambda v: ({**QUIET, "dead_letters_last_hour": v}, COUNTS, []),
    }
    online = parse_kannel_status((HERE / "status_online.xml").read_text())
    for name, build in cases.items():
        th = health.THRESHOLDS[name]
        for value, level in ((0, OK), (th.warn - 1 if th.warn > 1 else 0, OK), (th.warn, WARN), (th.bad, BAD)):
            h = assess(NOW, online, *build(value))
            assert h.components[name].level == level, (name, value)
            assert h.degraded == ([] if level == OK else [name]), (name, value)


def test_outputs_kafka_refused_for_good_make_the_outbox_amber_even_when_it_is_empty():
    h = assess(NOW, None, QUIET, {**COUNTS, "outbox_set_aside": 2}, [])
    assert h.components["outbox"].level == WARN


def test_the_status_address_is_read_as_kannels_xml_whichever_form_was_configured():
    assert status_xml_url("http://127.0.0.1:13000/status.txt?password=pw") == "http://127.0.0.1:13000/status.xml?password=pw"
    assert status_xml_url("http://h:13000/status?password=pw") == "http://h:13000/status.xml?password=pw"
    assert status_xml_url("http://h:13000/status.xml?password=pw") == "http://h:13000/status.xml?password=pw"
