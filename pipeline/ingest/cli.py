"""Command-line tools for integrators and operators:

    parkwarden events validate FILE            offline, against the same models as the server
    parkwarden events publish FILE --to kafka|http [--url URL --key KEY] [--integrator NAME]
    parkwarden integrators add NAME [--kind publisher|operator] [--json] | list | revoke NAME | kafka-login NAME
    parkwarden consumers add NAME --topics tickets,case-events [--json] | list | revoke NAME | kafka-login NAME
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


async def with_connection(work):
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


_with_connection = with_connection


class KafkaLoginFailed(Exception):
    """The Kafka side of a command failed (its cause says how); the database's side is rolled back."""


def check_name(settings: Settings, name: str) -> None:
    from pipeline.ingest import principals

    try:
        principals.check_name(settings, name)
    except principals.ReservedName as exc:
        raise click.ClickException(str(exc)) from None


def print_login(settings: Settings, name: str, password: str | None, about: str, as_json: bool,
                record: dict, secrets_before: tuple[tuple[str, str], ...] = ()) -> None:
    """Print what a command made: each secret (``secrets_before``, then the Kafka password) alone on a
    line of standard output, what it is on standard error; with ``as_json`` one JSON object on
    standard output instead."""
    kafka = None if password is None else {
        "user": name, "password": password, "bootstrap": settings.kafka_bootstrap,
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": settings.kafka_sasl_mechanism} | record
    if as_json:
        click.echo(json.dumps({"name": name, **{k: v for k, v in secrets_before}, "kafka": kafka}, ensure_ascii=False))
        return
    for label, value in secrets_before:
        click.echo(label, err=True)
        click.echo(value)
    if password is None:
        click.echo(f"Kafka: {about} (this broker asks for no login)", err=True)
        return
    click.echo(f"Kafka: SASL_PLAINTEXT, {settings.kafka_sasl_mechanism}, user {name}, {about}; "
               "its password, shown only now:", err=True)
    click.echo(password)


def undo_login(settings: Settings, name: str, how_to_finish: str) -> str:
    """Withdraw what a failed command may have made on Kafka for a new principal; say what is left."""
    from pipeline.ingest import principals

    try:
        asyncio.run(principals.withdraw(settings, name))
        return ""
    except Exception as exc:  # noqa: BLE001 - say what is left and how to finish
        return (f" A partial Kafka login for {name} may be left ({type(exc).__name__}: {exc}); "
                f"{how_to_finish} resets it.")


def integrator_about(settings: Settings, name: str, quota: int | None) -> tuple[str, dict]:
    own = topics.camera_events_of(settings.topic(topics.CAMERA_EVENTS.name), name)
    commands = topics.camera_commands_of(settings.topic(topics.CAMERA_COMMANDS.name), name)
    limit = f"{quota:,} bytes/s" if quota else "no limit"
    return (f"writes {own}, reads {commands} (consumer group {name}), produce quota {limit}",
            {"writes": [own], "reads": [commands], "group": name, "produce_bytes_per_second": quota})


async def _integrator_login(settings: Settings, name: str, quota: int | None) -> str | None:
    """The integrator's topics and (on a broker with SASL) its login; its password, or None."""
    from pipeline import bootstrap
    from pipeline.ingest import principals

    try:
        await principals.check_reachable(settings)
        await bootstrap.create_topics(settings, [name])
        if not settings.kafka_sasl_username:
            return None
        return await principals.grant(settings, name, produce_bytes_per_second=quota)
    except Exception as exc:  # noqa: BLE001 - the caller rolls back and says what failed
        raise KafkaLoginFailed(f"{type(exc).__name__}: {exc}") from exc


@click.group()
def integrators() -> None:
    """Integrators: their API keys for the HTTP ingest and their Kafka logins (add, list, revoke)."""


DEFAULT_PRODUCE_QUOTA = 1_048_576


@integrators.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(["publisher", "operator"]), default="publisher", show_default=True,
              help="publisher: may post events. operator: may also read dead letters.")
