"""No-parking zones as geometry: areas (GeoJSON Polygon, MultiPolygon) and road segments (LineString,
MultiLineString, with ``width_m``, the width of the no-parking strip centred on the line), and the
camera's zone found from its position.

Contract (the same for ``parkwarden zones import`` and, wired by the lead, ``parkwarden data import zones``):

- ``read_geojson(stream)`` reads a GeoJSON FeatureCollection (RFC 7946: positions are [longitude,
  latitude], WGS-84) and yields, feature by feature, a ``ZoneShape`` or a ``Refusal(row, field, reason)``
  (row: the feature's 1-based number; 0 for the file as a whole). Properties: ``id``, ``name``, ``width_m``
  (road segments only) and the zones table's own rule columns ``RULES``; a rule left out is NULL (the
  city's default). Other properties are ignored and named in ``ZoneShape.ignored``.
- ``await store(conn, shapes, actor)`` writes the zones (insert or replace, geometry as GeoJSON in
  ``zones.geometry``) and places every registered camera again, in one transaction, audited. If a camera
  would then have no zone, or two whose shapes overlap without one inside the other, it raises
  ``CamerasUnplaced`` and nothing is written.

Where a camera stands (``place``): inside an area (its boundary included), or within ``width_m / 2``
metres of a road segment. Areas are tested in degrees, as RFC 7946 draws them (straight lines in
longitude/latitude); distances to roads in metres, on a plane tangent at the camera (WGS-84 radii of
curvature there; an error of about 1e-4 of the distance within a few kilometres). Of several zones
holding a camera, the innermost wins (a road segment or a small area inside a district): the one whose
shape every other one covers. When none is innermost, the operator's zone for the camera decides if it
is one of them; otherwise the camera cannot be placed. A camera inside no shape keeps the zone the
operator gave it (``cameras.zone_given``): so cameras registered with ``--zone`` before any zone had a
shape work as before. Zones are assumed not to cross the antimeridian.
"""

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import IO, NamedTuple

import shapely
from shapely.geometry import Point, shape

ZONE_PATTERN = re.compile(r"[a-z0-9_-]{1,32}")
AREAS = ("Polygon", "MultiPolygon")
ROADS = ("LineString", "MultiLineString")
MAX_WIDTH_M = 100.0
RULES = ("window_seconds", "exempt_reason", "exempt_from_hour", "exempt_until_hour", "first_offence_months",
         "new_camera_days", "confirm_tickets")
"""A zone's rule properties, named as the zones table's columns (see the console's Rules page)."""
_LOCK = 0x7A6F6E65  # "zone": zones change and cameras are placed one at a time

_A = 6378137.0  # WGS-84 semi-major axis, metres
_E2 = 0.00669437999014  # WGS-84 first eccentricity squared


class Refusal(NamedTuple):
    """A feature that cannot be taken: its number in the file (0: the file), the field, why."""
    row: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"feature {self.row}: {self.field}: {self.reason}" if self.row else f"{self.field}: {self.reason}"


class ZoneProblem(ValueError):
    """A camera that cannot be placed in a zone: which field (``zone``) and why."""

    def __init__(self, field_name: str, reason: str):
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


