"""Reading ingest bodies (pipeline/ingest/batch.py), Retry-After (pipeline/ingest/ratelimit.py) and the integrators' command line (pipeline/ingest/cli.py)."""

import json

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.cli import main
from pipeline.ingest.batch import BodyError, TooManyEvents, kafka_address, read_body, read_file
from pipeline.ingest.keys import KEY_PREFIX, key_digest, new_key
from pipeline.ingest.ratelimit import retry_after_header
from schemas import contract, topics
from schemas.codec import car_park_status_adapter
from schemas.events import camera_event_adapter, input_event_adapter, validation_context

pytestmark = pytest.mark.unit

JSON, LINES = "application/json", "application/x-ndjson"


def example(name: str) -> dict:
    return json.loads((contract.EXAMPLES_DIR / f"{name}.json").read_text(encoding="utf-8"))


def dumps(*items) -> bytes:
    return json.dumps(list(items) if len(items) != 1 else items[0], ensure_ascii=False).encode()


def lines(*items) -> bytes:
    return b"\n".join(i if isinstance(i, bytes) else json.dumps(i, ensure_ascii=False).encode() for i in items)


# ── bodies ─────────────────────────────────────────────────────────────────────────────────


def test_given_one_event_as_a_json_object_then_it_is_a_batch_of_one():
    batch = read_body(dumps(example("ViolationDetected")), JSON, camera_event_adapter)

    assert [(i, e.plate) for i, e in batch.events] == [(0, "浙A12345")]
    assert batch.refused == []


def test_given_an_array_with_a_bad_event_then_only_that_one_is_refused_naming_its_index_and_field():
    good, bad = example("ViolationDetected"), {**example("VehicleDeparted"), "location": {"lat": 95, "lon": 120}}

    batch = read_body(dumps(good, bad, good), JSON, camera_event_adapter)

    assert [i for i, _ in batch.events] == [0, 2]
    [refusal] = batch.refused
    assert refusal.index == 1 and refusal.event_id == bad["event_id"]
    assert [e.field for e in refusal.errors] == ["location.lat"]
    assert refusal.as_json()["errors"][0]["message"] == "Input should be less than or equal to 90"


def test_given_json_lines_then_blank_lines_are_skipped_and_a_broken_line_is_refused_alone():
    body = lines(example("VehicleObserved"), b"", b"{broken", example("VehicleDeparted"), b"   ")

    batch = read_body(body, LINES, camera_event_adapter)

    assert [i for i, _ in batch.events] == [0, 2]
    [refusal] = batch.refused
    assert (refusal.index, refusal.line) == (1, 3)
    assert "line 3 is not JSON" in refusal.reason
    assert refusal.as_json()["line"] == 3 and refusal.errors[0].field == "(message)"


@pytest.mark.parametrize("body, complaint", [
    (b"{not json", "not JSON"),
    (b'"a string"', "JSON str"),
    (b"42", "JSON int"),
    (b"[" * 50_000, "nested too deeply"),
])
def test_given_a_body_that_is_not_an_event_or_a_batch_then_the_body_error_says_what_to_send(body, complaint):
    with pytest.raises(BodyError, match=complaint) as info:
        read_body(body, JSON, camera_event_adapter)
    assert "JSON" in str(info.value)


@pytest.mark.parametrize("item, field, says", [
    ({**example("ViolationDetected"), "taken_at": "2026-11-26T10:42:00"}, "taken_at", "UTC offset"),
    ({k: v for k, v in example("ViolationDetected").items() if k != "event_id"}, "event_id", "add it"),
    ({**example("ViolationDetected"), "colour": "red"}, "colour", "remove it"),
    ({**example("ViolationDetected"), "type": "Teleported"}, "type", "use one of"),
    ({k: v for k, v in example("ViolationDetected").items() if k != "type"}, "type", "say which event"),
    ({**example("ViolationDetected"), "plate": "浙I12345"}, "plate", "I and O"),
    ([1, 2], "(message)", "JSON object"),
])
def test_given_a_refused_event_then_the_field_is_named_as_the_integrator_wrote_it_and_the_fix_is_said(item, field,
                                                                                                     says):
    [refusal] = read_body(dumps([item]), JSON, camera_event_adapter).refused

    assert field in [e.field for e in refusal.errors]
    assert says in refusal.reason


class CountingAdapter:
    """Stands in for a pydantic adapter and counts the events it was asked to validate."""

    def __init__(self):
        self.validated = 0

    def validate_python(self, data, context=None):
        self.validated += 1
        return camera_event_adapter.validate_python(data, context=context)


@pytest.mark.parametrize("media_type", [JSON, LINES])
def test_given_more_events_than_allowed_then_the_batch_is_refused_before_any_event_is_validated(media_type):
    items = [example("VehicleDeparted")] * 6
    body = dumps(*items) if media_type == JSON else lines(*items, b"", b"  ")
    adapter = CountingAdapter()

    with pytest.raises(TooManyEvents, match="6 events in one request; at most 5") as too_many:
        read_body(body, media_type, adapter, max_events=5)

    assert adapter.validated == 0, "counted first: not one event was validated"
    assert (too_many.value.count, too_many.value.limit) == (6, 5)
    assert read_body(body, media_type, adapter, max_events=6).size == 6, "blank lines do not count"


