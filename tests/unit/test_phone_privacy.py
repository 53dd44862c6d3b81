"""Phone numbers stay private: mask_phone (pipeline/lookups/owners.py) and OutgoingSms's repr."""

from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.lookups.owners import mask_phone
from pipeline.sms.gateway import OutgoingSms

pytestmark = pytest.mark.unit

PHONE = "13812348000"


@pytest.mark.parametrize("phone, shown", [
    ("13812348000", "138****8000"),
    ("+8613812348000", "861******8000"),
    ("123456", "******"),
    ("1", "*"),
    ("", "(none)"),
    (None, "(none)"),
])
def test_given_a_phone_number_when_masked_then_only_its_ends_show(phone, shown):
    assert mask_phone(phone) == shown


@pytest.mark.parametrize("digits", range(1, 16))
def test_given_a_number_of_any_length_when_masked_then_at_least_one_digit_is_hidden(digits):
    phone = "13812348000123456"[:digits]

    masked = mask_phone(phone)

    assert "*" in masked
    assert masked != phone


@given(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True))
def test_for_any_mobile_number_the_mask_keeps_its_length_and_hides_the_middle_four(phone):
    masked = mask_phone(phone)

    assert masked == phone[:3] + "****" + phone[-4:]


def test_given_an_outgoing_sms_when_shown_in_a_log_then_the_phone_is_masked():
    sms = OutgoingSms(UUID(int=7), PHONE, "【杭州城管】浙A12345在文一西路违停")

    for shown in (repr(sms), str(sms), f"{sms}", repr([sms]), repr({"sms": sms})):
        assert PHONE not in shown
        assert "138****8000" in shown
        assert str(UUID(int=7)) in shown
