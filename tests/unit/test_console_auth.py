"""Console login pieces and words (pipeline/console/auth.py, views.safe_next, i18n), without services."""

import pytest

from pipeline.console import auth, i18n
from pipeline.console.views import _duration, safe_next

pytestmark = pytest.mark.unit


def test_a_password_is_stored_as_an_argon2_hash_and_checked_against_it():
    stored = auth.hash_password("correct horse battery")
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert auth.password_matches(stored, "correct horse battery")
    assert not auth.password_matches(stored, "correct horse battery!")


def test_an_unknown_operator_never_matches():
    assert not auth.password_matches(None, "anything at all")


def test_short_passwords_bad_names_and_unknown_roles_are_refused():
    with pytest.raises(auth.OperatorError):
        auth.hash_password("short")
    with pytest.raises(auth.OperatorError):
        auth.check_name_and_role("Li Wei", "viewer")
    with pytest.raises(auth.OperatorError):
        auth.check_name_and_role("liwei", "admin")
    auth.check_name_and_role("li.wei", "supervisor")


def test_the_csrf_token_must_be_given_and_equal():
    assert auth.csrf_matches("abc123", "abc123")
    assert not auth.csrf_matches("abc123", "abc124")
    assert not auth.csrf_matches("abc123", None)
    assert not auth.csrf_matches("abc123", "")


def test_only_the_digest_of_a_session_token_is_kept():
    digest = auth.token_digest("a-token")
    assert len(digest) == 32 and b"a-token" not in digest


@pytest.mark.parametrize("target, expected", [
    ("/console/cases/1", "/console/cases/1"),
    ("/console/", "/console/"),
    ("https://evil.example/console/", "/console/"),
    ("//evil.example/console", "/console/"),
    ("/v1/camera-events", "/console/"),
    ("/console\\..\\x", "/console/"),
    (None, "/console/"),
])
def test_after_login_an_operator_is_only_sent_back_into_the_console(target, expected):
    assert safe_next(target) == expected


def test_every_console_text_exists_in_chinese_and_english():
    for key, (zh, en) in i18n.TEXT.items():
        assert zh and en, key
        # the same placeholders in both languages
        assert sorted(_fields(zh)) == sorted(_fields(en)), key
    for table in (i18n.STATE, i18n.SMS_STATUS, i18n.SMS_KIND, i18n.CAPTURE, i18n.ACTION):
        assert all(zh and en for zh, en in table.values())


def test_every_refusal_an_action_can_raise_has_words():
    import re
    from pathlib import Path

    import pipeline.console.actions as actions_module
    source = Path(actions_module.__file__).read_text()
    keys = set(re.findall(r'Refused\("([a-z_]+)"', source)) | set(re.findall(r'return "(evidence_[a-z_]+)"', source))
    assert keys, "no refusals found"
    missing = sorted(k for k in keys if f"refused.{k}" not in i18n.TEXT)
    assert missing == []


def test_words_fall_back_to_chinese_and_name_transitions():
    assert i18n.Words("fr")("login.submit") == "登录"
    en = i18n.Words("en")
    assert en.action("warned->ticketed") == "warned → ticketed"
    assert en.action("opened:review") == "opened: review"
    assert en.state("ticketed") == "ticketed" and i18n.Words("zh").state("ticketed") == "已开单"


def test_windows_read_in_minutes_or_seconds():
    assert _duration(600) == "10 min"
    assert _duration(30) == "30 s"
    assert _duration(90) == "90 s"


def _fields(text: str) -> list[str]:
    import string
    return [name for _, name, _, _ in string.Formatter().parse(text) if name]


def test_phone_numbers_in_free_text_are_masked_but_ticket_numbers_are_not():
    from pipeline.console.queries import scrub

    text = scrub("voided YH261126000042 after calling 13800138000; event cam-01:181512-1:000018")
    assert "13800138000" not in text and "138****8000" in text
    assert "YH261126000042" in text and "cam-01:181512-1:000018" in text
