"""What each kind of import is: its row model, its staging columns, and the SQL that applies a
staged file to its table (upsert, then for ``--snapshot`` what happens to rows absent from the file).

Snapshot semantics: plates absent from the file are retired (``retired_at``: kept for the record,
no longer used for decisions); contacts absent from it end now (``valid_to``; one that had not yet
started is deleted); car parks and zones absent from it are deleted (reference data without history:
a car park's live status goes with it; nothing checks that no registered camera still names a
deleted zone).

To add a kind or a format: a model in ``models.py``, a reader in ``formats.py`` and an entry here.
Zones as GeoJSON shapes and cameras, which place cameras by position, are imported through their own
code instead (``all_kinds.py``).
"""

from dataclasses import dataclass

from pydantic import BaseModel

from schemas.vehicles import DEFAULT_PLATE_TYPE
from pipeline.data.models import CarParkRow, ContactRow, PlateRow, ZoneRow


@dataclass(frozen=True)
class Kind:
    name: str
    model: type[BaseModel]
    table: str
    key: tuple[str, ...]
    stage_types: dict[str, str]
    """The staging table's columns (the model's fields, in order) and their SQL types."""
    formats: tuple[str, ...]
    upsert: str
    """SQL from ``{stage}`` (the whole file) into the table; returns one row (inserted, updated)."""
    snapshot: tuple[str, ...]
    """SQL statements for rows absent from ``{seen}`` (a view of the file's keys); each returns a row count in its status."""
    export: str
    """SELECT of the rows to export, with the model's fields as column names."""
    in_use: str = ""
    """SELECT count(*) of the rows a snapshot may retire or delete (those in use now): what ``--max-change``
    is a share of."""

    insert: str | None = None
    """Plain INSERT from ``{stage}`` for a large file into an empty table (whose indexes are then built
    once, at the end, instead of row by row); None: always ``upsert``."""

    seen_key: dict[str, str] | None = None
    """The key as it is stored (column -> expression over the staging table); default: the key columns."""

    @property
    def key_exprs(self) -> dict[str, str]:
        return self.seen_key or {k: k for k in self.key}

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.model.model_fields)


def _upsert(table: str, key: tuple[str, ...], columns: dict[str, str], extra_set: str = "") -> str:
    """INSERT ... SELECT FROM {stage} ON CONFLICT DO UPDATE (only rows that change), counting both.
    Rows already as the file has them are left out by a hash join first: an unchanged row costs a hash
    probe, not an index lookup, a row lock and a WAL record."""
    names = ", ".join(columns)
    values = ", ".join(f"{e} AS {c}" for c, e in columns.items())
    others = [c for c in columns if c not in key]
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in others) + extra_set
    changed = (f"({', '.join(f'{table}.{c}' for c in others)}) IS DISTINCT FROM "
               f"({', '.join(f'EXCLUDED.{c}' for c in others)})")
    same_key = " AND ".join(f"t.{k} = f.{k}" for k in key)
    differs = f"({', '.join(f't.{c}' for c in others)}) IS DISTINCT FROM ({', '.join(f'f.{c}' for c in others)})"
    return f"""WITH up AS (
        INSERT INTO {table} ({names})
        SELECT f.* FROM (SELECT {values} FROM {{stage}}) f LEFT JOIN {table} t ON {same_key}
         WHERE t.{key[0]} IS NULL OR {differs}
        ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets} WHERE {changed}
        RETURNING xmax = 0 AS inserted)
        SELECT count(*) FILTER (WHERE inserted) AS inserted, count(*) FILTER (WHERE NOT inserted) AS updated FROM up"""


def _insert(table: str, columns: dict[str, str]) -> str:
    """INSERT ... SELECT FROM {stage} into an empty table (no conflict possible, no index to consult)."""
    return f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(columns.values())} FROM {{stage}}"


_PLATE_TYPE = f"coalesce(nullif(plate_type, ''), '{DEFAULT_PLATE_TYPE}')"  # a CSV COPYed as it is: "" = not given
_PLATE_COLUMNS = {"plate": "plate", "plate_type": _PLATE_TYPE, "owner_id": "owner_id",
                  "vehicle_make": "nullif(vehicle_make, '')", "vehicle_colour": "nullif(vehicle_colour, '')",
                  "retired_at": "NULL::timestamptz"}

PLATES = Kind(
    name="plates", model=PlateRow, table="plate_registry", key=("plate", "plate_type"),
    stage_types={"plate": "text", "plate_type": "text", "owner_id": "text", "vehicle_make": "text",
                 "vehicle_colour": "text"},
    formats=("csv", "jsonl"),
    seen_key={"plate": "plate", "plate_type": _PLATE_TYPE},
    upsert=_upsert("plate_registry", ("plate", "plate_type"), _PLATE_COLUMNS),
    insert=_insert("plate_registry", _PLATE_COLUMNS),
    snapshot=("""UPDATE plate_registry p SET retired_at = now() WHERE p.retired_at IS NULL AND NOT EXISTS
                 (SELECT 1 FROM {seen} s WHERE s.plate = p.plate AND s.plate_type = p.plate_type)""",),
    export="""SELECT plate, plate_type, owner_id, vehicle_make, vehicle_colour FROM plate_registry
               WHERE retired_at IS NULL ORDER BY plate, plate_type""",
    in_use="SELECT count(*) FROM plate_registry WHERE retired_at IS NULL",
)

