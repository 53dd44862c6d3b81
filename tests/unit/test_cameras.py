"""The camera registry's pure parts: checking a camera, reading an import file, refusing an event
for a camera that is not the sender's, and the per-integrator camera-events topics."""

from datetime import date

import pytest

from pipeline.cameras import registry
from pipeline.cameras.registry import Camera, CameraProblem
from schemas import topics

ROW = {"id": "cam-wenyi-09", "integrator": "acme", "lat": "30.2795", "lon": "120.0041", "place": "文一西路海创园西门",
       "zone": "yuhang", "direction": "ne", "commissioned_on": "2026-11-01"}


def test_a_camera_is_read_from_loose_fields():
    cam = registry.camera(ROW)
    assert cam == Camera("cam-wenyi-09", "acme", 30.2795, 120.0041, "文一西路海创园西门", "yuhang", "NE", date(2026, 11, 1))
    assert registry.camera({**ROW, "direction": ""}).direction is None


@pytest.mark.parametrize("change, field", [
    ({"id": "cam 9"}, "id:"), ({"integrator": ""}, "integrator:"), ({"place": ""}, "place:"),
    ({"zone": "Yuhang"}, "zone:"), ({"lat": "north"}, "lat, lon:"), ({"lat": "95"}, "lat, lon:"),
    ({"direction": "up"}, "direction:"), ({"commissioned_on": "1/11/2026"}, "commissioned_on:"),
    ({"colour": "red"}, "unknown field"),
])
def test_a_bad_camera_names_the_field(change, field):
    with pytest.raises(CameraProblem, match=field):
        registry.camera({**ROW, **change})


def test_an_import_file_is_csv_or_json_lines_and_each_bad_row_is_named():
    csv = ("id,integrator,lat,lon,place,zone,direction,commissioned_on\n"
           "cam-1,acme,30.1,120.1,甲路,yuhang,,2026-01-01\n"
           "cam-2,acme,91,120.1,乙路,yuhang,N,2026-01-01\n").encode()
    [(line1, first), (line2, second)] = registry.read_file(csv)
    assert (line1, first.id, first.direction) == (2, "cam-1", None)
    assert line2 == 3 and isinstance(second, CameraProblem) and "lat, lon" in str(second)
    jsonl = b'{"id": "cam-3", "integrator": "acme", "lat": 30, "lon": 120, "place": "p", "zone": "yuhang", ' \
            b'"commissioned_on": "2026-01-01"}\n\nnot json\n'
    [(_, third), (line, broken)] = registry.read_file(jsonl)
    assert third.id == "cam-3" and line == 3 and "not JSON" in str(broken)
    with pytest.raises(CameraProblem, match="not a camera file"):
        registry.read_file(b"a,b\n1,2\n")


def test_an_event_is_refused_unless_its_camera_is_registered_to_the_sender_and_the_owner_is_never_named():
    cam = registry.camera(ROW)
    assert registry.refusal(cam, cam.id, "acme") is None
    assert "is not registered:" in registry.refusal(None, "cam-x", "acme")
    foreign = registry.refusal(cam, cam.id, "rival")
    assert "not registered to rival" in foreign and "acme" not in foreign


def test_the_registry_in_memory_checks_cameras_and_car_parks():
    book = registry.Registry()
    book.cameras = {"cam-wenyi-09": registry.camera(ROW)}
    book.car_park_owners = {"cp-1": "acme", "cp-2": None}
    assert book.camera_refusal("cam-wenyi-09", "acme") is None
    assert book.camera_refusal("cam-wenyi-09", "rival") is not None
    assert book.car_park_refusal("cp-1", "acme") is None
    assert "cp-1" in book.car_park_refusal("cp-1", "rival")
    assert book.car_park_refusal("cp-2", "rival") is None, "a car park without an owner takes any publisher's"


def test_each_integrator_has_its_own_camera_events_topic():
    base = "hz.camera-events"
    assert topics.camera_events_of(base, "acme") == "hz.camera-events.acme"
    assert topics.integrator_of(base, "hz.camera-events.acme") == "acme"
    assert topics.integrator_of(base, "hz.camera-events") is None
    assert topics.integrator_of(base, "hz.camera-events.") is None
    assert topics.integrator_of(base, "hz.case-events") is None
    assert topics.is_camera_events(base, base) and not topics.is_camera_events(base, "hz.tickets")
