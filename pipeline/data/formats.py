"""Reading and writing the files a city brings: CSV, JSON lines, and for car parks GeoJSON and FIWARE.

Readers yield ``(row number, fields)`` one row at a time (CSV and JSON lines are streamed: a file of
millions of rows is never held whole), or ``(row number, Problem)`` for a row that cannot even be
parsed. GeoJSON and FIWARE NGSI-LD files are single JSON documents, read whole: they hold car parks,
a few thousand at most. Row numbers are what a person finds in the file: the CSV line (the header
is line 1), the JSON line, the feature or entity's position (from 1).
"""

import csv
import io
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

FORMATS = ("csv", "jsonl", "geojson", "fiware")
FIWARE_PREFIX = "urn:ngsi-ld:OffStreetParking:"
FIWARE_CONTEXT = "https://raw.githubusercontent.com/smart-data-models/dataModel.Parking/master/context.jsonld"


class FormatError(ValueError):
    """The file as a whole cannot be read in the format asked for (say which, and what to do)."""


@dataclass(frozen=True)
class Problem:
    field: str
    reason: str


def detect_format(path: Path, given: str | None) -> str:
    if given:
        return given
    suffix = path.suffix.lower()
    by_suffix = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".geojson": "geojson", ".jsonld": "fiware"}
    if suffix in by_suffix:
        return by_suffix[suffix]
    if suffix == ".json" and path.exists():
        with path.open(encoding="utf-8-sig") as f:
            head = f.read(1).strip() or f.read(64).lstrip()[:1]
        return "fiware" if head == "[" else "geojson"
    raise FormatError(f"cannot tell the format of {path.name} from its extension: give --format "
                      f"({', '.join(FORMATS)})")


class _Counting(io.RawIOBase):
    """A binary file that counts the bytes read (for a progress bar over a streamed file)."""

    def __init__(self, raw, on_bytes: Callable[[int], None]):
        self.raw, self.on_bytes = raw, on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        if n:
            self.on_bytes(n)
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


def _text(path: Path, on_bytes: Callable[[int], None] | None):
    raw = open(path, "rb", buffering=0)
    stream = io.BufferedReader(_Counting(raw, on_bytes or (lambda n: None)), 1 << 20)
    return io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")


def read_rows(path: Path, fmt: str, fields: tuple[str, ...], on_bytes=None) -> Iterator[tuple[int, dict | Problem]]:
    if fmt == "csv":
        return _read_csv(path, fields, on_bytes)
    if fmt == "jsonl":
        return _read_jsonl(path, on_bytes)
    if fmt == "geojson":
        return _read_geojson(path, on_bytes)
    if fmt == "fiware":
        return _read_fiware(path, on_bytes)
    raise FormatError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")


def _read_csv(path, fields, on_bytes):
    values = read_csv_values(path, fields, on_bytes)
    header = next(values)
    width = len(header)
    for line, row in values:
        if isinstance(row, Problem):
            yield line, row
        elif len(row) != width:
            yield line, Problem("", f"{len(row)} values for {width} columns")
        else:
            yield line, {k: v for k, v in zip(header, row) if v != ""}


def read_csv_values(path: Path, fields: tuple[str, ...], on_bytes=None) -> Iterator:
    """The CSV reader without the dicts (a bulk import's hot path): yields the header (a list of field
    names, checked), then ``(line, values)`` for each non-blank row, values as strings ("" = not given),
    or ``(line, Problem)`` for a row the CSV reader refuses (a field over ``csv.field_size_limit()``)."""
    with _text(path, on_bytes) as f, _utf8(path):
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader, [])]
        except csv.Error as exc:
            raise FormatError(f"{path.name}: the header is not a CSV row: {exc}") from None
        unknown = [h for h in header if h not in fields]
        if not header or unknown:
            raise FormatError(f"{path.name}: unknown column(s) {', '.join(map(repr, unknown))[:500] or '(no header)'} "
                              f"in the header; the columns are: {', '.join(fields)}")
        yield header
        line = 1
        while True:
            line += 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield line, Problem("", f"not a CSV row: {exc}")
                continue
            if values:
                yield line, values


