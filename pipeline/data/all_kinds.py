"""Every kind of `parkwarden data import|export`, in one entry: ``import_kind`` and ``export_kind``.

Plates, contacts, car parks and zones without a shape (CSV, JSON lines) go through ``transfer``
(COPY into staging). Two kinds place cameras by position, so they go through the code that owns
placement instead, with the same report (row, field, reason), all or nothing, ``--dry-run`` and
``--snapshot``:

- cameras (CSV, JSON lines, GeoJSON Points): each row is checked by the camera registry
  (``registry.camera``) and registered by ``registry.add``, which audits it and places the camera in
  its zone; with ``snapshot``, registered cameras absent from the file are removed.
- zones as GeoJSON (areas, road segments): ``zone_shapes.read_geojson`` and ``zone_shapes.store``,
  which places every camera again; with ``snapshot``, zones absent from the file are deleted first.
  Zones from CSV or JSON lines (rules only) go through ``transfer``, then the cameras are placed again
  in the same transaction (a deleted shape may move a camera, or leave one without a zone: refused).

A dry run does it all, then rolls back. The demo city is loaded through ``import_kind`` too
(``pipeline/demo/city.py``). The camera registry and the zone shapes (shapely, numpy) are imported
only by the kinds that use them: `parkwarden data import plates` starts without them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import asyncpg

from pipeline.data.formats import FormatError, Writer, detect_format, point_feature
from pipeline.data.kinds import KINDS
from pipeline.data.transfer import (MAX_CHANGE, ImportReport, Progress, Refusal, export_file, import_file,
                                    snapshot_refusal)

if TYPE_CHECKING:
    from pipeline.cameras import registry
    from pipeline.lookups import zone_shapes

CAMERA_FORMATS = ("csv", "jsonl", "geojson")
NAMES = (*KINDS, "cameras")
"""The kinds, as `parkwarden data import|export KIND` names them."""


async def import_kind(conn: asyncpg.Connection, kind: str, path: Path, fmt: str | None = None, *,
                      dry_run: bool = False, snapshot: bool = False, actor: str = "data-import",
                      tz: ZoneInfo | None = None, progress: Progress | None = None, max_change: float = MAX_CHANGE,
                      force: bool = False, integrator: str | None = None) -> ImportReport:
    """Import ``path`` as ``kind`` (one of ``NAMES``); see the module docstring. Raises ``FormatError``
    when the file cannot be read as ``fmt`` at all (nothing applied). A snapshot is refused when the file
    is empty or would take away more than ``max_change`` of the rows in use, unless ``force``
    (``transfer.snapshot_refusal``); a cameras snapshot is one ``integrator``'s cameras."""
    fmt = detect_format(path, fmt)
    bounds = {"max_change": max_change, "force": force}
    if kind == "cameras":
        return await _all_or_nothing(conn, ImportReport(kind, path.name, fmt, dry_run, snapshot),
                                     lambda report: _cameras(conn, path, fmt, report, actor, integrator, **bounds),
                                     actor)
    if kind == "zones" and fmt == "geojson":
        return await _all_or_nothing(conn, ImportReport(kind, path.name, fmt, dry_run, snapshot),
                                     lambda report: _zone_shapes(conn, path, report, actor, **bounds), actor)
    if kind != "zones":
        return await import_file(conn, kind, path, fmt, dry_run=dry_run, snapshot=snapshot, actor=actor, tz=tz,
                                 progress=progress, **bounds)
    from pipeline.lookups import zone_shapes

    report = None
    try:
        async with conn.transaction():
            # the zones' rules as usual (applied, inside this transaction), then the cameras placed again
            await zone_shapes.lock(conn)
            report = await import_file(conn, kind, path, fmt, snapshot=snapshot, actor=actor, tz=tz, progress=progress,
                                       **bounds)
            report.dry_run = dry_run
            if not report.refused_count:
                try:
                    report.counts["cameras_moved"] = await zone_shapes.place_cameras(conn, actor)
                except zone_shapes.CamerasUnplaced as exc:
                    _unplaced(report, exc)
            report.applied = not dry_run and not report.refused_count
            if not report.applied:
                raise _Undo()
    except _Undo:
        pass
    return report


class _Undo(Exception):
    """Rolls the import's transaction back (a dry run, or a refusal after rows were applied)."""


