"""Where each kind of reference data lives in PostgreSQL, and how a source database's columns map to ours.

One place to change when a table grows columns (the registries' plate type, contacts' validity):
``KINDS`` says, per kind, its topic, its message model, its key field and the SQL that writes and
deletes a row; ``Columns`` maps a source table's column names (what a Debezium change event
carries) to the model's fields. The default mapping is the identity: a source table with our own
column names needs no setting.

``PW_REFERENCE_COLUMNS`` (JSON) renames per kind, ``{kind: {our field: source column}}``; e.g. the
traffic police's ``vehicle(hphm, sfzmhm, ...)`` table::

    PW_REFERENCE_COLUMNS='{"plates": {"plate": "hphm", "owner_id": "sfzmhm"}}'

Fields not named keep their own name; source columns not mapped are ignored.
"""

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import BaseModel

from pipeline.cameras import registry
from schemas import reference, topics

REFERENCE_ACTOR = "feed:reference"
"""Who the audit log names for a camera changed by the reference feed."""


@dataclass(frozen=True)
class Kind:
    name: str
    """The name in PW_REFERENCE_COLUMNS and in messages about it: plates, contacts, car-parks, cameras."""
    topic: topics.Topic
    model: type[BaseModel]
    key: str
    """The model's field that is the row's id (and the Kafka key)."""
    upsert: Callable[..., Awaitable[None]]
    """``upsert(conn, record)``: the row as the record says, inserted or replaced."""
    delete: Callable[..., Awaitable[None]]
    """``delete(conn, key)``: the row gone (nothing happens if there is none)."""


async def _upsert_plate(conn, r: reference.PlateRecord) -> None:
    await conn.execute("""INSERT INTO plate_registry (plate, owner_id, vehicle_type) VALUES ($1, $2, $3)
                          ON CONFLICT (plate) DO UPDATE SET owner_id = excluded.owner_id,
                            vehicle_type = excluded.vehicle_type""", r.plate, r.owner_id, r.vehicle_type)


async def _delete_plate(conn, plate: str) -> None:
    await conn.execute("DELETE FROM plate_registry WHERE plate = $1", plate)


async def _upsert_contact(conn, r: reference.ContactRecord) -> None:
    await conn.execute("""INSERT INTO contact_registry (owner_id, phone) VALUES ($1, $2)
                          ON CONFLICT (owner_id) DO UPDATE SET phone = excluded.phone""", r.owner_id, r.phone)


async def _delete_contact(conn, owner_id: str) -> None:
    await conn.execute("DELETE FROM contact_registry WHERE owner_id = $1", owner_id)


async def _upsert_car_park(conn, r: reference.CarParkRecord) -> None:
    await conn.execute(
        """INSERT INTO car_parks (id, name, short_name, lat, lon, capacity, integrator)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (id) DO UPDATE SET name = excluded.name, short_name = excluded.short_name, lat = excluded.lat,
             lon = excluded.lon, capacity = excluded.capacity, integrator = excluded.integrator""",
        r.id, r.name, r.short_name, r.lat, r.lon, r.capacity, r.integrator)


async def _delete_car_park(conn, car_park_id: str) -> None:
    await conn.execute("DELETE FROM car_park_status WHERE car_park_id = $1", car_park_id)
    await conn.execute("DELETE FROM car_parks WHERE id = $1", car_park_id)


async def _upsert_camera(conn, r: reference.CameraRecord) -> None:
    camera = registry.Camera(r.id, r.integrator, r.lat, r.lon, r.place, r.zone, r.direction, r.commissioned_on)
    if await registry.registered(conn, r.id) != camera:
        await registry.add(conn, camera, REFERENCE_ACTOR, replace=True, reason="reference feed")


async def _delete_camera(conn, camera_id: str) -> None:
    """A camera is removed, not deleted: its row stays for the sightings it made (see the registry)."""
    await registry.remove(conn, camera_id, REFERENCE_ACTOR, reason="reference feed: tombstone or delete")


KINDS = (
    Kind("plates", topics.PLATES, reference.PlateRecord, "plate", _upsert_plate, _delete_plate),
    Kind("contacts", topics.CONTACTS, reference.ContactRecord, "owner_id", _upsert_contact, _delete_contact),
    Kind("car-parks", topics.CAR_PARKS, reference.CarParkRecord, "id", _upsert_car_park, _delete_car_park),
    Kind("cameras", topics.CAMERAS, reference.CameraRecord, "id", _upsert_camera, _delete_camera),
)
BY_NAME = {k.name: k for k in KINDS}


async def plates_of(conn, kind: Kind, key: str) -> list[str]:
    """The plates whose owner lookup a change of this row may change (for the owner cache)."""
    if kind.name == "plates":
        return [key]
    if kind.name == "contacts":
        return [r["plate"] for r in await conn.fetch("SELECT plate FROM plate_registry WHERE owner_id = $1", key)]
    return []


class Columns:
    """Source column names per kind: ``source(kind, field)`` is the column a change event carries for
    our ``field``. Built from PW_REFERENCE_COLUMNS; unknown kinds or fields are refused at start."""

    def __init__(self, renames: dict[str, dict[str, str]] | None = None):
        renames = renames or {}
        for kind, fields in renames.items():
            if kind not in BY_NAME:
                raise ValueError(f"PW_REFERENCE_COLUMNS: unknown kind {kind!r}: the kinds are {', '.join(BY_NAME)}")
            known = set(BY_NAME[kind].model.model_fields) - {"type", "schema_version"}
            if not isinstance(fields, dict) or set(fields) - known:
                raise ValueError(f"PW_REFERENCE_COLUMNS[{kind!r}]: map our fields ({', '.join(sorted(known))}) "
                                 "to the source table's column names")
        self.renames = renames

    @classmethod
    def parse(cls, text: str) -> "Columns":
        try:
            return cls(json.loads(text) if text.strip() else {})
        except json.JSONDecodeError as exc:
            raise ValueError(f"PW_REFERENCE_COLUMNS is not JSON: {exc}") from None

    def source(self, kind: Kind, field: str) -> str:
        return self.renames.get(kind.name, {}).get(field, field)

    def fields(self, kind: Kind) -> dict[str, str]:
        """Our field -> source column, for every field a source row may carry."""
        return {f: self.source(kind, f) for f in kind.model.model_fields if f not in ("type", "schema_version")}
