"""The demo city's files (pipeline/demo/data/) are valid import files, and the constants the code and
tests use are what the files say."""

import csv
import re

from pydantic import TypeAdapter

from pipeline.cameras import registry
from pipeline.data.formats import Problem, read_rows
from pipeline.data.kinds import KINDS
from pipeline.data.models import CarParkRow, ContactRow, PlateRow
from pipeline.demo import city, registries
from pipeline.lookups import zone_shapes

MOBILE = re.compile(r"1[3-9][0-9]{9}")


def rows(kind: str, name: str, fmt: str, model) -> list:
    read = list(read_rows(city.DATA / name, fmt, KINDS[kind].fields))
    assert [(n, r) for n, r in read if isinstance(r, Problem)] == []
    return TypeAdapter(list[model]).validate_python([r for _, r in read])


def test_every_demo_file_validates_as_its_import_reads_it():
    plates = rows("plates", "plates.csv", "csv", PlateRow)
    contacts = rows("contacts", "contacts.csv", "csv", ContactRow)
    car_parks = rows("car-parks", "car-parks.geojson", "geojson", CarParkRow)
    assert len(plates) == registries.SIZE and len({(p.plate, p.plate_type) for p in plates}) == len(plates)
    assert {c.owner_id for c in contacts} <= {p.owner_id for p in plates}
    assert len(car_parks) == len(city.CAR_PARKS) == 20
    with (city.DATA / "zones.geojson").open("rb") as stream:
        zones = list(zone_shapes.read_geojson(stream))
    assert all(isinstance(z, zone_shapes.ZoneShape) and not z.ignored for z in zones), zones
    cameras = registry.read_file((city.DATA / "cameras.csv").read_bytes())
    assert all(isinstance(c, registry.Camera) for _, c in cameras), cameras
    for _, cam in cameras:  # each camera stands in the zone the file gives it (registration is strict)
        assert zone_shapes.place(cam.lat, cam.lon, cam.zone, zones, strict=True) == (cam.zone, True)


def test_the_constants_are_the_files():
    cameras = [c for _, c in registry.read_file((city.DATA / "cameras.csv").read_bytes())]
    assert [(c.id, c.place, c.lat, c.lon, c.zone) for c in cameras] == \
           [(c.id, c.place, c.lat, c.lon, c.zone) for c in city.CAMERAS]
    assert {c.integrator for c in cameras} == {city.INTEGRATOR}
    assert [z[0] for z in city.ZONES] == [z[0] for z in city.ZONE_SHAPES] == ["yuhang", "liangzhu", "hospital"]
    assert dict((z[0], z[4]) for z in city.ZONES)["liangzhu"] == 12, "the demo's first-offence zone"
    assert city.CAR_PARKS[0] == ("cp-hcy-b1", "海创园地下停车场B1", "海创园B1", 30.27875, 120.0052, 420)


def test_the_registries_are_the_seeded_generator_s_and_phones_look_like_mainland_mobiles(tmp_path):
    plates, contacts = registries.write(registries.generate(registries.SIZE), tmp_path)
    assert plates.read_bytes() == (city.DATA / "plates.csv").read_bytes()
    assert contacts.read_bytes() == (city.DATA / "contacts.csv").read_bytes()
    with (city.DATA / "contacts.csv").open(encoding="utf-8") as f:
        phones = [r["phone"] for r in csv.DictReader(f)]
    assert phones and all(MOBILE.fullmatch(p) for p in phones)
    demo = city.plates()
    assert len(demo) == registries.SIZE and sum(1 for _, _, phone in demo if phone) == len(phones)
    assert city.plates(300) == demo[:300]
    more = registries.generate(registries.SIZE + 50)
    assert [(p, o, ph) for p, _, o, ph in more[:registries.SIZE]] == demo, "more plates only add to the end"
