"""A demo city: car parks, cameras and registries in Yuhang district, Hangzhou (WGS-84).

Places and car parks are real-looking, not surveyed; registries are generated from a seed, so
every run loads the same city.
"""

import random
from dataclasses import dataclass
from datetime import date

import asyncpg

from pipeline.cameras import registry
from pipeline.lookups import zone_shapes

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


CAMERAS = [
    Camera("cam-wenyi-01", "文一西路海创园南门", 30.27930, 120.00395),
    Camera("cam-liangmu-02", "良睦路梦想小镇东侧", 30.28330, 119.99930),
    Camera("cam-wuchang-03", "五常大道西溪湿地北门", 30.27080, 120.04010),
    Camera("cam-cangqian-04", "仓前街道余杭塘路口", 30.29470, 119.99540),
    Camera("cam-liangzhu-05", "良渚文化村玉鸟路", 30.37620, 120.04780, zone="liangzhu"),
    Camera("cam-xianlin-06", "闲林街道闲兴路", 30.25390, 119.96460),
    Camera("cam-yuhang-07", "余杭街道通济街老街口", 30.27890, 119.92560),
    Camera("cam-gaojiao-08", "高教路杭师大仓前校区西门", 30.29120, 120.00980),
]

CAR_PARKS = [
    ("cp-hcy-b1", "海创园地下停车场B1", "海创园B1", 30.27875, 120.00520, 420),
    ("cp-mxxz-p1", "梦想小镇P1地面停车场", "梦想小镇P1", 30.28410, 119.99810, 160),
    ("cp-mxxz-p2", "梦想小镇P2地下停车场", "梦想小镇P2", 30.28190, 119.99650, 300),
    ("cp-efc", "EFC欧美金融城地下停车场", "EFC停车场", 30.28720, 120.01480, 1800),
    ("cp-albb-xx", "阿里巴巴西溪园区访客停车场", "西溪园区访客", 30.27960, 120.02630, 500),
    ("cp-wlkj-pr", "未来科技城地铁站P+R停车场", "未来科技城P+R", 30.28540, 120.00790, 260),
    ("cp-xxsd-n", "西溪湿地北门游客停车场", "西溪湿地北门", 30.27310, 120.04330, 650),
    ("cp-wuchang-gc", "五常大道万达广场停车场", "五常万达", 30.26800, 120.03620, 1200),
    ("cp-cq-lc", "仓前粮仓景区停车场", "仓前粮仓", 30.29590, 119.99310, 120),
    ("cp-cq-jd", "仓前街道办公共停车场", "仓前街道", 30.29310, 119.99890, 90),
    ("cp-hzsd", "杭师大仓前校区访客停车场", "杭师大访客", 30.29260, 120.00700, 200),
    ("cp-lz-ynj", "良渚文化村玉鸟集停车场", "玉鸟集", 30.37740, 120.04560, 240),
    ("cp-lz-gc", "良渚古城遗址公园南门停车场", "良渚古城南门", 30.38560, 119.99800, 800),
    ("cp-lz-md", "良渚博物院停车场", "良渚博物院", 30.37880, 120.04020, 350),
    ("cp-xl-ymp", "闲林永旺梦乐城停车场", "闲林永旺", 30.25510, 119.96870, 1500),
    ("cp-xl-jd", "闲林街道社区停车场", "闲林社区", 30.25260, 119.96180, 60),
    ("cp-yh-tj", "余杭老街通济桥停车场", "通济桥", 30.27960, 119.92380, 110),
    ("cp-yh-zx", "余杭街道中心停车场", "余杭中心", 30.27720, 119.92830, 140),
    ("cp-yh-tyzx", "余杭体育中心停车场", "余杭体育中心", 30.28380, 119.93250, 380),
    ("cp-xs-yq", "西溪八方城停车场", "西溪八方城", 30.28280, 120.02040, 900),
]

ZONES = [("yuhang", "余杭区", None, None, None), ("hospital", "医院急救通道", None, "emergency access, officers only", None),
         ("liangzhu", "良渚文化村", None, None, 12)]
"""(id, name, window, exempt reason, first-offence months): 良渚文化村 gives a first offence (no ticket
nor warning notice in 12 months) a warning notice instead of a ticket; the rest tickets automatically."""

