"""`parkwarden tickets verify | pack NUMBER | notice NUMBER -o FILE`: the ticket record on the command line."""

import asyncio
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
@click.option("--against-kafka", is_flag=True,
              help="Also compare every link with the one published on the tickets topic (the heads outside "
                   "PostgreSQL): a chain re-sealed in the database differs from them.")
def verify(against_kafka: bool) -> None:
    """Recompute the ticket record's hash chain and every record from its rows; name the first broken link."""
    verdict = _run(lambda conn, _s: chain.verify(conn))
    if verdict.before_chain:
        click.echo(f"{verdict.before_chain} ticket(s) issued before the record began (no link)")
    if verdict.intact:
        click.echo(f"ticket record intact: {verdict.links} link(s), head {verdict.head_seq} {verdict.head_hash}")
    else:
        _broken(verdict.broken or verdict.problems[0], verdict.problems[1:])
    if against_kafka:
        found = _run(_compare_with_kafka)
        if found.problems:
            _broken(found.problems[0], found.problems[1:], "does not match the tickets topic")
        click.echo(f"ticket record matches the {found.matched} link(s) published on tickets"
                   + (f"; {found.waiting} not published yet (in the outbox)" if found.waiting else "")
                   + (f"; {found.older} older than the topic holds" if found.older else ""))


def _broken(first: str, others: list[str], what: str = "BROKEN") -> None:
    click.echo(f"ticket record {what}: {first}", err=True)
    for problem in others[:19]:
        click.echo(f"  also: {problem}", err=True)
    if len(others) > 19:
        click.echo(f"  … {len(others) - 19} more", err=True)
    sys.exit(1)


async def _compare_with_kafka(conn, settings) -> chain.Comparison:
    """Read the tickets topic from its start to its end now, and compare its links with the database's."""
    from aiokafka import AIOKafkaConsumer

    from pipeline.bootstrap import kafka_client_options
    from schemas import topics

    name = settings.topic(topics.TICKETS.name)
    consumer = AIOKafkaConsumer(name, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                request_timeout_ms=15_000, client_id=f"{settings.app_id}-verify",
                                **kafka_client_options(settings))
    await consumer.start()
    try:
        if name not in await consumer.topics():
            raise click.ClickException(f"no topic {name} on {settings.kafka_bootstrap}")
        for _ in range(100):  # without a group, the consumer takes every partition once it has the metadata
            partitions = sorted(consumer.assignment())
            if partitions:
                break
            await asyncio.sleep(0.1)
        else:
            raise click.ClickException(f"could not read the partitions of {name}")
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        published = []
        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in partitions])

        while await behind():
            for records in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                for r in records:
                    try:
                        link = chain.published_link(json.loads(r.value))
                    except ValueError:
                        link = None
                    if link is not None:
                        published.append(link)
    finally:
        await consumer.stop()
    return await chain.compare_with_published(conn, published)


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
