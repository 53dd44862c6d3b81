"""SMS texts (pipeline/sms/texts.py): always one segment, and the facts a driver needs are in it."""

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.demo import city
from pipeline.sms import texts
from pipeline.sms.texts import TicketFacts, WarningFacts, fits_one_segment, length, ticket_text, warning_text

pytestmark = pytest.mark.unit

LANGUAGES = list(texts.TEMPLATES)
PLATES = ["浙A12345", "浙AD12345", "浙A12345F"]  # 7 characters, and 8 for new-energy plates
DEADLINE = datetime(2026, 11, 26, 10, 52)
COUNTED = datetime(2026, 11, 26, 10, 42)
TICKET_NUMBER = "YHZJ261126000001"  # the longest prefix the settings allow (4 letters) + yymmdd + serial

CJK = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)
CJK_WITH_SUPPLEMENTARY = st.one_of(CJK, st.characters(min_codepoint=0x20000, max_codepoint=0x2A6DF))
long_names = st.text(CJK_WITH_SUPPLEMENTARY, min_size=1, max_size=60)


def brief(text: str) -> bool:
    """The seed's promise: under 50 characters (UTF-16 code units), the signature included."""
    return length(text) <= texts.BRIEF


def one_segment(text: str) -> bool:
    return fits_one_segment(text) and length(text) <= 70  # plates carry a CJK character: always UCS-2


def names_the_car_park(text: str, name: str) -> bool:
    """The full name, or its start ending in an ellipsis when it had to be shortened."""
    return name in text or any(f"{name[:k]}…" in text for k in range(1, len(name)))


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("plate", PLATES)
def test_given_every_camera_and_car_park_of_the_demo_city_when_warning_then_the_text_is_brief(language, plate):
    for camera in city.CAMERAS:
        for _id, _name, short_name, _lat, _lon, capacity in city.CAR_PARKS:
            facts = WarningFacts(plate, camera.place, DEADLINE, short_name, capacity, COUNTED)

            text = warning_text(facts, language)

            assert brief(text), (length(text), text)
            assert plate in text
            assert "10:52" in text
            assert f"{capacity}" in text
            assert names_the_car_park(text, short_name), text
            assert names_the_car_park(text, camera.place), text


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("plate", PLATES)
@pytest.mark.parametrize("number", [TICKET_NUMBER, "YH261126000001"])
def test_given_every_camera_of_the_demo_city_when_ticketed_then_the_text_is_brief(language, plate, number):
    for camera in city.CAMERAS:
        text = ticket_text(TicketFacts(plate, camera.place, number), language)

        assert brief(text), (length(text), text)
        assert plate in text
        assert number in text
        assert "12345" in text, "where to ask or appeal"
        assert names_the_car_park(text, camera.place), text


@pytest.mark.parametrize("language", LANGUAGES)
def test_given_no_car_park_with_free_spaces_when_warning_then_the_text_says_so_and_fits(language):
    text = warning_text(WarningFacts("浙AD12345", city.CAMERAS[7].place, DEADLINE, None, None, None), language)

    assert brief(text), (length(text), text)
    assert "浙AD12345" in text and "10:52" in text


def test_given_the_zh_warning_then_it_names_plate_place_deadline_car_park_and_free_spaces():
    text = warning_text(WarningFacts("浙A12345", "文一西路海创园南门", DEADLINE, "海创园B1", 37, COUNTED))

    assert text == "【杭州城管】浙A12345在文一西路海创园南门违停，10:52前驶离。海创园B1余37位"


@settings(max_examples=150, deadline=None)
@given(place=long_names, car_park=long_names, plate=st.sampled_from(PLATES), language=st.sampled_from(LANGUAGES),
       free=st.integers(min_value=1, max_value=100_000),
       hour=st.integers(min_value=0, max_value=23), minute=st.integers(min_value=0, max_value=59))
def test_for_any_long_place_and_car_park_names_the_warning_fits_one_segment_and_keeps_the_facts(
        place, car_park, plate, language, free, hour, minute):
    deadline = DEADLINE.replace(hour=hour, minute=minute)

    text = warning_text(WarningFacts(plate, place, deadline, car_park, free, COUNTED), language)

    assert one_segment(text), (length(text), text)
    assert plate in text
    assert f"{hour:02d}:{minute:02d}" in text
    assert str(free) in text
    assert names_the_car_park(text, car_park), text


@settings(max_examples=150, deadline=None)
@given(place=long_names, plate=st.sampled_from(PLATES), language=st.sampled_from(LANGUAGES),
       number=st.from_regex(r"[A-Z]{1,4}[0-9]{12}", fullmatch=True))
def test_for_any_long_place_name_the_ticket_fits_one_segment_and_names_the_ticket(place, plate, language, number):
    text = ticket_text(TicketFacts(plate, place, number), language)

    assert one_segment(text), (length(text), text)
    assert number in text
    assert plate in text


def test_given_a_gsm7_text_then_it_gets_160_characters_and_a_cjk_text_70_code_units():
    assert texts.segment_limit("Move by 10:52") == 160
    assert texts.segment_limit("浙A12345") == 70
    assert length("𠀀") == 2  # outside the BMP: two UTF-16 code units
    assert fits_one_segment("a" * 160) and not fits_one_segment("a" * 161)
    assert fits_one_segment("浙" * 70) and not fits_one_segment("浙" * 71)


# ── the driver page's link ───────────────────────────────────────────────────────────────

