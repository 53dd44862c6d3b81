"""`parkwarden tickets verify | pack NUMBER | notice NUMBER -o FILE`: the ticket record on the command line."""

import json
import sys

import click

from pipeline.console.cli import _run
from pipeline.tickets import chain
from pipeline.tickets.pack import Terms, evidence_pack


@click.group()
def tickets() -> None:
    """The ticket record: verify the hash chain; a ticket's evidence pack (JSON) and notice (PDF)."""


@tickets.command("verify")
def verify() -> None:
    """Recompute the ticket record's hash chain and every record from its rows; name the first broken link."""
    verdict = _run(lambda conn, _s: chain.verify(conn))
    if verdict.before_chain:
        click.echo(f"{verdict.before_chain} ticket(s) issued before the record began (no link)")
    if verdict.intact:
        click.echo(f"ticket record intact: {verdict.links} link(s), head {verdict.head_seq} {verdict.head_hash}")
        return
    click.echo(f"ticket record BROKEN: {verdict.broken or verdict.problems[0]}", err=True)
    for problem in verdict.problems[1:20]:
        click.echo(f"  also: {problem}", err=True)
    if len(verdict.problems) > 20:
        click.echo(f"  … {len(verdict.problems) - 20} more", err=True)
    sys.exit(1)


async def _pack(conn, settings, number: str) -> dict:
    pack = await evidence_pack(conn, number, Terms.of(settings))
    if pack is None:
        raise click.ClickException(f"no ticket {number.strip().upper()}")
    return pack


@tickets.command("pack")
@click.argument("number")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write to this file (default: stdout).")
def pack_command(number: str, output: str | None) -> None:
    """A ticket's evidence pack, as JSON."""
    text = json.dumps(_run(lambda conn, s: _pack(conn, s, number)), ensure_ascii=False, indent=2) + "\n"
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
        click.echo(f"evidence pack of {number.upper()} written to {output}")
    else:
        click.echo(text, nl=False)


@tickets.command("notice")
@click.argument("number")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), required=True, help="The PDF file to write.")
def notice_command(number: str, output: str) -> None:
    """A ticket's notice (电子违停告知单), as PDF."""
    from pipeline.tickets import notice

    async def rendered(conn, settings) -> bytes:
        pack = await _pack(conn, settings, number)
        terms = notice.NoticeTerms.of(settings)
        return notice.render(pack, terms, await notice.page_url(conn, pack["ticket"]["number"], terms),
                             await notice.images_of(conn, pack))

    pdf = _run(rendered)
    with open(output, "wb") as f:
        f.write(pdf)
    click.echo(f"notice of {number.upper()} written to {output} ({len(pdf)} bytes)")