class CamerasUnplaced(ValueError):
    """Zones that would leave cameras without a zone (or in two): (camera id, why) for each."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"camera {c}: {why}" for c, why in problems))
        self.problems = problems


@dataclass(frozen=True)
class ZoneShape:
    id: str
    name: str
    geometry: dict
    """The GeoJSON geometry as read (type and coordinates)."""
    width_m: float | None = None
    """Road segments only: the no-parking strip's width, centred on the line."""
    rules: dict = field(default_factory=dict)
    """The zone's rule columns (``RULES``); a missing one is NULL, the city's default."""
    ignored: tuple[str, ...] = ()

    @property
    def is_road(self) -> bool:
        return self.geometry["type"] in ROADS

    @cached_property
    def shape(self):
        """The geometry in degrees (x: longitude, y: latitude)."""
        return shape(self.geometry)

    @cached_property
    def reach(self) -> tuple[float, float, float, float]:
        """A box in degrees (min lon, min lat, max lon, max lat) outside which no point is in the zone."""
        west, south, east, north = self.shape.bounds
        if not self.is_road:
            return west, south, east, north
        margin_lat = self.width_m / 2 / 110_000
        margin_lon = margin_lat / max(math.cos(math.radians(max(abs(south), abs(north)) + margin_lat)), 1e-6)
        return west - margin_lon, south - margin_lat, east + margin_lon, north + margin_lat

    def holds(self, lat: float, lon: float) -> bool:
        """Whether a point is in the zone: inside the area (boundary included), or within width_m / 2
        metres of the road segment."""
        west, south, east, north = self.reach
        if not (west <= lon <= east and south <= lat <= north):
            return False
        if not self.is_road:
            return self.shape.covers(Point(lon, lat))
        return distance_m(self.shape, lat, lon) <= self.width_m / 2

    def around(self, lat: float, lon: float):
        """The zone's shape in metres on the plane tangent at (lat, lon); a road as its strip."""
        projected = to_metres(self.shape, lat, lon)
        return projected.buffer(self.width_m / 2) if self.is_road else projected

    def row(self) -> dict:
        """The zones table's columns for this zone."""
        return {"id": self.id, "name": self.name, "geometry": self.geometry, "width_m": self.width_m,
                **{k: self.rules.get(k) for k in RULES}}


# ── metres ──────────────────────────────────────────────────────────────────────────────────


def metres_per_degree(lat: float) -> tuple[float, float]:
    """Metres per degree of longitude and of latitude at ``lat`` (WGS-84 radii of curvature)."""
    s = math.sin(math.radians(lat))
    w = math.sqrt(1 - _E2 * s * s)
    prime_vertical, meridional = _A / w, _A * (1 - _E2) / w ** 3
    return (math.radians(1) * prime_vertical * math.cos(math.radians(lat)), math.radians(1) * meridional)


def to_metres(geometry, lat: float, lon: float):
    """``geometry`` (degrees) on the plane tangent at (lat, lon), in metres east and north of it."""
    per_lon, per_lat = metres_per_degree(lat)
    return shapely.transform(geometry, lambda xy: (xy - (lon, lat)) * (per_lon, per_lat))


def distance_m(geometry, lat: float, lon: float) -> float:
    """Metres from (lat, lon) to ``geometry`` (degrees); 0 inside an area."""
    return to_metres(geometry, lat, lon).distance(Point(0, 0))


# ── placing a camera ────────────────────────────────────────────────────────────────────────


def innermost(holding: list[ZoneShape], lat: float, lon: float) -> ZoneShape | None:
    """Of the zones holding a point, the one every other one covers (None: no such single zone)."""
    if len(holding) == 1:
        return holding[0]
    shapes = {z.id: z.around(lat, lon) for z in holding}
    inner = [z for z in holding if all(shapes[o.id].covers(shapes[z.id]) for o in holding if o is not z)]
    return inner[0] if len(inner) == 1 else None


def place(lat: float, lon: float, given: str | None, zones: Iterable[ZoneShape], strict: bool = True) -> tuple[str, bool]:
    """A camera's zone from its position: (zone id, whether its position decided it).

    ``given`` is the zone the operator named (None: none). Inside no shape, the given zone is used.
    Inside shapes, the innermost wins; ``strict`` (at registration) refuses a given zone that
    contradicts it, otherwise (when zones change) the position wins. Among overlapping shapes with no
    innermost, the given zone decides if it is one of them. Raises ``ZoneProblem`` naming the field."""
    holding = [z for z in zones if z.holds(lat, lon)]
    where = f"the camera at {lat:.6f}, {lon:.6f}"
    if not holding:
        if given:
            return given, False
        raise ZoneProblem("zone", f"{where} stands in no zone's shape: give its zone (e.g. --zone), "
                                  "or import a zone that holds it (`parkwarden zones import`)")
    inner = innermost(holding, lat, lon)
    if inner is not None:
        if strict and given and given != inner.id:
            raise ZoneProblem("zone", f"{where} stands in zone {inner.id!r} (by its shape), not {given!r}: "
                                      f"leave the zone out or give {inner.id!r}")
        return inner.id, True
    names = ", ".join(sorted(z.id for z in holding))
    if given in {z.id for z in holding}:
        return given, True
    raise ZoneProblem("zone", f"{where} stands in zones {names}, whose shapes overlap without one lying inside "
                              "the other: give the camera's zone, one of them")


