"""Reading a batch of events: one JSON object, a JSON array, or JSON lines.

Pure (no I/O): the HTTP ingest and the command-line tools share it, so an integrator gets the
same answer offline (`parkwarden events validate`) as from the server. Every event is checked on
its own; one bad event never hides the others. A body with more events than allowed is refused
as a whole (``TooManyEvents``) after one parse and a count, before any event is validated.
"""

import json
from dataclasses import dataclass, field

from pydantic import BaseModel, TypeAdapter

from schemas import topics
from schemas.codec import Rejected, validate_with
from schemas.events import CarParkStatus, FieldError

JSON = "application/json"
JSON_LINES = ("application/x-ndjson", "application/jsonl", "application/json-lines", "application/x-jsonlines",
              "application/jsonlines")


class BodyError(ValueError):
    """The body as a whole cannot be read (not JSON, wrong shape): no event in it was looked at."""


class TooManyEvents(ValueError):
    """More events in one body than allowed: counted before any event was validated."""

    def __init__(self, count: int, limit: int):
        super().__init__(f"{count} events in one request; at most {limit}: split the batch")
        self.count = count
        self.limit = limit


@dataclass(frozen=True)
class Refusal:
    """One event that was refused: where it was, which it was, and why (per field)."""

    index: int
    """0-based position among the events of the batch."""
    line: int | None
    """1-based line of the file or body, for JSON lines."""
    event_id: str | None
    reason: str
    errors: tuple[FieldError, ...]

    def as_json(self) -> dict:
        found = {"index": self.index, "event_id": self.event_id, "reason": self.reason,
                 "errors": [e.model_dump() for e in self.errors]}
        if self.line is not None:
            found["line"] = self.line
        return found


@dataclass
class Batch:
    events: list[tuple[int, BaseModel]] = field(default_factory=list)
    """(index, validated event), in the order sent."""
    refused: list[Refusal] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.events) + len(self.refused)


def kafka_address(event: BaseModel) -> tuple[topics.Topic, str]:
    """The topic an input event goes to and its key: the normalized plate, or the car park's id."""
    if isinstance(event, CarParkStatus):
        return topics.CAR_PARK_STATUS, event.car_park_id
    return topics.CAMERA_EVENTS, event.plate


def is_json_lines(content_type: str) -> bool:
    return content_type in JSON_LINES


def read_body(body: bytes, content_type: str, adapter: TypeAdapter, max_events: int | None = None,
              context: dict | None = None) -> Batch:
    """Read an HTTP body by its Content-Type (media type only, lower case). Raises ``BodyError``
    when the body as a whole is unreadable, ``TooManyEvents`` when it holds more than ``max_events``.
    ``context``: pydantic's validation context (``schemas.events.validation_context``)."""
    if is_json_lines(content_type):
        return read_lines(body, adapter, max_events, context)
    return read_json(body, adapter, max_events, context)


def read_json(body: bytes, adapter: TypeAdapter, max_events: int | None = None, context: dict | None = None) -> Batch:
    """One event (a JSON object) or a batch (a JSON array of objects)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BodyError(f"the body is not JSON ({_why(exc)}); send one event as a JSON object, "
                        "a batch as a JSON array, or JSON lines with Content-Type application/x-ndjson") from None
    if isinstance(data, dict):
        data = [data]
    elif not isinstance(data, list):
        raise BodyError(f"the body is a JSON {type(data).__name__}, not an event: send a JSON object or an array "
                        "of objects")
    if max_events is not None and len(data) > max_events:
        raise TooManyEvents(len(data), max_events)
    batch = Batch()
    for index, item in enumerate(data):
        _check(batch, adapter, item, index, None, context)
    return batch


def read_lines(body: bytes, adapter: TypeAdapter, max_events: int | None = None,
               context: dict | None = None) -> Batch:
    """JSON lines: one event per line; blank lines are skipped; a line that is not JSON is refused alone."""
    numbered = [(number, line) for number, line in enumerate(body.split(b"\n"), start=1) if line.strip()]
    if max_events is not None and len(numbered) > max_events:
        raise TooManyEvents(len(numbered), max_events)
    batch = Batch()
    for index, (number, line) in enumerate(numbered):
        try:
            item = json.loads(line)
        except (ValueError, RecursionError) as exc:
            reason = f"line {number} is not JSON ({_why(exc)})"
            batch.refused.append(Refusal(index, number, None, reason, (FieldError(field="(message)", message=reason),)))
        else:
            _check(batch, adapter, item, index, number, context)
    return batch


def read_file(text_or_bytes: bytes, adapter: TypeAdapter, context: dict | None = None) -> Batch:
    """A file: a JSON array, a single JSON object, or JSON lines (whichever it parses as)."""
    stripped = text_or_bytes.lstrip()
    if stripped[:1] in (b"[", b"{"):
        try:
            json.loads(text_or_bytes)
        except (ValueError, RecursionError):
            return read_lines(text_or_bytes, adapter, context=context)
        return read_json(text_or_bytes, adapter, context=context)
    return read_lines(text_or_bytes, adapter, context=context)


def _check(batch: Batch, adapter: TypeAdapter, item: object, index: int, line: int | None,
           context: dict | None = None) -> None:
    result = validate_with(adapter, item, context=context)
    if isinstance(result, Rejected):
        batch.refused.append(Refusal(index, line, _event_id_of(item), result.reason, result.errors))
    else:
        batch.events.append((index, result))


def _event_id_of(item: object) -> str | None:
    if isinstance(item, dict) and isinstance(item.get("event_id"), str):
        return item["event_id"][:80].encode("utf-8", "replace").decode("utf-8")
    return None


def _why(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return f"{type(exc).__name__}: {str(exc)[:160]}"
