"""Import a file into a registry, all or nothing; export a registry to a file.

An import reads the file in chunks, validates every row (``models.py``) and COPYs the valid ones into
a temporary staging table, all inside one transaction; then it upserts from the staging table into
the registry (and, with ``snapshot``, retires or deletes the rows absent from the file) and writes one
audit-log row with the counts. If any row is refused, nothing is applied: the report lists the refused
rows (row number, field, reason) and the transaction is rolled back. A dry run does everything, then
rolls back: its counts are what the import would do. Memory stays bounded by the chunk size, however
long the file.
"""

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
from pydantic import TypeAdapter, ValidationError

from pipeline.data.formats import FormatError, Problem, Writer, detect_format, read_rows
from pipeline.data.kinds import KINDS, OPT_OUT, Kind
from pipeline.lookups.owners import scrub

CHUNK_ROWS = 20_000
KEEP_REFUSALS = 1000
"""A report lists at most this many refused rows (it counts them all)."""


@dataclass(frozen=True)
class Refusal:
    row: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.field or '(row)'}: {self.reason}"


@dataclass
class ImportReport:
    kind: str
    file: str
    format: str
    dry_run: bool
    snapshot: bool
    rows: int = 0
    refused: list[Refusal] = field(default_factory=list)
    refused_count: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    applied: bool = False

    def refuse(self, refusal: Refusal) -> None:
        self.refused_count += 1
        if len(self.refused) < KEEP_REFUSALS:
            self.refused.append(refusal)


Progress = Callable[[int, int], None]
"""Called with (bytes read so far, rows read so far)."""


def _chunks(rows, size):
    while chunk := list(islice(rows, size)):
        yield chunk


async def import_file(conn: asyncpg.Connection, kind_name: str, path: Path, fmt: str | None = None, *,
                      dry_run: bool = False, snapshot: bool = False, actor: str = "data-import",
                      tz: ZoneInfo | None = None, progress: Progress | None = None,
                      chunk_rows: int = CHUNK_ROWS) -> ImportReport:
    """Validate and apply ``path`` to the ``kind_name`` registry on ``conn``; see the module docstring.
    Raises ``FormatError`` when the file cannot be read as ``fmt`` at all (nothing applied).

    Validated chunks go to a writer task through a short queue: PostgreSQL applies one chunk while
    the next is validated (two cores busy), and memory holds at most a few chunks."""
    kind = KINDS[kind_name]
    fmt = detect_format(path, fmt)
    if fmt not in kind.formats:
        raise FormatError(f"{kind.name} can be imported from {', '.join(kind.formats)}, not {fmt}")
    report = ImportReport(kind.name, path.name, fmt, dry_run, snapshot)
    adapter = TypeAdapter(list[kind.model])
    context = {"tz": tz}
    tag = uuid.uuid4().hex[:12]
    chunk, seen = f"import_chunk_{tag}", f"import_seen_{tag}"
    read = [0]

    def counted(n: int) -> None:
        read[0] += n

    tx = conn.transaction()
    await tx.start()
    writer = None
    try:
        await conn.execute(f"CREATE TEMP TABLE {chunk} (row_no integer, "
                           + ", ".join(f"{c} {t}" for c, t in kind.stage_types.items()) + ") ON COMMIT DROP")
        await conn.execute(f"CREATE TEMP TABLE {seen} ("
                           + ", ".join(f"{c} {kind.stage_types[c]}" for c in kind.key_exprs)
                           + f", row_no integer, PRIMARY KEY ({', '.join(kind.key_exprs)})) ON COMMIT DROP")
        queue: asyncio.Queue = asyncio.Queue(maxsize=2)
        writer = asyncio.create_task(_write(conn, kind, chunk, seen, queue, report, f"import:{path.name}"))
        for rows in _chunks(read_rows(path, fmt, kind.fields, counted), chunk_rows):
            report.rows += len(rows)
            numbers, fields = [], []
            for number, row in rows:
                if isinstance(row, Problem):
                    report.refuse(Refusal(number, row.field, row.reason))
                else:
                    numbers.append(number)
                    fields.append(row)
            try:
                valid = adapter.validate_python(fields, context=context)
            except ValidationError as exc:
                for error in exc.errors(include_input=False, include_url=False):
                    index, *where = error["loc"]
                    report.refuse(Refusal(numbers[index], ".".join(map(str, where)), scrub(error["msg"])))
                valid = None
            if valid is not None and not report.refused_count:
                await queue.put([(n, *m.__dict__.values()) for n, m in zip(numbers, valid)])
            if writer.done():
                break
            if progress:
                progress(read[0], report.rows)
        await queue.put(None)
        await writer
        if report.refused_count:
            return report
        await conn.execute(f"ANALYZE {seen}")
        if snapshot:
            absent = 0
            for sql in kind.snapshot:
                absent += int((await conn.execute(sql.format(seen=seen))).split()[-1])
            report.counts["deleted" if kind.name in ("car-parks", "zones") else "retired"] = absent
        await conn.execute(
            "INSERT INTO audit_log (at, case_id, actor, action, detail) VALUES (now(), NULL, $1, $2, $3::text::jsonb)",
            actor, f"data_import:{kind.name}",
            _json({"file": path.name, "format": fmt, "rows": report.rows, "snapshot": snapshot,
                   "dry_run": dry_run, **report.counts}))
        report.applied = not dry_run
        return report
    finally:
        if writer is not None and not writer.done():
            writer.cancel()
        if report.applied:
            await tx.commit()
        else:
            await tx.rollback()