# ── reading GeoJSON ─────────────────────────────────────────────────────────────────────────


def read_geojson(stream: IO) -> Iterator[ZoneShape | Refusal]:
    """The zones of a GeoJSON FeatureCollection, feature by feature (see the module's docstring).
    The file is read whole (a city's zones are a few thousand features at most)."""
    try:
        document = json.load(stream)
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, too deep, too long a number
        yield Refusal(0, "file", f"not JSON we read: {type(exc).__name__}: {str(exc)[:200]}")
        return
    if not isinstance(document, dict) or document.get("type") != "FeatureCollection":
        yield Refusal(0, "type", "the file must be a GeoJSON FeatureCollection")
        return
    crs = document.get("crs")
    if crs is not None and "CRS84" not in json.dumps(crs) and "4326" not in json.dumps(crs):
        yield Refusal(0, "crs", "positions must be WGS-84 longitude, latitude (RFC 7946); reproject the file")
        return
    features = document.get("features")
    if not isinstance(features, list):
        yield Refusal(0, "features", "a list of Features")
        return
    seen: dict[str, int] = {}
    for row, feature in enumerate(features, start=1):
        found = _feature(row, feature)
        if isinstance(found, ZoneShape):
            if found.id in seen:
                found = Refusal(row, "properties.id", f"zone {found.id!r} is in the file twice (features "
                                                      f"{seen[found.id]} and {row})")
            else:
                seen[found.id] = row
        yield found


def _feature(row: int, feature) -> ZoneShape | Refusal:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        return Refusal(row, "type", "each member of features must be a GeoJSON Feature")
    props = feature.get("properties")
    if not isinstance(props, dict):
        return Refusal(row, "properties", "an object with at least id and name")
    zone_id = props.get("id", feature.get("id"))
    if not isinstance(zone_id, str) or not ZONE_PATTERN.fullmatch(zone_id):
        return Refusal(row, "properties.id", "the zone's id, 1-32 of a-z 0-9 _ -")
    name = props.get("name")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 64:
        return Refusal(row, "properties.name", "the zone's name, 1-64 characters")
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict) or geometry.get("type") not in AREAS + ROADS:
        return Refusal(row, "geometry.type", "Polygon or MultiPolygon (an area), LineString or MultiLineString "
                                             "(a road segment, with properties.width_m)")
    geometry = {"type": geometry["type"], "coordinates": geometry.get("coordinates")}
    problem = _coordinates(geometry)
    if problem:
        return Refusal(row, "geometry.coordinates", problem)
    try:
        drawn = shape(geometry)
    except (ValueError, TypeError, AttributeError, shapely.errors.GEOSException) as exc:
        return Refusal(row, "geometry.coordinates", f"not a {geometry['type']}: {exc}")
    if geometry["type"] in ROADS and drawn.length == 0:
        return Refusal(row, "geometry.coordinates", "a road segment of length 0")
    if not drawn.is_valid:
        return Refusal(row, "geometry", f"not a valid {geometry['type']}: {shapely.is_valid_reason(drawn)} "
                                        "(as [longitude, latitude])")
    width = props.get("width_m")
    if geometry["type"] in ROADS:
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= MAX_WIDTH_M:
            return Refusal(row, "properties.width_m", f"a road segment's no-parking width in metres, "
                                                      f"0 < width_m <= {MAX_WIDTH_M:g}")
    elif width is not None:
        return Refusal(row, "properties.width_m", "only for road segments (LineString); an area has none")
    rules, problem = _rules(props)
    if problem:
        return Refusal(row, *problem)
    ignored = tuple(sorted(set(props) - {"id", "name", "width_m", *RULES}))
    return ZoneShape(zone_id, name.strip(), geometry, float(width) if width is not None else None, rules, ignored)


