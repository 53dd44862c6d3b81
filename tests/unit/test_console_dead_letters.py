"""How the console shows a dead letter: its bytes escaped, phones masked, its integrator named."""

from pipeline.console.queries import integrator_of, shown_raw


def test_raw_bytes_are_shown_escaped_with_phones_masked():
    shown = shown_raw(b'{"owner_phone": "13812345678", "x": "\x01\x1b[31m"}\xff\xfe')
    assert "13812345678" not in shown and "138****5678" in shown
    assert "\\x01" in shown and "\\x1b" in shown and "\\xff\\xfe" in shown
    assert not any(ord(ch) < 0x20 for ch in shown)


def test_ticket_numbers_and_chinese_text_stay_readable():
    assert shown_raw("浙A12345 YH261126000042".encode()) == "浙A12345 YH261126000042"
    assert shown_raw(b"") == "" and shown_raw(None) == ""


def test_the_integrator_is_read_from_its_own_camera_events_topic():
    assert integrator_of("pw.camera-events.acme", "pw.camera-events") == "acme"
    assert integrator_of("pw.camera-events", "pw.camera-events") == ""
    assert integrator_of("pw.car-park-status", "pw.camera-events") == ""