_CONTACT_COLUMNS = {"owner_id": "owner_id", "valid_from": "coalesce(valid_from, '-infinity')", "phone": "phone",
                    "valid_to": "valid_to", "owner_kind": "owner_kind", "contact_name": "contact_name",
                    "language": "language"}

CONTACTS = Kind(
    name="contacts", model=ContactRow, table="contact_registry", key=("owner_id", "valid_from"),
    stage_types={"owner_id": "text", "phone": "text", "valid_from": "timestamptz", "valid_to": "timestamptz",
                 "owner_kind": "text", "contact_name": "text", "language": "text", "sms_opt_out": "boolean"},
    formats=("csv", "jsonl"),
    seen_key={"owner_id": "owner_id", "valid_from": "coalesce(valid_from, '-infinity')"},
    upsert=_upsert("contact_registry", ("owner_id", "valid_from"), _CONTACT_COLUMNS),
    insert=_insert("contact_registry", _CONTACT_COLUMNS),
    snapshot=("""DELETE FROM contact_registry c WHERE c.valid_from >= now() AND NOT EXISTS
                 (SELECT 1 FROM {seen} s WHERE s.owner_id = c.owner_id AND s.valid_from = c.valid_from)""",
              """UPDATE contact_registry c SET valid_to = now() WHERE (c.valid_to IS NULL OR c.valid_to > now())
                 AND NOT EXISTS (SELECT 1 FROM {seen} s WHERE s.owner_id = c.owner_id AND s.valid_from = c.valid_from)"""),
    export="""SELECT c.owner_id, c.phone, nullif(c.valid_from, '-infinity') AS valid_from, c.valid_to, c.owner_kind,
                     c.contact_name, c.language, o.phone IS NOT NULL AS sms_opt_out
                FROM contact_registry c LEFT JOIN sms_opt_out o ON o.phone = c.phone
               ORDER BY c.owner_id, c.valid_from""",
    in_use="SELECT count(*) FROM contact_registry WHERE valid_to IS NULL OR valid_to > now()",
)

OPT_OUT = """INSERT INTO sms_opt_out (phone, source) SELECT DISTINCT phone, $1 FROM {stage} WHERE sms_opt_out
             ON CONFLICT (phone) DO NOTHING"""

CAR_PARKS = Kind(
    name="car-parks", model=CarParkRow, table="car_parks", key=("id",),
    stage_types={"id": "text", "name": "text", "short_name": "text", "lat": "double precision",
                 "lon": "double precision", "capacity": "integer", "address": "text", "phone": "text"},
    formats=("csv", "jsonl", "geojson", "fiware"),
    upsert=_upsert("car_parks", ("id",), {c: c for c in ("id", "name", "short_name", "lat", "lon", "capacity",
                                                          "address", "phone")}),
    snapshot=("DELETE FROM car_park_status WHERE car_park_id NOT IN (SELECT id FROM {seen})",
              "DELETE FROM car_parks WHERE id NOT IN (SELECT id FROM {seen})"),
    export="""SELECT p.id, p.name, p.short_name, p.lat, p.lon, p.capacity, p.address, p.phone, s.free_spaces,
                     s.reported_at
                FROM car_parks p LEFT JOIN car_park_status s ON s.car_park_id = p.id ORDER BY p.id""",
    in_use="SELECT count(*) FROM car_parks",
)

_ZONE_COLUMNS = {"id": "text", "name": "text", "window_seconds": "double precision", "exempt_reason": "text",
                 "exempt_from_hour": "integer", "exempt_until_hour": "integer", "first_offence_months": "integer",
                 "new_camera_days": "integer", "confirm_tickets": "boolean"}

ZONES = Kind(
    name="zones", model=ZoneRow, table="zones", key=("id",), stage_types=_ZONE_COLUMNS,
    formats=("csv", "jsonl"),
    upsert=_upsert("zones", ("id",), {c: c for c in _ZONE_COLUMNS}),
    snapshot=("DELETE FROM zones WHERE id NOT IN (SELECT id FROM {seen})",),
    export=f"SELECT {', '.join(_ZONE_COLUMNS)} FROM zones ORDER BY id",
    in_use="SELECT count(*) FROM zones",
)

KINDS: dict[str, Kind] = {k.name: k for k in (PLATES, CONTACTS, CAR_PARKS, ZONES)}
