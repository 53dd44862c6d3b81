"""The demo eats its own cooking (issue 11, must 7): `parkwarden load-demo` imports the files in
pipeline/demo/data/ through `parkwarden data import`'s code, and the city they make works; cameras
and zones as import kinds, with refusals by row and field, dry runs, snapshots and round trips."""

import asyncio
import csv
import json
import math
import sys

from pipeline.data.all_kinds import export_kind, import_kind
from pipeline.demo import city

from .conftest import ROOT, Stack

HEADER = "id,integrator,lat,lon,place,zone,direction,commissioned_on\n"


async def run_cli(stack: Stack, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", *args, cwd=ROOT, env={**stack.env, "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode, out.decode()


def lines(name: str) -> int:
    with (city.DATA / name).open(encoding="utf-8") as f:
        return sum(1 for _ in csv.reader(f)) - 1


async def test_load_demo_imports_the_demo_files_and_a_violation_at_a_demo_camera_warns_naming_the_nearest_car_park(stack):
    code, out = await run_cli(stack, "load-demo")
    assert code == 0, out
    with (city.DATA / "contacts.csv").open(encoding="utf-8") as f:
        phones = [r["phone"] for r in csv.DictReader(f)]
    assert not any(phone in out for phone in phones)
    imports = await stack.pool.fetch("""SELECT DISTINCT ON (action) action, detail FROM audit_log
                                        WHERE actor = 'demo:load' AND action LIKE 'data_import:%' ORDER BY action, id DESC""")
    assert {r["action"]: (r["detail"]["file"], r["detail"]["rows"]) for r in imports} == {
        "data_import:zones": ("zones.geojson", 3), "data_import:car-parks": ("car-parks.geojson", 20),
        "data_import:cameras": ("cameras.csv", 8), "data_import:plates": ("plates.csv", lines("plates.csv")),
        "data_import:contacts": ("contacts.csv", lines("contacts.csv"))}
    assert await stack.count("SELECT count(*) FROM plate_registry") == lines("plates.csv")
    registered = await stack.pool.fetch("SELECT id, place, lat, lon, zone, integrator FROM cameras ORDER BY id")
    assert [tuple(r) for r in registered] == sorted((c.id, c.place, c.lat, c.lon, c.zone, city.INTEGRATOR)
                                                   for c in city.CAMERAS)
    assert await stack.count("SELECT count(*) FROM zones WHERE geometry IS NOT NULL") == len(city.ZONE_SHAPES)

    worker = stack.worker()
    await worker.ready()
    await stack.all_car_parks_free(free=25)
    plate = (await stack.plates_with_phone(1))[0]
    camera = city.CAMERAS[0]
    await stack.publish(stack.violation(plate, camera))
    await stack.wait_state(plate, "warned", timeout=15)
    nearest = min(city.CAR_PARKS, key=lambda p: math.dist((p[3], p[4] * math.cos(math.radians(p[3]))),
                                                          (camera.lat, camera.lon * math.cos(math.radians(camera.lat)))))
    texts = [line["text"] for line in stack.handset_lines()]
    assert len(texts) == 1 and plate in texts[0] and nearest[2] in texts[0], (nearest[2], texts)


async def test_a_cameras_file_names_every_refused_row_and_field_and_applies_nothing_until_it_is_right(stack, tmp_path):
    bad = tmp_path / "cameras.csv"
    bad.write_text(HEADER + "cam-new-01,demo,30.28000,120.01000,文一西路新口,,,2026-01-05\n"
                            "cam-new-02,demo,95,120.0,错位,,,2026-01-05\n"
                            "cam-new-03,nobody,30.28000,120.01100,无主,,,2026-01-05\n", encoding="utf-8")
    code, out = await run_cli(stack, "data", "import", "cameras", str(bad))
    assert code == 1, out
    assert "row 3: lat, lon: out of range" in out and "row 4: integrator: no integrator named 'nobody'" in out
    assert "nothing was applied" in out
    assert await stack.count("SELECT count(*) FROM cameras WHERE id LIKE 'cam-new-%'") == 0
    assert await stack.count("SELECT count(*) FROM audit_log WHERE action = 'data_import:cameras' AND actor <> 'demo:load'") == 0

    good = tmp_path / "fixed.csv"
    good.write_text(HEADER + "cam-new-01,demo,30.28000,120.01000,文一西路新口,,,2026-01-05\n", encoding="utf-8")
    code, out = await run_cli(stack, "data", "import", "cameras", str(good), "--dry-run")
    assert code == 0 and "dry run" in out and "1 added" in out, out
    assert await stack.count("SELECT count(*) FROM cameras WHERE id = 'cam-new-01'") == 0
    code, out = await run_cli(stack, "data", "import", "cameras", str(good))
    assert code == 0 and "1 added" in out, out
    placed = await stack.pool.fetchrow("SELECT zone, zone_by_position FROM cameras WHERE id = 'cam-new-01'")
    assert tuple(placed) == ("yuhang", True), "placed by its position, as `parkwarden cameras import` places it"
    assert await stack.count("SELECT count(*) FROM audit_log WHERE action = 'camera_added' AND detail->'camera'->>'id' = 'cam-new-01'") == 1


async def test_cameras_and_zones_exported_in_every_format_import_back_unchanged(stack, tmp_path):
    async with stack.pool.acquire() as conn:
        for kind, fmt, total in (("cameras", "csv", 8), ("cameras", "jsonl", 8), ("cameras", "geojson", 8),
                                 ("zones", "geojson", 3), ("zones", "csv", 3)):
            path = tmp_path / f"{kind}.{fmt}"
            assert await export_kind(conn, kind, path, fmt) == total
            report = await import_kind(conn, kind, path, fmt, snapshot=True, integrator=city.INTEGRATOR)
            assert report.applied, (kind, fmt, report.refused[:3])
            assert {k: v for k, v in report.counts.items() if v} == {"unchanged": total}, (kind, fmt, report.counts)
        exported = json.loads((tmp_path / "zones.geojson").read_text(encoding="utf-8"))
        assert [f["properties"]["id"] for f in exported["features"]] == sorted(z[0] for z in city.ZONE_SHAPES)


async def test_zones_without_a_shape_place_the_cameras_again_and_a_bad_feature_is_named(stack, tmp_path):
    rules = tmp_path / "zones.csv"
    rules.write_text("id,name\nyuhang,余杭区\nhospital,医院急救通道\n", encoding="utf-8")  # no more 良渚文化村
    async with stack.pool.acquire() as conn:
        dry = await import_kind(conn, "zones", rules, snapshot=True, dry_run=True, force=True)
        assert not dry.applied and dry.counts["deleted"] == 1 and dry.counts["cameras_moved"] == 1
        assert await conn.fetchval("SELECT zone FROM cameras WHERE id = $1", city.CAMERAS[4].id) == "liangzhu"
        report = await import_kind(conn, "zones", rules, snapshot=True, actor="test", force=True)
        assert report.applied and report.counts["cameras_moved"] == 1
        assert await conn.fetchval("SELECT zone FROM cameras WHERE id = $1", city.CAMERAS[4].id) == "yuhang"
        moved = await conn.fetchrow("SELECT actor, detail FROM audit_log WHERE action = 'camera_zone_placed'")
        assert moved["actor"] == "test" and moved["detail"]["before"] == "liangzhu"

        shapes = tmp_path / "lanes.geojson"
        shapes.write_text(json.dumps({"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {"id": "lane-a", "name": "公交专用道", "width_m": 6},
             "geometry": {"type": "LineString", "coordinates": [[120.01, 30.29], [120.02, 30.29]]}},
            {"type": "Feature", "properties": {"id": "lane-b", "name": "消防通道"},
             "geometry": {"type": "LineString", "coordinates": [[120.01, 30.30], [120.02, 30.30]]}}]}), encoding="utf-8")
        report = await import_kind(conn, "zones", shapes)
        assert not report.applied and [(r.row, r.field) for r in report.refused] == [(2, "properties.width_m")]
        assert await conn.fetchval("SELECT count(*) FROM zones WHERE id LIKE 'lane-%'") == 0
