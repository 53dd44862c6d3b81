"""Reference data in parkwarden's own JSON format: one row of a registry, a car park or a camera.

Each kind has its compacted topic (``schemas.topics``: ``reference.plates``, ``reference.contacts``,
``reference.car-parks``, ``reference.cameras``), keyed by the row's id; a message is the row as it is
now, a tombstone (no value) removes it (a plate's registration is retired, an owner's contact ends).
The same topics also take Debezium change events from the owner's database
(``pipeline.reference.decode``); both are validated with the models below.
"""

from datetime import date
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from schemas.events import SCHEMA_VERSION, Message
from schemas.plates import checked_plate
from schemas.vehicles import DEFAULT_PLATE_TYPE, PLATE_TYPES, VEHICLE_COLOURS, plate_type_problem

OwnerId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:@-]+$",
                               description="The owner's id in the plate registry (a person's or a company's), "
                                           "as the contact registry knows it.")]
PLATE_TYPE_SEPARATOR = "/"
"""In a text key of ``reference.plates``: ``浙A12345/01`` is plate 浙A12345 of type 01 (``浙A12345``: type 02)."""


class PlateRecord(Message):
    """A registration in the traffic police's registry: a plate number under a plate type, and its owner.
    Key: the normalized plate, followed by ``/`` and the plate type unless it is 02 (``浙A12345``,
    ``浙A12345/01``)."""

    type: Literal["PlateRecord"] = "PlateRecord"
    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="The contract's major version.")
    plate: str = Field(description="Licence plate; normalized on arrival (浙A·12345 -> 浙A12345).")
    plate_type: Literal[tuple(PLATE_TYPES)] = Field(  # type: ignore[valid-type]
        default=DEFAULT_PLATE_TYPE,
        description="The plate type (号牌种类), GA 24.7 two-digit code: 02 small car (blue), 01 large vehicle "
                    "(yellow), 52 small new-energy car (green), ... The same number may be registered under two "
                    "types: each (plate, plate_type) is its own registration.")
    owner_id: OwnerId
    vehicle_type: str = Field(default="car", min_length=1, max_length=32,
                              description="What kind of vehicle (car, truck, ...).")
    vehicle_make: str | None = Field(default=None, min_length=1, max_length=200,
                                     description="The vehicle's make (品牌), e.g. 大众.")
    vehicle_colour: Literal[tuple(VEHICLE_COLOURS)] | None = Field(  # type: ignore[valid-type]
        default=None,
        description="The vehicle's body colour (车身颜色), GA 24.8 letter: A white, B grey, C yellow, D pink, E red, "
                    "F purple, G green, H blue, I brown, J black, Z other. A camera reading another colour sends "
                    "the case to an officer.")

    @field_validator("plate_type", mode="before")
    @classmethod
    def _known_plate_type(cls, value: object) -> object:
        if isinstance(value, str) and (problem := plate_type_problem(value)):
            raise ValueError(problem)
        return value

    @field_validator("plate", mode="before")
    @classmethod
    def _normalized_valid_plate(cls, value: object) -> object:
        return checked_plate(value)


class ContactRecord(Message):
    """An owner's contact from the telecom operators' records, from now on. Key: the owner id.

    A fleet or a company is reached through one designated contact (``contact_name``, required for them,
    as in ``parkwarden data import``)."""

    type: Literal["ContactRecord"] = "ContactRecord"
    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="The contract's major version.")
    owner_id: OwnerId
    phone: str = Field(pattern=r"^\+?[0-9]{6,15}$", description="The number warnings are sent to, digits only.")
    language: Literal["zh", "en"] | None = Field(
        default=None, description="The language of the SMS sent to this contact; none: the city's.")
    owner_kind: Literal["person", "fleet", "company"] = Field(default="person", description="Who the owner is.")
    contact_name: str | None = Field(
        default=None, min_length=1, max_length=200, validate_default=True,
        description="The designated contact's name: required for a fleet or a company.")
    sms_opt_out: bool = Field(
        default=False, description="true: the phone's holder asked for no SMS; it is added to the opt-out list "
                                   "(false never removes a phone from it: only its holder can).")

    @field_validator("contact_name")
    @classmethod
    def _designated(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("owner_kind") in ("fleet", "company"):
            raise ValueError("a fleet or company needs its designated contact's name")
        return value


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
