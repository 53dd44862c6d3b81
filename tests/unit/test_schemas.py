"""The wire contract: plates (schemas/plates.py), events (schemas/events.py) and the codec (schemas/codec.py)."""

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.codec import Rejected, decode_camera_event, decode_car_park_status, encode
from schemas.events import (
    CarParkStatus,
    DeadLetter,
    Evidence,
    Location,
    VehicleDeparted,
    VehicleObserved,
    ViolationDetected,
)
from schemas.plates import normalize_plate, plate_problem

pytestmark = pytest.mark.unit

TAKEN_AT = datetime(2026, 11, 26, 10, 42, tzinfo=timezone(timedelta(hours=8)))


def violation_json(**changes) -> dict:
    message = {
        "type": "ViolationDetected",
        "event_id": "cam-0042:20261126T104200Z:0001",
        "camera_id": "cam-wenyi-01",
        "plate": "浙A·12345",
        "taken_at": "2026-11-26T10:42:00+08:00",
        "location": {"lat": 30.2793, "lon": 120.00395},
        "place": "文一西路海创园南门",
        "zone": "yuhang",
        "evidence": {"image_url": "https://img.example/cam-0042/0001.jpg"},
    }
    for key, value in changes.items():
        if value is None:
            message.pop(key, None)
        else:
            message[key] = value
    return message


def raw(message: dict) -> bytes:
    return json.dumps(message, ensure_ascii=False).encode()


# ── plates ─────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("written, canonical", [
    ("浙A·12345", "浙A12345"),
    ("浙A12345", "浙A12345"),
    ("浙a12345", "浙A12345"),
    ("浙A 12345", "浙A12345"),
    (" 浙A 123 45 ", "浙A12345"),
    ("浙Ａ１２３４５", "浙A12345"),  # full-width letters and digits
    ("浙ａｂ１２３４", "浙AB1234"),  # full-width lower case
    ("浙A\u300012345", "浙A12345"),  # ideographic space
    ("浙A-12345", "浙A12345"),
    ("浙A.12345", "浙A12345"),
    ("浙A・12345", "浙A12345"),
    ("浙ad12345", "浙AD12345"),
])
def test_given_a_plate_written_by_a_camera_when_normalized_then_it_has_one_canonical_form(written, canonical):
    assert normalize_plate(written) == canonical
    assert plate_problem(normalize_plate(written)) is None


@pytest.mark.parametrize("plate", [
    "浙A12345",   # standard
    "京N8P8F8",   # letters in the serial
    "粤B1234学",  # learner
    "浙A1201警",  # police
    "沪C1234挂",  # trailer
    "浙AD12345",  # new-energy small car: D first
    "浙AFA1234",  # new-energy small car: F first, then a letter
    "浙A12345D",  # new-energy large vehicle: D last
    "苏E12345F",
])
def test_given_a_valid_plate_then_it_has_no_problem(plate):
    assert plate_problem(plate) is None


@pytest.mark.parametrize("plate, complaint", [
    ("", "empty"),
    ("XA12345", "province"),
    ("AA12345", "province"),
    ("台A12345", "province"),
    ("浙A1234", "7 characters"),
    ("浙A123456789", "7 characters"),
    ("浙I12345", "I and O"),
    ("浙O12345", "I and O"),
    ("浙A1234I", "I and O"),
    ("浙A12O45", "I and O"),
    ("浙1A2345", "not a valid standard plate"),
    ("浙A123456", "new-energy"),   # 8 characters without D/F
    ("浙AA12345", "new-energy"),   # 8 characters, A is not D/F
    ("浙AD1234A", "new-energy"),   # D first needs four digits at the end
    ("浙A1234DF", "new-energy"),
])
def test_given_an_invalid_plate_then_the_problem_says_why(plate, complaint):
    problem = plate_problem(plate)
    assert problem is not None
    assert complaint in problem


# ── events ─────────────────────────────────────────────────────────────────────────────────


def test_given_a_violation_with_a_decorated_plate_when_validated_then_the_plate_is_normalized():
    event = ViolationDetected.model_validate(violation_json(plate=" 浙ａ·１２３４５ "))

    assert event.plate == "浙A12345"
    assert event.location == Location(lat=30.2793, lon=120.00395)


@pytest.mark.parametrize("lat, lon", [(90.0001, 120), (-91, 120), (30, 180.5), (30, -181), (float("nan"), 120)])
def test_given_coordinates_out_of_range_when_validated_then_they_are_refused(lat, lon):
    with pytest.raises(ValidationError):
        Location(lat=lat, lon=lon)


