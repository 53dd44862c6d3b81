"""`parkwarden retention status | run`: what is held per data class, and a purge by hand."""

import click

from pipeline.console.cli import _run
from pipeline.retention import job


@click.group()
def retention() -> None:
    """Retention by data class (PW_RETENTION_*): what is held and when it goes; purge now."""


def _when(at) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC") if at is not None else "-"


@retention.command("status")
def status() -> None:
    """Per data class: rows held, the oldest, and when the next of them goes."""
    held = _run(lambda conn, s: job.status(conn, job.Policy.of(s)))
    click.echo(f"{'class':<20} {'rows':>10}  {'oldest':<20} {'next goes':<20} note")
    for h in held:
        click.echo(f"{h.name:<20} {h.rows:>10}  {_when(h.oldest):<20} {_when(h.next_at):<20} {h.note}")


@retention.command("run")
def run() -> None:
    """Purge what is past its retention now (waits for nothing: skips if a worker's purge is running)."""
    done = _run(lambda conn, s: job.run(conn, job.Policy.of(s)))
    if done is None:
        raise click.ClickException("a worker's purge is running now; try again in a moment")
    click.echo(job.summary(done))