async def _all_or_nothing(conn, report: ImportReport, work, actor: str) -> ImportReport:
    try:
        async with conn.transaction():
            await work(report)
            if not report.refused_count:
                await conn.execute(
                    "INSERT INTO audit_log (at, case_id, actor, action, detail) VALUES (now(), NULL, $1, $2, $3::text::jsonb)",
                    actor, f"data_import:{report.kind}",
                    _json({"file": report.file, "format": report.format, "rows": report.rows,
                           "snapshot": report.snapshot, "dry_run": report.dry_run, **report.counts}))
            report.applied = not report.dry_run and not report.refused_count
            if not report.applied:
                raise _Undo()
    except _Undo:
        pass
    return report


def _json(detail: dict) -> str:
    return json.dumps(detail, ensure_ascii=False)


def _problem(exc: Exception) -> tuple[str, str]:
    """(field, reason) from a camera registry's message, "field: reason"."""
    from pipeline.cameras import registry

    text = str(exc)
    head, _, rest = text.partition(": ")
    if rest and (head in registry.FIELDS or head == "lat, lon"):
        return head, rest
    return "", text


def _camera_rows(path: Path, fmt: str) -> list[tuple[int, registry.Camera | registry.CameraProblem]]:
    from pipeline.cameras import registry
    from pipeline.cameras.registry import CameraProblem

    if fmt in ("csv", "jsonl"):
        try:
            return registry.read_file(path.read_bytes())
        except (CameraProblem, UnicodeDecodeError) as exc:
            raise FormatError(f"{path.name}: {exc}") from None
    if fmt != "geojson":
        raise FormatError(f"cameras can be imported from {', '.join(CAMERA_FORMATS)}, not {fmt}")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, too deep, too long a number
        raise FormatError(f"{path.name} is not a JSON document we read: {type(exc).__name__}: "
                          f"{str(exc)[:200]}") from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection" \
            or not isinstance(doc.get("features") or [], list):
        raise FormatError(f"{path.name}: a GeoJSON FeatureCollection was expected")
    rows = []
    for n, feature in enumerate(doc.get("features") or [], start=1):
        point = point_feature(feature, "a camera")
        if isinstance(point, str):
            rows.append((n, CameraProblem(f"lat, lon: {point}" if isinstance(feature, dict) else point)))
            continue
        fields, coordinates = point
        if "id" in feature and "id" not in fields:
            fields["id"] = feature["id"]
        fields["lon"], fields["lat"] = coordinates[:2]
        try:
            rows.append((n, registry.camera(fields)))
        except CameraProblem as exc:
            rows.append((n, exc))
    return rows


async def _cameras(conn, path: Path, fmt: str, report: ImportReport, actor: str, integrator: str | None,
                   max_change: float, force: bool) -> None:
    from pipeline.cameras import registry
    from pipeline.cameras.registry import CameraProblem

    if report.snapshot and not integrator:
        report.refuse(Refusal(0, "--integrator", "a cameras snapshot is the whole list of one integrator's cameras: "
                                                 "name it with --integrator"))
        return
    rows = _camera_rows(path, fmt)
    report.rows = len(rows)
    first: dict[str, int] = {}
    for row, found in rows:
        if isinstance(found, CameraProblem):
            report.refuse(Refusal(row, *_problem(found)))
        elif report.snapshot and found.integrator != integrator:
            report.refuse(Refusal(row, "integrator", f"the snapshot is of {integrator}'s cameras (--integrator), "
                                                     f"this row is {found.integrator}'s"))
        elif found.id in first:
            report.refuse(Refusal(row, "id", f"the same id as row {first[found.id]}"))
        else:
            first[found.id] = row
    counts = report.counts
    counts.update(added=0, updated=0, unchanged=0)
    for row, cam in rows:
        if isinstance(cam, CameraProblem) or first.get(cam.id) != row:
            continue  # refused above; the others are still tried, so that one report names every bad row
        try:
            counts[await registry.add(conn, cam, actor, replace=True, reason=f"import:{path.name}")] += 1
        except CameraProblem as exc:
            report.refuse(Refusal(row, *_problem(exc)))
    if report.snapshot and not report.refused_count:
        registered = await registry.listing(conn, integrator)
        absent = [cam for cam in registered if cam.id not in first]
        refusal = snapshot_refusal(f"cameras of {integrator}", "remove", report.rows, len(absent), len(registered),
                                   max_change, force)
        if refusal is not None:
            report.refuse(refusal)
            return
        counts["removed"] = 0
        for cam in absent:
            counts["removed"] += await registry.remove(conn, cam.id, actor, f"absent from {path.name} (snapshot)")
    report.refused.sort(key=lambda r: r.row)