class _utf8:
    """Turns a file that is not UTF-8 into a ``FormatError`` naming it (a text file's decoding fails
    while it is read, not when it is opened)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, UnicodeDecodeError):
            raise FormatError(f"{self.path.name} is not UTF-8 text ({exc.reason} at byte {exc.start} of a block)") \
                from None
        return False


def _read_jsonl(path, on_bytes):
    with _text(path, on_bytes) as f, _utf8(path):
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                yield line, Problem("", f"not JSON: {exc.msg} at column {exc.colno}")
                continue
            except RecursionError:
                yield line, Problem("", "not JSON we read: nested too deeply")
                continue
            except ValueError as exc:  # a number of more than 4,300 digits
                yield line, Problem("", f"not JSON we read: {str(exc)[:200]}")
                continue
            if not isinstance(row, dict):
                yield line, Problem("", "each line must be a JSON object")
                continue
            yield line, row


def _whole_json(path, on_bytes):
    data = path.read_bytes()
    if on_bytes:
        on_bytes(len(data))
    try:
        return json.loads(data.decode("utf-8-sig"))
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, too deep, too long a number
        raise FormatError(f"{path.name} is not a JSON document we read: {type(exc).__name__}: "
                          f"{str(exc)[:200]}") from None


def point_feature(feature, what: str) -> tuple[dict, list] | str:
    """(properties, [lon, lat]) of a GeoJSON Feature that is a Point, or why it is not one."""
    if not isinstance(feature, dict):
        return f"a feature must be a JSON object, not {type(feature).__name__}"
    geometry = feature.get("geometry")
    coordinates = geometry.get("coordinates") if isinstance(geometry, dict) else None
    if not isinstance(geometry, dict) or geometry.get("type") != "Point" or not isinstance(coordinates, list) \
            or len(coordinates) < 2:
        return f"{what} is a GeoJSON Point [lon, lat]"
    properties = feature.get("properties")
    if properties is not None and not isinstance(properties, dict):
        return "properties must be a JSON object"
    return dict(properties or {}), coordinates


def _read_geojson(path, on_bytes):
    doc = _whole_json(path, on_bytes)
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise FormatError(f"{path.name}: a GeoJSON FeatureCollection was expected")
    features = doc.get("features") or []
    if not isinstance(features, list):
        raise FormatError(f"{path.name}: 'features' must be a list of GeoJSON features")
    for n, feature in enumerate(features, start=1):
        point = point_feature(feature, "a car park")
        if isinstance(point, str):
            yield n, Problem("geometry" if isinstance(feature, dict) else "", point)
            continue
        props, coordinates = point
        if "id" in feature and "id" not in props:
            props["id"] = feature["id"]
        if "totalSpotNumber" in props and "capacity" not in props:
            props["capacity"] = props.pop("totalSpotNumber")
        props.pop("availableSpotNumber", None)
        props["lon"], props["lat"] = coordinates[:2]
        yield n, props


def _value(entity: dict, name: str):
    """An NGSI-LD attribute's value, normalized ({"type": "Property", "value": v}) or key-values (v)."""
    v = entity.get(name)
    if isinstance(v, dict) and "value" in v and v.get("type") in ("Property", "GeoProperty", None):
        return v["value"]
    return v


