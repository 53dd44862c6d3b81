"""Appeals (pure): what may be filed and decided, the decision's SMS, the console's words."""

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.appeals import grounds, words
from pipeline.appeals.grounds import NotAllowed
from pipeline.console import i18n
from pipeline.sms import texts
from schemas.events import APPEAL_GROUNDS

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def refusal(call) -> str:
    with pytest.raises(NotAllowed) as refused:
        call()
    return refused.value.key


def test_an_appeal_names_a_ground_from_the_catalogue_and_only_https_attachments():
    filed = grounds.filing("emergency_vehicle", "  救护车  ", "https://a.example/1.jpg\nhttps://a.example/2.pdf\n")
    assert filed == grounds.Filing("emergency_vehicle", "救护车", ("https://a.example/1.jpg", "https://a.example/2.pdf"))
    assert tuple(grounds.GROUNDS) == APPEAL_GROUNDS
    assert refusal(lambda: grounds.filing("bribe", "", None)) == "bad_ground"
    assert refusal(lambda: grounds.filing("other", "", None)) == "statement_needed"
    for url in ("http://a.example/1.jpg", "javascript:alert(1)", "https://", "ftp://a.example/x"):
        assert refusal(lambda: grounds.filing("other", "see", [url])) == "attachment_not_https", url
    assert refusal(lambda: grounds.filing("other", "see", [f"https://a.example/{i}" for i in range(6)])) == \
        "too_many_attachments"
    assert refusal(lambda: grounds.filing("other", "x" * 2001, None)) == "statement_too_long"


def test_an_appeal_is_filed_once_against_a_standing_ticket_within_the_window_and_is_overdue_after_its_due_date():
    until = NOW + timedelta(days=15)
    grounds.check_can_file(False, False, NOW, until)
    assert refusal(lambda: grounds.check_can_file(True, False, NOW, until)) == "ticket_void"
    assert refusal(lambda: grounds.check_can_file(False, True, NOW, until)) == "already_appealed"
    assert refusal(lambda: grounds.check_can_file(False, False, until + timedelta(seconds=1), until)) == "window_closed"
    assert grounds.check_decision("voided", False) == "voided"
    assert refusal(lambda: grounds.check_decision("maybe", False)) == "bad_outcome"
    assert refusal(lambda: grounds.check_decision("upheld", True)) == "already_decided"
    due = NOW + timedelta(days=10)
    assert not grounds.overdue(due, None, due) and grounds.overdue(due, None, due + timedelta(seconds=1))
    assert not grounds.overdue(due, due, due + timedelta(days=1))


@pytest.mark.parametrize("language", ["zh-CN", "en"])
@pytest.mark.parametrize("outcome", ["upheld", "voided"])
def test_the_decision_sms_fits_one_segment_with_the_longest_plate_and_number(language, outcome):
    text = texts.appeal_decision_text(texts.AppealFacts("浙AD12345", "YHAB261126000042", outcome), language)
    assert texts.length(text) <= texts.BRIEF and "浙AD12345" in text and "YHAB261126000042" in text
    assert ("撤销" in text or "cancelled" in text) == (outcome == "voided")


def test_every_appeal_word_exists_in_chinese_and_english_with_the_same_placeholders():
    import string

    words.install()
    fields = lambda text: sorted(f for _, f, _, _ in string.Formatter().parse(text) if f)  # noqa: E731
    for key, (zh, en) in {**words.TEXT, **{f"ground.{k}": v for k, v in grounds.GROUNDS.items()}}.items():
        assert zh and en and fields(zh) == fields(en), key
    assert i18n.Words("en")("ground.stolen_or_cloned_plate") == "Stolen vehicle or cloned plate"
    assert i18n.Words("zh").action("appeal_decided") == "处理申诉"
    assert i18n.Words("zh").sms_kind("appeal_decision") == "申诉结果通知"


@pytest.mark.parametrize("language", ["zh-CN", "en"])
def test_the_appeal_received_sms_is_brief_and_carries_the_reference_and_the_due_date(language):
    reference = grounds.reference("YHAB261126000042")
    text = texts.appeal_received_text("浙AD12345", reference, datetime(2026, 12, 17, 9, 0), language)

    assert texts.length(text) <= texts.BRIEF, (texts.length(text), text)
    assert reference in text and "浙AD12345" in text and ("12月17日" in text or "17 Dec" in text)