@pytest.mark.parametrize("lat, lon", [(90, 180), (-90, -180), (0, 0)])
def test_given_coordinates_at_the_limits_when_validated_then_they_are_accepted(lat, lon):
    assert Location(lat=lat, lon=lon).lat == lat


@pytest.mark.parametrize("taken_at", ["2026-11-26T10:42:00", "2026-11-26 10:42:00"])
def test_given_a_naive_timestamp_when_validated_then_it_is_refused(taken_at):
    with pytest.raises(ValidationError) as info:
        ViolationDetected.model_validate(violation_json(taken_at=taken_at))
    assert info.value.errors()[0]["loc"] == ("taken_at",)


def test_given_a_naive_datetime_object_when_validated_then_it_is_refused():
    with pytest.raises(ValidationError):
        VehicleDeparted(event_id="cam-0042:0001", camera_id="cam-1", plate="浙A12345",
                        taken_at=datetime(2026, 11, 26, 10, 42), location=Location(lat=30, lon=120))


@pytest.mark.parametrize("event_id", ["cam-0042:20261126T104200Z:0001", "abcdefgh", "a" * 64, "0.1_2:3-4"])
def test_given_a_well_formed_event_id_then_it_is_accepted(event_id):
    assert ViolationDetected.model_validate(violation_json(event_id=event_id)).event_id == event_id


@pytest.mark.parametrize("event_id", ["short", "a" * 65, "-starts-with-dash", "has space 123", "含中文的编号abcdefg", ""])
def test_given_a_malformed_event_id_then_it_is_refused(event_id):
    with pytest.raises(ValidationError):
        ViolationDetected.model_validate(violation_json(event_id=event_id))


def test_given_an_unknown_field_when_validated_then_it_is_refused_not_ignored():
    with pytest.raises(ValidationError):
        ViolationDetected.model_validate(violation_json(platee="浙A12345"))


# ── codec ──────────────────────────────────────────────────────────────────────────────────


def test_given_a_valid_violation_when_encoded_and_decoded_then_it_round_trips():
    event = ViolationDetected(
        event_id="cam-0042:20261126T104200Z:0001", camera_id="cam-wenyi-01", plate="浙A·12345", taken_at=TAKEN_AT,
        location=Location(lat=30.2793, lon=120.00395), place="文一西路海创园南门", zone="yuhang",
        evidence=Evidence(image_url="https://img.example/1.jpg", sha256="0" * 64),
    )

    decoded = decode_camera_event(encode(event))

    assert decoded == event
    assert isinstance(decoded, ViolationDetected)
    assert decoded.taken_at == TAKEN_AT and decoded.taken_at.utcoffset() == timedelta(hours=8)


@pytest.mark.parametrize("message, kind", [
    (violation_json(), ViolationDetected),
    (violation_json(type="VehicleObserved", evidence=None, recheck_id="case-1:1"), VehicleObserved),
    ({k: v for k, v in violation_json(type="VehicleDeparted").items() if k not in ("place", "zone", "evidence")},
     VehicleDeparted),
])
def test_given_each_camera_event_type_when_decoded_then_the_type_field_picks_the_model(message, kind):
    assert isinstance(decode_camera_event(raw(message)), kind)


@pytest.mark.parametrize("message, field", [
    (violation_json(plate="浙I12345"), "plate"),
    (violation_json(plate="XA12345"), "plate"),
    (violation_json(location={"lat": 95, "lon": 120}), "location.lat"),
    (violation_json(location={"lat": 30, "lon": 200}), "location.lon"),
    (violation_json(taken_at="2026-11-26T10:42:00"), "taken_at"),
    (violation_json(event_id="x"), "event_id"),
    (violation_json(evidence=None), "evidence"),
    (violation_json(camera_id=None), "camera_id"),
])
def test_given_an_invalid_event_when_decoded_then_it_is_rejected_naming_the_field(message, field):
    body = raw(message)

    result = decode_camera_event(body)

    assert isinstance(result, Rejected)
    assert result.raw == body
    assert field in [e.field.removeprefix("ViolationDetected.") for e in result.errors]
    assert field in result.reason
    assert "ViolationDetected" in result.reason


@pytest.mark.parametrize("body, reason", [
    (None, "empty"),
    (b"", "not JSON"),
    (b"{not json", "not JSON"),
    (b"\xff\xfe\x00garbage", "not JSON"),
    (b"[]", "invalid"),
    (b'{"type": "Teleported"}', "invalid"),
])
def test_given_unusable_bytes_when_decoded_then_a_reason_is_given(body, reason):
    result = decode_camera_event(body)

    assert isinstance(result, Rejected)
    assert reason in result.reason