CODE = "K7F2QK7F2Q"  # store.DRIVER_CODE_LENGTH characters
LINK = f"http://127.0.0.1:6066/d/{CODE}"  # the demo's base URL: longer than a city's short domain


def carries_the_link(text: str, link: str = LINK) -> bool:
    """The whole link, at the end, after a space: glued to nothing, so a phone makes it a link."""
    return text.endswith(f" {link}")


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("plate", PLATES)
def test_given_the_driver_page_then_every_warning_of_the_demo_city_carries_the_link_in_one_segment(language, plate):
    for camera in city.CAMERAS:
        for _id, _name, short_name, _lat, _lon, capacity in [*city.CAR_PARKS, (None, None, None, 0, 0, None)]:
            facts = WarningFacts(plate, camera.place, DEADLINE, short_name, capacity, COUNTED, LINK)

            text = warning_text(facts, language)

            assert one_segment(text), (length(text), text)
            assert carries_the_link(text), text
            assert plate in text and "10:52" in text
            assert names_the_car_park(text, camera.place) and camera.place[:texts.READABLE_NAME - 1] in text, text


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("plate", PLATES)
def test_given_the_driver_page_then_every_ticket_sms_of_the_demo_city_links_to_the_ticket_page(language, plate):
    for camera in city.CAMERAS:
        text = ticket_text(TicketFacts(plate, camera.place, "YH261126000001", LINK), language)

        assert one_segment(text), (length(text), text)
        assert carries_the_link(text) and plate in text, text


def test_given_a_short_public_address_then_the_warning_keeps_the_car_park_beside_the_link():
    text = warning_text(WarningFacts("浙A12345", "闲林街道闲兴路", DEADLINE, "闲林永旺", 37, COUNTED,
                                     f"https://p.hz.cn/d/{CODE}"))

    assert text == f"【杭州城管】浙A12345在闲林街道闲兴路违停，10:52前驶离。闲林永旺余37位 https://p.hz.cn/d/{CODE}"


@settings(max_examples=150, deadline=None)
@given(place=long_names, car_park=long_names, plate=st.sampled_from(PLATES), language=st.sampled_from(LANGUAGES),
       free=st.integers(min_value=1, max_value=100_000))
def test_for_any_names_a_warning_with_a_link_fits_one_segment_keeps_the_facts_and_never_cuts_the_link(
        place, car_park, plate, language, free):
    text = warning_text(WarningFacts(plate, place, DEADLINE, car_park, free, COUNTED, LINK), language)

    assert one_segment(text), (length(text), text)
    assert plate in text and "10:52" in text
    assert carries_the_link(text) or (CODE not in text and str(free) in text), "the whole link, or none of it"


@pytest.mark.parametrize("language, signature, place", [
    ("zh-CN", "杭州市余杭区城市管理行政执法局大队", city.CAMERAS[0].place),  # a long signature
    ("en", "杭州城管", "𠀀𠀁𠀂𠀃𠀄𠀅"),  # names outside the BMP: two UTF-16 units per character
])
def test_given_a_link_that_cannot_fit_then_the_warning_goes_without_it_rather_than_not_at_all(language, signature,
                                                                                              place):
    facts = WarningFacts("浙AD12345", place, DEADLINE, "𠀀𠀁𠀂", 100_000, COUNTED, LINK + "/" + "x" * 40)

    text = warning_text(facts, language, signature)

    assert one_segment(text) and CODE not in text
    assert "浙AD12345" in text and "10:52" in text


@pytest.mark.parametrize("link", [None, LINK])
def test_given_a_signature_too_long_for_the_car_park_line_then_the_warning_goes_without_it_rather_than_not_at_all(
        link):
    """The warning itself always leaves: a TextTooLong here stopped every SMS behind it (issue 8)."""
    signature = "杭州市余杭区城市管理行政执法局" * 2 + "综合执法大队"
    facts = WarningFacts("浙AD12345", city.CAMERAS[0].place, DEADLINE, "海创园B1", 100_000, COUNTED, link)

    text = warning_text(facts, "zh-CN", signature)

    assert one_segment(text), (length(text), text)
    assert "浙AD12345" in text and "10:52" in text and "100000" not in text


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("plate", PLATES)
@pytest.mark.parametrize("first_offence", [True, False], ids=["first offence", "new camera"])
def test_given_every_camera_of_the_demo_city_when_a_warning_notice_is_given_then_it_is_brief_and_says_no_fine(
        language, plate, first_offence):
    for camera in city.CAMERAS:
        text = texts.caution_text(texts.CautionFacts(plate, camera.place, first_offence), language)

        assert brief(text), (length(text), text)
        assert plate in text
        assert ("不罚款" if language == "zh-CN" else "no fine") in text
        assert ("首次违停" in text or "first offence" in text) == first_offence


@settings(max_examples=100, deadline=None)
@given(long_names)
def test_given_any_place_name_when_a_warning_notice_is_given_then_it_still_fits(place):
    assert one_segment(texts.caution_text(texts.CautionFacts("浙AD12345F", place, True)))


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("plate", PLATES)
def test_given_a_voided_ticket_then_the_withdrawal_text_names_plate_and_number_and_fits_one_segment(language, plate):
    text = texts.withdrawal_text(plate, TICKET_NUMBER, language)

    assert one_segment(text), (length(text), text)
    assert plate in text and TICKET_NUMBER in text
    assert ("已撤销" if language == "zh-CN" else "withdrawn") in text