@click.option("--kafka-login/--no-kafka-login", default=True, show_default=True,
              help="Also make its Kafka topics (camera-events.NAME, camera-commands.NAME) and, on a broker "
                   "with SASL (PW_KAFKA_SASL_USERNAME set), its SCRAM user NAME, ACLs and quota.")
@click.option("--produce-bytes-per-second", "quota", type=click.IntRange(min=0), default=DEFAULT_PRODUCE_QUOTA,
              show_default=True, help="Its Kafka produce quota (bytes per second; 0: none).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object on standard output (api_key, kafka: user, password, topics, quota).")
def add_integrator(name: str, kind: str, kafka_login: bool, quota: int, as_json: bool) -> None:
    """Add integrator NAME and print, on standard output, its API key, then its Kafka password, one per
    line, each shown only now (what each line is goes to standard error; --json for scripts).

    \b
    Its Kafka user NAME may:
      write  camera-events.NAME    its camera events
      read   camera-commands.NAME  recheck requests to its cameras (consumer group NAME)
    and nothing else, within its produce quota.

    All or nothing: if the Kafka login cannot be made, no integrator is added."""
    from pipeline.ingest import keys

    settings = Settings()
    check_name(settings, name)

    async def work(conn):
        async with conn.transaction():
            integrator, key = await keys.add(conn, name, kind, quota or None)
            password = await _integrator_login(settings, name, quota or None) if kafka_login else None
            return integrator, key, password

    try:
        integrator, key, password = asyncio.run(with_connection(work))
    except (keys.IntegratorExists, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except KafkaLoginFailed as exc:
        left = undo_login(settings, name, f"`parkwarden integrators add {name}`") if settings.kafka_sasl_username \
            else ""
        raise click.ClickException(f"nothing was added: the Kafka login of {name} could not be made ({exc}).{left} "
                                   f"Run the same command again once the broker answers.") from None
    about, record = integrator_about(settings, name, quota or None)
    key_line = (("api_key", key),) if as_json else ((f"added {integrator.name} ({integrator.kind}). Its API key, "
                                                     "shown only now:", key),)
    if not kafka_login:
        if as_json:
            print_login(settings, name, None, "", as_json, {}, key_line)
        else:
            _echo_secrets(key_line)
        return
    print_login(settings, name, password, about, as_json, record, key_line)


def _echo_secrets(lines) -> None:
    for label, value in lines:
        click.echo(label, err=True)
        click.echo(value)


@integrators.command("kafka-login")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on standard output.")
def kafka_login(name: str, as_json: bool) -> None:
    """Make (or reset, with a new password) active integrator NAME's Kafka login, its topics and its
    quota; print the password on standard output (shown only now)."""
    from pipeline.ingest import principals

    settings = Settings()
    check_name(settings, name)

    async def work(conn):
        found = await principals.active(conn, settings, name, "integrator")
        quota = found["produce_bytes_per_second"]
        return quota, await _integrator_login(settings, name, quota)

    try:
        quota, password = asyncio.run(with_connection(work))
    except principals.KafkaAccessError as exc:
        raise click.ClickException(str(exc)) from None
    except KafkaLoginFailed as exc:
        raise click.ClickException(f"the Kafka login of {name} could not be made ({exc}); run the same command "
                                   "again once the broker answers") from None
    about, record = integrator_about(settings, name, quota)
    print_login(settings, name, password, about, as_json, record)


@integrators.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_integrators(as_json: bool) -> None:
    """List integrators: names, kinds, the first characters of their keys, their Kafka produce quota
    (as recorded, and the broker's when it differs)."""
    from pipeline.ingest import keys, principals

    settings = Settings()
    rows = asyncio.run(with_connection(keys.listing))
    broker: dict[str, int] | None = None
    if settings.kafka_sasl_username:
        try:
            broker = asyncio.run(principals.quotas(settings))
        except Exception:  # noqa: BLE001 - the list is still worth showing
            broker = None
    if as_json:
        for r in rows:
            click.echo(json.dumps({"name": r["name"], "kind": r["kind"], "key_prefix": r["key_prefix"],
                                   "created_at": r["created_at"].isoformat(),
                                   "revoked_at": r["revoked_at"] and r["revoked_at"].isoformat(),
                                   "produce_bytes_per_second": r["produce_bytes_per_second"],
                                   "broker_produce_bytes_per_second": None if broker is None else
                                   broker.get(r["name"])}))
        return
    table = Table("name", "kind", "key starts", "Kafka produce quota", "created", "revoked")
    for r in rows:
        quota = f"{r['produce_bytes_per_second']:,} B/s" if r["produce_bytes_per_second"] else "none"
        if broker is not None and not r["revoked_at"] and broker.get(r["name"]) != r["produce_bytes_per_second"]:
            held = broker.get(r["name"])
            quota += f" (broker: {f'{held:,} B/s' if held else 'none'})"
        table.add_row(r["name"], r["kind"], r["key_prefix"] + "…", quota, f"{r['created_at']:%Y-%m-%d %H:%M}",
                      f"{r['revoked_at']:%Y-%m-%d %H:%M}" if r["revoked_at"] else "")
    console.print(table)
    if broker is None and settings.kafka_sasl_username:
        click.echo("(the broker's quotas could not be read)", err=True)


@integrators.command("revoke")
@click.argument("name")
def revoke_integrator(name: str) -> None:
    """Revoke an integrator: its key (workers stop accepting it within PW_INGEST_KEY_CACHE_SECONDS), its
    Kafka login, ACLs and quota; its Kafka events are refused from then on. Run it again to finish a
    revoke that failed half way."""
    from pipeline.ingest import keys

    async def work(conn):
        if await keys.revoke(conn, name):
            return "revoked"
        return "already" if await conn.fetchval("SELECT true FROM integrators WHERE name = $1", name) else None

    state = asyncio.run(with_connection(work))
    if state is None:
        raise click.ClickException(f"no integrator named {name!r}")
    click.echo(f"revoked {name}" if state == "revoked" else f"{name} was revoked before; withdrawing its Kafka "
               "login again", err=True)
    _withdraw(Settings(), name, f"parkwarden integrators revoke {name}")


def _withdraw(settings: Settings, name: str, again: str) -> None:
    from pipeline.ingest import principals

    if not settings.kafka_sasl_username:
        return
    try:
        asyncio.run(principals.withdraw(settings, name))
    except Exception as exc:  # noqa: BLE001 - say what is left and how to finish
        raise click.ClickException(f"its Kafka login could not be withdrawn ({type(exc).__name__}: {exc}); "
                                   f"finish with `{again}`") from None
    click.echo(f"its Kafka login ({name}), ACLs and quota are withdrawn", err=True)


# ── consumers: the city's own systems reading the outputs ─────────────────────────────────


def _consumer_topics(value: str) -> list[str]:
    from pipeline.ingest.principals import CONSUMER_TOPICS

    allowed = {t.name: t for t in CONSUMER_TOPICS}
    names = [n.strip() for n in value.split(",") if n.strip()]
    wrong = [n for n in names if n not in allowed]
    if not names or wrong:
        raise click.BadParameter(f"{', '.join(wrong) or 'none given'}: a comma-separated list of "
                                 f"{', '.join(allowed)}", param_hint="--topics")
    return list(dict.fromkeys(names))


def _consumer_about(settings: Settings, name: str, read: list[str]) -> tuple[str, dict]:
    prefixed = [settings.topic(t) for t in read]
    return f"reads {', '.join(prefixed)} (consumer group {name}), writes nothing", {"reads": prefixed, "group": name}


async def _consumer_login(settings: Settings, name: str, read: list[str]) -> str:
    from pipeline import bootstrap
    from pipeline.ingest import principals

    by_name = {t.name: t for t in principals.CONSUMER_TOPICS}
    try:
        await principals.check_reachable(settings)
        await bootstrap.create_topics(settings)
        return await principals.grant(settings, name, principals.consumer_bindings(
            settings, name, [by_name[t] for t in read]))
    except Exception as exc:  # noqa: BLE001 - the caller rolls back and says what failed
        raise KafkaLoginFailed(f"{type(exc).__name__}: {exc}") from exc


def _need_sasl(settings: Settings) -> None:
    if not settings.kafka_sasl_username:
        raise click.ClickException("this broker asks for no login (PW_KAFKA_SASL_USERNAME is not set)")


@click.group()
def consumers() -> None:
    """The city's own systems reading parkwarden's outputs (tickets, case-events, dead-letters), each
    with a read-only Kafka login and its own consumer group."""


@consumers.command("add", short_help="Add a city system's read-only Kafka login.")
@click.argument("name")
@click.option("--topics", "wanted", required=True, callback=lambda ctx, param, value: _consumer_topics(value),
              help="What it reads, comma-separated: tickets, case-events, dead-letters.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on standard output.")
def add_consumer(name: str, wanted: list[str], as_json: bool) -> None:
    """Add consumer NAME, a city system (the penalty office reading tickets, say): a Kafka user NAME that may read
    the topics given, in consumer group NAME, and write nothing. Prints its password on standard
    output (shown only now; what it is on standard error). Run again to change its topics (with a new
    password)."""
    from pipeline.ingest import principals

    settings = Settings()
    _need_sasl(settings)
    check_name(settings, name)
    new = False

    async def work(conn):
        nonlocal new
        async with conn.transaction():
            new = await principals.register(conn, settings, name, "consumer", wanted)
            return await _consumer_login(settings, name, wanted)

    try:
        password = asyncio.run(with_connection(work))
    except principals.KafkaAccessError as exc:
        raise click.ClickException(str(exc)) from None
    except KafkaLoginFailed as exc:
        left = undo_login(settings, name, f"`parkwarden consumers add {name}`") if new else ""
        raise click.ClickException(f"{'nothing was added' if new else 'nothing was changed'}: the Kafka login of "
                                   f"{name} could not be made ({exc}).{left} Run the same command again once the "
                                   "broker answers.") from None
    about, record = _consumer_about(settings, name, wanted)
    print_login(settings, name, password, about, as_json, record)


@consumers.command("kafka-login")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on standard output.")
def consumer_kafka_login(name: str, as_json: bool) -> None:
    """Reset active consumer NAME's Kafka login with a new password (printed on standard output)."""
    from pipeline.ingest import principals

    settings = Settings()
    _need_sasl(settings)

    async def work(conn):
        found = await principals.active(conn, settings, name, "consumer")
        return list(found["topics"]), await _consumer_login(settings, name, list(found["topics"]))

    try:
        read, password = asyncio.run(with_connection(work))
    except principals.KafkaAccessError as exc:
        raise click.ClickException(str(exc)) from None
    except KafkaLoginFailed as exc:
        raise click.ClickException(f"the Kafka login of {name} could not be made ({exc}); run the same command "
                                   "again once the broker answers") from None
    about, record = _consumer_about(settings, name, read)
    print_login(settings, name, password, about, as_json, record)


@consumers.command("list")
def list_consumers() -> None:
    """List consumers: what each reads, when it was added or revoked."""
    from pipeline.ingest import principals

    rows = asyncio.run(with_connection(lambda conn: principals.listing(conn, "consumer")))
    table = Table("name", "reads", "created", "revoked")
    for r in rows:
        table.add_row(r["name"], ", ".join(r["topics"]), f"{r['created_at']:%Y-%m-%d %H:%M}",
                      f"{r['revoked_at']:%Y-%m-%d %H:%M}" if r["revoked_at"] else "")
    console.print(table)


@consumers.command("revoke")
@click.argument("name")
def revoke_consumer(name: str) -> None:
    """Revoke consumer NAME: take its Kafka login away (a password nobody is told) and delete its ACLs (its name stays taken). Run it again to
    finish a revoke that failed half way."""
    from pipeline.ingest import principals

    try:
        state = asyncio.run(with_connection(lambda conn: principals.revoke(conn, name, "consumer")))
    except principals.KafkaAccessError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"revoked {name}" if state == "revoked" else f"{name} was revoked before; withdrawing its Kafka "
               "login again", err=True)
    _withdraw(Settings(), name, f"parkwarden consumers revoke {name}")


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