def _coordinates(geometry: dict) -> str | None:
    """Why the coordinates are not those of their type (None: they are, in form and range)."""
    kind, coords = geometry["type"], geometry["coordinates"]
    depth = {"LineString": 1, "MultiLineString": 2, "Polygon": 2, "MultiPolygon": 3}[kind]

    def positions(value, level):
        if level == 0:
            if (not isinstance(value, list) or len(value) < 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                raise ValueError(f"a position is [longitude, latitude], not {json.dumps(value)[:40]}")
            lon, lat = value[0], value[1]
            if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                raise ValueError(f"position {json.dumps(value[:2])} out of range: GeoJSON positions are "
                                 "[longitude, latitude] in WGS-84")
            return [value]
        if not isinstance(value, list) or not value:
            raise ValueError(f"a {kind} needs nested lists of positions")
        return [p for v in value for p in positions(v, level - 1)]

    try:
        positions(coords, depth)
        lines = {"LineString": [coords], "MultiLineString": coords, "Polygon": coords,
                 "MultiPolygon": [ring for polygon in coords for ring in polygon]}[kind]
        for line in lines:
            if kind in ROADS and len(line) < 2:
                raise ValueError("a line needs at least 2 positions")
            if kind in AREAS and (len(line) < 4 or line[0][:2] != line[-1][:2]):
                raise ValueError("a ring needs at least 4 positions, its last the same as its first (RFC 7946 3.1.6)")
    except ValueError as exc:
        return str(exc)
    return None


def _rules(props: dict) -> tuple[dict, tuple[str, str] | None]:
    rules = {k: props.get(k) for k in RULES if props.get(k) is not None}

    def whole(name, low, high):
        value = rules.get(name)
        return value is None or (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high)

    window = rules.get("window_seconds")
    if window is not None and (isinstance(window, bool) or not isinstance(window, (int, float)) or window <= 0):
        return {}, ("properties.window_seconds", "the warning window in seconds, > 0 (leave out: the city's)")
    if "exempt_reason" in rules and not (isinstance(rules["exempt_reason"], str) and rules["exempt_reason"].strip()):
        return {}, ("properties.exempt_reason", "why the zone is exempt, a text (leave out: pursued)")
    if not whole("exempt_from_hour", 0, 23) or not whole("exempt_until_hour", 0, 24):
        return {}, ("properties.exempt_from_hour", "exempt hours: from 0-23 until 0-24, local time")
    if ("exempt_from_hour" in rules) != ("exempt_until_hour" in rules):
        return {}, ("properties.exempt_until_hour", "exempt hours come in pairs: exempt_from_hour and exempt_until_hour")
    if "exempt_from_hour" in rules and "exempt_reason" not in rules:
        return {}, ("properties.exempt_reason", "exempt hours need the exemption's reason")
    if not whole("first_offence_months", 0, 120):
        return {}, ("properties.first_offence_months", "whole months, 0-120 (0: no first-offence warning)")
    if not whole("new_camera_days", 0, 3650):
        return {}, ("properties.new_camera_days", "whole days, 0-3650")
    if "confirm_tickets" in rules and not isinstance(rules["confirm_tickets"], bool):
        return {}, ("properties.confirm_tickets", "true or false")
    if window is not None:
        rules["window_seconds"] = float(window)
    return rules, None


# ── PostgreSQL ──────────────────────────────────────────────────────────────────────────────


async def lock(conn) -> None:
    """Hold, until the transaction ends, the right to change zones or place cameras."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)


async def shaped(conn) -> list[ZoneShape]:
    """The zones that have a shape."""
    rows = await conn.fetch(f"SELECT id, name, geometry, width_m, {', '.join(RULES)} FROM zones "
                            "WHERE geometry IS NOT NULL ORDER BY id")
    return [ZoneShape(r["id"], r["name"], _json(r["geometry"]), r["width_m"],
                      {k: r[k] for k in RULES if r[k] is not None}) for r in rows]


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


async def zone_for(conn, lat: float, lon: float, given: str | None) -> tuple[str, bool]:
    """Place a camera being registered (strictly: a given zone that its position contradicts is refused);
    call inside the registration's transaction."""
    await lock(conn)
    return place(lat, lon, given, await shaped(conn), strict=True)


async def store(conn, shapes: list[ZoneShape], actor: str) -> dict[str, int]:
    """Insert or replace these zones and place every camera again, all in one transaction; audited.
    Returns counts: zones added, changed, unchanged, and cameras moved to another zone.
    Raises ``CamerasUnplaced`` (nothing written) if a camera would have no zone or two."""
    counts = {"added": 0, "changed": 0, "unchanged": 0, "cameras_moved": 0}
    columns = ("id", "name", "geometry", "width_m", *RULES)
    async with conn.transaction():
        await lock(conn)
        for zone in shapes:
            row = zone.row()
            before = await conn.fetchrow(f"SELECT {', '.join(columns)} FROM zones WHERE id = $1 FOR UPDATE", zone.id)
            if before is not None and {k: _json(before[k]) if k == "geometry" else before[k] for k in columns} == row:
                counts["unchanged"] += 1
                continue
            await conn.execute(
                f"""INSERT INTO zones ({', '.join(columns)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))})
                    ON CONFLICT (id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in columns[1:])}""",
                *[row[c] for c in columns])
            counts["added" if before is None else "changed"] += 1
            detail = {"zone": zone.id, "name": zone.name, "shape": zone.geometry["type"], "width_m": zone.width_m,
                      "rules": zone.rules}
            if before is not None:
                detail["before"] = {"name": before["name"], "shape": (_json(before["geometry"]) or {}).get("type"),
                                    "width_m": before["width_m"], "rules": {k: before[k] for k in RULES}}
            await _audit(conn, actor, "zone_added" if before is None else "zone_changed", detail)
        counts["cameras_moved"] = await place_cameras(conn, actor)
    return counts


async def place_cameras(conn, actor: str) -> int:
    """Place every registered camera in its zone by position, after zones changed (call inside the
    transaction that changed them, holding ``lock``). Returns how many moved; each move is audited.
    Raises ``CamerasUnplaced`` listing every camera that cannot be placed."""
    zones = await shaped(conn)
    cameras = await conn.fetch("SELECT id, lat, lon, zone, zone_given, zone_by_position FROM cameras "
                               "WHERE removed_at IS NULL ORDER BY id")
    reach = shapely.STRtree([shapely.box(*z.reach) for z in zones])
    moves, problems = [], []
    for cam in cameras:
        near = [zones[i] for i in reach.query(Point(cam["lon"], cam["lat"]))]
        try:
            zone, by_position = place(cam["lat"], cam["lon"], cam["zone_given"], near, strict=False)
        except ZoneProblem as exc:
            problems.append((cam["id"], exc.reason))
            continue
        if (zone, by_position) != (cam["zone"], cam["zone_by_position"]):
            moves.append((cam["id"], cam["zone"], zone, by_position))
    if problems:
        raise CamerasUnplaced(problems)
    for camera_id, before, zone, by_position in moves:
        await conn.execute("UPDATE cameras SET zone = $2, zone_by_position = $3, updated_at = now() WHERE id = $1",
                           camera_id, zone, by_position)
        await _audit(conn, actor, "camera_zone_placed",
                     {"camera": camera_id, "zone": zone, "before": before, "by_position": by_position})
    return sum(1 for _, before, zone, _ in moves if before != zone)


async def _audit(conn, actor: str, action: str, detail: dict) -> None:
    await conn.execute("INSERT INTO audit_log (at, case_id, actor, action, detail) VALUES (now(), NULL, $1, $2, $3)",
                       actor, action, detail)
