"""The camera registry: which integrator owns which camera, where it stands, which zone it watches.

Provenance rests on it. An event is taken only from the integrator that owns its camera (over
HTTP its key, on Kafka the topic it was written to, ``camera-events.<integrator>``); its place,
zone and position are the camera's, never what the event says. The zone is found from the camera's
position when a zone's shape holds it (pipeline/lookups/zone_shapes.py); the operator's zone serves
for cameras outside every shape. Operators manage the registry
(`parkwarden cameras add|list|remove|import`, the console's Cameras page); every change is in
``audit_log``. A removed camera keeps its row (``removed_at``), so old sightings still say where
their camera stood; its events are refused like an unknown camera's.
"""

import csv
import io
import json
import re
from dataclasses import asdict, dataclass
from dataclasses import replace as replace_fields
from datetime import date, datetime

import asyncpg

from pipeline.lookups import zone_shapes

DIRECTIONS = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")
ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
ZONE_PATTERN = re.compile(r"[a-z0-9_-]{1,32}")
FIELDS = ("id", "integrator", "lat", "lon", "place", "zone", "direction", "commissioned_on")
"""The columns of an import file (CSV header, or the keys of each JSON line); direction may be empty, and
so may zone when a zone's shape holds the camera's position."""


class CameraProblem(ValueError):
    """A camera that cannot be registered as given: the message says which field and why."""


@dataclass(frozen=True)
class Camera:
    id: str
    integrator: str
    lat: float
    lon: float
    place: str
    zone: str
    direction: str | None
    commissioned_on: date

    def as_json(self) -> dict:
        return {**asdict(self), "commissioned_on": self.commissioned_on.isoformat()}


