"""Zones as geometry: reading GeoJSON (each bad feature named by row, field and reason), whether a
position is in an area or near a road segment in metres, and which zone a camera is placed in."""

import io
import json

import pytest
from geopy.distance import geodesic

from pipeline.cameras import registry
from pipeline.demo import city
from pipeline.lookups.zone_shapes import Refusal, ZoneProblem, ZoneShape, distance_m, place, read_geojson

DISTRICT = {"type": "Polygon", "coordinates": [[[119.9, 30.2], [120.1, 30.2], [120.1, 30.4], [119.9, 30.4], [119.9, 30.2]]]}
PARK = {"type": "Polygon", "coordinates": [[[120.0, 30.27], [120.01, 30.27], [120.01, 30.28], [120.0, 30.28], [120.0, 30.27]]]}
ROAD = {"type": "LineString", "coordinates": [[120.000, 30.30], [120.010, 30.30]]}  # east-west, about 960 m


def feature(geometry, **properties):
    return {"type": "Feature", "geometry": geometry, "properties": {"id": "z1", "name": "甲区", **properties}}


def read(*features, **document) -> list:
    body = {"type": "FeatureCollection", "features": list(features), **document}
    return list(read_geojson(io.BytesIO(json.dumps(body).encode())))


def test_a_feature_collection_gives_areas_and_road_segments_with_their_rules():
    area, road, many = read(
        feature(DISTRICT, window_seconds=300, exempt_reason="night parking", exempt_from_hour=22, exempt_until_hour=7,
                fid=17),
        {"type": "Feature", "id": "school-lane", "geometry": ROAD, "properties": {"name": "学校路", "width_m": 12,
                                                                               "confirm_tickets": True}},
        feature({"type": "MultiPolygon", "coordinates": [PARK["coordinates"]]}, id="parks"))
    assert (area.id, area.width_m, area.is_road, area.ignored) == ("z1", None, False, ("fid",))
    assert area.rules == {"window_seconds": 300.0, "exempt_reason": "night parking", "exempt_from_hour": 22,
                          "exempt_until_hour": 7}
    assert (road.id, road.width_m, road.is_road, road.rules) == ("school-lane", 12.0, True, {"confirm_tickets": True})
    assert many.id == "parks" and many.geometry["type"] == "MultiPolygon"
    assert area.row()["first_offence_months"] is None, "a rule left out is the city's default"


BOWTIE = {"type": "Polygon", "coordinates": [[[120.0, 30.0], [120.1, 30.1], [120.1, 30.0], [120.0, 30.1], [120.0, 30.0]]]}


@pytest.mark.parametrize("bad, field, reason", [
    (feature(DISTRICT, id="Zone 1"), "properties.id", "a-z 0-9"),
    (feature(DISTRICT, name=""), "properties.name", "name"),
    (feature({"type": "Point", "coordinates": [120.0, 30.3]}), "geometry.type", "Polygon"),
    (feature(None), "geometry.type", "Polygon"),
    (feature({"type": "Polygon", "coordinates": [[[30.2, 119.9], [30.2, 120.1], [30.4, 120.1], [30.2, 119.9]]]}),
     "geometry.coordinates", "[longitude, latitude]"),
    (feature({"type": "Polygon", "coordinates": [[[119.9, 30.2], [120.1, 30.2], [120.1, 30.4], [119.9, 30.4]]]}),
     "geometry.coordinates", "last the same as its first"),
    (feature({"type": "Polygon", "coordinates": [[119.9, 30.2]]}), "geometry.coordinates", "a position is"),
    (feature(BOWTIE), "geometry", "Self-intersection"),
    (feature(ROAD), "properties.width_m", "road segment's no-parking width"),
    (feature(ROAD, width_m=0), "properties.width_m", "0 < width_m"),
    (feature({"type": "LineString", "coordinates": [[120.0, 30.3], [120.0, 30.3]]}, width_m=10),
     "geometry.coordinates", "length 0"),
    (feature(DISTRICT, width_m=10), "properties.width_m", "only for road segments"),
    (feature(DISTRICT, window_seconds=-5), "properties.window_seconds", "> 0"),
    (feature(DISTRICT, exempt_reason="x", exempt_from_hour=22), "properties.exempt_until_hour", "pairs"),
    (feature(DISTRICT, exempt_from_hour=22, exempt_until_hour=7), "properties.exempt_reason", "reason"),
    (feature(DISTRICT, confirm_tickets="yes"), "properties.confirm_tickets", "true or false"),
    ({"type": "Feature", "geometry": DISTRICT}, "properties", "id and name"),
])
def test_a_bad_feature_is_refused_by_row_and_field_and_the_others_are_read(bad, field, reason):
    first, refused, last = read(feature(DISTRICT, id="before"), bad, feature(PARK, id="after"))
    assert isinstance(refused, Refusal), refused
    assert (refused.row, refused.field) == (2, field) and reason in refused.reason, refused
    assert (first.id, last.id) == ("before", "after")


def test_a_bad_file_is_refused_as_a_whole_and_a_zone_twice_is_named():
    assert list(read_geojson(io.BytesIO(b"{not json"))) [0][:2] == (0, "file")
    assert list(read_geojson(io.BytesIO(b'{"type": "Feature"}')))[0][:2] == (0, "type")
    assert read(crs={"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3857"}})[0][:2] == (0, "crs")
    _, twice = read(feature(DISTRICT), feature(PARK))
    assert twice == Refusal(2, "properties.id", "zone 'z1' is in the file twice (features 1 and 2)")


