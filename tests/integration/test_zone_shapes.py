"""Issue 11 (5), zones as geometry, on the real stack: zones imported from GeoJSON place the cameras
registered by position only, a violation takes its zone's window, changed zones move cameras (or are
refused whole when a camera would be left in no zone), and the console's Rules page shows which
cameras fall in each zone."""

import json
from datetime import datetime
from zoneinfo import ZoneInfo

from pipeline.config import Settings
from pipeline.console.i18n import TEXT
from pipeline.demo import city

from .conftest import Stack
from .console_helpers import ConsoleClient, add_operator, base_url
from .test_integrators import run_cli

MARKET_HOUR = (datetime.now(ZoneInfo(Settings().timezone)).hour + 12) % 24
"""The market's exempt hour: half a day away from now, so the test never runs inside it (it did, at 05:00)."""
MARKET = {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[120.0200, 30.2900], [120.0230, 30.2900]]},
          "properties": {"id": "market-street", "name": "文二西路早市段", "width_m": 16, "window_seconds": 7,
                         "exempt_reason": "market morning", "exempt_from_hour": MARKET_HOUR,
                         "exempt_until_hour": (MARKET_HOUR + 1) % 24}}
CAMPUS = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[120.0080, 30.2900], [120.0115, 30.2900],
                                                                               [120.0115, 30.2925], [120.0080, 30.2925],
                                                                               [120.0080, 30.2900]]]},
          "properties": {"id": "campus", "name": "杭师大仓前校区", "window_seconds": 9}}
FAR = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[121.0, 31.0], [121.1, 31.0], [121.1, 31.1],
                                                                            [121.0, 31.0]]]},
       "properties": {"id": "far", "name": "远处"}}
MARKET_CAMERA = city.Camera("cam-market-01", "文二西路早市", 30.29006, 120.0215)  # about 7 m north of the line
GAOJIAO = city.CAMERAS[7]  # 高教路杭师大仓前校区西门, in the demo's district


def zh(key: str, **params) -> str:
    """The console's words in Chinese, its default language."""
    return TEXT[key][0].format(**params)


def geojson(tmp_path, *features, name="zones.geojson"):
    path = tmp_path / name
    path.write_text(json.dumps({"type": "FeatureCollection", "features": list(features)}, ensure_ascii=False),
                    encoding="utf-8")
    return str(path)


async def test_a_camera_registered_by_position_takes_the_zone_whose_shape_holds_it_and_its_window(stack: Stack, tmp_path):
    code, out = await run_cli(stack, "zones", "import", geojson(tmp_path, MARKET))
    assert code == 0 and "1 added" in out, out
    code, out = await run_cli(stack, "cameras", "add", MARKET_CAMERA.id, "--integrator", city.INTEGRATOR,
                              "--lat", str(MARKET_CAMERA.lat), "--lon", str(MARKET_CAMERA.lon),
                              "--place", MARKET_CAMERA.place)
    assert code == 0 and "zone market-street" in out, out
    placed = await stack.pool.fetchrow("SELECT zone, zone_given, zone_by_position FROM cameras WHERE id = $1",
                                       MARKET_CAMERA.id)
    assert tuple(placed) == ("market-street", None, True)

    worker = stack.worker()
    await worker.ready()
    plate = (await stack.plates_with_phone(1))[0]
    await stack.publish(stack.violation(plate, MARKET_CAMERA))
    case = await stack.wait_state(plate, "warned")
    assert (case["zone"], case["window_seconds"]) == ("market-street", 7)


async def test_a_position_in_no_shape_needs_a_zone_and_a_zone_the_position_contradicts_is_refused(stack: Stack):
    far = ["--integrator", city.INTEGRATOR, "--lat", "31.5", "--lon", "121.5", "--place", "外地"]
    code, out = await run_cli(stack, "cameras", "add", "cam-far-01", *far)
    assert code == 1 and "zone: the camera at 31.500000, 121.500000 stands in no zone's shape" in out, out
    code, out = await run_cli(stack, "cameras", "add", "cam-far-01", *far, "--zone", "yuhang")
    assert code == 0 and "zone yuhang" in out, out
    code, out = await run_cli(stack, "cameras", "add", "cam-lz-09", "--integrator", city.INTEGRATOR, "--lat", "30.3765",
                              "--lon", "120.0475", "--place", "玉鸟路", "--zone", "yuhang")
    assert code == 1 and "stands in zone 'liangzhu' (by its shape), not 'yuhang'" in out, out
    assert await stack.count("SELECT count(*) FROM cameras WHERE id = 'cam-lz-09'") == 0


