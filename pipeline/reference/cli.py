"""``parkwarden reference``: a data platform's Kafka login for the reference topics.

    parkwarden reference kafka-login NAME --kind plates [--kind contacts ...] [--json]
    parkwarden reference list
    parkwarden reference revoke NAME
"""

import asyncio

import click

from pipeline.config import Settings
from pipeline.ingest.cli import KafkaLoginFailed, check_name, console, print_login, undo_login, with_connection
from pipeline.reference.tables import BY_NAME


@click.group()
def reference() -> None:
    """Reference data fed live (compacted reference.* topics): who may write them."""


@reference.command("kafka-login")
@click.argument("name")
@click.option("--kind", "kinds", multiple=True, required=True, type=click.Choice(list(BY_NAME)),
              help="A kind of reference data NAME may write (repeat for more).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on standard output.")
def kafka_login(name: str, kinds: tuple[str, ...], as_json: bool) -> None:
    """Make data platform NAME (or reset its login, with a new password), allowed to write the reference
    topics of KINDS and nothing else; print its password on standard output (shown only now). NAME is
    new or an active data platform: never an integrator's, a consumer's or a reserved name."""
    from pipeline import bootstrap
    from pipeline.ingest import principals

    settings = Settings()
    if not settings.kafka_sasl_username:
        raise click.ClickException("this broker asks for no login (PW_KAFKA_SASL_USERNAME is not set)")
    check_name(settings, name)
    wanted = [BY_NAME[k].topic for k in dict.fromkeys(kinds)]
    new = False

    async def work(conn):
        nonlocal new
        async with conn.transaction():
            new = await principals.register(conn, settings, name, "data_platform", [t.name for t in wanted])
            try:
                await principals.check_reachable(settings)
                await bootstrap.create_topics(settings)
                return await principals.grant(settings, name, principals.feed_bindings(settings, wanted, name))
            except Exception as exc:  # noqa: BLE001 - rolled back; said below
                raise KafkaLoginFailed(f"{type(exc).__name__}: {exc}") from exc

    try:
        password = asyncio.run(with_connection(work))
    except principals.KafkaAccessError as exc:
        raise click.ClickException(str(exc)) from None
    except KafkaLoginFailed as exc:
        left = undo_login(settings, name, f"`parkwarden reference kafka-login {name}`") if new else ""
        raise click.ClickException(f"no Kafka login made ({exc}).{left} Run the same command again once the "
                                   "broker answers.") from None
    writes = [settings.topic(t.name) for t in wanted]
    print_login(settings, name, password, f"may write {', '.join(writes)}", as_json, {"writes": writes})


@reference.command("list")
def list_platforms() -> None:
    """List data platforms: the kinds of reference data each may write."""
    from rich.table import Table

    from pipeline.ingest import principals

    rows = asyncio.run(with_connection(lambda conn: principals.listing(conn, "data_platform")))
    table = Table("name", "writes", "created", "revoked")
    for r in rows:
        table.add_row(r["name"], ", ".join(r["topics"]), f"{r['created_at']:%Y-%m-%d %H:%M}",
                      f"{r['revoked_at']:%Y-%m-%d %H:%M}" if r["revoked_at"] else "")
    console.print(table)


@reference.command("revoke")
@click.argument("name")
def revoke(name: str) -> None:
    """Revoke data platform NAME: take its Kafka login away (a password nobody is told) and delete its ACLs (its name stays taken). Run it again to
    finish a revoke that failed half way."""
    from pipeline.ingest import principals

    settings = Settings()
    check_name(settings, name)
    try:
        state = asyncio.run(with_connection(lambda conn: principals.revoke(conn, name, "data_platform")))
    except principals.KafkaAccessError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        asyncio.run(principals.withdraw(settings, name))
    except Exception as exc:  # noqa: BLE001 - say what is left and how to finish
        raise click.ClickException(f"{name} is revoked, but its Kafka login could not be withdrawn "
                                   f"({type(exc).__name__}: {exc}); finish with `parkwarden reference revoke {name}`") \
            from None
    click.echo(f"Kafka login of {name} taken away" + (" (it was revoked before)" if state == "already" else ""), err=True)
