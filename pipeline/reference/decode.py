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
  remove it (``tables.Kind.delete``: a registration is retired, a contact ends now). ``t`` (truncate)
  and ``m`` (a logical-decoding message) are refused (a truncate of a registry is a snapshot: use
  ``parkwarden data import --snapshot``). The row's columns are renamed to our fields by
  ``tables.Columns`` (PW_REFERENCE_COLUMNS); Debezium's ``io.debezium.time.Date`` (days since
  1970-01-01) is taken for a date.

The key names the row, all of its id (compaction keeps the latest message per key, so two rows must
never share one): a plain text key is the id, and for a plate ``浙A12345`` is the registration of type
02, ``浙A12345/01`` of type 01. Debezium's key is a JSON object of the source table's primary key, with
or without its ``schema``/``payload`` wrapper: ``{"hphm": "浙A12345", "hpzl": "01"}`` (the columns
``Columns`` maps ``plate`` and ``plate_type`` to; without the plate-type column, type 02). The key and
the row must name the same id.

A tombstone (no value) removes the row its key names: Debezium writes one after each delete
(``tombstones.on.delete``), so that compaction forgets the row. Decoding never raises.
"""

import json
import re
from dataclasses import dataclass
from datetime import date, timedelta

from pydantic import BaseModel, ValidationError

from pipeline.reference.tables import Columns, Kind
from schemas.codec import Rejected, field_errors
from schemas.events import FieldError
from schemas.plates import normalize_plate
from schemas.reference import PLATE_TYPE_SEPARATOR
from schemas.vehicles import DEFAULT_PLATE_TYPE, plate_type_problem

DEBEZIUM_UPSERT = {"c": "insert", "u": "update", "r": "snapshot read"}
DEBEZIUM_DELETE = "d"
_EPOCH = date(1970, 1, 1)
DEBEZIUM_DAYS = (date(1900, 1, 1).toordinal() - _EPOCH.toordinal(), date(2199, 12, 31).toordinal() - _EPOCH.toordinal())
"""The ``io.debezium.time.Date`` values taken (days since 1970-01-01): 1900-01-01 to 2199-12-31."""
MAX_KEY_CHARS = 200
"""A row id longer than this (any of its values) is refused: no registry has such ids."""

RowId = tuple[str, ...]
"""The values of ``Kind.key``: (plate, plate_type) for a plate's registration, (id,) for the others."""


@dataclass(frozen=True)
class Upsert:
    kind: Kind
    key: RowId
    record: BaseModel
    format: str
    """"json" (ours) or "debezium"."""


@dataclass(frozen=True)
class Delete:
    kind: Kind
    key: RowId
    format: str
    """"tombstone", "json" or "debezium"."""


def decode(kind: Kind, key: bytes | None, value: bytes | None, columns: Columns) -> Upsert | Delete | Rejected:
    """The change one message asks for, or a ``Rejected`` with the reason. Never raises: a message that
    trips anything unforeseen is refused too (a dead letter, never a retry of the batch)."""
    try:
        change = _decode(kind, key, value, columns)
        if isinstance(change, Rejected):
            return change
        problem = _out_of_bounds(change)
        return change if problem is None else _rejected(value or b"", *problem)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        return _rejected(value or b"", f"could not be decoded ({type(exc).__name__})", "(message)")


def _decode(kind: Kind, key: bytes | None, value: bytes | None, columns: Columns) -> Upsert | Delete | Rejected:
    raw = value or b""
    key_id = _key(kind, key, columns)
    if key_id is None:
        return _rejected(raw, f"no key: key each message by the row's {kind.key[0]} (compaction keeps the latest "
                              "per key)", "(key)")
    if isinstance(key_id, tuple) and not key_id[0]:
        return _rejected(raw, f"the key names no {kind.key[0]}: key each message by the row's {kind.key[0]}", "(key)")
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


def _debezium(kind: Kind, key_id: RowId, envelope, columns: Columns, raw: bytes) -> Upsert | Delete | Rejected:
    if not isinstance(envelope, dict):
        return _rejected(raw, "a Debezium payload must be an object with before, after and op", "payload")
    op = envelope.get("op")
    op = op if isinstance(op, str) else repr(op)[:20]
    if op in DEBEZIUM_UPSERT:
        after = envelope.get("after")
        if not isinstance(after, dict):
            return _rejected(raw, f"a Debezium {DEBEZIUM_UPSERT[op]} (op {op!r}) without the row in 'after'", "after")
        row = {field: after[column] for field, column in columns.fields(kind).items() if column in after}
        if kind.name == "cameras" and isinstance(row.get("commissioned_on"), int) \
                and not isinstance(row["commissioned_on"], bool):
            days = row["commissioned_on"]
            if not DEBEZIUM_DAYS[0] <= days <= DEBEZIUM_DAYS[1]:
                column = f"after.{columns.source(kind, 'commissioned_on')}"
                return _rejected(raw, f"{column}: {days} days since 1970-01-01 is not a date between "
                                      f"{_EPOCH + timedelta(DEBEZIUM_DAYS[0])} and "
                                      f"{_EPOCH + timedelta(DEBEZIUM_DAYS[1])}", column)
            row["commissioned_on"] = (_EPOCH + timedelta(days=days)).isoformat()
        record = _validate(kind, row, raw, f"Debezium row of {_table(envelope)}", columns, "after.")
        return _checked(kind, key_id, record, "debezium", raw)
    if op == DEBEZIUM_DELETE:
        before = envelope.get("before")
        for i, field in enumerate(kind.key):
            column = columns.source(kind, field)
            if isinstance(before, dict) and before.get(column) is not None:
                value = _value(kind, field, before[column])
                if value != key_id[i]:
                    return _rejected(raw, f"the key says {_shown(key_id)} but the deleted row's {field} is "
                                          f"{value!r}", f"before.{column}")
        return Delete(kind, key_id, "debezium")
    shown = repr(op)[:20]
    return _rejected(raw, f"unknown Debezium op {shown}: parkwarden applies c, u, r (upsert) and d (delete); "
                          "a truncate is a snapshot: import the table instead", "op")


