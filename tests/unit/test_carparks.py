"""The nearest car park with free spaces (pipeline/lookups/carparks.py), checked against brute force."""

import math
from datetime import UTC, datetime, timedelta

import pytest
from geopy.distance import geodesic
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.demo import city
from pipeline.lookups.carparks import CELL_DEG, CarPark, CarParkIndex

pytestmark = pytest.mark.unit

COUNTED = datetime(2026, 11, 26, 2, 42, tzinfo=UTC)
HAICHUANG = (30.27930, 120.00395)  # cam-wenyi-01
DEMO = [CarPark(*row) for row in city.CAR_PARKS]


def park(pid: str, lat: float, lon: float) -> CarPark:
    return CarPark(pid, f"car park {pid}", pid, lat, lon, 100)


def index_with(parks: list[CarPark], free: dict[str, int]) -> CarParkIndex:
    index = CarParkIndex(parks)
    for pid, count in free.items():
        assert index.update_count(pid, count, COUNTED)
    return index


def brute_force_nearest(lat: float, lon: float, parks: list[CarPark], free: dict[str, int]) -> float | None:
    distances = [geodesic((lat, lon), (p.lat, p.lon)).meters for p in parks if free.get(p.id, 0) > 0]
    return min(distances, default=None)


def guaranteed_range_m(lat: float, max_rings: int = 5) -> float:
    """Every car park this close lies within ``max_rings`` grid cells, whatever the grid does."""
    return max_rings * CELL_DEG * 110_000 * math.cos(math.radians(abs(lat) + CELL_DEG * max_rings)) * 0.99


def test_given_the_demo_city_when_looking_near_haichuang_then_the_nearest_free_car_park_is_haichuang_b1():
    index = index_with(DEMO, {p.id: 10 for p in DEMO})

    nearest = index.nearest(*HAICHUANG)

    assert nearest.car_park.id == "cp-hcy-b1"
    assert nearest.free_spaces == 10
    assert nearest.counted_at == COUNTED
    assert nearest.distance_m == pytest.approx(geodesic(HAICHUANG, (30.27875, 120.00520)).meters)


def test_given_the_nearest_car_park_is_full_when_looking_then_the_next_nearest_with_space_is_returned():
    free = {p.id: 10 for p in DEMO} | {"cp-hcy-b1": 0}
    index = index_with(DEMO, free)

    nearest = index.nearest(*HAICHUANG)

    assert nearest.car_park.id != "cp-hcy-b1"
    assert nearest.distance_m == pytest.approx(brute_force_nearest(*HAICHUANG, DEMO, free))


def test_given_a_car_park_without_any_count_yet_when_looking_then_it_is_not_offered():
    index = index_with(DEMO, {"cp-efc": 3})

    assert index.nearest(*HAICHUANG).car_park.id == "cp-efc"


def test_given_a_late_older_count_when_it_arrives_then_the_newer_count_is_kept():
    index = index_with(DEMO, {})
    index.update_count("cp-hcy-b1", 0, COUNTED)

    assert index.update_count("cp-hcy-b1", 50, COUNTED - timedelta(minutes=1))

    nearest = index.nearest(*HAICHUANG)
    assert nearest is None or nearest.car_park.id != "cp-hcy-b1"


def test_given_a_newer_count_when_it_arrives_then_it_replaces_the_held_one():
    index = index_with(DEMO, {"cp-hcy-b1": 0})

    index.update_count("cp-hcy-b1", 7, COUNTED + timedelta(seconds=30))

    nearest = index.nearest(*HAICHUANG)
    assert (nearest.car_park.id, nearest.free_spaces) == ("cp-hcy-b1", 7)
    assert nearest.counted_at == COUNTED + timedelta(seconds=30)


def test_given_an_unknown_car_park_when_a_count_arrives_then_it_is_refused():
    assert not CarParkIndex(DEMO).update_count("cp-nowhere", 5, COUNTED)


def test_given_every_car_park_full_when_looking_then_there_is_none():
    index = index_with(DEMO, {p.id: 0 for p in DEMO})

    assert index.nearest(*HAICHUANG) is None


def test_given_free_spaces_only_far_away_when_looking_then_there_is_none_within_range():
    far = park("far", HAICHUANG[0] + 0.5, HAICHUANG[1])  # about 55 km north
    index = index_with([far], {"far": 100})

    assert index.nearest(*HAICHUANG) is None


def test_given_an_empty_index_when_looking_then_there_is_none():
    assert CarParkIndex().nearest(*HAICHUANG) is None


