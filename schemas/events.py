"""The wire contract: every message parkwarden reads or writes on Kafka.

Inputs come from cameras (``ViolationDetected``, ``VehicleObserved``, ``VehicleDeparted``, one
``CameraEvent`` union discriminated by ``type``) and from car-park systems (``CarParkStatus``).
Outputs are what parkwarden decided (``CaseOpened``, ``WarningSent``, ``WarningDelivered``, ``SmsSent``, ``TicketIssued``,
``TicketVoided``, ``AppealDecided``, ``CaseClosed``), what it asks of cameras (``RecheckRequested``) and what it could not read
(``DeadLetter``).

Rules shared by all messages: timestamps are timezone-aware ISO-8601; coordinates are WGS-84;
plates are normalized (see ``schemas.plates``); unknown fields are refused so that a typo is an
error, not a silently missing value.
"""

import base64
import re
from datetime import datetime
from typing import Annotated, Literal, Union

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.datum import gcj02_to_wgs84, in_china
from schemas.plates import checked_plate
from schemas.vehicles import PLATE_COLOURS, PLATE_TYPES, plate_types_of_colour

SCHEMA_VERSION = 1

EventId = Annotated[
    str,
    Field(
        min_length=8,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        description="Unique per event and stable across retries: the key that makes replays harmless.",
        examples=["cam-0042:20261126T104200Z:0001"],
    ),
]
CameraId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$",
                                description="The camera's id, as registered with the city; recheck "
                                            "requests come back keyed by it.")]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Location(Message):
    """A position. WGS-84 (what GPS reports) unless 'datum' says 'gcj02' (what Chinese map SDKs such
    as AMap/Gaode or Tencent show): a GCJ-02 position is converted to WGS-84 on arrival, so every
    validated Location is WGS-84 ('datum' = 'wgs84'). BD-09 (Baidu) is not accepted."""

    lat: float = Field(ge=-90, le=90, description="Latitude in degrees (WGS-84 unless datum is gcj02).")
    lon: float = Field(ge=-180, le=180, description="Longitude in degrees (WGS-84 unless datum is gcj02).")
    datum: Literal["wgs84", "gcj02"] = Field(
        default="wgs84",
        description="The datum of lat/lon. gcj02 is converted to WGS-84 on arrival; parkwarden only "
                    "ever writes wgs84. Convert BD-09 (Baidu) coordinates to GCJ-02 or WGS-84 first.")

    @model_validator(mode="wrap")
    @classmethod
    def _to_wgs84(cls, data: object, handler):
        location = handler(data)
        if location.datum == "wgs84":
            return location
        if not in_china(location.lat, location.lon):
            raise ValueError("GCJ-02 is only defined inside China: send these coordinates as WGS-84 "
                             "(datum 'wgs84' or no datum)")
        lat, lon = gcj02_to_wgs84(location.lat, location.lon)
        return handler({"lat": lat, "lon": lon, "datum": "wgs84"})


EVIDENCE_URL_SCHEMES = frozenset({"https"})
"""The schemes an evidence URL may have unless the operator allows others: validation with
``context=validation_context(schemes)`` (the worker passes ``PW_EVIDENCE_URL_SCHEMES``) replaces them."""

_ABSOLUTE_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://\S+")
NEVER_EVIDENCE_SCHEMES = frozenset({"javascript", "vbscript", "data", "file"})
"""Schemes that run or read something where the link is opened: refused whatever the operator allows."""


def validation_context(evidence_url_schemes) -> dict:
    """The pydantic validation context under which evidence URLs may have these schemes."""
    return {"evidence_url_schemes": frozenset(evidence_url_schemes) - NEVER_EVIDENCE_SCHEMES}


class Evidence(Message):
    """Where the capture's image lives; parkwarden stores the reference, not the image."""

    image_url: str = Field(
        min_length=1, max_length=2048,
        # The published schema states the default (https only); the operator may allow more schemes.
        json_schema_extra={"pattern": r"^https://\S+$"},
        description="Absolute https:// URL of the capture's image, fetchable by parkwarden's operators for "
                    "as long as a ticket may be appealed. Other schemes (e.g. your object store's s3://) only "
                    "where the operator allows them; javascript:, data:, file: and vbscript: never.",
        examples=["https://evidence.example.com/cam-wenyi-01/20261126T104200.jpg"])
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$",
                               description="SHA-256 of the image bytes, lower-case hex: proves the image "
                                           "was not changed after the capture.")

    @field_validator("image_url")
    @classmethod
    def _allowed_scheme(cls, url: str, info: ValidationInfo) -> str:
        allowed = (info.context or {}).get("evidence_url_schemes", EVIDENCE_URL_SCHEMES) - NEVER_EVIDENCE_SCHEMES
        schemes = ", ".join(f"{s}://" for s in sorted(allowed)) or "none"
        absolute = _ABSOLUTE_URL.fullmatch(url)
        if absolute is None:
            raise ValueError(f"not an absolute URL without spaces: use {schemes}host/path")
        if absolute["scheme"] not in allowed:
            raise ValueError(f"the scheme {absolute['scheme'][:20]!r} is not accepted for evidence: use {schemes} "
                             "(lower case; the operator sets which schemes are accepted)")
        return url