def _checked(kind: Kind, key_id: RowId, record, format: str, raw: bytes) -> Upsert | Rejected:
    if isinstance(record, Rejected):
        return record
    row_id = tuple(getattr(record, field) for field in kind.key)
    for field, said, is_ in zip(kind.key, key_id, row_id):
        if said != is_:
            return _rejected(raw, f"the key says {_shown(key_id)} but the row's {field} is {is_!r}: key each "
                                  f"message by its {' and '.join(kind.key)}", field)
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


def _key(kind: Kind, key: bytes | None, columns: Columns) -> RowId | Rejected | None:
    """The row id a Kafka key names: plain text, or Debezium's JSON key of the primary key."""
    if key is None:
        return None
    try:
        text = key.decode("utf-8").strip()
    except UnicodeDecodeError:
        return _key_rejected("the key is not UTF-8 text", "not UTF-8")
    if not text.startswith("{"):
        if kind.name != "plates":
            return (text,)
        plate, separator, plate_type = text.partition(PLATE_TYPE_SEPARATOR)
        return _row_id(kind, {"plate": plate, "plate_type": plate_type if separator else None})
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return _key_rejected("the key looks like JSON but is not", "not JSON")
    if isinstance(data, dict) and "payload" in data and "schema" in data:
        data = data["payload"]
    first = columns.source(kind, kind.key[0])
    if not isinstance(data, dict) or first not in data and len(data) != 1:
        return _key_rejected(f"the key names no {first!r}", f"no {first}")
    if first not in data:
        return _row_id(kind, {kind.key[0]: next(iter(data.values()))})
    return _row_id(kind, {field: data.get(columns.source(kind, field)) for field in kind.key})


def _row_id(kind: Kind, values: dict) -> RowId | Rejected:
    """The id from the key's values; a plate without a type is of type 02, one of an unknown type is refused."""
    if kind.name == "plates" and values.get("plate_type") is None:
        values = {**values, "plate_type": DEFAULT_PLATE_TYPE}
    row_id = tuple(_value(kind, field, values.get(field)) for field in kind.key)
    if kind.name == "plates" and (problem := plate_type_problem(row_id[1])):
        return _key_rejected(f"the key's plate type: {problem}", problem)
    return row_id


def _value(kind: Kind, field: str, value) -> str:
    text = "" if value is None else str(value).strip()
    return normalize_plate(text) if kind.name == "plates" and field == "plate" else text


def _out_of_bounds(change: Upsert | Delete) -> tuple[str, str] | None:
    """(reason, field) when a value cannot be stored as it is: a NUL or another control character, a lone
    surrogate (not UTF-8), or a key longer than ``MAX_KEY_CHARS``; None when every value is in bounds."""
    values = [(field, value) for field, value in zip(change.kind.key, change.key)]
    if isinstance(change, Upsert):
        values += [(f, v) for f, v in change.record.__dict__.items() if isinstance(v, str)]
    for field, value in values:
        if field in change.kind.key and len(value) > MAX_KEY_CHARS:
            return f"{field}: longer than {MAX_KEY_CHARS} characters", field
        if _UNSTORABLE.search(value):
            return f"{field}: holds a control character or is not valid UTF-8", field
    return None


_UNSTORABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def _shown(row_id: RowId) -> str:
    return repr(PLATE_TYPE_SEPARATOR.join(row_id))


def _key_rejected(reason: str, message: str) -> Rejected:
    return Rejected(b"", reason, (FieldError(field="(key)", message=message),))


def _table(envelope: dict) -> str:
    source = envelope.get("source")
    if isinstance(source, dict) and isinstance(source.get("table"), str):
        return f"{source.get('schema') or 'public'}.{source['table']}"[:80]
    return "the source table"


def _rejected(raw: bytes, reason: str, field: str) -> Rejected:
    return Rejected(raw, reason, (FieldError(field=field, message=reason),))
