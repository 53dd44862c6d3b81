"""The console on the command line: `parkwarden status`, `parkwarden case PLATE|TICKET`,
`parkwarden outbox list|retry` (outputs Kafka refused) and `parkwarden operators add|list|remove`
(who may log in to the web console)."""

import asyncio
import secrets
import sys
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import asyncpg
import click
from rich import box
from rich.console import Console
from rich.table import Table

from pipeline.config import Settings
from pipeline.console import auth, queries
from pipeline.console.i18n import Words

DEMO_OPERATOR = "demo"


async def _connect(settings: Settings) -> asyncpg.Connection:
    from pipeline.cases.store import init_connection

    try:
        conn = await asyncpg.connect(settings.database_url.get_secret_value(), timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise click.ClickException(f"cannot reach PostgreSQL ({type(exc).__name__}); "
                                   "start it with `./dev services start` or check PW_DATABASE_URL") from None
    await init_connection(conn)
    return conn


def _run(work):
    """Run ``work(conn, settings)`` on one connection."""
    async def go():
        settings = Settings()
        conn = await _connect(settings)
        try:
            return await work(conn, settings)
        finally:
            await conn.close()
    return asyncio.run(go())


# ── operators ───────────────────────────────────────────────────────────────────────────────


@click.group()
def operators() -> None:
    """Who may log in to the web console (/console/): viewers look, supervisors also act."""


@operators.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(auth.ROLES), default="viewer", show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (one line).")
@click.option("--replace", is_flag=True, help="Reset the role and password of an existing operator (ends its sessions).")
def operators_add(name: str, role: str, password_stdin: bool, replace: bool) -> None:
    """Add an operator; the password is prompted for (or read with --password-stdin)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        _run(lambda conn, _s: auth.add_operator(conn, name, role, password, replace=replace))
    except auth.OperatorError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"operator {name} ({role}) {'updated' if replace else 'added'}")


@operators.command("list")
def operators_list() -> None:
    """The operators, their roles and how many live sessions each has."""
    rows = _run(lambda conn, _s: auth.list_operators(conn))
    table = Table(box=box.SIMPLE_HEAD)
    for col in ("name", "role", "added", "sessions"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["role"], f"{r['created_at']:%Y-%m-%d %H:%M}", str(r["sessions"]))
    Console().print(table)


@operators.command("remove")
@click.argument("name")
def operators_remove(name: str) -> None:
    """Remove an operator (its sessions end; its audit entries stay)."""
    if not _run(lambda conn, _s: auth.remove_operator(conn, name)):
        raise click.ClickException(f"no operator {name!r}")
    click.echo(f"operator {name} removed")


async def ensure_demo_operator(conn: asyncpg.Connection) -> tuple[str, str]:
    """The demo's supervisor with a fresh random password: (name, password)."""
    password = secrets.token_urlsafe(9)
    await auth.add_operator(conn, DEMO_OPERATOR, "supervisor", password, replace=True)
    return DEMO_OPERATOR, password


# ── status and case ─────────────────────────────────────────────────────────────────────────


@click.command()
def status() -> None:
    """The essentials now: open cases by state, SMS by status, tickets today, dead letters, outbox."""
    async def read(conn, settings):
        return await queries.status(conn, datetime.now(UTC), ZoneInfo(settings.timezone))

    s = _run(read)
    t = Words("en")
    out = Console()
    cases = Table(title="cases", box=box.SIMPLE_HEAD, title_justify="left")
    cases.add_column("state")
    cases.add_column("count", justify="right")
    for state, n in s["cases"].items():
        cases.add_row(t.state(state), str(n))
    sms = Table(title="SMS (created today, and any still pending or sending)", box=box.SIMPLE_HEAD,
                title_justify="left")
    for col, justify in (("kind", "left"), ("status", "left"), ("count", "right")):
        sms.add_column(col, justify=justify)
    for kind, st, n in s["sms"]:
        sms.add_row(kind, st, str(n))
    other = Table(title="pipeline", box=box.SIMPLE_HEAD, title_justify="left")
    other.add_column("what")
    other.add_column("now", justify="right")
    other.add_row("tickets issued today", f"{s['tickets_today']}" + (f" ({s['voided_today']} voided)" if s["voided_today"] else ""))
    other.add_row("dead letters today / all time", f"{s['dead_letters_today']} / {s['dead_letters_total']}")
    other.add_row("outbox backlog", f"{s['outbox_backlog']}" + (f" (oldest {s['outbox_oldest_age']:.0f}s)" if s["outbox_backlog"] else ""))
    other.add_row("outbox set aside (refused by Kafka)",
                  f"{s['outbox_set_aside']}" + (" (see `parkwarden outbox list`)" if s["outbox_set_aside"] else ""))
    other.add_row("deadline lag", f"{s['deadline_lag']:.1f}s")
    out.print(cases, sms, other)


@click.group()
def outbox() -> None:
    """Kafka outputs the broker refused for good (too large, a bad topic): set aside, not lost."""


@outbox.command("list")
@click.option("--limit", default=100, show_default=True)
def outbox_list(limit: int) -> None:
    """The set-aside rows, oldest first, with the reason Kafka gave."""
    from pipeline import outbox as relay

    rows = _run(lambda conn, _s: relay.set_aside_rows(conn, limit))
    table = Table(box=box.SIMPLE_HEAD, title=f"outbox rows set aside: {len(rows)}", title_justify="left")
    for col in ("id", "topic", "key", "bytes", "written", "set aside", "reason"):
        table.add_column(col, justify="right" if col in ("id", "bytes") else "left")
    for r in rows:
        table.add_row(str(r["id"]), r["topic"], (r["key"] or b"").decode("utf-8", "replace")[:40], str(r["size"]),
                      f"{r['created_at']:%Y-%m-%d %H:%M:%S}", f"{r['set_aside_at']:%Y-%m-%d %H:%M:%S}", r["reason"])
    Console().print(table)


@outbox.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "every", is_flag=True, help="Every set-aside row.")
def outbox_retry(ids: tuple[int, ...], every: bool) -> None:
    """Put set-aside rows back in the outbox (once the cause is fixed, e.g. the broker's size limit
    raised); a row Kafka refuses again is set aside again."""
    from pipeline import outbox as relay

    if bool(ids) == every:
        raise click.UsageError("name the rows' ids, or say --all")
    back = _run(lambda conn, _s: relay.send_again(conn, None if every else list(ids)))
    missing = sorted(set(ids) - set(back))
    click.echo(f"back in the outbox: {', '.join(map(str, back)) or 'none'}"
               + (f"; not set aside: {', '.join(map(str, missing))}" if missing else ""))
    if missing:
        raise SystemExit(1)