async def _write(conn, kind: Kind, chunk: str, seen: str, queue: asyncio.Queue, report: ImportReport,
                 source: str) -> None:
    """Apply each validated chunk as it comes; after a refusal, only drain the queue."""
    columns = ["row_no", *kind.stage_types]
    keys = ", ".join(kind.key_exprs)
    counts = report.counts
    for name in ("inserted", "updated", "unchanged") + (("opted_out",) if kind.name == "contacts" else ()):
        counts[name] = 0
    while (records := await queue.get()) is not None:
        if report.refused_count:
            continue
        try:
            await conn.execute(f"TRUNCATE {chunk}")
            await conn.copy_records_to_table(chunk, records=records, columns=columns)
            added = await conn.execute(f"INSERT INTO {seen} ({keys}, row_no) SELECT "
                                       f"{', '.join(kind.key_exprs.values())}, row_no FROM {chunk} "
                                       "ON CONFLICT DO NOTHING")
            if int(added.split()[-1]) < len(records):
                for r in await _duplicates(conn, kind, chunk, seen):
                    report.refuse(r)
                continue
            up = await conn.fetchrow(kind.upsert.format(stage=chunk))
            counts["inserted"] += up["inserted"]
            counts["updated"] += up["updated"]
            counts["unchanged"] += len(records) - up["inserted"] - up["updated"]
            if kind.name == "contacts":
                counts["opted_out"] += int((await conn.execute(OPT_OUT.format(stage=chunk), source)).split()[-1])
        except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as exc:
            report.refuse(Refusal(records[0][0], getattr(exc, "column_name", None) or "",
                                  scrub(_message(exc)) + f" (in the rows from {records[0][0]} to {records[-1][0]})"))


async def _duplicates(conn, kind: Kind, chunk: str, seen: str) -> list[Refusal]:
    key = " AND ".join(f"s.{c} = {e.replace(c, 'c.' + c)}" for c, e in kind.key_exprs.items())
    what = "+".join(kind.key)
    rows = await conn.fetch(f"""SELECT c.row_no, s.row_no AS first FROM {chunk} c JOIN {seen} s ON {key}
                                WHERE c.row_no <> s.row_no ORDER BY c.row_no LIMIT {KEEP_REFUSALS}""")
    return [Refusal(r["row_no"], what, f"the same {what} as row {r['first']}") for r in rows]


def _message(exc: asyncpg.PostgresError) -> str:
    detail = getattr(exc, "detail", None)
    return f"{exc}" + (f" ({detail})" if detail else "") + ": nothing was applied"


def _json(d: dict) -> str:
    import json
    return json.dumps(d, ensure_ascii=False)


async def export_file(conn: asyncpg.Connection, kind_name: str, path: Path, fmt: str | None = None, *,
                      actor: str = "data-export") -> int:
    """Write the ``kind_name`` registry to ``path`` (atomically); returns the number of rows. Audited:
    an export of contacts carries personal data out of the system."""
    kind = KINDS[kind_name]
    fmt = fmt or detect_format(path, None)
    if fmt not in kind.formats:
        raise FormatError(f"{kind.name} can be exported as {', '.join(kind.formats)}, not {fmt}")
    writer = Writer(path, fmt, kind.fields)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            async for row in conn.cursor(kind.export, prefetch=10_000):
                writer.write(dict(row))
    except BaseException:
        writer.abandon()
        raise
    writer.close()
    await conn.execute(
        "INSERT INTO audit_log (at, case_id, actor, action, detail) VALUES (now(), NULL, $1, $2, $3::text::jsonb)",
        actor, f"data_export:{kind.name}", _json({"file": path.name, "format": fmt, "rows": writer.rows}))
    return writer.rows
