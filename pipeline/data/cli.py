"""`parkwarden data import|export KIND FILE`: a city's registries, car parks, zones and cameras from and to files."""

import asyncio
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from pipeline.cli_common import actor
from pipeline.config import Settings
from pipeline.data.all_kinds import NAMES, export_kind, import_kind
from pipeline.data.formats import FORMATS, FormatError
from pipeline.data.transfer import KEEP_REFUSALS, MAX_CHANGE

console = Console(stderr=True, highlight=False, soft_wrap=True)


async def _connect(settings: Settings) -> asyncpg.Connection:
    """One connection without the workers' statement timeout: a big import's statements take a while."""
    from pipeline.cases.store import init_connection

    conn = await asyncpg.connect(settings.database_url.get_secret_value(),
                                 server_settings={"application_name": "parkwarden:data"})
    await init_connection(conn)
    return conn


@click.group()
def data() -> None:
    """Bring a city's own data in (and out): plates, contacts, car parks, zones, cameras."""


@data.command("import")
@click.argument("kind", type=click.Choice(NAMES))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Default: from the file's extension.")
@click.option("--dry-run", is_flag=True, help="Validate and count what would change; apply nothing.")
@click.option("--snapshot", is_flag=True,
              help="The file is the whole registry: retire (plates, contacts), delete (car parks, zones) or remove "
                   "(cameras) what it lacks.")
@click.option("--max-change", type=click.FloatRange(0, 100), default=100 * MAX_CHANGE, show_default=True,
              metavar="PERCENT", help="A snapshot that would take away more than this share of the rows in use is "
                                      "refused (so is an empty one), naming the counts.")
@click.option("--force", is_flag=True, help="Apply a snapshot whatever it takes away (an empty file empties the "
                                            "registry).")
@click.option("--integrator", help="Cameras: the integrator whose cameras the file holds (required with --snapshot: "
                                   "only its cameras are removed).")
def import_command(kind: str, file: Path, fmt: str | None, dry_run: bool, snapshot: bool, max_change: float,
                   force: bool, integrator: str | None) -> None:
    """Import FILE into a registry, all or nothing: any refused row and nothing is applied."""
    settings = Settings()
    tz = ZoneInfo(settings.timezone)
    size = file.stat().st_size

    async def go(progress):
        conn = await _connect(settings)
        try:
            return await import_kind(conn, kind, file, fmt, dry_run=dry_run, snapshot=snapshot, actor=actor(),
                                     tz=tz, progress=progress, max_change=max_change / 100, force=force,
                                     integrator=integrator)
        finally:
            await conn.close()

    started = time.monotonic()
    try:
        if console.is_terminal:
            with Progress(TextColumn(f"{kind} [progress.description]{{task.description}}"), BarColumn(),
                          DownloadColumn(), TimeRemainingColumn(), console=console) as bar:
                task = bar.add_task("", total=size)
                report = asyncio.run(go(lambda done, rows: bar.update(task, completed=done,
                                                                      description=f"{rows:,} rows")))
        else:
            last = [time.monotonic()]

            def periodic(done, rows):
                if time.monotonic() - last[0] >= 5:
                    last[0] = time.monotonic()
                    console.print(f"{kind}: {rows:,} rows read ({100 * done // max(size, 1)}% of {file.name})")
            report = asyncio.run(go(periodic))
    except FormatError as exc:
        console.print(f"[red]refused[/red]: {exc}; nothing was applied")
        sys.exit(2)
    seconds = time.monotonic() - started
    if report.refused_count:
        console.print(f"[red]refused[/red]: {report.refused_count:,} of {report.rows:,} rows in {file.name}; "
                      "nothing was applied. Fix these rows and import again:")
        for refusal in report.refused:
            console.print(f"  {refusal}", markup=False)
        if report.refused_count > len(report.refused):
            console.print(f"  ... and {report.refused_count - KEEP_REFUSALS:,} more")
        sys.exit(1)
    done = ", ".join(f"{v:,} {k}" for k, v in report.counts.items())
    verb = "dry run, nothing applied: would have" if dry_run else "imported"
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in report.steps.items())
    click.echo(f"{kind}: {verb} {report.rows:,} rows from {file.name} ({report.format}): {done} "
               f"in {seconds:.1f} s ({steps})")


@data.command("export")
@click.argument("kind", type=click.Choice(NAMES))
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Default: from the file's extension.")
def export_command(kind: str, file: Path, fmt: str | None) -> None:
    """Export a registry to FILE (the formats it imports from). Exports of contacts hold personal data."""
    settings = Settings()

    async def go():
        conn = await _connect(settings)
        try:
            return await export_kind(conn, kind, file, fmt, actor=actor())
        finally:
            await conn.close()

    try:
        rows = asyncio.run(go())
    except FormatError as exc:
        console.print(f"[red]refused[/red]: {exc}")
        sys.exit(2)
    click.echo(f"{kind}: exported {rows:,} rows to {file}")
