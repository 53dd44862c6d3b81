"""The console's map (/console/map): cameras with their last capture's age (silent ones flagged),
zone shapes and road segments, car parks coloured by fill, and open cases with their time left.

The page draws Leaflet (vendored from npm into ``static/leaflet``, see ``scripts/vendor-leaflet.sh``)
and fetches ``/console/api/map``, a GeoJSON FeatureCollection built by ``feature_collection`` (pure:
it takes PostgreSQL's ``now`` and the rows ``read_map`` read in one transaction). A tile layer is drawn
only when the city configures ``PW_MAP_TILES``; without it nothing is fetched from another host.
No phone number is read here.
"""

import html
import json
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from aiohttp import web

from pipeline.console import i18n, metrics
from pipeline.console.views import SECURITY_HEADERS, guarded, json_default

RECENT_CAPTURES = 20
"""A camera's usual gap is the mean gap between this many of its latest captures."""
CASE_LIMIT = 2000
"""The most open cases drawn (soonest deadline first); the page says when there are more."""
FULL, FILLING = 0.95, 0.8
"""A car park at or above these shares of its capacity taken is full (red) or filling (amber),
as on the live page's occupancy meters."""
COLOURS = {"free": "#2e7d32", "filling": "#ef8f00", "full": "#c62828", "unknown": "#8a8f98"}


@dataclass(frozen=True)
class SilenceRule:
    """A camera is silent when its last capture is older than ``factor`` times its usual gap and
    older than ``min_seconds``; with fewer than two captures on record its usual gap is unknown and
    ``min_seconds`` alone decides; with none on record it is silent."""

    factor: float
    min_seconds: float

    def usual_gap(self, captures: list[datetime]) -> float | None:
        """The mean gap in seconds between the latest captures (newest first), None under two."""
        if len(captures) < 2:
            return None
        return (captures[0] - captures[-1]).total_seconds() / (len(captures) - 1)

    def silent(self, age: float | None, usual_gap: float | None) -> bool:
        if age is None:
            return True
        return age > self.min_seconds and (usual_gap is None or age > self.factor * usual_gap)


def fill_level(free: int | None, capacity: int) -> tuple[str, float | None]:
    """(free / filling / full / unknown, share taken) of a car park."""
    if free is None or capacity <= 0:
        return "unknown", None
    taken = max(0.0, min(1.0, 1 - free / capacity))
    return ("full" if taken >= FULL else "filling" if taken >= FILLING else "free"), taken


def time_left(case: dict, now: datetime) -> dict:
    """What the map says about an open case's time: a warned case's seconds left before its deadline
    (0 when overdue), a rechecking case's recheck time, a detected one waits for its SMS."""
    if case["state"] == "warned" and case["deadline_at"]:
        return {"left": "deadline", "deadline_at": case["deadline_at"].isoformat(),
                "seconds_left": max(0, round((case["deadline_at"] - now).total_seconds()))}
    if case["state"] == "rechecking" and case["wake_at"]:
        return {"left": "recheck", "recheck_at": case["wake_at"].isoformat()}
    return {"left": "awaiting_sms"}


def _point(lon: float, lat: float) -> dict:
    return {"type": "Point", "coordinates": [lon, lat]}


def feature_collection(now: datetime, cameras: list[dict], zones: list[dict], car_parks: list[dict],
                       cases: list[dict], rule: SilenceRule, open_cases: int | None = None) -> dict:
    """The map's layers as one GeoJSON FeatureCollection (RFC 7946, [longitude, latitude]); each
    feature's ``properties.layer`` is ``camera``, ``zone``, ``car_park`` or ``case``. ``now`` is
    PostgreSQL's clock: ages and time left are counted from it, and the page ticks on from it.

    ``cameras``: id, place, zone, integrator, lat, lon, ``captures`` (latest first, up to
    RECENT_CAPTURES); ``zones``: id, name, geometry, width_m, exempt_reason (in force now);
    ``car_parks``: id, name, short_name, lat, lon, capacity, free_spaces, reported_at;
    ``cases``: id, plate, state, zone, place, camera_id, lat, lon, detected_at, deadline_at, wake_at.
    """
    features = []
    for z in zones:
        features.append({"type": "Feature", "id": f"zone:{z['id']}", "geometry": z["geometry"], "properties": {
            "layer": "zone", "id": z["id"], "name": z["name"],
            "kind": "road" if z["geometry"]["type"] in ("LineString", "MultiLineString") else "area",
            "width_m": z["width_m"], "exempt": bool(z["exempt_reason"])}})
    for p in car_parks:
        level, taken = fill_level(p["free_spaces"], p["capacity"])
        features.append({"type": "Feature", "id": f"car_park:{p['id']}", "geometry": _point(p["lon"], p["lat"]),
                         "properties": {
                             "layer": "car_park", "id": p["id"], "name": p["name"], "short_name": p["short_name"],
                             "capacity": p["capacity"], "free": p["free_spaces"], "fill": level,
                             "occupancy": None if taken is None else round(taken, 3), "colour": COLOURS[level],
                             "reported_at": p["reported_at"].isoformat() if p["reported_at"] else None}})
    silent = 0
    for c in cameras:
        captures = c["captures"] or []
        age = max(0.0, (now - captures[0]).total_seconds()) if captures else None
        gap = rule.usual_gap(captures)
        quiet = rule.silent(age, gap)
        silent += quiet
        features.append({"type": "Feature", "id": f"camera:{c['id']}", "geometry": _point(c["lon"], c["lat"]),
                         "properties": {
                             "layer": "camera", "id": c["id"], "place": c["place"], "zone": c["zone"],
                             "integrator": c["integrator"], "silent": quiet,
                             "last_capture_at": captures[0].isoformat() if captures else None,
                             "age_seconds": None if age is None else round(age),
                             "usual_gap_seconds": None if gap is None else round(gap, 1),
                             "href": f"/console/cases?camera={c['id']}"}})
    for c in cases:
        features.append({"type": "Feature", "id": f"case:{c['id']}", "geometry": _point(c["lon"], c["lat"]),
                         "properties": {
                             "layer": "case", "id": str(c["id"]), "plate": c["plate"], "state": c["state"],
                             "place": c["place"], "zone": c["zone"], "camera": c["camera_id"],
                             "detected_at": c["detected_at"].isoformat(), **time_left(c, now),
                             "href": f"/console/cases/{c['id']}"}})
    return {"type": "FeatureCollection", "features": features, "now": now.isoformat(),
            "summary": {"cameras": len(cameras), "silent_cameras": silent, "zones": len(zones),
                        "car_parks": len(car_parks), "cases": len(cases),
                        "open_cases": len(cases) if open_cases is None else open_cases},
            "rule": {"factor": rule.factor, "min_seconds": rule.min_seconds, "recent_captures": RECENT_CAPTURES}}