def _parks_around(lat: float, lon: float, spread: float):
    offsets = st.floats(min_value=-spread, max_value=spread, allow_nan=False)
    one = st.tuples(offsets, offsets, st.integers(min_value=0, max_value=3))
    return st.lists(one, min_size=1, max_size=40).map(
        lambda rows: ([park(f"p{i}", lat + dlat, lon + dlon) for i, (dlat, dlon, _) in enumerate(rows)],
                      {f"p{i}": count for i, (_, _, count) in enumerate(rows)}))


@settings(max_examples=150, deadline=None)
@given(
    here=st.tuples(st.floats(min_value=18.0, max_value=53.0), st.floats(min_value=73.0, max_value=135.0)),
    data=st.data(),
)
def test_for_random_points_and_car_parks_the_answer_is_the_brute_force_nearest_with_free_spaces(here, data):
    lat, lon = here
    parks, free = data.draw(_parks_around(lat, lon, spread=0.08))
    index = index_with(parks, free)

    nearest = index.nearest(lat, lon)

    expected = brute_force_nearest(lat, lon, parks, free)
    if nearest is None:
        assert expected is None or expected > guaranteed_range_m(lat)
    else:
        assert free[nearest.car_park.id] > 0
        assert nearest.free_spaces == free[nearest.car_park.id]
        found = nearest.car_park
        assert nearest.distance_m == pytest.approx(geodesic((lat, lon), (found.lat, found.lon)).meters)
        if expected <= guaranteed_range_m(lat):
            assert nearest.distance_m == pytest.approx(expected, abs=1e-6)


def test_given_car_parks_near_the_equator_when_looking_then_the_geodesically_nearest_is_returned():
    """Near the equator a degree of latitude is ~110.6 km, shorter than the 111 km the ring search assumes."""
    here = (0.0099999, 0.005)  # just below the top edge of its grid cell
    south = park("south", here[0] - 0.01003, 0.005)  # one ring away, 1109 m
    north = park("north", 0.0200001, 0.005)  # two rings away, 1106 m: nearer
    index = index_with([south, north], {"south": 5, "north": 5})

    nearest = index.nearest(*here)

    assert nearest.car_park.id == "north"


def test_the_distance_from_a_camera_to_a_car_park_is_measured_once_not_for_every_violation(monkeypatch):
    """The exact (geodesic) distance is pure Python and was a quarter of deciding a batch of violations;
    violations are placed at their camera's position, so a camera's car parks are measured once, and a
    later lookup gives the same answer (free spaces as they are then)."""
    from pipeline.lookups import carparks
    measured = []
    real = carparks.geodesic

    def counting(a, b):
        measured.append((a, b))
        return real(a, b)
    monkeypatch.setattr(carparks, "geodesic", counting)
    carparks.geodesic_m.cache_clear()
    index = index_with(DEMO, {p.id: 10 for p in DEMO})
    first = index.nearest(*HAICHUANG)
    once = len(measured)
    assert once >= 1
    index.update_count(first.car_park.id, 3, COUNTED + timedelta(minutes=1))
    for _ in range(100):
        again = index.nearest(*HAICHUANG)
    assert len(measured) == once, "no car park measured again"
    assert (again.car_park, again.distance_m, again.free_spaces) == (first.car_park, first.distance_m, 3)


def test_the_distance_between_two_cameras_is_measured_once_by_the_case_machine(monkeypatch):
    """``machine.distance_m`` (is a capture at the violation's place?) is pure Python too: the same two
    camera positions are measured once, and the answer stays the same."""
    from pipeline.cases import machine
    measured = []
    real = machine.Geodesic.WGS84

    class Counting:
        def Inverse(self, *args):
            measured.append(args)
            return real.Inverse(*args)
    monkeypatch.setattr(machine.Geodesic, "WGS84", Counting())
    machine._metres.cache_clear()
    a, b = city.CAMERAS[0], city.CAMERAS[1]
    at = datetime(2026, 12, 7, tzinfo=UTC)
    one = machine.Sighting("e1", a.id, at, a.lat, a.lon, a.place, None, city.INTEGRATOR)
    two = machine.Sighting("e2", b.id, at, b.lat, b.lon, b.place, None, city.INTEGRATOR)
    first = machine.distance_m(one, two)
    assert all(machine.distance_m(one, two) == first for _ in range(100))
    assert len(measured) == 1
    assert abs(first - geodesic((a.lat, a.lon), (b.lat, b.lon)).meters) < 0.01
