"""Where each kind of reference data lives in PostgreSQL, and how a source database's columns map to ours.

One place to change when a table grows columns: ``KINDS`` says, per kind, its topic, its message
model, its key fields and the SQL that writes and removes a row; ``Columns`` maps a source table's
column names (what a Debezium change event carries) to the model's fields. The default mapping is the
identity: a source table with our own column names needs no setting.

``PW_REFERENCE_COLUMNS`` (JSON) renames per kind, ``{kind: {our field: source column}}``; e.g. the
traffic police's ``vehicle(hphm, hpzl, sfzmhm, ...)`` table::

    PW_REFERENCE_COLUMNS='{"plates": {"plate": "hphm", "plate_type": "hpzl", "owner_id": "sfzmhm"}}'

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
    key: tuple[str, ...]
    """The model's fields that make the row's id (and the Kafka key): ("plate", "plate_type") for a plate's
    registration, one field for the others."""
    upsert: Callable[..., Awaitable[None]]
    """``upsert(conn, record)``: the row as the record says, inserted or replaced."""
    delete: Callable[..., Awaitable[None]]
    """``delete(conn, key)``: the row the key (a tuple of ``key``'s values) names removed (nothing happens
    if there is none): a plate's registration retired, an owner's contact ended, a car park deleted, a
    camera removed."""


async def _upsert_plate(conn, r: reference.PlateRecord) -> None:
    """The registration (plate, plate_type) as the record says, in use again if it was retired."""
    await conn.execute(
        """INSERT INTO plate_registry (plate, plate_type, owner_id, vehicle_type, vehicle_make, vehicle_colour)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (plate, plate_type) DO UPDATE SET owner_id = excluded.owner_id,
             vehicle_type = excluded.vehicle_type, vehicle_make = excluded.vehicle_make,
             vehicle_colour = excluded.vehicle_colour, retired_at = NULL""",
        r.plate, r.plate_type, r.owner_id, r.vehicle_type, r.vehicle_make, r.vehicle_colour)


async def _retire_plate(conn, key: tuple[str, str]) -> None:
    """Retired, not deleted: the row stays for the cases and tickets already issued under it (which owner
    was warned, whom an appeal decision goes to), and the owner lookup no longer uses it."""
    await conn.execute("UPDATE plate_registry SET retired_at = now() WHERE plate = $1 AND plate_type = $2 "
                       "AND retired_at IS NULL", *key)


_CURRENT_CONTACT = """SELECT valid_from, phone, valid_from = now() AS started_now FROM contact_registry
                       WHERE owner_id = $1 AND valid_from <= now() AND (valid_to IS NULL OR valid_to > now())
                       ORDER BY valid_from DESC LIMIT 1 FOR UPDATE"""
"""The owner's contact valid now (the one the owner lookup takes). ``started_now``: begun in this
very transaction (an earlier message of the same batch), so never seen by anyone."""


async def _upsert_contact(conn, r: reference.ContactRecord) -> None:
    """From now on, the owner's phone is ``r.phone``: the contact valid now keeps its row when it has
    that phone (its language, kind and name updated); otherwise it ends now and a new one starts now,
    so the contact registry says which phone was the owner's when each SMS was sent. ``sms_opt_out``
    adds the phone to the opt-out list, never removes it. Times are PostgreSQL's ``now()``."""
    current = await conn.fetchrow(_CURRENT_CONTACT, r.owner_id)
    if current is not None and (current["phone"] == r.phone or current["started_now"]):
        await conn.execute("""UPDATE contact_registry SET phone = $3, language = $4, owner_kind = $5, contact_name = $6
                               WHERE owner_id = $1 AND valid_from = $2""",
                           r.owner_id, current["valid_from"], r.phone, r.language, r.owner_kind, r.contact_name)
    else:
        await _end(conn, r.owner_id, current)
        await conn.execute("""INSERT INTO contact_registry (owner_id, valid_from, phone, language, owner_kind,
                                                            contact_name)
                              VALUES ($1, now(), $2, $3, $4, $5)""",
                           r.owner_id, r.phone, r.language, r.owner_kind, r.contact_name)
    if r.sms_opt_out:
        await conn.execute("INSERT INTO sms_opt_out (phone, source) VALUES ($1, 'feed') ON CONFLICT (phone) DO NOTHING",
                           r.phone)


async def _end_contact(conn, key: tuple[str]) -> None:
    """The owner's contact valid now ends now (kept for the record): the owner has none from now on."""
    await _end(conn, key[0], await conn.fetchrow(_CURRENT_CONTACT, *key))


async def _end(conn, owner_id: str, current) -> None:
    """End ``current`` (a row of ``_CURRENT_CONTACT``) now; one begun in this same transaction is deleted
    (it would end as it starts)."""
    if current is None:
        return
    if current["started_now"]:
        await conn.execute("DELETE FROM contact_registry WHERE owner_id = $1 AND valid_from = $2",
                           owner_id, current["valid_from"])
    else:
        await conn.execute("UPDATE contact_registry SET valid_to = now() WHERE owner_id = $1 AND valid_from = $2",
                           owner_id, current["valid_from"])


async def _upsert_car_park(conn, r: reference.CarParkRecord) -> None:
    await conn.execute(
        """INSERT INTO car_parks (id, name, short_name, lat, lon, capacity, integrator)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (id) DO UPDATE SET name = excluded.name, short_name = excluded.short_name, lat = excluded.lat,
             lon = excluded.lon, capacity = excluded.capacity, integrator = excluded.integrator""",
        r.id, r.name, r.short_name, r.lat, r.lon, r.capacity, r.integrator)


async def _delete_car_park(conn, key: tuple[str]) -> None:
    await conn.execute("DELETE FROM car_park_status WHERE car_park_id = $1", *key)
    await conn.execute("DELETE FROM car_parks WHERE id = $1", *key)


async def _upsert_camera(conn, r: reference.CameraRecord) -> None:
    camera = registry.Camera(r.id, r.integrator, r.lat, r.lon, r.place, r.zone, r.direction, r.commissioned_on)
    if await registry.registered(conn, r.id) != camera:
        await registry.add(conn, camera, REFERENCE_ACTOR, replace=True, reason="reference feed")


async def _delete_camera(conn, key: tuple[str]) -> None:
    """A camera is removed, not deleted: its row stays for the sightings it made (see the registry)."""
    await registry.remove(conn, key[0], REFERENCE_ACTOR, reason="reference feed: tombstone or delete")


KINDS = (
    Kind("plates", topics.PLATES, reference.PlateRecord, ("plate", "plate_type"), _upsert_plate, _retire_plate),
    Kind("contacts", topics.CONTACTS, reference.ContactRecord, ("owner_id",), _upsert_contact, _end_contact),
    Kind("car-parks", topics.CAR_PARKS, reference.CarParkRecord, ("id",), _upsert_car_park, _delete_car_park),
    Kind("cameras", topics.CAMERAS, reference.CameraRecord, ("id",), _upsert_camera, _delete_camera),
)
BY_NAME = {k.name: k for k in KINDS}


async def plates_of(conn, kind: Kind, key: tuple[str, ...]) -> list[str]:
    """The plate numbers whose owner lookup a change of this row may change (for the owner cache, which
    is kept per number): a registration's number; every number registered to a contact's owner."""
    if kind.name == "plates":
        return [key[0]]
    if kind.name == "contacts":
        return [r["plate"] for r in await conn.fetch(
            "SELECT DISTINCT plate FROM plate_registry WHERE owner_id = $1 ORDER BY plate", *key)]
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
