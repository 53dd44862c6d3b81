"""Bytes <-> messages. Decoding never raises: a bad message becomes a ``Rejected`` with reasons."""

import json
from dataclasses import dataclass

from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.events import CarParkStatus, FieldError, camera_event_adapter


@dataclass(frozen=True)
class Rejected:
    """A message that could not be decoded, with the original bytes and each field's problem."""

    raw: bytes
    reason: str
    errors: tuple[FieldError, ...]


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json(exclude_none=False).encode()


def field_errors(error: ValidationError) -> tuple[FieldError, ...]:
    return tuple(
        FieldError(field=".".join(str(p) for p in e["loc"]) or "(message)", message=e["msg"])
        for e in error.errors(include_url=False)
    )


def decode_with(adapter: TypeAdapter, raw: bytes | None):
    """Decode raw JSON with a pydantic adapter; return the message or a ``Rejected``."""
    if raw is None:
        return Rejected(b"", "empty message (no value)", ())
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, too deep, too long a number
        return Rejected(raw, f"not JSON: {type(exc).__name__}: {str(exc)[:200]}", ())
    try:
        return adapter.validate_python(data)
    except RecursionError:
        return Rejected(raw, "message nested too deeply", ())
    except ValidationError as exc:
        errors = field_errors(exc)
        summary = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
        return Rejected(raw, f"invalid {adapter_name(adapter, data)}: {summary}", errors)


def adapter_name(adapter: TypeAdapter, data: object) -> str:
    if isinstance(data, dict) and isinstance(data.get("type"), str):
        return data["type"][:40]
    return "message"


def decode_camera_event(raw: bytes | None):
    return decode_with(camera_event_adapter, raw)


car_park_status_adapter = TypeAdapter(CarParkStatus)


def decode_car_park_status(raw: bytes | None):
    return decode_with(car_park_status_adapter, raw)
