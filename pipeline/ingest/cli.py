"""Command-line tools for integrators and operators:

    parkwarden events validate FILE            offline, against the same models as the server
    parkwarden events publish FILE --to kafka|http [--url URL --key KEY] [--integrator NAME]
    parkwarden integrators add NAME [--kind publisher|operator] | list | revoke NAME | kafka-login NAME
    parkwarden dead-letters [--limit N] [--json]
    parkwarden schemas [--write]

FILE holds JSON lines, a JSON array, or one JSON object; ``-`` reads standard input.
"""

import asyncio
import json
import sys
from collections import Counter
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from pipeline.config import Settings
from pipeline.ingest.batch import Batch, Refusal, kafka_address, read_file
from schemas import topics
from schemas.codec import encode
from schemas.events import CarParkStatus, FieldError, input_event_adapter, validation_context

console = Console(stderr=False, highlight=False)


def _read(file: str) -> Batch:
    data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    return read_file(data, input_event_adapter, validation_context(Settings().evidence_schemes))


def _print_refusals(refused: list[Refusal], limit: int | None = None) -> None:
    for r in refused[:limit]:
        where = f"line {r.line}" if r.line is not None else f"event {r.index}"
        ident = f" ({r.event_id})" if r.event_id else ""
        console.print(f"[red]{where}{ident}[/red]")
        for e in r.errors or (FieldError(field="(message)", message=r.reason),):
            console.print(f"  [bold]{e.field}[/bold]: {e.message}", soft_wrap=True)
    if limit is not None and len(refused) > limit:
        console.print(f"... and {len(refused) - limit} more")


# ── events ────────────────────────────────────────────────────────────────────────────────


@click.group()
def events() -> None:
    """Validate and publish files of events (camera events and car-park counts)."""


@events.command()
@click.argument("file")
def validate(file: str) -> None:
    """Check every event in FILE against the contract, offline. Exit 1 if any is invalid."""
    batch = _read(file)
    _print_refusals(batch.refused)
    colour = "red" if batch.refused else "green"
    console.print(f"[{colour}]{len(batch.events)} valid, {len(batch.refused)} invalid[/{colour}]")
    if batch.refused:
        raise SystemExit(1)


@events.command()
@click.argument("file")
@click.option("--to", "to", type=click.Choice(["kafka", "http"]), required=True, help="Where to publish.")
@click.option("--url", default=None, help="The ingest's base URL (http), default http://<PW_WEB_HOST>:<PW_WEB_PORT>.")
@click.option("--key", envvar="PW_INGEST_KEY", default=None, help="Your API key (http); or set PW_INGEST_KEY.")
@click.option("--batch", "batch_size", default=200, show_default=True, help="Events per HTTP request.")
@click.option("--integrator", default=None,
              help="Your integrator name (kafka): camera events go to camera-events.<integrator>.")
