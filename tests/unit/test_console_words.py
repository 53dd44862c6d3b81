"""Units are written once: the interval between two captures reads "91 s", not "91 s 秒", on the
confirmation queue and on the appeal page alike (the appeals' words are installed over the console's)."""

from pipeline.appeals import words as appeal_words
from pipeline.console.i18n import Words
from pipeline.console.views import _duration


def test_the_interval_between_captures_shows_its_unit_once_in_both_languages():
    appeal_words.install()
    zh = Words("zh")("evidence.between", m=12, s=_duration(91))
    en = Words("en")("evidence.between", m=12, s=_duration(91))
    assert zh == "两次抓拍相距 12 米，间隔 91 s" and "秒" not in zh
    assert en == "12 m and 91 s apart"