class PlateEvent(Message):
    event_id: EventId
    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="The contract's major version.")
    camera_id: CameraId
    plate: str = Field(description="Licence plate; normalized on arrival (浙A·12345 -> 浙A12345).")
    taken_at: AwareDatetime = Field(description="When the camera took the capture (event time).")
    location: Location | None = Field(
        default=None, description="Optional, kept for the record only: the sighting's position is the camera's, "
                                  "from the camera registry.")

    @field_validator("plate", mode="before")
    @classmethod
    def _normalized_valid_plate(cls, value: object) -> object:
        return checked_plate(value)


class Capture(PlateEvent):
    place: str | None = Field(default=None, min_length=1, max_length=64,
                              description="Accepted and ignored: the place shown to the driver is the camera's, "
                                          "from the camera registry.")
    zone: str | None = Field(default=None, min_length=1, max_length=32, pattern=r"^[a-z0-9_-]+$",
                             description="Accepted and ignored: the zone (window, exemptions) is the camera's, "
                                         "from the camera registry.")
    evidence: Evidence | None = None
    plate_type: str | None = Field(
        default=None, pattern=r"^[0-9]{2}$",
        description="The plate type (号牌种类) when your system reads it: the GA 24.7 two-digit code, e.g. 02 small "
                    "car (blue), 01 large vehicle (yellow), 52 small new-energy (green). A plate number may be "
                    "registered under two types; with the type, the owner is looked up under it.",
        examples=["02"])
    plate_colour: Literal[PLATE_COLOURS] | None = Field(  # type: ignore[valid-type]
        default=None, description="The plate's background colour as the camera read it, when it gives no "
                                  "plate_type: narrows the owner lookup to the plate types of that colour.")
    vehicle_colour: str | None = Field(
        default=None, pattern=r"^[A-JZ]$",
        description="The vehicle's body colour (车身颜色) as the camera read it: the GA 24.8 letter, A white, B grey, "
                    "C yellow, D pink, E red, F purple, G green, H blue, I brown, J black, Z other. One that "
                    "contradicts the registry sends the case to an officer (a misread plate must not warn a "
                    "stranger).",
        examples=["H"])

    @field_validator("plate_type")
    @classmethod
    def _known_plate_type(cls, value: str | None) -> str | None:
        if value is not None and value not in PLATE_TYPES:
            raise ValueError(f"unknown plate type {value!r}: a GA 24.7 code such as 02 (small car) or 52 "
                             "(small new-energy car); docs/integrators.md lists them")
        return value

    @property
    def plate_types_read(self) -> tuple[str, ...] | None:
        """The plate types the camera's reading allows (None: it read neither type nor colour)."""
        if self.plate_type is not None:
            return (self.plate_type,)
        if self.plate_colour is not None:
            return tuple(plate_types_of_colour(self.plate_colour))
        return None


class ViolationDetected(Capture):
    """A camera saw a car parked where it must not be. Opens a case (or adds evidence to one)."""

    type: Literal["ViolationDetected"] = "ViolationDetected"
    violation: str = Field(default="no_parking", max_length=32, pattern=r"^[a-z_]+$",
                           description="What kind of violation, e.g. no_parking, sidewalk.")
    evidence: Evidence


class VehicleObserved(Capture):
    """A camera saw the car (again), e.g. on its patrol or answering a recheck request."""

    type: Literal["VehicleObserved"] = "VehicleObserved"
    recheck_id: str | None = Field(default=None, max_length=64, description="Set when answering a RecheckRequested.")


class VehicleDeparted(PlateEvent):
    """A camera saw the car leave the place it was parked at."""

    type: Literal["VehicleDeparted"] = "VehicleDeparted"
    recheck_id: str | None = Field(default=None, max_length=64, description="Set when answering a RecheckRequested.")


CameraEvent = Annotated[
    Union[ViolationDetected, VehicleObserved, VehicleDeparted], Field(discriminator="type")
]
CAMERA_EVENT_TYPES = ("ViolationDetected", "VehicleObserved", "VehicleDeparted")
camera_event_adapter: TypeAdapter[ViolationDetected | VehicleObserved | VehicleDeparted] = TypeAdapter(
    CameraEvent
)


