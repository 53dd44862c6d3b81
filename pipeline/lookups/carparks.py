"""The nearest car park with free spaces.

Reference data (where each car park is) comes from PostgreSQL; live counts come from the
car-park status stream. A grid of cells about 1 km wide prefilters candidates; geopy's geodesic
distance ranks the few that are left, so a lookup stays well under a millisecond.
"""

import functools
import math
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from geopy.distance import geodesic

CELL_DEG = 0.01  # about 1.1 km of latitude


@dataclass(frozen=True)
class CarPark:
    id: str
    name: str
    short_name: str
    lat: float
    lon: float
    capacity: int
    address: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class NearestCarPark:
    car_park: CarPark
    distance_m: float
    free_spaces: int
    counted_at: datetime


class CarParkIndex:
    """In-memory spatial index of car parks and their latest free-space counts."""

    def __init__(self, car_parks: list[CarPark] = ()):
        self._parks: dict[str, CarPark] = {}
        self._cells: dict[tuple[int, int], list[str]] = {}
        self._free: dict[str, tuple[int, datetime]] = {}
        self.replace(car_parks)

    def replace(self, car_parks: list[CarPark]) -> None:
        self._parks = {p.id: p for p in car_parks}
        cells: dict[tuple[int, int], list[str]] = {}
        for p in car_parks:
            cells.setdefault(_cell(p.lat, p.lon), []).append(p.id)
        self._cells = cells

    def __len__(self) -> int:
        return len(self._parks)

    def update_count(self, car_park_id: str, free_spaces: int, counted_at: datetime) -> bool:
        """Record a live count; an older count than the one held is ignored. False if unknown."""
        if car_park_id not in self._parks:
            return False
        held = self._free.get(car_park_id)
        if held is None or held[1] <= counted_at:
            self._free[car_park_id] = (free_spaces, counted_at)
        return True

    def free_in_ring(self, lat: float, lon: float, ring: int):
        """Car parks with at least one free space in the cells ``ring`` cells away from the point's."""
        cx, cy = _cell(lat, lon)
        for key in _ring(cx, cy, ring):
            for pid in self._cells.get(key, ()):
                count = self._free.get(pid)
                if count and count[0] > 0:
                    yield self._parks[pid]

    def count(self, car_park_id: str) -> tuple[int, datetime]:
        return self._free[car_park_id]

    def nearest(self, lat: float, lon: float, max_rings: int = 5) -> NearestCarPark | None:
        """The closest car park with at least one free space, searching up to ``max_rings`` cells out.

        Candidates are ranked by a fast spherical approximation; the few within its error margin
        of the best are measured exactly (geodesic on WGS-84) and the closest of those wins.
        """
        candidates: list[tuple[float, str]] = []
        best_approx = math.inf
        for ring in range(max_rings + 1):
            for park in self.free_in_ring(lat, lon, ring):
                d = _approx_m(lat, lon, park.lat, park.lon)
                candidates.append((d, park.id))
                best_approx = min(best_approx, d)
            # Anything in a further ring is at least `ring` cells away; 110 km per degree and the
            # cosine at the ring's far edge keep this bound on the safe side.
            far_lat = min(abs(lat) + (ring + 1) * CELL_DEG, 89.0)
            if best_approx * (1 + APPROX_MARGIN) <= ring * CELL_DEG * 110_000 * math.cos(math.radians(far_lat)):
                break
        best: NearestCarPark | None = None
        for d, pid in candidates:
            if d <= best_approx * (1 + 2 * APPROX_MARGIN) + 1:
                park = self._parks[pid]
                exact = geodesic_m(lat, lon, park.lat, park.lon)
                if best is None or exact < best.distance_m:
                    best = NearestCarPark(park, exact, *self._free[pid])
        return best


APPROX_MARGIN = 0.01
"""The spherical approximation is within about 0.7% of the WGS-84 geodesic; 1% keeps it safe."""


@functools.lru_cache(maxsize=65536)
def geodesic_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The WGS-84 geodesic distance in metres (geopy), remembered: a violation is placed at its camera's
    registered position and car parks do not move, so the same few pairs come again and again (pure
    Python, it was a quarter of the time spent deciding a batch of violations)."""
    return geodesic((lat1, lon1), (lat2, lon2)).meters


def _approx_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Equirectangular distance on a sphere: fine for ranking car parks a few km apart."""
    x = math.radians(lon2 - lon1) * math.cos(math.radians((lat1 + lat2) / 2))
    y = math.radians(lat2 - lat1)
    return 6_371_008.8 * math.hypot(x, y)


def nearest_free(index: "CarParkIndex", lat: float, lon: float, n: int = 3, max_rings: int = 5) -> list[NearestCarPark]:
    """The ``n`` closest car parks with free spaces within ``max_rings`` cells (for the driver page)."""
    found = [NearestCarPark(park, geodesic_m(lat, lon, park.lat, park.lon), *index.count(park.id))
             for ring in range(max_rings + 1) for park in index.free_in_ring(lat, lon, ring)]
    return sorted(found, key=lambda c: c.distance_m)[:n]


def _cell(lat: float, lon: float) -> tuple[int, int]:
    return (math.floor(lat / CELL_DEG), math.floor(lon / CELL_DEG))


def _ring(cx: int, cy: int, r: int):
    if r == 0:
        yield (cx, cy)
        return
    for dx in range(-r, r + 1):
        yield (cx + dx, cy - r)
        yield (cx + dx, cy + r)
    for dy in range(-r + 1, r):
        yield (cx - r, cy + dy)
        yield (cx + r, cy + dy)


async def load_index(pool: asyncpg.Pool, index: CarParkIndex) -> None:
    """Refresh reference data and the counts other workers stored from their partitions."""
    rows = await pool.fetch(
        "SELECT p.*, s.free_spaces, s.reported_at FROM car_parks p LEFT JOIN car_park_status s ON s.car_park_id = p.id"
    )
    index.replace([CarPark(r["id"], r["name"], r["short_name"], r["lat"], r["lon"], r["capacity"], r["address"],
                           r["phone"]) for r in rows])
    for r in rows:
        if r["reported_at"] is not None:
            index.update_count(r["id"], r["free_spaces"], r["reported_at"])


async def store_count(pool_or_conn, car_park_id: str, free_spaces: int, reported_at: datetime) -> None:
    """Keep the newest count per car park (an older, late report does not overwrite it)."""
    await pool_or_conn.execute(
        """INSERT INTO car_park_status (car_park_id, free_spaces, reported_at) VALUES ($1, $2, $3)
           ON CONFLICT (car_park_id) DO UPDATE SET free_spaces = EXCLUDED.free_spaces, reported_at = EXCLUDED.reported_at
           WHERE car_park_status.reported_at <= EXCLUDED.reported_at""",
        car_park_id, free_spaces, reported_at,
    )