def zone(zone_id, geometry, width_m=None) -> ZoneShape:
    return ZoneShape(zone_id, zone_id, geometry, width_m)


def test_an_area_holds_the_points_inside_it_and_on_its_boundary():
    park = zone("park", PARK)
    assert park.holds(30.275, 120.005)
    assert park.holds(30.27, 120.005), "the boundary belongs to the zone"
    assert not park.holds(30.2699, 120.005)
    assert not park.holds(30.275, 119.9999)


@pytest.mark.parametrize("bearing", [0, 180])
def test_a_road_segment_holds_what_is_within_half_its_width_in_metres(bearing):
    road = zone("road", ROAD, width_m=12)
    on_road = (30.30, 120.005)
    inside = geodesic(meters=5.9).destination(on_road, bearing)
    outside = geodesic(meters=6.1).destination(on_road, bearing)
    assert road.holds(inside.latitude, inside.longitude)
    assert not road.holds(outside.latitude, outside.longitude)


def test_east_of_a_north_south_road_metres_are_metres_not_degrees():
    """At 30°N a degree of longitude is about 96 km, of latitude about 111 km: degrees would be wrong by 13%."""
    road = zone("road", {"type": "LineString", "coordinates": [[120.0, 30.29], [120.0, 30.31]]}, width_m=20)
    for metres, held in ((9.9, True), (10.1, False)):
        p = geodesic(meters=metres).destination((30.30, 120.0), 90)
        assert road.holds(p.latitude, p.longitude) is held
    beyond_the_end = geodesic(meters=9.9).destination((30.31, 120.0), 0)
    assert road.holds(beyond_the_end.latitude, beyond_the_end.longitude), "the strip rounds the segment's ends"


@pytest.mark.parametrize("metres, bearing", [(150, 0), (800, 45), (2500, 200)])
def test_distance_to_a_road_agrees_with_the_geodesic(metres, bearing):
    corner = (30.30, 120.0)
    p = geodesic(meters=metres).destination(corner, bearing)
    point = zone("p", {"type": "LineString", "coordinates": [[120.0, 30.30], [120.0, 30.30]]}).shape
    assert distance_m(point, p.latitude, p.longitude) == pytest.approx(metres, rel=2e-4)


def test_a_camera_is_placed_in_the_innermost_zone_that_holds_it():
    district, park, road = zone("district", DISTRICT), zone("park", PARK), zone("road", ROAD, width_m=12)
    zones = [district, park, road]
    assert place(30.275, 120.005, None, zones) == ("park", True)
    assert place(30.30, 120.005, None, zones) == ("road", True)
    assert place(30.35, 120.05, None, zones) == ("district", True)
    assert place(30.275, 120.005, "park", zones) == ("park", True)
    with pytest.raises(ZoneProblem, match="stands in zone 'park' .*not 'district'") as refused:
        place(30.275, 120.005, "district", zones)
    assert refused.value.field == "zone"
    assert place(30.275, 120.005, "district", zones, strict=False) == ("park", True), \
        "when zones change, the position wins over an old zone"


def test_outside_every_shape_the_operators_zone_serves_and_without_one_the_camera_is_refused():
    zones = [zone("park", PARK)]
    assert place(31.0, 121.0, "old-town", zones) == ("old-town", False)
    assert place(31.0, 121.0, "old-town", []) == ("old-town", False), "no zone has a shape: as before"
    with pytest.raises(ZoneProblem, match="stands in no zone's shape: give its zone"):
        place(31.0, 121.0, None, zones)


def test_overlapping_zones_without_an_innermost_need_the_operator_to_choose():
    west = zone("west", {"type": "Polygon", "coordinates": [[[120.0, 30.0], [120.02, 30.0], [120.02, 30.1], [120.0, 30.1], [120.0, 30.0]]]})
    east = zone("east", {"type": "Polygon", "coordinates": [[[120.01, 30.0], [120.03, 30.0], [120.03, 30.1], [120.01, 30.1], [120.01, 30.0]]]})
    with pytest.raises(ZoneProblem, match="stands in zones east, west, whose shapes overlap"):
        place(30.05, 120.015, None, [west, east])
    assert place(30.05, 120.015, "east", [west, east]) == ("east", True)
    with pytest.raises(ZoneProblem, match="overlap"):
        place(30.05, 120.015, "north", [west, east], strict=False)


def test_every_demo_camera_stands_in_the_zone_the_demo_gives_it():
    zones = [ZoneShape(z, z, geometry, width) for z, geometry, width in city.ZONE_SHAPES]
    for camera in city.CAMERAS:
        assert place(camera.lat, camera.lon, None, zones) == (camera.zone, True), camera.id
    assert place(30.2801, 120.0052, "hospital", zones) == ("hospital", True), "the emergency lane, inside the district"


def test_a_camera_may_be_registered_without_a_zone():
    row = {"id": "cam-1", "integrator": "acme", "lat": "30.3", "lon": "120.0", "place": "甲路", "zone": "",
           "commissioned_on": "2026-01-01"}
    assert registry.camera(row).zone == ""