class CarParkStatus(Message):
    """A car park's live count of free spaces, keyed by ``car_park_id``."""

    type: Literal["CarParkStatus"] = "CarParkStatus"
    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="The contract's major version.")
    car_park_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$",
                             description="The car park's id, as registered with the city.")
    free_spaces: int = Field(ge=0, le=100_000, description="Free spaces now.")
    reported_at: AwareDatetime = Field(description="When the count was taken (event time).")


InputEvent = Annotated[
    Union[ViolationDetected, VehicleObserved, VehicleDeparted, CarParkStatus], Field(discriminator="type")
]
"""Anything an integrator sends: a camera event or a car park's count, picked by ``type``."""
input_event_adapter: TypeAdapter[ViolationDetected | VehicleObserved | VehicleDeparted | CarParkStatus] = \
    TypeAdapter(InputEvent)


class CaseOpened(Message):
    type: Literal["CaseOpened"] = "CaseOpened"
    case_id: str
    plate: str
    state: str
    place: str
    zone: str
    location: Location
    camera_id: str
    detected_at: datetime
    opened_at: datetime


class WarningSent(Message):
    """The SMS gateway accepted the warning: the window runs from ``accepted_at`` to ``deadline_at``."""

    type: Literal["WarningSent"] = "WarningSent"
    case_id: str
    plate: str
    sms_id: str
    accepted_at: datetime
    deadline_at: datetime
    car_park_id: str | None
    free_spaces: int | None


class WarningDelivered(Message):
    """The SMS centre reported the warning delivered to the phone (once per case, at its first
    delivery report). The driver has the whole window from the moment the phone had it: when that
    was later than the acceptance, the deadline moves to ``delivered_at`` + window
    (``deadline_moved``); ``deadline_at`` is the deadline in force from now on, never earlier than
    ``WarningSent.deadline_at``."""

    type: Literal["WarningDelivered"] = "WarningDelivered"
    case_id: str
    plate: str
    sms_id: str
    accepted_at: datetime = Field(description="When the gateway accepted the warning (as in WarningSent).")
    delivered_at: datetime = Field(description="When the phone had it: the SMS centre's time, no earlier than "
                                               "accepted_at and no later than the report's arrival; a time in "
                                               "whole seconds counts as the end of that second.")
    deadline_at: datetime = Field(description="The deadline in force: the later of accepted_at + window and "
                                              "delivered_at + window.")
    deadline_moved: bool = Field(description="True when the delivery moved the deadline past WarningSent's.")


SMS_KINDS = ("ticket", "caution", "appeal_received", "appeal_decision", "ticket_withdrawn")
"""The SMS other than the warning (whose acceptance is ``WarningSent``)."""


class SmsSent(Message):
    """The SMS gateway accepted an SMS to the owner other than the warning (``WarningSent`` says that
    one): a ticket, a caution, an appeal's receipt or decision, a ticket's withdrawal. Once per case
    and kind. The phone number is never in it."""

    type: Literal["SmsSent"] = "SmsSent"
    case_id: str
    plate: str
    sms_id: str
    kind: str = Field(description="What the SMS told the owner: " + ", ".join(SMS_KINDS) + " (more kinds may come).")
    accepted_at: datetime = Field(description="When the gateway accepted it (PostgreSQL's clock).")


class ChainLink(Message):
    """A message's link in the ticket record, a SHA-256 hash chain of every ticket, void and appeal
    decision: ``hash`` = sha256 of the RFC 8785 canonical form of ``{"prev": prev, "record": record,
    "seq": seq}``, where ``record`` is the message's recorded fields (docs/integrators.md, "Checking
    the ticket record"). Links count from 1; the first link's ``prev`` is 64 zeros."""

    seq: int = Field(ge=1, description="The link's place in the chain (1, 2, 3, ...), over all tickets.")
    prev: str = Field(pattern=r"^[0-9a-f]{64}$", description="The previous link's hash (64 zeros before the first).")
    hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="This link's hash, lower-case hex.")


def _chain_field():
    return Field(default=None, description="The message's link in the ticket record (additive: absent on "
                                           "messages from before the record began).")


class TicketIssued(Message):
    """An electronic ticket with its two captures: the violation and a capture at the deadline."""

    type: Literal["TicketIssued"] = "TicketIssued"
    ticket_number: str
    case_id: str
    plate: str
    issued_at: datetime
    place: str
    zone: str
    location: Location
    deadline_at: datetime
    evidence: list[dict] = Field(description="The two captures (the violation, then the one at the deadline): "
                                             "event_id, integrator, camera_id, taken_at, lat, lon, place, "
                                             "evidence_url and image_sha256 (null when the camera sent none).")
    reason: str | None = Field(default=None, description="The decision's reason, as the notice shows it "
                                                         "(absent on tickets from before it was recorded).")
    warning_accepted_at: datetime | None = Field(default=None, description="When the gateway accepted the warning.")
    warning_delivered_at: datetime | None = Field(default=None, description="When the phone had the warning, by "
                                                                            "its delivery report (null: none came).")
    chain: ChainLink | None = _chain_field()