def _read_fiware(path, on_bytes):
    doc = _whole_json(path, on_bytes)
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list):
        raise FormatError(f"{path.name}: an array of NGSI-LD OffStreetParking entities was expected")
    for n, entity in enumerate(doc, start=1):
        if not isinstance(entity, dict) or entity.get("type") != "OffStreetParking":
            yield n, Problem("type", "an OffStreetParking entity was expected")
            continue
        location = _value(entity, "location") or {}
        coordinates = location.get("coordinates") if isinstance(location, dict) else None
        if not isinstance(location, dict) or location.get("type") != "Point" or not isinstance(coordinates, list) \
                or len(coordinates) < 2:
            yield n, Problem("location", "a car park's location is a GeoJSON Point [lon, lat]")
            continue
        row = {"id": str(entity.get("id", "")).removeprefix(FIWARE_PREFIX), "name": _value(entity, "name"),
               "lon": coordinates[0], "lat": coordinates[1], "capacity": _value(entity, "totalSpotNumber")}
        if entity.get("alternateName") is not None:
            row["short_name"] = _value(entity, "alternateName")
        address, contact = _value(entity, "address"), _value(entity, "contactPoint")
        if isinstance(address, dict) and address.get("streetAddress"):
            row["address"] = address["streetAddress"]
        if isinstance(contact, dict) and contact.get("telephone"):
            row["phone"] = contact["telephone"]
        yield n, {k: v for k, v in row.items() if v is not None}


# writing ---------------------------------------------------------------------------------------

def _plain(value):
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return str(_plain(value))


class Writer:
    """Writes rows (dicts with the model's fields, plus ``free_spaces`` for car parks) to a file,
    atomically: the file appears whole when ``close`` succeeds, never half written."""

    def __init__(self, path: Path, fmt: str, fields: tuple[str, ...]):
        self.path, self.fmt, self.fields = path, fmt, fields
        self._tmp = path.with_name(path.name + ".part")
        self._f = self._tmp.open("w", encoding="utf-8", newline="")
        self._features: list = []
        self.rows = 0
        if fmt == "csv":
            self._csv = csv.writer(self._f, lineterminator="\n")
            self._csv.writerow(fields)

    def write(self, row: dict) -> None:
        self.rows += 1
        if self.fmt == "csv":
            self._csv.writerow([_csv_cell(row.get(k)) for k in self.fields])
        elif self.fmt == "jsonl":
            self._f.write(json.dumps({k: _plain(row[k]) for k in self.fields if row.get(k) is not None},
                                     ensure_ascii=False) + "\n")
        elif self.fmt == "geojson":
            props = {k: row[k] for k in ("name", "short_name", "capacity", "address", "phone", "free_spaces")
                     if row.get(k) is not None}
            self._features.append({"type": "Feature", "id": row["id"], "properties": {"id": row["id"], **props},
                                   "geometry": {"type": "Point", "coordinates": [row["lon"], row["lat"]]}})
        elif self.fmt == "fiware":
            entity = {"id": FIWARE_PREFIX + row["id"], "type": "OffStreetParking",
                      "name": {"type": "Property", "value": row["name"]},
                      "alternateName": {"type": "Property", "value": row["short_name"]},
                      "location": {"type": "GeoProperty",
                                   "value": {"type": "Point", "coordinates": [row["lon"], row["lat"]]}},
                      "totalSpotNumber": {"type": "Property", "value": row["capacity"]}}
            if row.get("address"):
                entity["address"] = {"type": "Property", "value": {"streetAddress": row["address"]}}
            if row.get("phone"):
                entity["contactPoint"] = {"type": "Property", "value": {"telephone": row["phone"]}}
            if row.get("free_spaces") is not None:
                entity["availableSpotNumber"] = {"type": "Property", "value": row["free_spaces"],
                                                 "observedAt": _plain(row["reported_at"])}
            entity["@context"] = [FIWARE_CONTEXT]
            self._features.append(entity)
        else:
            raise FormatError(f"unknown format {self.fmt!r}")

    def close(self) -> None:
        if self.fmt == "geojson":
            json.dump({"type": "FeatureCollection", "features": self._features}, self._f, ensure_ascii=False, indent=1)
        elif self.fmt == "fiware":
            json.dump(self._features, self._f, ensure_ascii=False, indent=1)
        self._f.close()
        os.replace(self._tmp, self.path)

    def abandon(self) -> None:
        self._f.close()
        self._tmp.unlink(missing_ok=True)
