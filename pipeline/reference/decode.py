"""One message of a reference topic -> the change it asks for (``Upsert`` or ``Delete``) or a ``Rejected``.

Two formats, told apart per message:

- **Our JSON**: the row as it is now, one of the models in ``schemas.reference`` (``PlateRecord``,
  ``ContactRecord``, ``CarParkRecord``, ``CameraRecord``; ``type`` may be left out).
- **A Debezium change event**, as Debezium's PostgreSQL connector writes it (the envelope of
  ``io.debezium.data.Envelope``; documented in debezium/debezium,
  documentation/modules/ROOT/pages/connectors/postgresql.adoc, "Data change events")::

      {"schema": {...}, "payload": {"before": {...} | null, "after": {...} | null,
                                     "source": {"connector": "postgresql", "table": "vehicle", ...},
                                     "op": "c" | "u" | "d" | "r", "ts_ms": 1465584025523}}

  or the bare payload when the JSON converter runs with ``schemas.enable=false``. ``c`` (insert),
  ``u`` (update) and ``r`` (a snapshot read) carry the row in ``after``: upsert it; ``d`` (delete)
  names the row in ``before`` (the primary key, or every column with ``REPLICA IDENTITY FULL``):
  delete it. ``t`` (truncate) and ``m`` (a logical-decoding message) are refused (a truncate of a
  registry is a snapshot: use ``parkwarden data import --snapshot``). The row's columns are renamed
  to our fields by ``tables.Columns`` (PW_REFERENCE_COLUMNS); Debezium's ``io.debezium.time.Date``
  (days since 1970-01-01) is taken for a date. Debezium's key is a JSON object of the primary key
  (``{"hphm": "浙A12345"}``, with or without its ``schema``/``payload`` wrapper); a plain text key is the id.

A tombstone (no value) deletes the row its key names: Debezium writes one after each delete
(``tombstones.on.delete``), so that compaction forgets the row. Decoding never raises.
"""

import json
from dataclasses import dataclass
from datetime import date, timedelta

from pydantic import BaseModel, ValidationError

from pipeline.reference.tables import Columns, Kind
from schemas.codec import Rejected, field_errors
from schemas.events import FieldError
from schemas.plates import normalize_plate

DEBEZIUM_UPSERT = {"c": "insert", "u": "update", "r": "snapshot read"}
DEBEZIUM_DELETE = "d"
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class Upsert:
    kind: Kind
    key: str
    record: BaseModel
    format: str
    """"json" (ours) or "debezium"."""


@dataclass(frozen=True)
class Delete:
    kind: Kind
    key: str
    format: str
    """"tombstone", "json" or "debezium"."""


def decode(kind: Kind, key: bytes | None, value: bytes | None, columns: Columns) -> Upsert | Delete | Rejected:
    raw = value or b""
    key_id = _key(kind, key, columns)
    if isinstance(key_id, str) and not key_id:
        return _rejected(raw, f"the key names no {kind.key}: key each message by the row's {kind.key}", "(key)")
    if key_id is None:
        return _rejected(raw, f"no key: key each message by the row's {kind.key} (compaction keeps the latest per key)",
                         "(key)")
    if isinstance(key_id, Rejected):
        return Rejected(raw, key_id.reason, key_id.errors)
    if value is None:
        return Delete(kind, key_id, "tombstone")
    try:
        data = json.loads(value)
    except (ValueError, RecursionError) as exc:
        return Rejected(raw, f"not JSON: {type(exc).__name__}: {str(exc)[:200]}", ())
    if not isinstance(data, dict):
        return _rejected(raw, f"not a JSON object: send a {kind.model.__name__} or a Debezium change event",
                         "(message)")
    envelope = data.get("payload") if "payload" in data and "schema" in data else data if "op" in data else None
    if envelope is None and "payload" in data:
        return _rejected(raw, "a Debezium envelope with no payload", "payload")
    if envelope is None:
        return _checked(kind, key_id, _validate(kind, data, raw, kind.model.__name__), "json", raw)
    return _debezium(kind, key_id, envelope, columns, raw)