async def read_map(conn: asyncpg.Connection, rule: SilenceRule) -> dict:
    """Read the map's rows in one transaction (one ``now``) and build its FeatureCollection.
    Each camera's latest captures come from the sightings' (camera_id, taken_at) index."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        now = await conn.fetchval("SELECT now()")
        cameras = await conn.fetch(
            """SELECT c.id, c.place, c.zone, c.integrator, c.lat, c.lon, r.captures
               FROM cameras c LEFT JOIN LATERAL (
                   SELECT array_agg(s.taken_at ORDER BY s.taken_at DESC) AS captures
                   FROM (SELECT taken_at FROM sightings WHERE camera_id = c.id ORDER BY taken_at DESC LIMIT $1) s) r ON true
               WHERE c.removed_at IS NULL ORDER BY c.id""", RECENT_CAPTURES)
        zones = await conn.fetch(
            """SELECT id, name, geometry, width_m,
                      CASE WHEN (exempt_starts_at IS NULL OR exempt_starts_at <= now())
                            AND (exempt_ends_at IS NULL OR exempt_ends_at > now()) THEN exempt_reason END AS exempt_reason
               FROM zones WHERE geometry IS NOT NULL ORDER BY id""")
        car_parks = await conn.fetch(
            """SELECT p.id, p.name, p.short_name, p.lat, p.lon, p.capacity, s.free_spaces, s.reported_at
               FROM car_parks p LEFT JOIN car_park_status s ON s.car_park_id = p.id ORDER BY p.id""")
        cases = await conn.fetch(
            """SELECT id, plate, state, zone, place, camera_id, lat, lon, detected_at, deadline_at, wake_at
               FROM cases WHERE state IN ('detected', 'warned', 'rechecking')
               ORDER BY deadline_at NULLS LAST, detected_at LIMIT $1""", CASE_LIMIT)
        open_cases = len(cases) if len(cases) < CASE_LIMIT else await conn.fetchval(
            "SELECT count(*) FROM cases WHERE state IN ('detected', 'warned', 'rechecking')")
    return feature_collection(now, [dict(r) for r in cameras], [dict(r) for r in zones], [dict(r) for r in car_parks],
                              [dict(r) for r in cases], rule, open_cases)


class MapPages:
    def __init__(self, console):
        self.console = console
        self.session_of = console.session_of  # what ``guarded`` asks of a page
        self.message = console.message
        s = console.settings
        self.rule = SilenceRule(s.map_silent_factor, s.map_silent_min_seconds)
        self.layers = metrics.Refreshed(s.map_refresh_seconds, self._read)
        self.csp = SECURITY_HEADERS["Content-Security-Policy"]
        if s.map_tiles_origin:
            self.csp = self.csp.replace("img-src 'self' data:", f"img-src 'self' data: {s.map_tiles_origin}")

    async def _read(self) -> dict:
        pool = await self.console.db()
        async with pool.acquire() as conn:
            return await read_map(conn, self.rule)

    @guarded()
    async def page(self, request: web.Request) -> web.Response:
        t = self.console.words(request)
        s = self.console.settings
        words = {k.removeprefix("map.js."): t(k) for k in i18n.TEXT if k.startswith("map.js.")}
        words.update({f"state.{k}": t.state(k) for k in ("detected", "warned", "rechecking")})
        response = self.console.render(
            request, "map.html", title=t("map.title"), nav="map", tiles=s.map_tiles,
            attribution=html.escape(s.map_tiles_attribution), refresh=round(s.map_refresh_seconds * 1000),
            words=words, rule=self.rule, recent=RECENT_CAPTURES, timezone=s.timezone)
        response.headers["Content-Security-Policy"] = self.csp
        return response

    @guarded(api=True)
    async def layers_json(self, request: web.Request) -> web.Response:
        return web.json_response(await self.layers.get(), content_type="application/geo+json",
                                 dumps=lambda v: json.dumps(v, default=json_default, ensure_ascii=False))


def register(app, console) -> MapPages:
    """Add the map page and its GeoJSON endpoint to the console (the Faust app's web server)."""
    pages = MapPages(console)
    router = app.web.web_app.router
    router.add_get("/console/map", pages.page)
    router.add_get("/console/api/map", pages.layers_json)
    return pages
