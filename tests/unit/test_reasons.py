"""Reasons the pipeline writes (English, one catalogue) and the console's Chinese for them."""

import re
import string

import pytest

from pipeline.cases import reasons
from pipeline.cases.reasons import REASONS, why
from pipeline.console.i18n import REASON_ZH, Words
from pipeline.lookups.zones import ZoneBook

pytestmark = pytest.mark.unit

SAMPLE = {"minutes": "7", "detail": "学校门口接送", "start": "07", "until": "09", "state": "moved",
          "where": "文一西路海创园南门", "n": "6", "case_id": "0f8c2d4e", "units": "75",
          "error": "ClientConnectorError", "status": "503", "answer": "3: Queued for later delivery",
          "seconds": "1800", "deadline": "2026-11-26T10:52:00+00:00", "day": "2026-11-20"}
PASSED_THROUGH = ("error", "answer")  # a gateway's own words, shown as they came
NAMES = ("Kannel", "scripts/services.sh status", "PW_KANNEL_USERNAME/PASSWORD", "PW_SMS_HTTP_TOKEN")  # the same in any language


def fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_every_reason_has_chinese_with_the_same_parameters():
    assert REASON_ZH.keys() == REASONS.keys()
    for key, english in REASONS.items():
        assert fields(REASON_ZH[key]) == fields(english), key


@pytest.mark.parametrize("key", REASONS)
def test_every_reason_reads_back_as_itself_and_no_other(key):
    params = {name: SAMPLE[name] for name in fields(REASONS[key])}
    assert reasons.parse(why(key, **params)) == (key, params)


@pytest.mark.parametrize("key", REASONS)
def test_the_chinese_console_shows_no_english_left_of_a_reason(key):
    text = why(key, **{name: SAMPLE[name] for name in fields(REASONS[key])})
    shown = Words("zh").reason(text)
    rest = shown
    for word in NAMES + tuple(SAMPLE[name] for name in fields(REASONS[key]) if name in PASSED_THROUGH):
        rest = rest.replace(word, "")
    assert not re.search(r"[A-Za-z]{3,}", rest), shown
    assert Words("en").reason(text) == text


def test_nested_reasons_and_states_are_translated_too_and_other_words_are_left_alone():
    zh = Words("zh")
    assert zh.reason(why("warning_failed", detail=why("daily_limit", n=6))) == "告知短信发送失败：该手机号今日短信已达上限6条"
    assert zh.reason(why("already", state="ticketed")) == "案件当前状态：已开单"
    assert zh.reason(why("warning_failed", detail=why("kannel_answered", status=503, answer="busy"))) == \
        "告知短信发送失败：Kannel 返回 503：busy"
    assert zh.reason("the carrier hung up") == "the carrier hung up"
    assert zh.reason("车主来电说明情况") == "车主来电说明情况"
    assert zh.reason(None) == ""


def test_zone_exemptions_are_written_from_the_catalogue():
    book = ZoneBook(600, exempt_zones={"school": "接送时段"}, exempt_hours={"school": (7, 9)},
                    whitelist={"浙A00001": "消防车"})
    assert reasons.parse(book.exemption("浙A00001", "yuhang")) == ("whitelisted", {"detail": "消防车"})
    assert reasons.parse(book.exemption("浙A12345", "school", 8)) == (
        "exempt_hours", {"start": "07", "until": "09", "detail": "接送时段"})
