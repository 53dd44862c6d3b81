"""The tests' own phone checks (tests/privacy.py) fail when they should, and never echo the number."""

import pytest

from tests.privacy import dead_letters_text, masked_phone_in, no_phone_in

pytestmark = pytest.mark.unit

PHONE = "13812348000"


@pytest.mark.parametrize("text", [f"to:<{PHONE}>", f"车主 {PHONE}。", f"+86{PHONE}"])
def test_a_number_in_the_text_fails_without_showing_it(text):
    with pytest.raises(AssertionError) as failure:
        no_phone_in(text, "the log", PHONE)
    assert PHONE not in str(failure.value) and PHONE[-8:] not in str(failure.value)


@pytest.mark.parametrize("text", ["id=1795739665123", "sms 0f8c2d4e-9a1b-4c3d-8e7f-138123480001", "138****8000"])
def test_longer_numbers_uuids_and_masked_numbers_pass(text):
    no_phone_in(text, "the log")


def test_a_page_must_show_the_number_masked_and_only_masked():
    masked_phone_in("电话 138****8000", PHONE, "the page")
    with pytest.raises(AssertionError, match="missing"):
        masked_phone_in("电话 —", PHONE, "the page")
    with pytest.raises(AssertionError, match="reached"):
        masked_phone_in(f"138****8000 {PHONE}", PHONE, "the page")


def test_dead_letters_are_scanned_in_their_key_reason_errors_and_bytes():
    row = {"key": b"o-1", "reason": "invalid", "errors": "[]", "raw": f'{{"phone": "{PHONE}"}}'.encode()}
    with pytest.raises(AssertionError, match="reached"):
        no_phone_in(dead_letters_text([row]), "the dead letters", PHONE)
    no_phone_in(dead_letters_text([{**row, "raw": b'{"phone": "138****8000"}'}]), "the dead letters", PHONE)