async def test_changed_zones_move_the_cameras_audited_or_are_refused_whole(stack: Stack, tmp_path):
    await stack.register_camera(MARKET_CAMERA)  # given the district's zone, before the market street had a shape
    assert await stack.pool.fetchval("SELECT zone FROM cameras WHERE id = $1", MARKET_CAMERA.id) == "yuhang"
    assert await stack.pool.fetchval("SELECT zone FROM cameras WHERE id = $1", GAOJIAO.id) == "yuhang"

    code, out = await run_cli(stack, "zones", "import", "--dry-run", geojson(tmp_path, MARKET, CAMPUS, FAR))
    assert code == 0 and "dry run" in out and "3 added" in out and "2 cameras moved" in out, out
    assert await stack.count("SELECT count(*) FROM zones WHERE id IN ('market-street', 'campus', 'far')") == 0

    code, out = await run_cli(stack, "zones", "import", geojson(tmp_path, MARKET, CAMPUS, FAR))
    assert code == 0 and "2 cameras moved" in out, out
    zones = dict(await stack.pool.fetch("SELECT id, zone FROM cameras WHERE id = ANY($1)", [GAOJIAO.id, MARKET_CAMERA.id]))
    assert zones == {GAOJIAO.id: "campus", MARKET_CAMERA.id: "market-street"}
    moves = await stack.pool.fetch("SELECT detail FROM audit_log WHERE action = 'camera_zone_placed' ORDER BY id")
    assert {(m["detail"]["camera"], m["detail"]["before"], m["detail"]["zone"]) for m in moves} == \
        {(GAOJIAO.id, "yuhang", "campus"), (MARKET_CAMERA.id, "yuhang", "market-street")}
    code, out = await run_cli(stack, "zones", "import", geojson(tmp_path, MARKET, CAMPUS, FAR))
    assert code == 0 and "3 unchanged, 0 cameras moved" in out, out
    code, exported = await run_cli(stack, "zones", "list", "--geojson")
    assert code == 0 and len(json.loads(exported)["features"]) == 6, exported
    (tmp_path / "exported.geojson").write_text(exported, encoding="utf-8")
    code, out = await run_cli(stack, "zones", "import", str(tmp_path / "exported.geojson"))
    assert code == 0 and "0 added, 0 changed, 6 unchanged" in out, "the export is the import format: " + out

    # A camera placed by position only, whose zone moves away from it: the import is refused, nothing changes.
    code, out = await run_cli(stack, "cameras", "add", "cam-far-02", "--integrator", city.INTEGRATOR,
                              "--lat", "31.02", "--lon", "121.08", "--place", "远处路口")
    assert code == 0 and "zone far" in out, out
    moved = {**FAR, "geometry": {"type": "Polygon", "coordinates": [[[122.0, 31.0], [122.1, 31.0], [122.1, 31.1],
                                                                     [122.0, 31.0]]]}}
    code, out = await run_cli(stack, "zones", "import", geojson(tmp_path, moved, name="moved.geojson"))
    assert code == 1 and "camera cam-far-02" in out and "stands in no zone's shape" in out, out
    assert "nothing was imported" in out
    assert await stack.pool.fetchval("SELECT geometry FROM zones WHERE id = 'far'") == FAR["geometry"]

    code, out = await run_cli(stack, "zones", "import", geojson(tmp_path, {**CAMPUS, "geometry": {"type": "Point"}},
                                                                 name="bad.geojson"))
    assert code == 1 and "feature 1: geometry.type" in out, out


async def test_the_rules_page_lists_each_zone_s_cameras_and_those_in_no_zone_s_shape(stack: Stack, tmp_path):
    code, out = await run_cli(stack, "zones", "import", geojson(tmp_path, CAMPUS))
    assert code == 0, out
    code, out = await run_cli(stack, "cameras", "add", "cam-far-01", "--integrator", city.INTEGRATOR, "--lat", "31.5",
                              "--lon", "121.5", "--place", "外地", "--zone", "elsewhere")
    assert code == 0, out
    worker = stack.worker()
    await add_operator(stack, "wang", "viewer")
    await worker.ready()
    client = ConsoleClient(base_url(worker))
    try:
        await client.login("wang")
        status, html = await client.page("/console/rules")
        assert status == 200
    finally:
        await client.close()
    campus = html.split('data-zone="campus"', 1)[1].split("</tr>", 1)[0]
    assert zh("rules.area") in campus and f'data-camera="{GAOJIAO.id}"' in campus and zh("rules.by_position") in campus
    hospital = html.split('data-zone="hospital"', 1)[1].split("</tr>", 1)[0]
    assert zh("rules.road", width="12") in hospital
    outside = html.split('id="outside-zones"', 1)[1].split("</table>", 1)[0]
    assert 'data-camera="cam-far-01"' in outside and zh("rules.unknown_zone") in outside
    assert f'data-camera="{GAOJIAO.id}"' not in outside