def publish(file: str, to: str, url: str | None, key: str | None, batch_size: int, integrator: str | None) -> None:
    """Publish the valid events of FILE, with a progress bar and a summary. Invalid events are not
    sent; each is listed with the field and the reason. Exit 1 if any event was rejected. On Kafka,
    log in with PW_KAFKA_SASL_USERNAME / PW_KAFKA_SASL_PASSWORD when the broker asks for it."""
    settings = Settings()
    batch = _read(file)
    if to == "http" and not key:
        raise click.UsageError("--key (or PW_INGEST_KEY) is needed to publish over HTTP")
    if to == "kafka" and not integrator and any(not isinstance(e, CarParkStatus) for _, e in batch.events):
        raise click.UsageError("--integrator NAME is needed to publish camera events to Kafka "
                               "(they go to camera-events.<NAME>)")
    progress = Progress(TextColumn("publishing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=console, transient=False)
    with progress:
        task = progress.add_task("events", total=len(batch.events))
        advance = lambda n: progress.advance(task, n)  # noqa: E731
        if to == "kafka":
            sent, refused = asyncio.run(_to_kafka(settings, batch, advance, integrator)), []
        else:
            base = (url or f"http://{settings.web_host}:{settings.web_port}").rstrip("/")
            sent, refused = asyncio.run(_to_http(base, key, batch, batch_size, advance))
    rejected = sorted(batch.refused + refused, key=lambda r: r.index)
    _summary(sent, rejected)
    if rejected:
        raise SystemExit(1)


async def _to_kafka(settings: Settings, batch: Batch, advance, integrator: str | None) -> int:
    from aiokafka import AIOKafkaProducer

    from pipeline.bootstrap import kafka_client_options

    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, linger_ms=5, **kafka_client_options(settings))
    try:
        await producer.start()
    except Exception as exc:  # noqa: BLE001
        raise click.ClickException(f"cannot reach Kafka at {settings.kafka_bootstrap} ({type(exc).__name__}); "
                                   "check PW_KAFKA_BOOTSTRAP") from None
    try:
        sent = 0
        for start in range(0, len(batch.events), 500):
            chunk = batch.events[start:start + 500]
            futures = []
            for _index, event in chunk:
                topic, key = kafka_address(event)
                name = settings.topic(topic.name)
                if topic is topics.CAMERA_EVENTS:
                    name = topics.camera_events_of(name, integrator)
                futures.append(await producer.send(name, encode(event), key=key.encode()))
            await asyncio.gather(*futures)
            sent += len(chunk)
            advance(len(chunk))
        return sent
    finally:
        await producer.stop()


def _endpoint(event) -> str:
    topic, _ = kafka_address(event)
    return "/v1/car-park-status" if topic is topics.CAR_PARK_STATUS else "/v1/camera-events"


async def _to_http(base: str, key: str, batch: Batch, batch_size: int, advance) -> tuple[int, list[Refusal]]:
    import aiohttp

    sent, refused = 0, []
    chunks: list[tuple[str, list]] = []
    for item in batch.events:  # consecutive events for the same endpoint travel together, in file order
        path = _endpoint(item[1])
        if chunks and chunks[-1][0] == path and len(chunks[-1][1]) < batch_size:
            chunks[-1][1].append(item)
        else:
            chunks.append((path, [item]))
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/x-ndjson"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for path, items in chunks:
            body = b"\n".join(encode(event) for _, event in items)
            reply = await _post(session, base + path, body)
            for r in reply.get("rejected", []):
                index, event = items[r["index"]]
                refused.append(Refusal(index, None, getattr(event, "event_id", None), "server: " + r["reason"],
                                       tuple(FieldError(**e) for e in r.get("errors", []))))
            sent += reply["accepted"]
            advance(len(items))
    return sent, refused


async def _post(session, url: str, body: bytes, attempts: int = 8) -> dict:
    import aiohttp

    for attempt in range(attempts):
        try:
            async with session.post(url, data=body) as response:
                payload = await response.json(content_type=None)
                if response.status in (202, 422):
                    return payload
                if response.status in (429, 503) and attempt + 1 < attempts:
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                    continue
                raise click.ClickException(f"{url} answered {response.status}: {payload.get('error', payload)}")
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
            if attempt + 1 == attempts:
                raise click.ClickException(f"cannot reach {url} ({type(exc).__name__}); is a worker running?") \
                    from None
            await asyncio.sleep(1)
    raise click.ClickException(f"{url}: gave up after {attempts} attempts")


def _summary(sent: int, rejected: list[Refusal]) -> None:
    table = Table(title="summary", show_header=False)
    table.add_row("sent", str(sent))
    table.add_row("rejected", str(len(rejected)))
    console.print(table)
    if not rejected:
        return
    why = Counter(f"{e.field}: {e.message}" for r in rejected for e in (r.errors or (FieldError(
        field="(message)", message=r.reason),)))
    reasons = Table("events", "why", title="rejected, by reason")
    for reason, n in why.most_common(10):
        reasons.add_row(str(n), reason)
    console.print(reasons)
    _print_refusals(rejected, limit=20)


# ── integrators ───────────────────────────────────────────────────────────────────────────


async def _with_connection(work):
    import asyncpg

    from pipeline import bootstrap

    pool = await bootstrap.connect_database(Settings())
    try:
        async with pool.acquire() as conn:
            return await work(conn)
    except asyncpg.UndefinedTableError:
        raise click.ClickException("the database has no integrators table yet: run `parkwarden setup`") from None
    finally:
        await pool.close()


@click.group()
def integrators() -> None:
    """Integrators: their API keys for the HTTP ingest and their Kafka logins (add, list, revoke)."""


@integrators.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(["publisher", "operator"]), default="publisher", show_default=True,
              help="publisher: may post events. operator: may also read dead letters.")
@click.option("--kafka-login/--no-kafka-login", default=True, show_default=True,
              help="Also make its Kafka topic (camera-events.NAME) and, on a broker with SASL "
                   "(PW_KAFKA_SASL_USERNAME set), its SCRAM user and ACLs.")
def add_integrator(name: str, kind: str, kafka_login: bool) -> None:
    """Add an integrator and print its API key (shown this once; only its hash is kept). On a broker
    with SASL, also its Kafka user NAME and password (shown once), allowed to write camera-events.NAME
    and read camera-commands only."""
    from pipeline.ingest import keys

    try:
        integrator, key = asyncio.run(_with_connection(lambda conn: keys.add(conn, name, kind)))
    except (keys.IntegratorExists, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"added {integrator.name} ({integrator.kind}). Its API key, shown only now:", err=True)
    click.echo(key)
    if kafka_login:
        _kafka_login(integrator.name)


