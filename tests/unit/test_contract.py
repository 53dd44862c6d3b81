"""The published contract: JSON Schema files (schemas/json/v1), examples (schemas/examples) and
the GCJ-02 conversion at the edge (schemas/datum.py)."""

import json
from datetime import UTC, datetime

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from pydantic import ValidationError

from schemas import contract
from schemas.codec import encode
from schemas.datum import gcj02_to_wgs84, in_china, wgs84_to_gcj02
from pipeline.config import Settings
from schemas.events import Evidence, Location, ViolationDetected, camera_event_adapter, validation_context

pytestmark = pytest.mark.unit

CAMERA_EVENTS = ("ViolationDetected", "VehicleObserved", "VehicleDeparted")


def schema(name: str) -> Draft202012Validator:
    loaded = json.loads((contract.SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(loaded)
    return Draft202012Validator(loaded, format_checker=FormatChecker())


def example(name: str) -> dict:
    return json.loads((contract.EXAMPLES_DIR / f"{name}.json").read_text(encoding="utf-8"))


def schema_errors(validator: Draft202012Validator, data) -> list[str]:
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(data)]


def test_the_checked_in_schema_files_match_the_models():
    assert contract.drift() == [], "run `parkwarden schemas --write` and commit schemas/json/"


def test_every_message_has_a_schema_file_and_an_example_and_nothing_else_is_there():
    names = {m.__name__ for m in contract.MODELS}
    assert {p.name.removesuffix(".schema.json") for p in contract.SCHEMA_DIR.glob("*.schema.json")} == \
        names | {contract.CAMERA_EVENT}
    assert {p.stem for p in contract.EXAMPLES_DIR.glob("*.json")} == names


@pytest.mark.parametrize("model", contract.MODELS, ids=lambda m: m.__name__)
def test_each_example_is_valid_for_its_model_and_its_json_schema(model):
    data = example(model.__name__)

    model.model_validate(data)
    assert schema_errors(schema(model.__name__), data) == []


@pytest.mark.parametrize("model", contract.MODELS, ids=lambda m: m.__name__)
def test_what_parkwarden_writes_for_each_example_conforms_to_the_json_schema(model):
    written = json.loads(encode(model.model_validate(example(model.__name__))))

    assert schema_errors(schema(model.__name__), written) == []


@pytest.mark.parametrize("name", CAMERA_EVENTS)
def test_each_camera_event_example_is_valid_for_the_camera_event_union(name):
    data = example(name)

    assert camera_event_adapter.validate_python(data).type == name
    assert schema_errors(schema(contract.CAMERA_EVENT), data) == []


@pytest.mark.parametrize("change, field", [
    ({"taken_at": "2026-11-26T10:42:00"}, "taken_at"),  # no UTC offset
    ({"location": {"lat": 95, "lon": 120}}, "location"),
    ({"evidence": {"image_url": "/relative/path.jpg"}}, "evidence"),
    ({"platee": "浙A12345"}, ""),
    ({"schema_version": 2}, "schema_version"),
])
def test_an_invalid_violation_is_refused_by_both_the_model_and_the_json_schema(change, field):
    data = {**example("ViolationDetected"), **change}

    with pytest.raises(ValidationError):
        ViolationDetected.model_validate(data)
    errors = schema_errors(schema("ViolationDetected"), data)
    assert errors and any(e.startswith(field) for e in errors), errors


def test_the_schema_files_say_which_topic_and_key():
    violation = json.loads((contract.SCHEMA_DIR / "ViolationDetected.schema.json").read_text(encoding="utf-8"))

    assert violation["x-parkwarden-topic"] == "camera-events"
    assert "normalized plate" in violation["x-parkwarden-key"]
    assert violation["x-parkwarden-schema-version"] == 1


# ── coordinates ────────────────────────────────────────────────────────────────────────────


def test_the_forward_transform_matches_the_published_reference_value():
    # The widely used reference implementation (coordtransform) gives, for WGS-84 116.404E 39.915N:
    lat, lon = wgs84_to_gcj02(39.915, 116.404)

    assert lat == pytest.approx(39.91640428150164, abs=1e-12)
    assert lon == pytest.approx(116.41024449916938, abs=1e-12)


@pytest.mark.parametrize("lat, lon", [(30.2793, 120.00395), (39.915, 116.404), (22.54, 114.06), (45.75, 126.63),
                                      (29.56, 106.55), (43.8, 87.6)])
def test_gcj02_to_wgs84_inverts_the_transform_to_a_centimetre(lat, lon):
    back = gcj02_to_wgs84(*wgs84_to_gcj02(lat, lon))

    assert back == pytest.approx((lat, lon), abs=1e-7)  # 1e-7 degrees is about 1 cm


def test_a_gcj02_location_is_converted_to_wgs84_on_arrival():
    camera = (30.2793, 120.00395)  # cam-wenyi-01, WGS-84
    shown_on_a_chinese_map = wgs84_to_gcj02(*camera)

    location = Location.model_validate({"lat": shown_on_a_chinese_map[0], "lon": shown_on_a_chinese_map[1],
                                        "datum": "gcj02"})

    assert location.datum == "wgs84"
    assert (location.lat, location.lon) == pytest.approx(camera, abs=1e-7)
    assert Location(lat=30.2793, lon=120.00395) == Location(lat=30.2793, lon=120.00395, datum="wgs84")


def test_in_hangzhou_the_gcj02_offset_is_hundreds_of_metres_so_it_cannot_be_ignored():
    from geopy.distance import geodesic

    camera = (30.2793, 120.00395)
    assert 300 < geodesic(camera, wgs84_to_gcj02(*camera)).meters < 700


def test_a_gcj02_location_outside_china_is_refused_and_bd09_is_not_a_datum():
    assert not in_china(48.8566, 2.3522)
    with pytest.raises(ValidationError, match="only defined inside China"):
        Location(lat=48.8566, lon=2.3522, datum="gcj02")
    with pytest.raises(ValidationError, match="datum"):
        Location.model_validate({"lat": 30.28, "lon": 120.0, "datum": "bd09"})


def test_an_evidence_reference_is_an_absolute_https_url_or_one_of_the_schemes_the_operator_allows():
    assert Evidence(image_url="https://evidence.example.com/a.jpg").image_url == "https://evidence.example.com/a.jpg"
    with pytest.raises(ValidationError, match="'s3' is not accepted"):
        Evidence(image_url="s3://bucket/cam-1/a.jpg")

    allowed = Evidence.model_validate({"image_url": "s3://bucket/cam-1/a.jpg"},
                                      context=validation_context({"https", "s3"}))
    assert allowed.image_url == "s3://bucket/cam-1/a.jpg"


@pytest.mark.parametrize("url", ["a.jpg", "/images/a.jpg", "https://host/with space.jpg", "javascript:alert(1)",
                                 "javascript://%0aalert(1)", "http://evidence.example.com/a.jpg"])
def test_a_relative_spaced_or_non_https_evidence_reference_is_refused_by_the_model_and_the_json_schema(url):
    with pytest.raises(ValidationError):
        Evidence(image_url=url)
    data = {**example("ViolationDetected"), "evidence": {"image_url": url}}
    assert any(e.startswith("evidence") for e in schema_errors(schema("ViolationDetected"), data))


def test_an_operator_cannot_allow_evidence_links_that_run_code():
    with pytest.raises(ValidationError, match="javascript"):
        Evidence.model_validate({"image_url": "javascript://%0aalert(1)"},
                                context={"evidence_url_schemes": frozenset({"https", "javascript"})})
    with pytest.raises(ValueError, match="PW_EVIDENCE_URL_SCHEMES may not allow javascript"):
        Settings(evidence_url_schemes="https,javascript")


def test_a_gcj02_event_is_written_downstream_as_wgs84():
    data = {**example("VehicleObserved")}
    assert data["location"]["datum"] == "gcj02"

    written = json.loads(encode(camera_event_adapter.validate_python(data)))

    assert written["location"]["datum"] == "wgs84"
    assert written["taken_at"] == "2026-11-26T10:53:01+08:00"
    assert datetime.fromisoformat(written["taken_at"]).astimezone(UTC).hour == 2
