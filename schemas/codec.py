"""Bytes <-> messages. Decoding never raises: a bad message becomes a ``Rejected`` with reasons."""

import json
from dataclasses import dataclass

from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.events import CAMERA_EVENT_TYPES, CarParkStatus, FieldError, camera_event_adapter


@dataclass(frozen=True)
class Rejected:
    """A message that could not be decoded, with the original bytes and each field's problem."""

    raw: bytes
    reason: str
    errors: tuple[FieldError, ...]


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json(exclude_none=False).encode()


EXAMPLE_TIME = "2026-11-26T10:42:00+08:00"
_ADVICE = {
    "missing": "add it",
    "extra_forbidden": "remove it, or check its spelling against the schema (unknown fields are refused)",
    "timezone_aware": f"add a UTC offset, e.g. {EXAMPLE_TIME}",
    "datetime_parsing": f"use ISO-8601 with a UTC offset, e.g. {EXAMPLE_TIME}",
    "datetime_from_date_parsing": f"use ISO-8601 with a UTC offset, e.g. {EXAMPLE_TIME}",
    "datetime_type": f"use an ISO-8601 string with a UTC offset, e.g. {EXAMPLE_TIME}",
    "model_attributes_type": "send a JSON object",
    "model_type": "send a JSON object",
    "dict_type": "send a JSON object",
}


def field_errors(error: ValidationError, event_type: str | None = None) -> tuple[FieldError, ...]:
    """One ``FieldError`` per problem, naming the field as an integrator wrote it (``location.lat``)
    and saying what to do. ``event_type`` is the message's ``type``: pydantic puts it in front of
    each field of a discriminated union, and it is dropped here."""
    found = []
    for e in error.errors(include_url=False):
        loc = [str(p) for p in e["loc"]]
        if loc and event_type is not None and loc[0] == event_type:
            loc = loc[1:]
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] in ("union_tag_not_found", "union_tag_invalid"):
            loc = ["type"]
            ctx = e.get("ctx", {})
            wanted = ctx.get("expected_tags") or ", ".join(repr(t) for t in CAMERA_EVENT_TYPES)
            message = (f"unknown event type {str(ctx.get('tag'))[:40]!r}: use one of {wanted}"
                       if e["type"] == "union_tag_invalid" else f"missing: say which event this is, one of {wanted}")
        elif e["type"] in _ADVICE:
            message = f"{message}: {_ADVICE[e['type']]}"
        field = ".".join(loc) or "(message)"
        found.append(FieldError(field=field if field.strip() else repr(field), message=message))
    return tuple(found)


def decode_with(adapter: TypeAdapter, raw: bytes | None, context: dict | None = None):
    """Decode raw JSON with a pydantic adapter; return the message or a ``Rejected``. ``context`` is
    pydantic's validation context (``schemas.events.validation_context``: the operator's settings)."""
    if raw is None:
        return Rejected(b"", "empty message (no value)", ())
    try:  # the common case in one step (pydantic parses the JSON itself); any problem: the reasons below
        return adapter.validate_json(raw, context=context)
    except (ValidationError, ValueError, RecursionError):
        pass
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, too deep, too long a number
        return Rejected(raw, f"not JSON: {type(exc).__name__}: {str(exc)[:200]}", ())
    return validate_with(adapter, data, raw, context)


def validate_with(adapter: TypeAdapter, data: object, raw: bytes = b"", context: dict | None = None):
    """Validate already-parsed JSON; return the message or a ``Rejected`` (never raises)."""
    try:
        return adapter.validate_python(data, context=context)
    except RecursionError:
        return Rejected(raw, "message nested too deeply", ())
    except ValidationError as exc:
        errors = field_errors(exc, data.get("type") if isinstance(data, dict) and isinstance(data.get("type"), str) else None)
        summary = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
        return Rejected(raw, f"invalid {adapter_name(adapter, data)}: {summary}", errors)


def adapter_name(adapter: TypeAdapter, data: object) -> str:
    if isinstance(data, dict) and isinstance(data.get("type"), str):
        return data["type"][:40]
    return "message"


def decode_camera_event(raw: bytes | None, context: dict | None = None):
    return decode_with(camera_event_adapter, raw, context)


car_park_status_adapter = TypeAdapter(CarParkStatus)


def decode_car_park_status(raw: bytes | None, context: dict | None = None):
    return decode_with(car_park_status_adapter, raw, context)