class TicketVoided(Message):
    """An operator voided a ticket (with a reason): it no longer stands."""

    type: Literal["TicketVoided"] = "TicketVoided"
    ticket_number: str
    case_id: str
    plate: str
    voided_at: datetime
    reason: str
    operator: str
    chain: ChainLink | None = _chain_field()


APPEAL_GROUNDS = ("moved_within_window", "warning_not_received", "emergency_vehicle", "stolen_or_cloned_plate",
                  "emergency_avoidance", "wrong_zone_or_signage", "other")
"""The grounds a driver may appeal on (pipeline/appeals/grounds.py has their words)."""


class AppealDecided(Message):
    """An officer decided a driver's appeal (申诉) against a ticket: ``upheld`` (the ticket stands)
    or ``voided`` (the ticket no longer stands; a ``TicketVoided`` for it follows)."""

    type: Literal["AppealDecided"] = "AppealDecided"
    appeal_id: str
    ticket_number: str
    case_id: str
    plate: str
    ground: str = Field(description="What the driver appealed on: " + ", ".join(APPEAL_GROUNDS) + ".")
    received_at: datetime
    decided_at: datetime
    outcome: Literal["upheld", "voided"]
    reason: str = Field(description="The officer's reason, as written.")
    officer: str
    chain: ChainLink | None = _chain_field()


class CaseClosed(Message):
    type: Literal["CaseClosed"] = "CaseClosed"
    case_id: str
    plate: str
    outcome: str
    reason: str
    closed_at: datetime


class RecheckRequested(Message):
    """Asks a camera for a fresh capture of a plate; answer with VehicleObserved/VehicleDeparted
    carrying ``recheck_id``. Keyed by ``camera_id``."""

    type: Literal["RecheckRequested"] = "RecheckRequested"
    recheck_id: str
    case_id: str
    camera_id: str
    plate: str
    location: Location
    requested_at: datetime
    answer_by: datetime


class FieldError(Message):
    field: str
    message: str


DEAD_LETTER_RAW_BYTES = 64 * 1024
DEAD_LETTER_ERRORS = 20


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


class DeadLetter(Message):
    """A message parkwarden could not use, with what an integrator needs to fix and resend it.

    Small enough for any broker, whatever came in: raw_base64 carries at most the first 64 KiB of
    the original bytes (raw_size, raw_truncated), errors at most 20 (errors_omitted), and a long key,
    reason, field or message is cut, ending with "…". Operators see it all (GET /v1/dead-letters)."""

    type: Literal["DeadLetter"] = "DeadLetter"
    source_topic: str
    partition: int
    offset: int
    key: str | None
    reason: str
    errors: list[FieldError]
    raw_base64: str
    received_at: datetime
    raw_size: int | None = Field(default=None, ge=0, description="Length of the original message in bytes.")
    raw_truncated: bool = Field(default=False, description="True if raw_base64 holds only the first 64 KiB of "
                                                           "the original message (raw_size says how long it was).")
    errors_omitted: int = Field(default=0, ge=0, description="How many errors are left out of 'errors' "
                                                             "(it lists the first 20).")
    raw_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$",
        description="Set when raw_base64 holds a masked copy of the message (a reference feed's: phones, owner "
                    "ids and names masked): the SHA-256 of the original bytes, in hex.")

    @classmethod
    def capped(cls, source_topic: str, partition: int, offset: int, key: bytes | None, reason: str,
               errors: "list[FieldError] | tuple[FieldError, ...]", raw: bytes, received_at: datetime,
               raw_sha256: bytes | None = None) -> "DeadLetter":
        """The dead letter of ``raw``, cut to the sizes above (``raw_sha256``: ``raw`` is a masked copy)."""
        return cls(
            source_topic=source_topic, partition=partition, offset=offset,
            key=None if key is None else _clip(key.decode(errors="replace"), 200),
            reason=_clip(reason, 1000),
            errors=[FieldError(field=_clip(e.field, 200), message=_clip(e.message, 500))
                    for e in errors[:DEAD_LETTER_ERRORS]],
            errors_omitted=max(0, len(errors) - DEAD_LETTER_ERRORS),
            raw_base64=base64.b64encode(raw[:DEAD_LETTER_RAW_BYTES]).decode(),
            raw_size=len(raw), raw_truncated=len(raw) > DEAD_LETTER_RAW_BYTES, received_at=received_at,
            raw_sha256=None if raw_sha256 is None else raw_sha256.hex())