def test_given_a_car_park_status_when_decoded_then_it_round_trips_and_a_negative_count_is_rejected():
    status = CarParkStatus(car_park_id="cp-efc", free_spaces=12, reported_at=datetime(2026, 11, 26, 2, 42, tzinfo=UTC))

    assert decode_car_park_status(encode(status)) == status
    negative = {"car_park_id": "cp-efc", "free_spaces": -1, "reported_at": "2026-11-26T02:42:00Z"}
    bad = decode_car_park_status(raw(negative))
    assert isinstance(bad, Rejected)
    assert "free_spaces" in bad.reason


# Decoding never raises: pipeline/codecs.py relies on it so that every bad message reaches the dead letters.

json_keys = st.sampled_from(list(violation_json()) + ["recheck_id", "lat", "lon", "image_url", "extra"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        json_keys | st.text(max_size=8),
        inner, max_size=6),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_for_any_bytes_decoding_a_camera_event_never_raises(body):
    result = decode_camera_event(body)
    assert isinstance(result, (Rejected, ViolationDetected, VehicleObserved, VehicleDeparted))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=512))
def test_for_any_text_decoding_a_camera_event_never_raises(text):
    result = decode_camera_event(text.encode("utf-8", errors="surrogatepass"))
    assert isinstance(result, (Rejected, ViolationDetected, VehicleObserved, VehicleDeparted))


@settings(max_examples=100, deadline=None)
@given(st.fixed_dictionaries({}, optional={k: json_values for k in violation_json()}), json_values)
def test_for_any_json_shaped_like_an_event_decoding_never_raises(fields, extra):
    message = {**fields, "type": "ViolationDetected"} if fields else extra
    result = decode_camera_event(json.dumps(message).encode())
    assert isinstance(result, (Rejected, ViolationDetected))


@pytest.mark.parametrize("body", [
    pytest.param(b"[" * 100_000, id="deeply nested JSON"),
    pytest.param(b"1" * 5000, id="integer longer than 4300 digits"),
    pytest.param(b'{"type": "ViolationDetected", "free": ' + b"9" * 5000 + b"}", id="huge integer inside an event"),
])
def test_given_hostile_json_when_decoded_then_it_is_rejected_not_raised(body):
    result = decode_camera_event(body)

    assert isinstance(result, Rejected)


def dead_letter_of(raw: bytes, key: bytes | None = b"cam-0042") -> DeadLetter:
    rejected = decode_camera_event(raw)
    assert isinstance(rejected, Rejected)
    return DeadLetter.capped("camera-events", 2, 18231, key, rejected.reason, rejected.errors, raw,
                             datetime(2026, 11, 26, 2, 42, tzinfo=UTC))


def test_given_a_small_bad_message_then_its_dead_letter_carries_it_whole():
    raw = json.dumps({**violation_json(), "taken_at": "2026-11-26T10:42:00"}).encode()

    letter = dead_letter_of(raw)

    assert base64.b64decode(letter.raw_base64) == raw
    assert (letter.raw_size, letter.raw_truncated, letter.errors_omitted) == (len(raw), False, 0)
    assert [e.field for e in letter.errors] == ["taken_at"] and letter.key == "cam-0042"


def test_given_a_huge_message_with_thousands_of_errors_then_its_dead_letter_stays_far_under_a_brokers_limit():
    names = [f"{'n' * 3000}_{i}" for i in range(5000)]  # long misspelt field names, one error each
    raw = json.dumps({**violation_json(), **{name: 1 for name in names}}).encode()
    assert len(raw) > 10 * 1024 * 1024

    letter = dead_letter_of(raw, key=b"k" * 5000)

    assert len(encode(letter)) < 256 * 1024
    assert base64.b64decode(letter.raw_base64) == raw[:64 * 1024]
    assert letter.raw_size == len(raw) and letter.raw_truncated
    assert len(letter.errors) == 20 and letter.errors_omitted == 4980
    assert letter.errors[0].field.startswith("nnn") and letter.errors[0].field.endswith("…")
    assert len(letter.reason) <= 1000 and len(letter.key) <= 200


def test_an_unknown_field_whose_name_is_only_whitespace_is_still_named_in_the_error():
    """Found by fuzzing the ingest: a field named "\\r" was reported with an empty name."""
    rejected = decode_camera_event(b'{"type": "VehicleDeparted", "\\r": 1}')

    assert isinstance(rejected, Rejected)
    assert all(e.field for e in rejected.errors)
    assert "'\\r'" in [e.field for e in rejected.errors]
