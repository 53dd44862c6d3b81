"""`parkwarden zones import FILE.geojson | list`: no-parking zones with their shapes, for operators (audited)."""

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from pipeline.cli_common import actor, run_on_connection
from pipeline.lookups import zone_shapes
from pipeline.lookups.zone_shapes import CamerasUnplaced, Refusal

console = Console(highlight=False)


class _DryRun(Exception):
    def __init__(self, counts):
        self.counts = counts


@click.group()
def zones() -> None:
    """No-parking zones: their shapes (areas, road segments) place the cameras in them."""


@zones.command("import")
@click.argument("file")
@click.option("--dry-run", is_flag=True, help="Check the file and say what would change; change nothing.")
def import_file(file: str, dry_run: bool) -> None:
    """Add or replace the zones of FILE, a GeoJSON FeatureCollection (`-`: standard input), and place
    every camera again by its position. Each feature: a Polygon or MultiPolygon (an area) or a LineString
    or MultiLineString (a road segment, with properties.width_m); properties id, name and the zone's rules
    (window_seconds, exempt_reason, exempt_from_hour, exempt_until_hour, first_offence_months,
    new_camera_days, confirm_tickets; left out: the city's default). All or nothing."""
    with (sys.stdin.buffer if file == "-" else Path(file).open("rb")) as stream:
        found = list(zone_shapes.read_geojson(stream))
    refused = [f for f in found if isinstance(f, Refusal)]
    for refusal in refused:
        console.print(f"[red]{refusal}[/red]", soft_wrap=True)
    if refused:
        raise click.ClickException(f"{len(refused)} of {len(found)} features refused; nothing was imported")
    shapes = [f for f in found if not isinstance(f, Refusal)]
    for zone in shapes:
        if zone.ignored:
            console.print(f"zone {zone.id}: ignored properties {', '.join(zone.ignored)}", soft_wrap=True)

    async def work(conn):
        async with conn.transaction():
            counts = await zone_shapes.store(conn, shapes, actor())
            if dry_run:
                raise _DryRun(counts)
            return counts
    try:
        counts = run_on_connection(work)
    except _DryRun as done:
        click.echo("dry run, nothing changed; would be: " + _said(done.counts))
        return
    except CamerasUnplaced as exc:
        for camera_id, why in exc.problems:
            console.print(f"[red]camera {camera_id}[/red]: {why}", soft_wrap=True)
        raise click.ClickException(f"{len(exc.problems)} cameras could not be placed in a zone; nothing was imported")
    click.echo("zones imported: " + _said(counts))


def _said(counts: dict) -> str:
    return ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items())


@zones.command("list")
@click.option("--geojson", is_flag=True, help="The shaped zones as a GeoJSON FeatureCollection (the import format).")
def list_zones(geojson: bool) -> None:
    """The zones, their shapes and the cameras in each."""
    async def read(conn):
        rows = await conn.fetch(
            """SELECT z.id, z.name, z.geometry->>'type' AS shape, z.width_m,
                      (SELECT count(*) FROM cameras c WHERE c.zone = z.id AND c.removed_at IS NULL) AS cameras
               FROM zones z ORDER BY z.id""")
        return rows, await zone_shapes.shaped(conn)
    rows, shaped = run_on_connection(read)
    if geojson:
        features = [{"type": "Feature", "geometry": z.geometry,
                     "properties": {"id": z.id, "name": z.name, **({"width_m": z.width_m} if z.is_road else {}),
                                    **z.rules}} for z in shaped]
        click.echo(json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False))
        return
    table = Table("id", "name", "shape", "cameras", title=f"{len(rows)} zones")
    for r in rows:
        shape = "" if r["shape"] is None else f"{r['shape']}" + (f", {r['width_m']:g} m" if r["width_m"] else "")
        table.add_row(r["id"], r["name"], shape, str(r["cameras"]))
    console.print(table)
