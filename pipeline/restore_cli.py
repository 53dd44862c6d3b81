"""`parkwarden backup` and `parkwarden after-restore` (README, "Backups and restore")."""

import asyncio
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import click

from pipeline.config import Settings


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--from", "source", default=None,
              help="A login with the REPLICATION attribute (default: PW_BACKUP_DATABASE_URL, else PW_DATABASE_URL).")
def backup(directory: Path, source: str | None) -> None:
    """A base backup of the primary into DIRECTORY/<UTC time>/ (pg_basebackup -X stream: the WAL it
    needs is in it). With the server's WAL archive it restores to any later point in time."""
    settings = Settings()
    url = source or (settings.backup_database_url or settings.database_url).get_secret_value()
    binary = shutil.which("pg_basebackup")
    if binary is None:
        raise click.ClickException("pg_basebackup not found: install PostgreSQL's client tools (Debian: postgresql-client-15)")
    if urlsplit(url).scheme not in ("postgresql", "postgres"):
        raise click.ClickException("--from / PW_BACKUP_DATABASE_URL: expected a postgresql:// URL")
    archiving = asyncio.run(_archive_mode(url))
    if archiving != "on" and archiving != "always":
        click.echo(f"warning: the server's archive_mode is {archiving}: this backup restores to the moment it "
                   "ends, not to a later point in time (README: Backups and restore)", err=True)
    target = directory / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(f"cannot create {directory}: {exc.strerror}") from exc
    click.echo(f"base backup into {target} ...", err=True)
    # libpq reads the URL itself (multi-host, target_session_attrs=read-write: the primary).
    done = subprocess.run([binary, "-d", url, "-D", str(target), "-X", "stream", "-c", "fast", "-P", "-v",
                           "-l", f"parkwarden {target.name}"], stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        problem = " ".join(line.strip() for line in done.stderr.splitlines() if "error" in line.lower()) or done.stderr.strip()
        hint = (" (the login needs the REPLICATION attribute and a `host replication` line in pg_hba.conf)"
                if "replication" in problem.lower() else "")
        raise click.ClickException(f"pg_basebackup failed: {_no_password(problem, url)[:500]}{hint}")
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    click.echo(f"{target}  ({size / 1e6:.0f} MB)")


def _no_password(text: str, url: str) -> str:
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text


async def _archive_mode(url: str) -> str:
    import asyncpg

    try:
        conn = await asyncpg.connect(url, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise click.ClickException(f"cannot reach PostgreSQL at {urlsplit(url).hostname}:{urlsplit(url).port}: "
                                   f"{type(exc).__name__}") from exc
    try:
        return await conn.fetchval("SHOW archive_mode")
    finally:
        await conn.close()


def _moment(value: str) -> datetime:
    at = datetime.fromisoformat(value)
    if at.tzinfo is None:
        raise click.BadParameter("give the time zone, as recovery_target_time had it (e.g. 2026-12-07T18:30:00+00:00)")
    return at


@click.command("after-restore")
@click.option("--to", "restored_to", required=True, type=_moment,
              help="The point in time the database was restored to (recovery_target_time), with its time zone.")
@click.option("--margin", default=300.0, show_default=True,
              help="Seconds before --to from which Kafka is read: more than the workers' lag at that time and "
                   "any clock difference between Kafka's clients and PostgreSQL.")
@click.option("--settle", "settle", default=600.0, show_default=True,
              help="Seconds the workers keep reconciling at least after their replay has caught up with the camera "
                   "events there are now; they go on until the replay has made again every SMS and decision Kafka "
                   "had of the lost stretch; then the records kept for the reconciliation are deleted.")
@click.option("--dry-run", is_flag=True, help="Say what would be done; change nothing.")
def after_restore(restored_to: datetime, margin: float, settle: float, dry_run: bool) -> None:
    """Run on a database restored to a point in time, with every worker stopped, before starting them:
    the consumer group goes back to what the database holds, and what the outside world already had
    (outputs on Kafka, every SMS the gateway accepted, tickets with their numbers and links) is recorded
    so that the workers' replay redoes none of it."""
    from pipeline import restore
    from pipeline.cli_common import actor

    try:
        plan = asyncio.run(restore.after_restore(Settings(), restored_to, timedelta(seconds=margin), actor(),
                                                 progress=lambda line: click.echo(line, err=True), dry_run=dry_run,
                                                 settle_after=timedelta(seconds=settle)))
    except restore.RestoreError as exc:
        raise click.ClickException(str(exc)) from exc
    if plan.not_reconciled:
        click.echo("some effects after the restore point are not reconciled (see above and the README)", err=True)