@pytest.mark.parametrize("url", ["javascript://%0aalert(document.cookie)", "javascript:alert(1)",
                                 "data://text/html,<script>alert(1)</script>", "http://evidence.example/a.jpg",
                                 "s3://bucket/a.jpg", "HTTPS://evidence.example/a.jpg"])
def test_given_evidence_that_is_not_an_https_url_then_the_event_is_refused_naming_the_field(url):
    item = {**example("ViolationDetected"), "evidence": {"image_url": url}}

    [refusal] = read_body(dumps([item]), JSON, camera_event_adapter).refused

    assert [e.field for e in refusal.errors] == ["evidence.image_url"]
    assert "https://" in refusal.reason


def test_given_schemes_the_operator_allows_then_they_are_accepted_but_never_javascript():
    allowed = validation_context({"https", "s3", "javascript"})
    s3 = {**example("ViolationDetected"), "evidence": {"image_url": "s3://bucket/cam-1/a.jpg"}}
    script = {**example("ViolationDetected"), "evidence": {"image_url": "javascript://%0aalert(1)"}}

    batch = read_body(dumps(s3, script), JSON, camera_event_adapter, context=allowed)

    assert [i for i, _ in batch.events] == [0]
    assert [r.index for r in batch.refused] == [1]


def test_given_a_camera_event_on_the_car_park_endpoint_then_it_is_refused():
    [refusal] = read_body(dumps([example("ViolationDetected")]), JSON, car_park_status_adapter).refused

    assert "type" in [e.field for e in refusal.errors]


def test_each_input_event_goes_to_its_topic_keyed_by_normalized_plate_or_car_park_id():
    violation = input_event_adapter.validate_python(example("ViolationDetected"))
    status = input_event_adapter.validate_python(example("CarParkStatus"))

    assert kafka_address(violation) == (topics.CAMERA_EVENTS, "浙A12345")
    assert kafka_address(status) == (topics.CAR_PARK_STATUS, "cp-hcy-b1")


def test_a_file_may_be_one_object_an_array_or_json_lines():
    one = example("CarParkStatus")

    assert read_file(json.dumps(one, indent=2).encode(), input_event_adapter).size == 1
    assert read_file(dumps(one, one), input_event_adapter).size == 2
    assert read_file(lines(one, one, one), input_event_adapter).size == 3


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(list(example("ViolationDetected"))) | st.text(max_size=6), inner, max_size=6),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.sampled_from([JSON, LINES]))
def test_for_any_bytes_reading_a_body_gives_a_batch_or_a_body_error(body, media_type):
    try:
        batch = read_body(body, media_type, camera_event_adapter)
    except BodyError:
        return
    assert all(r.errors for r in batch.refused)
    json.dumps([r.as_json() for r in batch.refused])  # the reply can always be written


@settings(max_examples=200, deadline=None)
@given(st.lists(json_values, max_size=5), st.sampled_from([JSON, LINES]))
def test_for_any_json_reading_a_body_refuses_each_bad_event_with_a_field(items, media_type):
    body = dumps(*items) if media_type == JSON and len(items) != 1 else lines(*items) if items else b"[]"
    try:
        batch = read_body(body, media_type, camera_event_adapter)
    except BodyError:
        return
    for refusal in batch.refused:
        assert refusal.errors and all(e.field for e in refusal.errors)


# ── rate limit and keys ────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("wait, header", [(0.01, "1"), (0.5, "1"), (1.0, "1"), (1.01, "2"), (9.2, "10")])
def test_retry_after_is_whole_seconds_rounded_up(wait, header):
    assert retry_after_header(wait) == header


def test_a_key_is_long_random_and_only_its_digest_is_compared():
    a, b = new_key(), new_key()

    assert a.startswith(KEY_PREFIX) and len(a) > 40 and a != b
    assert key_digest(a) != key_digest(b) and len(key_digest(a)) == 32


# ── command line ───────────────────────────────────────────────────────────────────────────


def test_events_validate_accepts_the_examples(tmp_path):
    file = tmp_path / "events.jsonl"
    file.write_bytes(lines(*(example(n) for n in ("ViolationDetected", "VehicleObserved", "VehicleDeparted",
                                                   "CarParkStatus"))))

    result = CliRunner().invoke(main, ["events", "validate", str(file)])

    assert result.exit_code == 0, result.output
    assert "4 valid, 0 invalid" in result.output


def test_events_validate_prints_each_invalid_line_with_the_field_and_reason_and_exits_1(tmp_path):
    file = tmp_path / "events.jsonl"
    file.write_bytes(lines(example("ViolationDetected"), {**example("CarParkStatus"), "free_spaces": -3}, b"nope"))

    result = CliRunner().invoke(main, ["events", "validate", str(file)])

    assert result.exit_code == 1
    assert "line 2" in result.output and "free_spaces" in result.output and "greater than or equal to 0" in result.output
    assert "line 3" in result.output and "not JSON" in result.output
    assert "1 valid, 2 invalid" in result.output


def test_schemas_command_says_the_files_match():
    result = CliRunner().invoke(main, ["schemas"])

    assert result.exit_code == 0, result.output
    assert "matches the models" in result.output
