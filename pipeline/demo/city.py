"""A demo city: car parks, cameras and registries in Yuhang district, Hangzhou (WGS-84).

The city is a set of files in ``pipeline/demo/data/``, in the formats a city brings its own data in,
and ``load`` imports them with the same code as `parkwarden data import` (``pipeline.data.all_kinds``):
zones.geojson (areas and a road segment, with their rules), car-parks.geojson, cameras.csv,
plates.csv and contacts.csv (generated once from a seed by ``pipeline/demo/registries.py``).
Places and car parks are real-looking, not surveyed. The constants below are read from those files.
"""

import csv
import json
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import asyncpg

from pipeline.cameras import registry
from pipeline.data.all_kinds import import_kind
from pipeline.demo import registries
from pipeline.lookups import zone_shapes

DATA = Path(__file__).parent / "data"
FILES = (("zones", "zones.geojson"), ("car-parks", "car-parks.geojson"), ("cameras", "cameras.csv"),
         ("plates", "plates.csv"), ("contacts", "contacts.csv"))
"""What ``load`` imports, in order: zones before the cameras their shapes place."""

INTEGRATOR = "demo"
"""The integrator that owns the demo city's cameras (its key is never shown: the demo publishes on
Kafka, to camera-events.demo)."""
COMMISSIONED = date(2025, 6, 1)


@dataclass(frozen=True)
class Camera:
    id: str
    place: str
    lat: float
    lon: float
    zone: str = "yuhang"
    direction: str | None = None


def _cameras() -> list[Camera]:
    rows = registry.read_file((DATA / "cameras.csv").read_bytes())
    return [Camera(c.id, c.place, c.lat, c.lon, c.zone, c.direction) for _, c in rows]


def _car_parks() -> list[tuple[str, str, str, float, float, int]]:
    features = json.loads((DATA / "car-parks.geojson").read_text(encoding="utf-8"))["features"]
    return [(f["properties"]["id"], f["properties"]["name"], f["properties"]["short_name"],
             f["geometry"]["coordinates"][1], f["geometry"]["coordinates"][0], f["properties"]["capacity"])
            for f in features]


def _zones() -> list[zone_shapes.ZoneShape]:
    with (DATA / "zones.geojson").open("rb") as stream:
        return list(zone_shapes.read_geojson(stream))


CAMERAS = _cameras()
CAR_PARKS = _car_parks()
"""(id, name, short name, lat, lon, capacity)"""
ZONES = [(z.id, z.name, z.rules.get("window_seconds"), z.rules.get("exempt_reason"),
          z.rules.get("first_offence_months")) for z in _zones()]
"""(id, name, window, exempt reason, first-offence months): 良渚文化村 gives a first offence (no ticket
nor warning notice in 12 months) a warning notice instead of a ticket; the rest tickets automatically."""
ZONE_SHAPES = [(z.id, z.geometry, z.width_m) for z in _zones()]
"""(zone, GeoJSON geometry, road width in metres): a rough district, 良渚文化村 inside it, and an emergency
lane; each camera is placed in the innermost zone that holds it (pipeline/lookups/zone_shapes.py)."""

WHITELIST = [("浙A1201警", "police vehicle"), ("浙A0120F", "ambulance (new-energy)")]


def plates(count: int | None = None) -> list[tuple[str, str, str | None]]:
    """(plate, owner id, phone or None) of the demo files' registries (the first ``count``); about 5%
    have no phone on record (out-of-province cars)."""
    return [(plate, owner, phone) for plate, _, owner, phone in _registries(count)]


def _registries(count: int | None = None) -> list[tuple[str, str, str, str | None]]:
    """(plate, plate type, owner id, phone or None): the first ``count`` plates of the files, and beyond
    them more generated from the same seed."""
    with (DATA / "contacts.csv").open(encoding="utf-8", newline="") as f:
        phones = {r["owner_id"]: r["phone"] for r in csv.DictReader(f)}
    with (DATA / "plates.csv").open(encoding="utf-8", newline="") as f:
        rows = [(r["plate"], r["plate_type"], r["owner_id"], phones.get(r["owner_id"])) for r in csv.DictReader(f)]
    if count is not None and count > len(rows):
        return rows + registries.generate(count)[len(rows):]
    return rows[:count]


async def register(conn: asyncpg.Connection, camera: Camera, integrator: str = INTEGRATOR) -> None:
    """Register ``camera`` (a demo or test camera) to ``integrator``, unless it is registered as such already."""
    cam = registry.camera({"id": camera.id, "integrator": integrator, "lat": camera.lat, "lon": camera.lon,
                           "place": camera.place, "zone": camera.zone, "direction": camera.direction,
                           "commissioned_on": COMMISSIONED})
    if await registry.registered(conn, cam.id) != cam:
        await registry.add(conn, cam, "demo:load", replace=True)


async def load(conn: asyncpg.Connection, plate_count: int | None = None, actor: str = "demo:load") -> dict:
    """Load (or reload) the demo city from its files, all in one transaction; returns counts. Idempotent.
    Each file goes through ``import_kind``, as `parkwarden data import KIND FILE` would (audited as
    ``data_import:KIND``). Its cameras' integrators (``demo``) are made first if missing (a publisher
    whose key nobody knows: the demo publishes on Kafka); its car parks have no owner. ``plate_count``
    (default: the files' 2000) takes the first plates of the files (tests load fewer, to be quick) or,
    beyond them, more generated from the same seed (benchmarks load more); through the same import."""
    async with conn.transaction():
        for name in sorted({c.integrator for _, c in registry.read_file((DATA / "cameras.csv").read_bytes())}):
            await registry.ensure_integrator(conn, name)
        with tempfile.TemporaryDirectory(prefix="pw-demo-") as tmp:
            for kind, name in FILES:
                path = DATA / name
                if plate_count is not None and plate_count != registries.SIZE and kind in ("plates", "contacts"):
                    path = Path(tmp) / name
                    if not path.exists():
                        registries.write(_registries(plate_count), Path(tmp))
                await _import(conn, kind, path, actor)
        await conn.executemany(
            "INSERT INTO whitelisted_plates (plate, reason) VALUES ($1, $2) ON CONFLICT DO NOTHING", WHITELIST
        )
        counts = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM car_parks) AS car_parks,
                      (SELECT count(*) FROM cameras WHERE removed_at IS NULL) AS cameras,
                      (SELECT count(*) FROM plate_registry WHERE retired_at IS NULL) AS plates,
                      (SELECT count(DISTINCT p.plate) FROM plate_registry p JOIN contact_registry c USING (owner_id)
                        WHERE p.retired_at IS NULL) AS with_phone""")
    return dict(counts)


class DemoFilesRefused(RuntimeError):
    """A demo file that its own import refuses (a broken file in the repository)."""


async def _import(conn, kind: str, path: Path, actor: str) -> None:
    # The demo's plate registry is its file: a reload retires registrations the file no longer has
    # (say, a plate the demo now registers as new-energy, 52, instead of 02).
    report = await import_kind(conn, kind, path, actor=actor, snapshot=kind == "plates", force=True)
    if not report.applied:
        raise DemoFilesRefused(f"{path.name}: " + "; ".join(map(str, report.refused[:5])))
