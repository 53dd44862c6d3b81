"""``parkwarden reference``: a data platform's Kafka login for the reference topics.

    parkwarden reference kafka-login NAME --kind plates [--kind contacts ...]
    parkwarden reference revoke NAME
"""

import asyncio

import click

from pipeline.config import Settings
from pipeline.reference.tables import BY_NAME


@click.group()
def reference() -> None:
    """Reference data fed live (compacted reference.* topics): who may write them."""


@reference.command("kafka-login")
@click.argument("name")
@click.option("--kind", "kinds", multiple=True, required=True, type=click.Choice(list(BY_NAME)),
              help="A kind of reference data NAME may write (repeat for more).")
def kafka_login(name: str, kinds: tuple[str, ...]) -> None:
    """Make (or reset, with a new password) a data platform's Kafka user NAME, allowed to write the
    reference topics of KINDS and nothing else; print its password (shown only now)."""
    from pipeline import bootstrap
    from pipeline.ingest import principals

    settings = Settings()
    wanted = [BY_NAME[k].topic for k in kinds]
    if not settings.kafka_sasl_username:
        raise click.ClickException("this broker asks for no login (PW_KAFKA_SASL_USERNAME is not set)")
    try:
        asyncio.run(bootstrap.create_topics(settings))
        password = asyncio.run(principals.grant(settings, name, principals.feed_bindings(settings, wanted)))
    except Exception as exc:  # noqa: BLE001 - say what failed
        raise click.ClickException(f"no Kafka login made ({type(exc).__name__}: {exc})") from None
    click.echo(f"Kafka: SASL_PLAINTEXT, {settings.kafka_sasl_mechanism}, user {name}, may write "
               f"{', '.join(settings.topic(t.name) for t in wanted)}; its password, shown only now:", err=True)
    click.echo(password)


@reference.command("revoke")
@click.argument("name")
def revoke(name: str) -> None:
    """Delete a data platform's Kafka user NAME and its ACLs."""
    from pipeline.ingest import principals

    try:
        asyncio.run(principals.withdraw(Settings(), name))
    except Exception as exc:  # noqa: BLE001 - say what failed
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    click.echo(f"Kafka user {name} deleted", err=True)