def _debezium(kind: Kind, key_id: str, envelope, columns: Columns, raw: bytes) -> Upsert | Delete | Rejected:
    if not isinstance(envelope, dict):
        return _rejected(raw, "a Debezium payload must be an object with before, after and op", "payload")
    op = envelope.get("op")
    if op in DEBEZIUM_UPSERT:
        after = envelope.get("after")
        if not isinstance(after, dict):
            return _rejected(raw, f"a Debezium {DEBEZIUM_UPSERT[op]} (op {op!r}) without the row in 'after'", "after")
        row = {field: after[column] for field, column in columns.fields(kind).items() if column in after}
        if kind.name == "cameras" and isinstance(row.get("commissioned_on"), int):
            row["commissioned_on"] = (_EPOCH + timedelta(days=row["commissioned_on"])).isoformat()
        record = _validate(kind, row, raw, f"Debezium row of {_table(envelope)}", columns, "after.")
        return _checked(kind, key_id, record, "debezium", raw)
    if op == DEBEZIUM_DELETE:
        before = envelope.get("before")
        column = columns.source(kind, kind.key)
        if isinstance(before, dict) and before.get(column) is not None and _id(kind, before[column]) != key_id:
            return _rejected(raw, f"the key says {key_id!r} but the deleted row is {_id(kind, before[column])!r}",
                             f"before.{column}")
        return Delete(kind, key_id, "debezium")
    shown = repr(op)[:20]
    return _rejected(raw, f"unknown Debezium op {shown}: parkwarden applies c, u, r (upsert) and d (delete); "
                          "a truncate is a snapshot: import the table instead", "op")


def _checked(kind: Kind, key_id: str, record, format: str, raw: bytes) -> Upsert | Rejected:
    if isinstance(record, Rejected):
        return record
    row_id = getattr(record, kind.key)
    if row_id != key_id:
        return _rejected(raw, f"the key says {key_id!r} but the row's {kind.key} is {row_id!r}: key each message "
                              f"by its {kind.key}", kind.key)
    return Upsert(kind, row_id, record, format)


def _validate(kind: Kind, data: dict, raw: bytes, what: str, columns: Columns | None = None, prefix: str = ""):
    try:
        return kind.model.model_validate(data)
    except RecursionError:
        return Rejected(raw, "message nested too deeply", ())
    except ValidationError as exc:
        errors = tuple(FieldError(field=prefix + _source_name(kind, e.field, columns), message=e.message)
                       for e in field_errors(exc))
        summary = "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
        return Rejected(raw, f"invalid {what}: {summary}", errors)


def _source_name(kind: Kind, field: str, columns: Columns | None) -> str:
    head, _, rest = field.partition(".")
    if columns is None or head not in kind.model.model_fields:
        return field
    return columns.source(kind, head) + (f".{rest}" if rest else "")


def _key(kind: Kind, key: bytes | None, columns: Columns) -> str | Rejected | None:
    """The row id a Kafka key names: plain text, or Debezium's JSON key of the primary key."""
    if key is None:
        return None
    try:
        text = key.decode("utf-8").strip()
    except UnicodeDecodeError:
        return Rejected(b"", "the key is not UTF-8 text", (FieldError(field="(key)", message="not UTF-8"),))
    if not text.startswith("{"):
        return _id(kind, text)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return Rejected(b"", "the key looks like JSON but is not", (FieldError(field="(key)", message="not JSON"),))
    if isinstance(data, dict) and "payload" in data and "schema" in data:
        data = data["payload"]
    column = columns.source(kind, kind.key)
    if isinstance(data, dict) and column in data:
        return _id(kind, data[column])
    if isinstance(data, dict) and len(data) == 1:
        return _id(kind, next(iter(data.values())))
    return Rejected(b"", f"the key names no {column!r}", (FieldError(field="(key)", message=f"no {column}"),))


def _id(kind: Kind, value) -> str:
    text = "" if value is None else str(value).strip()
    return normalize_plate(text) if kind.name == "plates" else text


def _table(envelope: dict) -> str:
    source = envelope.get("source")
    if isinstance(source, dict) and isinstance(source.get("table"), str):
        return f"{source.get('schema') or 'public'}.{source['table']}"[:80]
    return "the source table"


def _rejected(raw: bytes, reason: str, field: str) -> Rejected:
    return Rejected(raw, reason, (FieldError(field=field, message=reason),))