ZONE_SHAPES = [
    ("yuhang", {"type": "Polygon", "coordinates": [[[119.88, 30.22], [120.10, 30.22], [120.10, 30.42],
                                                    [119.95, 30.42], [119.88, 30.33], [119.88, 30.22]]]}, None),
    ("liangzhu", {"type": "Polygon", "coordinates": [[[120.035, 30.368], [120.060, 30.368], [120.060, 30.385],
                                                      [120.035, 30.385], [120.035, 30.368]]]}, None),
    ("hospital", {"type": "LineString", "coordinates": [[120.0046, 30.2801], [120.0058, 30.2801]]}, 12.0),
]
"""(zone, GeoJSON geometry, road width in metres): a rough district, 良渚文化村 inside it, and an emergency
lane; each camera is placed in the innermost zone that holds it (pipeline/lookups/zone_shapes.py)."""

WHITELIST = [("浙A1201警", "police vehicle"), ("浙A0120F", "ambulance (new-energy)")]


def plates(count: int, seed: int = 7) -> list[tuple[str, str, str | None]]:
    """(plate, owner id, phone or None): about 5% have no phone on record (out-of-province cars)."""
    rng = random.Random(seed)
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    alnum = "0123456789" + letters
    rows, seen = [], set()
    while len(rows) < count:
        i = len(rows)
        if i % 20 == 19:
            plate = "皖A" + "".join(rng.choice("0123456789") for _ in range(5))
            phone = None
        elif i % 5 == 4:
            plate = "浙A" + rng.choice("DF") + rng.choice(alnum) + "".join(rng.choice("0123456789") for _ in range(4))
            phone = f"13{rng.randint(5, 9)}{rng.randint(0, 99_999_999):08d}"
        else:
            plate = "浙A" + "".join(rng.choice(alnum) for _ in range(5))
            phone = f"1{rng.choice('3589')}{rng.randint(0, 9)}{rng.randint(0, 99_999_999):08d}"
        if plate in seen:
            continue
        seen.add(plate)
        rows.append((plate, f"owner-{i:06d}", phone))
    return rows


async def register(conn: asyncpg.Connection, camera: Camera, integrator: str = INTEGRATOR) -> None:
    """Register ``camera`` (a demo or test camera) to ``integrator``, unless it is registered as such already."""
    cam = registry.camera({"id": camera.id, "integrator": integrator, "lat": camera.lat, "lon": camera.lon,
                           "place": camera.place, "zone": camera.zone, "direction": camera.direction,
                           "commissioned_on": COMMISSIONED})
    if await registry.registered(conn, cam.id) != cam:
        await registry.add(conn, cam, "demo:load", replace=True)


async def load(conn: asyncpg.Connection, plate_count: int = 2000) -> dict:
    """Load (or reload) the demo city; returns counts. Idempotent. Its cameras are registered to the
    ``demo`` integrator (made if missing); its car parks have no owner (any publisher may report them)."""
    async with conn.transaction():
        await registry.ensure_integrator(conn, INTEGRATOR)
        await conn.executemany(
            """INSERT INTO zones (id, name, window_seconds, exempt_reason, first_offence_months) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, exempt_reason = EXCLUDED.exempt_reason,
                                              first_offence_months = EXCLUDED.first_offence_months""",
            ZONES,
        )
        await conn.executemany("UPDATE zones SET geometry = $2, width_m = $3 WHERE id = $1", ZONE_SHAPES)
        await conn.executemany(
            """INSERT INTO car_parks (id, name, short_name, lat, lon, capacity) VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, short_name = EXCLUDED.short_name,
               lat = EXCLUDED.lat, lon = EXCLUDED.lon, capacity = EXCLUDED.capacity""",
            CAR_PARKS,
        )
        for camera in CAMERAS:
            await register(conn, camera)
        await zone_shapes.lock(conn)
        await zone_shapes.place_cameras(conn, "demo:load")
        await conn.executemany(
            "INSERT INTO whitelisted_plates (plate, reason) VALUES ($1, $2) ON CONFLICT DO NOTHING", WHITELIST
        )
        rows = plates(plate_count)
        await conn.executemany(
            "INSERT INTO plate_registry (plate, owner_id) VALUES ($1, $2) ON CONFLICT (plate, plate_type) DO UPDATE SET owner_id = EXCLUDED.owner_id",
            [(p, o) for p, o, _ in rows],
        )
        await conn.executemany(
            "INSERT INTO contact_registry (owner_id, phone) VALUES ($1, $2) ON CONFLICT (owner_id, valid_from) DO UPDATE SET phone = EXCLUDED.phone",
            [(o, ph) for _, o, ph in rows if ph],
        )
    return {"car_parks": len(CAR_PARKS), "cameras": len(CAMERAS), "plates": len(rows),
            "with_phone": sum(1 for r in rows if r[2])}