def camera(fields: dict) -> Camera:
    """A camera from loosely typed fields (a CSV row, a JSON object, a form), checked field by field."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise CameraProblem(f"unknown field(s) {', '.join(sorted(unknown))}: the fields are {', '.join(FIELDS)}")

    def text(name: str) -> str:
        value = fields.get(name)
        return "" if value is None else str(value).strip()

    camera_id, integrator, place, zone = text("id"), text("integrator"), text("place"), text("zone")
    if not ID_PATTERN.fullmatch(camera_id):
        raise CameraProblem("id: 1-64 letters, digits or . _ : - (the camera_id its events carry)")
    if not integrator:
        raise CameraProblem("integrator: the name of the integrator that owns the camera")
    if not 1 <= len(place) <= 64:
        raise CameraProblem("place: 1-64 characters, the street or landmark shown to drivers")
    if zone and not ZONE_PATTERN.fullmatch(zone):
        raise CameraProblem("zone: the zone's id, 1-32 of a-z 0-9 _ -, or empty (placed by its position)")
    try:
        lat, lon = float(text("lat")), float(text("lon"))
    except ValueError:
        raise CameraProblem("lat, lon: the camera's position in degrees, WGS-84") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise CameraProblem("lat, lon: out of range (-90..90, -180..180)")
    direction = text("direction").upper() or None
    if direction is not None and direction not in DIRECTIONS:
        raise CameraProblem(f"direction: one of {' '.join(DIRECTIONS)}, or empty")
    commissioned = fields.get("commissioned_on")
    if not isinstance(commissioned, date):
        try:
            commissioned = date.fromisoformat(text("commissioned_on"))
        except ValueError:
            raise CameraProblem("commissioned_on: a date, YYYY-MM-DD") from None
    return Camera(camera_id, integrator, lat, lon, place, zone, direction, commissioned)


def read_file(data: bytes) -> list[tuple[int, Camera | CameraProblem]]:
    """An import file: CSV with a header row (the ``FIELDS``), or JSON lines (one object per line).
    Every row is checked on its own: (line number, camera or its problem)."""
    text = data.decode("utf-8-sig")
    found: list[tuple[int, Camera | CameraProblem]] = []
    if text.lstrip().startswith("{"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                fields = json.loads(line)
                if not isinstance(fields, dict):
                    raise CameraProblem("each line must be a JSON object")
                found.append((number, camera(fields)))
            except ValueError as exc:
                found.append((number, exc if isinstance(exc, CameraProblem)
                              else CameraProblem(f"not JSON: {str(exc)[:200]}")))
            except RecursionError:
                found.append((number, CameraProblem("not JSON we read: nested too deeply")))
        return found
    rows = csv.DictReader(io.StringIO(text))
    try:
        header = rows.fieldnames
    except csv.Error as exc:
        raise CameraProblem(f"the header is not a CSV row: {exc}") from None
    if header is None or not {"id", "integrator"} <= {f.strip() for f in header}:
        raise CameraProblem(f"not a camera file: CSV with the header {','.join(FIELDS)}, or JSON lines")
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return found
        except csv.Error as exc:  # a field over csv.field_size_limit()
            found.append((rows.line_num, CameraProblem(f"not a CSV row: {exc}")))
            continue
        fields = {k.strip(): v for k, v in row.items() if k is not None}
        try:
            found.append((rows.line_num, camera(fields)))
        except CameraProblem as exc:
            found.append((rows.line_num, exc))


def refusal(found: Camera | None, camera_id: str, integrator: str) -> str | None:
    """Why ``integrator`` may not publish for ``camera_id`` (None: it may). Never names another owner."""
    if found is None:
        return (f"camera {camera_id!r} is not registered: ask the operator to register it "
                f"(`parkwarden cameras add`) before sending its events")
    if found.integrator != integrator:
        return f"camera {camera_id!r} is not registered to {integrator}: you may publish only for your own cameras"
    return None


# ── PostgreSQL ──────────────────────────────────────────────────────────────────────────────

COLUMNS = "id, integrator, lat, lon, place, zone, direction, commissioned_on"


def _camera(row) -> Camera:
    return Camera(row["id"], row["integrator"], row["lat"], row["lon"], row["place"], row["zone"], row["direction"],
                  row["commissioned_on"])


async def registered(conn, camera_id: str) -> Camera | None:
    """The camera as registered now (None: unknown or removed)."""
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM cameras WHERE id = $1 AND removed_at IS NULL", camera_id)
    return _camera(row) if row else None


async def for_event(conn, camera_id: str, integrator: str) -> tuple[Camera | None, str | None]:
    """The camera of an event that came from ``integrator``, or why the event is refused: the camera is
    unknown, removed or another integrator's (``refusal``), or the integrator is revoked (its events are
    refused from its revocation on, whenever they were sent: its Kafka login may outlive it)."""
    row = await conn.fetchrow(f"""SELECT i.revoked_at, {', '.join('c.' + c for c in COLUMNS.split(', '))}
                                  FROM (SELECT $2::text AS name) n LEFT JOIN integrators i USING (name)
                                  LEFT JOIN cameras c ON c.id = $1 AND c.removed_at IS NULL""", camera_id, integrator)
    if row["revoked_at"] is not None:
        return None, revoked_refusal(integrator, row["revoked_at"])
    found = _camera(row) if row["id"] is not None else None
    return found, refusal(found, camera_id, integrator)


def revoked_refusal(integrator: str, revoked_at) -> str:
    return f"integrator {integrator} was revoked on {revoked_at:%Y-%m-%d %H:%M:%S %Z}: its events are refused"


async def revoked_among(conn, integrators) -> dict:
    """The revoked integrators among ``integrators`` (None entries ignored), with when: one query."""
    names = sorted({name for name in integrators if name is not None})
    if not names:
        return {}
    rows = await conn.fetch("SELECT name, revoked_at FROM integrators WHERE name = ANY($1::text[]) "
                            "AND revoked_at IS NOT NULL", names)
    return {r["name"]: r["revoked_at"] for r in rows}


async def registered_many(conn, camera_ids: list[str]) -> dict[str, Camera]:
    """``registered`` for many cameras in one query: those registered now, by id."""
    rows = await conn.fetch(f"SELECT {COLUMNS} FROM cameras WHERE id = ANY($1::text[]) AND removed_at IS NULL",
                            list(set(camera_ids)))
    return {r["id"]: _camera(r) for r in rows}


async def owner(conn, camera_id: str) -> str | None:
    """The integrator a camera is (or was, if removed since) registered to; None if it never was."""
    return await conn.fetchval("SELECT integrator FROM cameras WHERE id = $1", camera_id)


async def commands_topic(conn, camera_commands: str, camera_id: str) -> str:
    """Where a request to ``camera_id`` goes: its integrator's ``camera-commands.<integrator>``
    (``camera_commands``, the bare topic, for a camera that was never registered)."""
    integrator = await owner(conn, camera_id)
    return camera_commands if integrator is None else f"{camera_commands}.{integrator}"


async def listing(conn, integrator: str | None = None) -> list[Camera]:
    rows = await conn.fetch(f"""SELECT {COLUMNS} FROM cameras WHERE removed_at IS NULL
                                AND ($1::text IS NULL OR integrator = $1) ORDER BY id""", integrator)
    return [_camera(r) for r in rows]


async def add(conn, cam: Camera, actor: str, replace: bool = False, reason: str = "") -> str:
    """Register a camera (or, with ``replace``, change a registered one); audited. Returns "added",
    "updated" or "unchanged". A removed camera's id may be registered again. Its zone is the one whose
    shape holds its position; ``cam.zone`` (may be empty) serves outside every shape, and a zone that the
    position contradicts is refused (``zone_shapes.place``)."""
    async with conn.transaction():
        if not await conn.fetchval("SELECT true FROM integrators WHERE name = $1", cam.integrator):
            raise CameraProblem(f"integrator: no integrator named {cam.integrator!r} (`parkwarden integrators add`)")
        before = await conn.fetchrow(f"SELECT {COLUMNS}, zone_given, removed_at FROM cameras WHERE id = $1 FOR UPDATE",
                                     cam.id)
        if before is not None and before["removed_at"] is None and not replace:
            raise CameraProblem(f"id: camera {cam.id!r} is registered already (to {before['integrator']}); "
                                "change it with --replace")
        given = cam.zone or None
        try:
            zone, by_position = await zone_shapes.zone_for(conn, cam.lat, cam.lon, given)
        except zone_shapes.ZoneProblem as exc:
            raise CameraProblem(str(exc)) from None
        cam = replace_fields(cam, zone=zone)
        if before is not None and before["removed_at"] is None and _camera(before) == cam \
                and before["zone_given"] == given:
            return "unchanged"
        await conn.execute(
            f"""INSERT INTO cameras ({COLUMNS}, zone_given, zone_by_position) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                ON CONFLICT (id) DO UPDATE SET integrator = excluded.integrator, lat = excluded.lat,
                  lon = excluded.lon, place = excluded.place, zone = excluded.zone, direction = excluded.direction,
                  commissioned_on = excluded.commissioned_on, zone_given = excluded.zone_given,
                  zone_by_position = excluded.zone_by_position, updated_at = now(), removed_at = NULL""",
            cam.id, cam.integrator, cam.lat, cam.lon, cam.place, cam.zone, cam.direction, cam.commissioned_on,
            given, by_position)
        done = "updated" if before is not None and before["removed_at"] is None else "added"
        detail = {"camera": cam.as_json(), "zone_given": given, "zone_by_position": by_position}
        if done == "updated":
            detail["before"] = _camera(before).as_json()
        if reason:
            detail["reason"] = reason
        await _audit(conn, actor, f"camera_{done}", detail)
        return done


async def remove(conn, camera_id: str, actor: str, reason: str = "") -> bool:
    """Remove a camera (its events are refused from now on); audited. False if none was registered."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"UPDATE cameras SET removed_at = now(), updated_at = now() WHERE id = $1 AND removed_at IS NULL "
            f"RETURNING {COLUMNS}", camera_id)
        if row is None:
            return False
        await _audit(conn, actor, "camera_removed", {"camera": _camera(row).as_json(), "reason": reason})
        return True


