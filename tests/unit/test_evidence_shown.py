"""How an evidence image's fetch is shown: the driver's ticket page and the notice show the image, or say
it was not obtained and why (a SHA-256 mismatch included), never a silent gap."""

import io
from types import SimpleNamespace

import pytest
from pypdf import PdfReader

from pipeline.cases.machine import Rules
from pipeline.demo import photos
from pipeline.sms.driver_page import TEMPLATES
from pipeline.tickets import notice
from pipeline.tickets.pack import rule_for

pytestmark = pytest.mark.unit

MISMATCH = "SHA-256 9f86d081884c7d65… is not the event's 2c26b46b68ffc68f…"
GAVE_UP = "HTTP 503 (gave up after 6 attempts)"


def pack(first: dict | None, second: dict | None) -> dict:
    capture = {"event_id": "e1", "camera_id": "cam-wenyi-01", "integrator": "demo", "taken_at": "2026-11-26T10:42:00+08:00",
               "received_at": None, "position": {"lat": 30.2793, "lon": 120.0}, "place": "文一西路",
               "image_url": "https://img.example/1.jpg", "image_sha256": None}
    return {"generated_at": "2026-11-26T11:00:00+08:00",
            "ticket": {"number": "YH261126000042", "plate": "浙A12345", "case_id": "c", "place": "文一西路", "zone": "yuhang",
                       "position": {"lat": 30.2793, "lon": 120.0}, "issued_at": "2026-11-26T10:53:02+08:00",
                       "deadline_at": "2026-11-26T10:52:30+08:00", "authority": "杭州城管", "status": "standing",
                       "voided_at": None, "void_reason": None},
            "captures": [{**capture, "role": "violation", "image": first},
                         {**capture, "role": "still_there", "event_id": "e2", "image": second}],
            "between": {"distance_m": 0, "interval_seconds": 631}, "warning": None,
            "decision": {"rule": rule_for("still at the place at the deadline", Rules())},
            "appeal": {"until": "2026-12-11T10:53:02+08:00", "how": {"url": None, "phone": "12345"}, "filed": None},
            "record": {"verification_code": "0123456789abcdef", "links": []}}


def ticket_page(p: dict) -> str:
    return TEMPLATES.get_template("driver_ticket.html").render(
        ticket=p["ticket"], pack=p, code="K7F2QK7F2Q", local=str, said=SimpleNamespace(can_appeal=False),
        grounds={}, form={}, appeal_photos=[])


def test_the_ticket_page_shows_a_stored_image_and_says_why_another_was_not_obtained():
    page = ticket_page(pack({"state": "stored", "reason": None, "sha256": "a" * 64},
                            {"state": "failed", "reason": GAVE_UP, "sha256": None}))
    assert '<a href="/d/K7F2QK7F2Q/evidence/1" class="evidence-photo"><img class="thumb" src="/d/K7F2QK7F2Q/evidence/1"' in page
    assert "/evidence/2" not in page
    assert f"未获取到图片 <span class=\"en\">Image not obtained</span>: {GAVE_UP}" in page


def test_a_mismatch_is_shown_not_the_image():
    page = ticket_page(pack({"state": "mismatch", "reason": MISMATCH, "sha256": "9" * 64},
                            {"state": "pending", "reason": "HTTP 503", "sha256": None}))
    assert "/evidence/1" not in page and MISMATCH.replace("'", "&#39;") in page
    assert "图片获取中" in page


def test_the_notice_prints_both_images_or_the_reason():
    image = photos.car_photo("cam-wenyi-01", "20261126024200", "浙A12345")
    both = PdfReader(io.BytesIO(notice.render(pack({"state": "stored", "reason": None, "sha256": "a"},
                                                   {"state": "stored", "reason": None, "sha256": "b"}),
                                              images={"e1": image, "e2": photos.car_photo("cam-wenyi-01", "20261126025300", "浙A12345")})))
    assert len(both.pages) == 1 and len(both.pages[0].images) == 2

    one = PdfReader(io.BytesIO(notice.render(pack({"state": "stored", "reason": None, "sha256": "a"},
                                                  {"state": "mismatch", "reason": MISMATCH, "sha256": "9"}),
                                             images={"e1": image})))
    text = one.pages[0].extract_text().replace("\n", "")
    assert len(one.pages) == 1 and len(one.pages[0].images) == 1
    assert "Image not obtained" in text and "2c26b46b68ffc68f" in text


def test_the_consoles_confirm_pair_shows_a_thumbnail_or_the_mismatch():
    from datetime import UTC, datetime

    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from pipeline.cases.machine import Sighting
    from pipeline.config import ROOT
    from pipeline.console.i18n import Words

    env = Environment(loader=FileSystemLoader(ROOT / "pipeline" / "console" / "templates"),
                      autoescape=select_autoescape(default=True))
    env.filters.update(when=str, duration=str)
    at = datetime(2026, 11, 26, 2, 42, tzinfo=UTC)
    pair = {"captures": [Sighting("e1", "cam-1", at, 30.0, 120.0, "文一西路", "https://img.example/1.jpg", "demo"),
                         Sighting("e2", "cam-1", at, 30.0, 120.0, "文一西路", "https://img.example/2.jpg", "demo")],
            "photos": {"e1": {"state": "stored", "reason": None, "sha256": "a" * 64},
                       "e2": {"state": "mismatch", "reason": MISMATCH, "sha256": None}},
            "warned_at": None, "warning_delivered_at": None, "deadline_at": None}
    html = env.get_template("_evidence_pair.html").render(t=Words("en"), pair=pair)

    assert f'<img src="/console/evidence/{"a" * 64}"' in html
    assert "image does not match the capture&#39;s SHA-256: " + MISMATCH.replace("'", "&#39;") in html
