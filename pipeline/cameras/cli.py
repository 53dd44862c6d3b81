"""`parkwarden cameras add|list|remove|import FILE`: the camera registry for operators (audited)."""

import json
import sys
from datetime import date
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from pipeline.cameras import registry
from pipeline.cameras.registry import CameraProblem
from pipeline.cli_common import actor, run_on_connection

console = Console(highlight=False)


@click.group()
def cameras() -> None:
    """The camera registry: which integrator owns which camera, where it stands, which zone it watches."""


@cameras.command("add")
@click.argument("camera_id")
@click.option("--integrator", required=True, help="The integrator that owns the camera (it alone may publish for it).")
@click.option("--lat", required=True, type=float, help="Latitude, WGS-84.")
@click.option("--lon", required=True, type=float, help="Longitude, WGS-84.")
@click.option("--place", required=True, help="Street or landmark, as shown to drivers.")
@click.option("--zone", default="", help="The zone it watches (window, exemptions); leave it out when a zone's "
              "shape holds the camera's position (`parkwarden zones import`).")
@click.option("--direction", type=click.Choice(registry.DIRECTIONS, case_sensitive=False), default=None,
              help="Which way it looks.")
@click.option("--commissioned", "commissioned_on", default=None,
              help="Commissioning date, YYYY-MM-DD (default: today).")
@click.option("--replace", is_flag=True, help="Change a camera that is registered already.")
def add(camera_id, integrator, lat, lon, place, zone, direction, commissioned_on, replace) -> None:
    """Register a camera (or change one, with --replace)."""
    try:
        cam = registry.camera({"id": camera_id, "integrator": integrator, "lat": lat, "lon": lon, "place": place,
                               "zone": zone, "direction": direction,
                               "commissioned_on": commissioned_on or date.today().isoformat()})

        async def work(conn):
            return await registry.add(conn, cam, actor(), replace=replace), await registry.registered(conn, cam.id)
        done, cam = run_on_connection(work)
    except CameraProblem as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"camera {cam.id} {done} ({cam.integrator}, {cam.place}, zone {cam.zone})")


@cameras.command("list")
@click.option("--integrator", default=None, help="Only this integrator's cameras.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines (the import format).")
def list_cameras(integrator: str | None, as_json: bool) -> None:
    """The registered cameras."""
    found = run_on_connection(lambda conn: registry.listing(conn, integrator))
    if as_json:
        for cam in found:
            click.echo(json.dumps(cam.as_json(), ensure_ascii=False))
        return
    table = Table("id", "integrator", "place", "zone", "position", "looks", "commissioned",
                  title=f"{len(found)} cameras")
    for cam in found:
        table.add_row(cam.id, cam.integrator, cam.place, cam.zone, f"{cam.lat:.5f}, {cam.lon:.5f}",
                      cam.direction or "", cam.commissioned_on.isoformat())
    console.print(table)


@cameras.command("remove")
@click.argument("camera_id")
@click.option("--reason", default="", help="Why (kept in the audit log).")
def remove(camera_id: str, reason: str) -> None:
    """Remove a camera: its events are refused from now on (its row stays, for the record)."""
    if not run_on_connection(lambda conn: registry.remove(conn, camera_id, actor(), reason)):
        raise click.ClickException(f"no registered camera {camera_id!r}")
    click.echo(f"camera {camera_id} removed")


@cameras.command("import")
@click.argument("file")
def import_file(file: str) -> None:
    """Register or update the cameras of FILE: CSV with the header
    id,integrator,lat,lon,place,zone,direction,commissioned_on, or JSON lines with those keys
    (`-` reads standard input). All or nothing: any bad row, and nothing is changed."""
    data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    try:
        rows = registry.read_file(data)
    except (CameraProblem, UnicodeDecodeError) as exc:
        raise click.ClickException(str(exc)) from None
    problems = [(line, p) for line, p in rows if isinstance(p, CameraProblem)]
    for line, problem in problems:
        console.print(f"[red]line {line}[/red]: {problem}", soft_wrap=True)
    if problems:
        raise click.ClickException(f"{len(problems)} of {len(rows)} rows refused; nothing was imported")
    try:
        counts = run_on_connection(lambda conn: registry.import_cameras(conn, [c for _, c in rows], actor()))
    except CameraProblem as exc:
        raise click.ClickException(f"{exc}; nothing was imported") from None
    click.echo("cameras imported: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