async def import_cameras(conn, cameras: list[Camera], actor: str) -> dict[str, int]:
    """Register or update every camera of an import, all or nothing; returns counts by outcome."""
    counts = {"added": 0, "updated": 0, "unchanged": 0}
    async with conn.transaction():
        for cam in cameras:
            counts[await add(conn, cam, actor, replace=True, reason="import")] += 1
    return counts


async def _audit(conn, actor: str, action: str, detail: dict) -> None:
    await conn.execute("INSERT INTO audit_log (at, case_id, actor, action, detail) VALUES (now(), NULL, $1, $2, $3)",
                       actor, action, detail)


async def ensure_integrator(conn, name: str) -> None:
    """An integrator named ``name`` exists (a publisher with a key nobody knows, if it had to be made):
    for reference data loaded with an owner, such as the demo city's cameras."""
    from pipeline.ingest import keys

    if not await conn.fetchval("SELECT true FROM integrators WHERE name = $1", name):
        try:
            await keys.add(conn, name, "publisher")
        except keys.IntegratorExists:
            pass


async def integrator_names(conn) -> list[str]:
    """Every integrator's name, revoked ones too (events they wrote before may still wait on Kafka)."""
    return [r["name"] for r in await conn.fetch("SELECT name FROM integrators ORDER BY name")]


# ── in memory, for the HTTP ingest ─────────────────────────────────────────────────────────


class Registry:
    """The cameras and car-park owners as a worker last read them (``load``, every few seconds), so
    that the HTTP ingest checks ownership without asking PostgreSQL, also while it is away."""

    def __init__(self):
        self.cameras: dict[str, Camera] = {}
        self.car_park_owners: dict[str, str | None] = {}
        self.loaded_at: datetime | None = None

    async def load(self, pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn:
            cameras = await listing(conn)
            owners = await conn.fetch("SELECT id, integrator FROM car_parks")
        self.cameras = {c.id: c for c in cameras}
        self.car_park_owners = {r["id"]: r["integrator"] for r in owners}

    async def reread(self, conn, camera_ids: list[str], car_park_ids: list[str]) -> None:
        """Read these entries again now (before refusing on what may be a few seconds old)."""
        cameras = await conn.fetch(f"SELECT {COLUMNS} FROM cameras WHERE id = ANY($1) AND removed_at IS NULL",
                                   camera_ids)
        owners = await conn.fetch("SELECT id, integrator FROM car_parks WHERE id = ANY($1)", car_park_ids)
        for camera_id in camera_ids:
            self.cameras.pop(camera_id, None)
        self.cameras.update({r["id"]: _camera(r) for r in cameras})
        self.car_park_owners.update({r["id"]: r["integrator"] for r in owners})

    def camera_refusal(self, camera_id: str, integrator: str) -> str | None:
        return refusal(self.cameras.get(camera_id), camera_id, integrator)

    def car_park_refusal(self, car_park_id: str, integrator: str) -> str | None:
        """Counts of a car park with an owner come only from it; unowned (and unknown) car parks take
        any publisher's (an unknown one becomes a dead letter in the pipeline, as before)."""
        owner = self.car_park_owners.get(car_park_id)
        if owner is not None and owner != integrator:
            return f"car park {car_park_id!r} is not registered to {integrator}: you may report only your own car parks"
        return None