def _kafka_login(name: str) -> None:
    from pipeline import bootstrap
    from pipeline.ingest import principals

    settings = Settings()
    topic = topics.camera_events_of(settings.topic(topics.CAMERA_EVENTS.name), name)
    try:
        asyncio.run(bootstrap.create_topics(settings, [name]))
        if not settings.kafka_sasl_username:
            click.echo(f"Kafka: publishes to {topic} (this broker asks for no login)", err=True)
            return
        password = asyncio.run(principals.grant(settings, name))
    except Exception as exc:  # noqa: BLE001 - the key stands; say what is missing and how to finish
        raise click.ClickException(f"the API key was made, but not the Kafka login ({type(exc).__name__}: {exc}); "
                                   f"finish with `parkwarden integrators kafka-login {name}`") from None
    click.echo(f"Kafka: SASL_PLAINTEXT, {settings.kafka_sasl_mechanism}, user {name}, topic {topic}; "
               "its password, shown only now:", err=True)
    click.echo(password)


@integrators.command("kafka-login")
@click.argument("name")
def kafka_login(name: str) -> None:
    """Make (or reset, with a new password) an integrator's Kafka login and its topic."""
    _kafka_login(name)


@integrators.command("list")
def list_integrators() -> None:
    """List integrators (names, kinds, the first characters of their keys)."""
    from pipeline.ingest import keys

    rows = asyncio.run(_with_connection(keys.listing))
    table = Table("name", "kind", "key starts", "created", "revoked")
    for r in rows:
        table.add_row(r["name"], r["kind"], r["key_prefix"] + "…", f"{r['created_at']:%Y-%m-%d %H:%M}",
                      f"{r['revoked_at']:%Y-%m-%d %H:%M}" if r["revoked_at"] else "")
    console.print(table)


@integrators.command("revoke")
@click.argument("name")
def revoke_integrator(name: str) -> None:
    """Revoke an integrator's key (workers stop accepting it within PW_INGEST_KEY_CACHE_SECONDS)."""
    from pipeline.ingest import keys

    if not asyncio.run(_with_connection(lambda conn: keys.revoke(conn, name))):
        raise click.ClickException(f"no active integrator named {name!r}")
    click.echo(f"revoked {name}")
    settings = Settings()
    if settings.kafka_sasl_username:
        from pipeline.ingest import principals

        try:
            asyncio.run(principals.withdraw(settings, name))
        except Exception as exc:  # noqa: BLE001
            raise click.ClickException(f"its Kafka login could not be withdrawn ({type(exc).__name__}: {exc}); "
                                       "try again") from None
        click.echo(f"its Kafka login ({name}) and ACLs are withdrawn")


# ── dead letters ──────────────────────────────────────────────────────────────────────────


@click.command("dead-letters")
@click.option("--limit", default=20, show_default=True, help="How many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, with the original bytes.")
def dead_letters(limit: int, as_json: bool) -> None:
    """List input messages the pipeline could not use, newest first, with the reason per field."""
    from pipeline.ingest import deadletters

    async def fetch(conn):
        return await deadletters.recent(conn, limit), await deadletters.total(conn)

    rows, count = asyncio.run(_with_connection(fetch))
    if as_json:
        for r in rows:
            click.echo(json.dumps(deadletters.as_json(r), ensure_ascii=False))
        return
    table = Table("id", "received", "from", "key", "reason", title=f"dead letters: {len(rows)} newest of {count}")
    for r in rows:
        table.add_row(str(r["id"]), f"{r['received_at']:%Y-%m-%d %H:%M:%S}",
                      f"{r['source_topic']}:{r['partition']}@{r['offset']}",
                      (r["key"] or b"").decode("utf-8", "replace"), r["reason"])
    console.print(table)


# ── schemas ───────────────────────────────────────────────────────────────────────────────


@click.command("schemas")
@click.option("--write", is_flag=True, help="Regenerate the files from schemas/events.py.")
def schemas_command(write: bool) -> None:
    """Check (or with --write, regenerate) the JSON Schema files in schemas/json/."""
    from schemas import contract

    if write:
        changed = contract.write()
        click.echo(f"wrote {', '.join(changed)}" if changed else f"{contract.SCHEMA_DIR} is up to date")
        return
    stale = contract.drift()
    if stale:
        click.echo(f"out of date in {contract.SCHEMA_DIR}: {', '.join(stale)}; run `parkwarden schemas --write`")
        raise SystemExit(1)
    click.echo(f"{contract.SCHEMA_DIR} matches the models")
