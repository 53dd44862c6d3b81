"""The console map's GeoJSON (pipeline/console/map.py): which camera is flagged silent, the colour of
a car park by its fill, an open case's time left counted on PostgreSQL's clock, and what the
package ships for the page (Leaflet, its licence) so that nothing is fetched from elsewhere."""

import fnmatch
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest

from pipeline.config import Settings
from pipeline.console.map import COLOURS, SilenceRule, feature_collection

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
RULE = SilenceRule(factor=5, min_seconds=300)


def camera(id: str, *ages: float) -> dict:
    """A camera whose captures were taken ``ages`` seconds before NOW (any order)."""
    return {"id": id, "place": "文一西路", "zone": "yuhang", "integrator": "demo", "lat": 30.28, "lon": 120.0,
            "captures": sorted((NOW - timedelta(seconds=a) for a in ages), reverse=True)}


def car_park(id: str, free: int | None, capacity: int = 100) -> dict:
    return {"id": id, "name": id, "short_name": id, "lat": 30.27, "lon": 120.01, "capacity": capacity,
            "free_spaces": free, "reported_at": None if free is None else NOW}


def case(state: str, deadline_in: float | None = None, wake_in: float | None = None) -> dict:
    return {"id": uuid4(), "plate": "浙A12345", "state": state, "zone": "yuhang", "place": "文一西路",
            "camera_id": "cam-1", "lat": 30.28, "lon": 120.0, "detected_at": NOW - timedelta(minutes=2),
            "deadline_at": None if deadline_in is None else NOW + timedelta(seconds=deadline_in),
            "wake_at": None if wake_in is None else NOW + timedelta(seconds=wake_in)}


def layer(collection: dict, name: str) -> dict[str, dict]:
    return {f["properties"]["id"]: f["properties"] for f in collection["features"] if f["properties"]["layer"] == name}


def test_a_camera_silent_for_longer_than_five_times_its_usual_gap_and_five_minutes_is_flagged():
    collection = feature_collection(NOW, [
        camera("every-minute-quiet-6-min", *(360 + 60 * i for i in range(20))),   # gap 60 s, 360 s > 300 s
        camera("every-minute-quiet-4-min", *(240 + 60 * i for i in range(20))),   # 240 s < 300 s floor
        camera("every-10-min-quiet-40-min", *(2400 + 600 * i for i in range(5))),  # 2400 s < 5 x 600 s
        camera("every-10-min-quiet-60-min", *(3600 + 600 * i for i in range(5))),  # 3600 s > 3000 s
        camera("one-capture-6-min-ago", 360),                                      # gap unknown: floor alone
        camera("one-capture-just-now", 5),
        camera("never-captured"),
    ], [], [], [], RULE)
    cameras = layer(collection, "camera")
    assert {c: p["silent"] for c, p in cameras.items()} == {
        "every-minute-quiet-6-min": True, "every-minute-quiet-4-min": False,
        "every-10-min-quiet-40-min": False, "every-10-min-quiet-60-min": True,
        "one-capture-6-min-ago": True, "one-capture-just-now": False, "never-captured": True}
    assert cameras["every-minute-quiet-6-min"]["age_seconds"] == 360
    assert cameras["every-minute-quiet-6-min"]["usual_gap_seconds"] == 60
    assert cameras["never-captured"]["age_seconds"] is None and cameras["never-captured"]["last_capture_at"] is None
    assert cameras["never-captured"]["href"] == "/console/cases?camera=never-captured"
    assert collection["summary"]["silent_cameras"] == 4


def test_a_capture_stamped_after_postgresql_now_counts_as_just_now():
    collection = feature_collection(NOW, [camera("clock-ahead", -30, 30)], [], [], [], RULE)
    assert layer(collection, "camera")["clock-ahead"]["age_seconds"] == 0


@pytest.mark.parametrize(("free", "fill", "colour"), [
    (50, "free", COLOURS["free"]), (21, "free", COLOURS["free"]), (20, "filling", COLOURS["filling"]),
    (6, "filling", COLOURS["filling"]), (5, "full", COLOURS["full"]), (0, "full", COLOURS["full"]),
    (None, "unknown", COLOURS["unknown"])])
def test_a_car_park_is_coloured_by_the_share_of_its_capacity_taken(free, fill, colour):
    parks = layer(feature_collection(NOW, [], [], [car_park("p", free)], [], RULE), "car_park")
    assert (parks["p"]["fill"], parks["p"]["colour"]) == (fill, colour)
    assert parks["p"]["free"] == free and parks["p"]["capacity"] == 100