@click.command("case")
@click.argument("plate_or_ticket")
def case_command(plate_or_ticket: str) -> None:
    """A case's timeline: captures, SMS (phones masked), decisions and operator actions.

    Give a ticket number (YH261126000042) or a plate (the plate's latest case; older ones are listed).
    """
    async def read(conn, settings):
        ids = await queries.find_cases(conn, plate_or_ticket)
        file = await queries.case_file(conn, ids[0], datetime.now(UTC)) if ids else None
        return ids, file, ZoneInfo(settings.timezone)

    ids, file, tz = _run(read)
    if file is None:
        raise click.ClickException(f"no case for {plate_or_ticket!r}")
    t = Words("en")
    out = Console()
    c = file.case

    def when(at):
        return at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") if at else "-"

    head = Table.grid(padding=(0, 2))
    head.add_column(style="dim")
    head.add_column()
    head.add_row("case", f"{c['id']}  [bold]{c['plate']}[/]  {t.state(c['state'])}")
    head.add_row("place", f"{c['place']} · zone {c['zone']} · {c['camera_id']}")
    head.add_row("detected / warned", f"{when(c['detected_at'])} / {when(c['warned_at'])}")
    head.add_row("deadline / closed", f"{when(c['deadline_at'])} / {when(c['closed_at'])}")
    head.add_row("outcome", c["reason"] or "-")
    if file.ticket:
        tk = file.ticket
        void = f"  VOID {when(tk['voided_at'])}: {tk['void_reason']}" if tk["voided_at"] else ""
        head.add_row("ticket", f"{tk['number']} issued {when(tk['issued_at'])}{void}")
    out.print(head)

    table = Table(box=box.SIMPLE_HEAD, show_lines=False)
    table.add_column("time", no_wrap=True)
    table.add_column("what", no_wrap=True)
    table.add_column("detail")
    for e in file.timeline:
        if e["kind"] == "capture":
            what = f"capture: {t.capture(e['what'])}"
            detail = f"{e['camera_id']} {e['place'] or ''} {e['evidence_url'] or ''}".strip()
        elif e["kind"] == "sms":
            what = f"SMS {e['what']}: {e['status']}"
            detail = f"{e['phone']} · {e['attempts']} attempt(s)" + (f" · {e['last_error']}" if e["last_error"] else "")
        else:
            what = t.action(e["what"])
            reason = e["detail"].get("reason") or e["detail"].get("note") or ""
            detail = f"{e['actor']}: {reason}".strip(": ")
        table.add_row(when(e["at"]), what, detail)
    out.print(table)
    if len(ids) > 1:
        out.print(f"[dim]{len(ids) - 1} older case(s) of this plate: " + ", ".join(str(i) for i in ids[1:6]) + "[/]")