async def _zone_shapes(conn, path: Path, report: ImportReport, actor: str, max_change: float, force: bool) -> None:
    from pipeline.lookups import zone_shapes

    with path.open("rb") as stream:
        found = list(zone_shapes.read_geojson(stream))
    for item in found:
        if isinstance(item, zone_shapes.Refusal) and item.row == 0:
            raise FormatError(f"{path.name}: {item.field}: {item.reason}")
    report.rows = len(found)
    for item in found:
        if isinstance(item, zone_shapes.Refusal):
            report.refuse(Refusal(item.row, item.field, item.reason))
    if report.refused_count:
        return
    shapes = [item for item in found if isinstance(item, zone_shapes.ZoneShape)]
    deleted = 0
    if report.snapshot:
        await zone_shapes.lock(conn)
        absent, in_use = await conn.fetchrow("SELECT count(*) FILTER (WHERE id <> ALL($1::text[])), count(*) FROM zones",
                                             [z.id for z in shapes])
        if refusal := snapshot_refusal("zones", "delete", len(shapes), absent, in_use, max_change, force):
            report.refuse(refusal)
            return
        deleted = int((await conn.execute("DELETE FROM zones WHERE id <> ALL($1::text[])",
                                          [z.id for z in shapes])).split()[-1])
    try:
        stored = await zone_shapes.store(conn, shapes, actor)
    except zone_shapes.CamerasUnplaced as exc:
        _unplaced(report, exc)
        return
    report.counts.update(inserted=stored["added"], updated=stored["changed"], unchanged=stored["unchanged"])
    if report.snapshot:
        report.counts["deleted"] = deleted
    report.counts["cameras_moved"] = stored["cameras_moved"]


def _unplaced(report: ImportReport, exc: zone_shapes.CamerasUnplaced) -> None:
    """Zones that would leave cameras without a zone: each camera is a refusal (row 0: the file as a whole)."""
    for camera_id, why in exc.problems:
        report.refuse(Refusal(0, f"camera {camera_id}", why))


# ── export ──────────────────────────────────────────────────────────────────────────────────


async def export_kind(conn: asyncpg.Connection, kind: str, path: Path, fmt: str | None = None, *,
                      actor: str = "data-export") -> int:
    """Write ``kind`` to ``path`` (atomically) in the formats it imports from; returns the rows written.
    Zones as GeoJSON: the zones that have a shape (the CSV export has them all)."""
    fmt = fmt or detect_format(path, None)
    if kind == "cameras":
        if fmt not in CAMERA_FORMATS:
            raise FormatError(f"cameras can be exported as {', '.join(CAMERA_FORMATS)}, not {fmt}")
        rows = await _camera_export(conn)
        _write_cameras(path, fmt, rows)
    elif kind == "zones" and fmt == "geojson":
        from pipeline.lookups import zone_shapes

        async with conn.transaction(isolation="repeatable_read", readonly=True):
            shaped = await zone_shapes.shaped(conn)
        rows = [{"type": "Feature", "geometry": z.geometry,
                 "properties": {"id": z.id, "name": z.name, **({"width_m": z.width_m} if z.is_road else {}), **z.rules}}
                for z in shaped]
        _write_features(path, rows)
    else:
        return await export_file(conn, kind, path, fmt, actor=actor)
    await conn.execute(
        "INSERT INTO audit_log (at, case_id, actor, action, detail) VALUES (now(), NULL, $1, $2, $3::text::jsonb)",
        actor, f"data_export:{kind}", _json({"file": path.name, "format": fmt, "rows": len(rows)}))
    return len(rows)


async def _camera_export(conn) -> list[dict]:
    """The registered cameras as their import rows; ``zone`` is the zone the operator gave (empty: placed
    by position), so that the file imports back unchanged."""
    from pipeline.cameras import registry

    rows = await conn.fetch(f"SELECT {registry.COLUMNS}, zone_given FROM cameras WHERE removed_at IS NULL ORDER BY id")
    return [{**{k: r[k] for k in registry.FIELDS}, "zone": r["zone_given"],
             "commissioned_on": r["commissioned_on"].isoformat()} for r in rows]


def _write_cameras(path: Path, fmt: str, rows: list[dict]) -> None:
    from pipeline.cameras import registry

    if fmt == "geojson":
        _write_features(path, [{"type": "Feature", "id": r["id"],
                                "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
                                "properties": {k: r[k] for k in registry.FIELDS
                                               if k not in ("lat", "lon") and r[k] is not None}} for r in rows])
        return
    writer = Writer(path, fmt, registry.FIELDS)
    for row in rows:
        writer.write(row)
    writer.close()


def _write_features(path: Path, features: list[dict]) -> None:
    part = path.with_name(path.name + ".part")
    with part.open("w", encoding="utf-8") as f:
        json.dump({"type": "FeatureCollection", "features": features}, f, ensure_ascii=False, indent=1)
    os.replace(part, path)