def test_a_car_park_reporting_more_free_spaces_than_it_has_is_free_not_negative():
    parks = layer(feature_collection(NOW, [], [], [car_park("p", 120)], [], RULE), "car_park")
    assert parks["p"]["fill"] == "free" and parks["p"]["occupancy"] == 0


def test_open_cases_carry_their_time_left_from_postgresql_now():
    warned, overdue, rechecking, detected = (case("warned", deadline_in=125.4), case("warned", deadline_in=-3),
                                             case("rechecking", wake_in=40), case("detected"))
    cases = layer(feature_collection(NOW, [], [], [], [warned, overdue, rechecking, detected], RULE), "case")
    assert cases[str(warned["id"])].items() >= {"left": "deadline", "seconds_left": 125,
                                                "deadline_at": warned["deadline_at"].isoformat()}.items()
    assert cases[str(overdue["id"])]["seconds_left"] == 0
    assert cases[str(rechecking["id"])]["left"] == "recheck"
    assert cases[str(rechecking["id"])]["recheck_at"] == rechecking["wake_at"].isoformat()
    assert cases[str(detected["id"])]["left"] == "awaiting_sms"
    assert cases[str(warned["id"])]["href"] == f"/console/cases/{warned['id']}"
    assert cases[str(warned["id"])]["plate"] == "浙A12345"


def test_zones_keep_their_geometry_and_say_whether_they_are_an_area_or_a_road_segment():
    area = {"type": "Polygon", "coordinates": [[[120.0, 30.2], [120.1, 30.2], [120.1, 30.3], [120.0, 30.2]]]}
    road = {"type": "LineString", "coordinates": [[120.0046, 30.2801], [120.0058, 30.2801]]}
    collection = feature_collection(NOW, [], [
        {"id": "yuhang", "name": "余杭区", "geometry": area, "width_m": None, "exempt_reason": None},
        {"id": "hospital", "name": "医院急救通道", "geometry": road, "width_m": 12.0, "exempt_reason": "emergency"},
    ], [], [], RULE)
    zones = {f["properties"]["id"]: f for f in collection["features"]}
    assert zones["yuhang"]["geometry"] == area and zones["yuhang"]["properties"]["kind"] == "area"
    assert zones["hospital"]["properties"].items() >= {"kind": "road", "width_m": 12.0, "exempt": True}.items()
    assert collection["type"] == "FeatureCollection" and collection["now"] == NOW.isoformat()


def test_nothing_personal_beyond_the_plate_is_in_the_map():
    collection = feature_collection(NOW, [camera("c", 10, 20)], [], [car_park("p", 3)], [case("warned", 60)], RULE)
    keys = {k for f in collection["features"] for k in f["properties"]}
    assert not keys & {"phone", "owner", "owner_id", "driver_code"}


def test_the_tile_setting_is_a_template_and_gives_the_page_its_origin():
    assert Settings(map_tiles=None).map_tiles_origin is None
    assert Settings(map_tiles="https://{s}.tiles.hz.gov.cn/base/{z}/{x}/{y}.png").map_tiles_origin == \
        "https://*.tiles.hz.gov.cn"
    with pytest.raises(ValueError, match="PW_MAP_TILES"):
        Settings(map_tiles="https://tiles.hz.gov.cn/base.png")
    with pytest.raises(ValueError, match="PW_MAP_TILES"):
        Settings(map_tiles="javascript:alert(1)//{z}/{x}/{y}")


def test_leaflet_is_vendored_with_its_licence_and_shipped_in_the_package():
    static = ROOT / "pipeline" / "console" / "static"
    leaflet = static / "leaflet"
    version = (leaflet / "VERSION").read_text().strip()
    assert f"Leaflet {version}" in (leaflet / "leaflet.js").read_text()[:200]
    assert f'VERSION={version}' in (ROOT / "scripts" / "vendor-leaflet.sh").read_text()
    assert "BSD 2-Clause" in (leaflet / "LICENSE").read_text()
    assert (leaflet / "leaflet.css").exists() and (leaflet / "images" / "layers.png").exists()
    shipped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["pipeline"]
    for path in static.rglob("*"):
        if path.is_file():
            name = str(path.relative_to(ROOT / "pipeline"))
            assert any(fnmatch.fnmatch(name, p) and name.count("/") == p.count("/") for p in shipped), \
                f"{name} is not in pyproject's package-data: an installed console would miss it"

