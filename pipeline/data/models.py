"""One pydantic model per kind of row a city imports: a plate, a contact, a car park, a zone.

Each model's fields, in order, are the columns of its CSV files (and the keys of its JSON lines);
a value left empty means "not given" (the default). Dates without a time are midnight in the city's
time zone (``PW_TIMEZONE``, passed as the validation context ``tz``).
"""

from datetime import date, datetime, time
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from pydantic import (AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints,
                      ValidationInfo, field_validator, model_validator)

from schemas.vehicles import DEFAULT_PLATE_TYPE, PLATE_TYPES, VEHICLE_COLOURS
from schemas.plates import NEW_ENERGY, STANDARD, checked_plate

PHONE_PATTERN = r"^\+?[0-9]{6,15}$"


def _plate(value: object) -> object:
    if not isinstance(value, str):
        return value
    if STANDARD.fullmatch(value) or NEW_ENERGY.fullmatch(value):
        return value  # already normalized (most rows of a registry's export): skip the work
    return checked_plate(value)


def _city_time(value: object, info: ValidationInfo) -> object:
    """A bare date (2026-01-31) is the start of that day in the city's time zone."""
    if isinstance(value, str) and len(value.strip()) == 10:
        try:
            day = date.fromisoformat(value.strip())
        except ValueError:
            return value
        return datetime.combine(day, time(), (info.context or {}).get("tz") or ZoneInfo("Asia/Shanghai"))
    return value


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Plate = Annotated[str, BeforeValidator(_plate)]
PlateTypeCode = Literal[tuple(PLATE_TYPES)]  # type: ignore[valid-type]
VehicleColourCode = Literal[tuple(VEHICLE_COLOURS)]  # type: ignore[valid-type]
Phone = Annotated[str, StringConstraints(strip_whitespace=True, pattern=PHONE_PATTERN)]
CityTime = Annotated[AwareDatetime, BeforeValidator(_city_time)]
ZoneId = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[a-z0-9_-]{1,32}$")]


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlateRow(Row):
    """A plate registered under a plate type to an owner (GA 24.7 type code, GA 24.8 colour letter)."""

    plate: Plate
    plate_type: PlateTypeCode = DEFAULT_PLATE_TYPE
    owner_id: Id
    vehicle_make: Text | None = None
    vehicle_colour: VehicleColourCode | None = None


_STANDARD, _NEW_ENERGY = STANDARD.fullmatch, NEW_ENERGY.fullmatch


def plate_values(plate: str, plate_type: str, owner_id: str, vehicle_make: str, vehicle_colour: str) -> tuple | None:
    """A plates import's hot path: a CSV row's values ("" = not given) as ``PlateRow`` would validate
    them, in its field order, or None when the row needs the model (to normalize it or say what is wrong).
    A plain check per field, about ten times cheaper than building the model."""
    if not (_STANDARD(plate) or _NEW_ENERGY(plate)):
        return None
    if not plate_type:
        plate_type = DEFAULT_PLATE_TYPE
    elif plate_type not in PLATE_TYPES:
        return None
    if not 0 < len(owner_id) <= 64 or owner_id != owner_id.strip():
        return None
    if vehicle_make and (len(vehicle_make) > 200 or vehicle_make != vehicle_make.strip()):
        return None
    if vehicle_colour and vehicle_colour not in VEHICLE_COLOURS:
        return None
    return plate, plate_type, owner_id, vehicle_make or None, vehicle_colour or None


class ContactRow(Row):
    """An owner's phone, valid from ``valid_from`` (empty: always was) until ``valid_to`` (empty: still is).
    A fleet or a company names its one designated contact (``contact_name``). ``sms_opt_out``: true puts
    the phone on the opt-out list (an import never takes a phone off it: only its holder can)."""

    owner_id: Id
    phone: Phone
    valid_from: CityTime | None = None
    valid_to: CityTime | None = None
    owner_kind: Literal["person", "fleet", "company"] = "person"
    contact_name: Text | None = Field(default=None, validate_default=True)
    language: Literal["zh", "en"] | None = None
    """The owner's SMS language; none: the city's (PW_SMS_LANGUAGE)."""
    sms_opt_out: bool = False

    @field_validator("valid_to")
    @classmethod
    def _after_valid_from(cls, value, info: ValidationInfo):
        start = info.data.get("valid_from")
        if value is not None and start is not None and value <= start:
            raise ValueError("valid_to must be after valid_from")
        return value

    @field_validator("contact_name")
    @classmethod
    def _designated(cls, value, info: ValidationInfo):
        if value is None and info.data.get("owner_kind") in ("fleet", "company"):
            raise ValueError("a fleet or company needs its designated contact's name")
        return value


class CarParkRow(Row):
    """A car park: where it is and how many spaces it has (its free spaces come live, from Kafka)."""

    id: Id
    name: Text
    short_name: Text | None = Field(default=None, validate_default=True)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    capacity: int = Field(ge=0, le=100_000)
    address: Text | None = None
    phone: str | None = Field(default=None, pattern=r"^\+?[0-9][0-9 -]{2,23}$")
    """The car park's own (business) phone, shown to drivers as a ``tel:`` link."""

    @field_validator("short_name")
    @classmethod
    def _defaults_to_name(cls, value, info: ValidationInfo):
        return value if value is not None else info.data.get("name")


class ZoneRow(Row):
    """A no-parking zone and its own rules (empty: the city's defaults)."""

    id: ZoneId
    name: Text
    window_seconds: float | None = Field(default=None, gt=0, le=86_400)
    exempt_reason: Text | None = None
    exempt_from_hour: int | None = Field(default=None, ge=0, le=23)
    exempt_until_hour: int | None = Field(default=None, ge=0, le=24)
    first_offence_months: int | None = Field(default=None, ge=0, le=1_200)
    new_camera_days: int | None = Field(default=None, ge=0, le=36_500)
    confirm_tickets: bool | None = None

    @model_validator(mode="after")
    def _hours_in_pairs(self):
        if (self.exempt_from_hour is None) != (self.exempt_until_hour is None):
            raise ValueError("exempt_from_hour and exempt_until_hour go together (both or neither)")
        if self.exempt_from_hour is not None and self.exempt_reason is None:
            raise ValueError("exempt hours need an exempt_reason")
        return self
