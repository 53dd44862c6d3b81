"""Reference data in parkwarden's own JSON format: one row of a registry, a car park or a camera.

Each kind has its compacted topic (``schemas.topics``: ``reference.plates``, ``reference.contacts``,
``reference.car-parks``, ``reference.cameras``), keyed by the row's id; a message is the row as it is
now, a tombstone (no value) deletes it. The same topics also take Debezium change events from the
owner's database (``pipeline.reference.decode``); both are validated with the models below.
"""

from datetime import date
from typing import Annotated, Literal

from pydantic import Field, field_validator

from schemas.events import SCHEMA_VERSION, Message
from schemas.plates import normalize_plate, plate_problem

OwnerId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:@-]+$",
                               description="The owner's id in the plate registry (a person's or a company's), "
                                           "as the contact registry knows it.")]


class PlateRecord(Message):
    """A plate in the traffic police's registry and its registered owner. Key: the normalized plate."""

    type: Literal["PlateRecord"] = "PlateRecord"
    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="The contract's major version.")
    plate: str = Field(description="Licence plate; normalized on arrival (浙A·12345 -> 浙A12345).")
    owner_id: OwnerId
    vehicle_type: str = Field(default="car", min_length=1, max_length=32,
                              description="What kind of vehicle (car, truck, ...).")

    @field_validator("plate", mode="before")
    @classmethod
    def _normalized_valid_plate(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        plate = normalize_plate(value)
        problem = plate_problem(plate)
        if problem:
            raise ValueError(problem)
        return plate


class ContactRecord(Message):
    """An owner's phone number from the telecom operators' records. Key: the owner id."""

    type: Literal["ContactRecord"] = "ContactRecord"
    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="The contract's major version.")
    owner_id: OwnerId
    phone: str = Field(pattern=r"^\+?[0-9]{6,15}$", description="The number warnings are sent to, digits only.")


class CarParkRecord(Message):
    """A car park where drivers are sent (not its live count: that is ``CarParkStatus``). Key: its id."""

    type: Literal["CarParkRecord"] = "CarParkRecord"
    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="The contract's major version.")
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$",
                    description="The car park's id, as its CarParkStatus messages carry it.")
    name: str = Field(min_length=1, max_length=64, description="Its full name.")
    short_name: str = Field(min_length=1, max_length=16, description="The name an SMS shows (a few characters).")
    lat: float = Field(ge=-90, le=90, description="Latitude, WGS-84.")
    lon: float = Field(ge=-180, le=180, description="Longitude, WGS-84.")
    capacity: int = Field(ge=0, le=100_000, description="Spaces in all.")
    integrator: str | None = Field(default=None, min_length=1, max_length=64,
                                   description="The integrator whose counts alone are taken for it (none: any).")


class CameraRecord(Message):
    """A camera in the camera registry: who owns it, where it stands, which zone it watches. Key: its id."""

    type: Literal["CameraRecord"] = "CameraRecord"
    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="The contract's major version.")
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$",
                    description="The camera_id its events carry.")
    integrator: str = Field(min_length=1, max_length=64, description="The integrator that owns it (registered).")
    lat: float = Field(ge=-90, le=90, description="Latitude, WGS-84.")
    lon: float = Field(ge=-180, le=180, description="Longitude, WGS-84.")
    place: str = Field(min_length=1, max_length=64, description="The street or landmark shown to drivers.")
    zone: str = Field(pattern=r"^[a-z0-9_-]{1,32}$", description="The zone it watches.")
    direction: Literal["N", "NE", "E", "SE", "S", "SW", "W", "NW"] | None = Field(
        default=None, description="Which way it looks.")
    commissioned_on: date = Field(description="The day it went into service (YYYY-MM-DD).")
