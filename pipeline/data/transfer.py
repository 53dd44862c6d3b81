"""Import a file into a registry, all or nothing; export a registry to a file.

An import reads the file, validates every row (``models.py``) and COPYs the valid ones into one
temporary staging table, all inside one transaction; then it refuses duplicate keys, upserts from the
staging table into the registry (and, with ``snapshot``, retires or deletes the rows absent from the
file) and writes one audit-log row with the counts. If any row is refused, nothing is applied: the
report lists the refused rows (row number, field, reason) and the transaction is rolled back. A dry run
does everything, then rolls back: its counts are what the import would do. Memory stays bounded by the
chunk size, however long the file.

The bulk path (``./dev bench import``): a plain plates CSV is COPYed by PostgreSQL as it stands while
Python checks the same bytes row by row with a plain check (``models.plate_values``); only the rows that
check does not pass meet the row model. A large first load goes straight into the empty table, whose
indexes are built once at the end.
"""

import asyncio
import codecs
import csv
import time
import uuid
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from operator import itemgetter
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
from pydantic import TypeAdapter, ValidationError

from pipeline.data.formats import FormatError, Problem, Writer, detect_format, read_csv_values, read_rows
from pipeline.data.kinds import KINDS, OPT_OUT, Kind
from pipeline.data.models import plate_values
from pipeline.lookups.owners import scrub

CHUNK_ROWS = 20_000
MAX_CHANGE = 0.10
"""A snapshot may retire, end, delete or remove at most this share of the rows in use (``--max-change``)."""
KEEP_REFUSALS = 1000
"""A report lists at most this many refused rows (it counts them all)."""
REBUILD_ROWS = 50_000
"""A file of at least this many rows into an empty table (with ``Kind.insert``) drops the table's indexes,
inserts, then builds them again: one sort instead of a million index insertions. It holds the table's
ACCESS EXCLUSIVE lock until the import ends (readers wait; an empty registry has nothing to read)."""
FAST_ROWS = {"plates": plate_values}
"""A plain check per CSV row for the kinds that have one (``models.plate_values``); the row model
sees only the rows it does not pass. A plain CSV file of these kinds (no quotes, backslashes or carriage
returns, where PostgreSQL's CSV and Python's could differ) is COPYed as it is, while Python checks it."""


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
    steps: dict[str, float] = field(default_factory=dict)
    """Seconds each step took (stage, check, duplicates, apply, snapshot): where a long import's time goes."""

    def step(self, name: str, started: float) -> float:
        now = time.monotonic()
        self.steps[name] = self.steps.get(name, 0.0) + now - started
        return now

    def refuse(self, refusal: Refusal) -> None:
        self.refused_count += 1
        if len(self.refused) < KEEP_REFUSALS:
            self.refused.append(refusal)


def snapshot_refusal(what: str, verb: str, file_rows: int, absent: int, in_use: int, max_change: float,
                     force: bool) -> Refusal | None:
    """Why a snapshot must not be applied: an empty file, or one that would ``verb`` more than ``max_change``
    of the ``in_use`` rows (naming the counts); None when it may be, or with ``force``."""
    if force:
        return None
    if file_rows == 0:
        return Refusal(0, "--snapshot", f"the file has no rows: as a snapshot it would {verb} all {in_use:,} {what}; "
                                        "nothing was applied (give --force to empty the registry)")
    if absent > max_change * in_use:
        return Refusal(0, "--snapshot", f"the snapshot would {verb} {absent:,} of the {in_use:,} {what} in use "
                                        f"({absent / in_use:.1%}), more than --max-change {max_change:.0%}: nothing "
                                        "was applied; check that the file is the whole registry, or give --force")
    return None


Progress = Callable[[int, int], None]
"""Called with (bytes read so far, rows read so far)."""


def _chunks(rows, size):
    while chunk := list(islice(rows, size)):
        yield chunk


class _Validator:
    """Turns a chunk of rows into staging records ``(row number, *fields)``, refusing the bad ones."""

    def __init__(self, kind: Kind, report: ImportReport, tz: ZoneInfo | None):
        self.kind, self.report, self.context = kind, report, {"tz": tz}
        self.adapter = TypeAdapter(list[kind.model])

    def dicts(self, rows: list, count: bool = True) -> list[tuple]:
        """Rows as ``(number, dict | Problem)``: every one through the row model."""
        if count:
            self.report.rows += len(rows)
        numbers, fields = [], []
        for number, row in rows:
            if isinstance(row, Problem):
                self.report.refuse(Refusal(number, row.field, row.reason))
            else:
                numbers.append(number)
                fields.append(row)
        try:
            valid = self.adapter.validate_python(fields, context=self.context)
        except ValidationError as exc:
            for error in exc.errors(include_input=False, include_url=False):
                index, *where = error["loc"]
                self.report.refuse(Refusal(numbers[index], ".".join(map(str, where)), scrub(error["msg"])))
            return []
        return [(n, *m.__dict__.values()) for n, m in zip(numbers, valid)]

    def csv_values(self, header: list[str], rows: list) -> list[tuple]:
        """Rows as ``(line, values)`` of a CSV file: the plain check first, the model for what it leaves."""
        self.report.rows += len(rows)
        fast = FAST_ROWS[self.kind.name]
        width = len(header)
        fields = self.kind.fields
        pick = itemgetter(*(header.index(f) if f in header else width for f in fields))
        records, others = [], []
        for line, values in rows:
            if isinstance(values, Problem):
                others.append((line, values))
                continue
            if len(values) != width:
                others.append((line, Problem("", f"{len(values)} values for {width} columns")))
                continue
            values.append("")
            checked = fast(*pick(values))
            if checked is None:
                others.append((line, {k: v for k, v in zip(header, values) if v != ""}))
            else:
                records.append((line, *checked))
        if others:
            records += self.dicts(others, count=False)
        return records


async def import_file(conn: asyncpg.Connection, kind_name: str, path: Path, fmt: str | None = None, *,
                      dry_run: bool = False, snapshot: bool = False, actor: str = "data-import",
                      tz: ZoneInfo | None = None, progress: Progress | None = None,
                      chunk_rows: int = CHUNK_ROWS, max_change: float = MAX_CHANGE,
                      force: bool = False) -> ImportReport:
    """Validate and apply ``path`` to the ``kind_name`` registry on ``conn``; see the module docstring.
    Raises ``FormatError`` when the file cannot be read as ``fmt`` at all (nothing applied). A snapshot
    is refused when the file is empty or would retire (end, delete) more than ``max_change`` of the rows
    in use (``snapshot_refusal``), unless ``force``.

    The whole file goes to one staging table: a plain CSV of a kind in ``FAST_ROWS`` by a COPY of the
    file itself, checked by Python at the same time (``_copy_csv``), any other file row by row through
    Python (``_stage_rows``). Duplicates, the upsert and the snapshot are then one statement each over
    the whole file. A large plain CSV into an empty table skips the staging table (``_copy_direct``)."""
    kind = KINDS[kind_name]
    fmt = detect_format(path, fmt)
    if fmt not in kind.formats:
        raise FormatError(f"{kind.name} can be imported from {', '.join(kind.formats)}, not {fmt}")
    report = ImportReport(kind.name, path.name, fmt, dry_run, snapshot)
    validator = _Validator(kind, report, tz)
    tag = uuid.uuid4().hex[:12]
    stage, seen = f"import_stage_{tag}", f"import_seen_{tag}"
    plain = fmt == "csv" and kind.name in FAST_ROWS and _plain(path)

    if not conn.is_in_transaction():
        try:  # a bigger buffer for the staging table; possible only before the session's first temporary table
            await conn.execute("SET temp_buffers = '256MB'")
        except asyncpg.PostgresError:
            pass
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute("SET LOCAL synchronous_commit = off; SET LOCAL work_mem = '256MB'; "
                           "SET LOCAL maintenance_work_mem = '256MB'")
        await conn.execute(f"CREATE TEMP TABLE {stage} (row_no integer GENERATED BY DEFAULT AS IDENTITY (START 2), "
                           + ", ".join(f"{c} {t}" for c, t in kind.stage_types.items()) + ") ON COMMIT DROP")
        t = time.monotonic()
        direct = plain and kind.insert and path.stat().st_size >= 20 * REBUILD_ROWS and await _copy_direct(
            conn, kind, path, report, progress)
        if not direct:
            if plain and (flagged := await _copy_csv(conn, kind, path, stage, report, progress)) is not None:
                t = report.step("stage", t)
                await _check_staged(conn, kind, stage, validator, flagged, chunk_rows)
                t = report.step("check", t)
            else:
                await _stage_rows(conn, kind, path, fmt, stage, validator, progress, chunk_rows)
                t = report.step("stage", t)
            if report.refused_count:
                return report
            await _apply(conn, kind, stage, report, f"import:{path.name}", t)
            if report.refused_count:
                return report
        t = time.monotonic()
        if snapshot and direct:
            report.counts["retired"] = 0  # the table was empty: every row in it is from the file
        elif snapshot:
            in_use = await conn.fetchval(kind.in_use)
            await conn.execute(f"CREATE TEMP VIEW {seen} AS SELECT "
                               + ", ".join(f"{e} AS {c}" for c, e in kind.key_exprs.items()) + f" FROM {stage}")
            absent = 0
            for sql in kind.snapshot:
                absent += int((await conn.execute(sql.format(seen=seen))).split()[-1])
            await conn.execute(f"DROP VIEW {seen}")
            deletes = kind.name in ("car-parks", "zones")
            report.counts["deleted" if deletes else "retired"] = absent
            report.step("snapshot", t)
            refusal = snapshot_refusal(kind.name.replace("-", " "), {"plates": "retire", "contacts": "end"}.get(
                kind.name, "delete"), report.rows, absent, in_use, max_change, force)
            if refusal is not None:
                report.refuse(refusal)
                return report
        await conn.execute(
            "INSERT INTO audit_log (at, case_id, actor, action, detail) VALUES (now(), NULL, $1, $2, $3::text::jsonb)",
            actor, f"data_import:{kind.name}",
            _json({"file": path.name, "format": fmt, "rows": report.rows, "snapshot": snapshot,
                   "dry_run": dry_run, **report.counts}))
        report.applied = not dry_run
        return report
    finally:
        if report.applied:
            await tx.commit()
        else:
            await tx.rollback()


async def _stage_rows(conn, kind: Kind, path: Path, fmt: str, stage: str, validator: "_Validator",
                      progress: Progress | None, chunk_rows: int) -> None:
    """Read, validate and COPY the file chunk by chunk into the staging table (Python reads it).
    Validated chunks go to a writer task through a short queue: PostgreSQL copies one chunk while the
    next is validated (two cores busy), and memory holds at most a few chunks."""
    report = validator.report
    read = [0]

    def counted(n: int) -> None:
        read[0] += n

    if fmt == "csv" and kind.name in FAST_ROWS:
        values = read_csv_values(path, kind.fields, counted)
        header = next(values)
        if len(set(header)) == len(header):
            chunks = (validator.csv_values(header, rows) for rows in _chunks(values, chunk_rows))
        else:
            rows = ((n, r if isinstance(r, Problem) else {k: v for k, v in zip(header, r) if v != ""}
                     if len(r) == len(header) else Problem("", f"{len(r)} values for {len(header)} columns"))
                    for n, r in values)
            chunks = (validator.dicts(c) for c in _chunks(rows, chunk_rows))
    else:
        chunks = (validator.dicts(rows) for rows in _chunks(read_rows(path, fmt, kind.fields, counted), chunk_rows))
    queue: asyncio.Queue = asyncio.Queue(maxsize=2)
    writer = asyncio.create_task(_write(conn, kind, stage, queue, report))
    try:
        for records in chunks:
            if records and not report.refused_count:
                await queue.put(records)
            if writer.done():
                break
            if progress:
                progress(read[0], report.rows)
        await queue.put(None)
        await writer
    finally:
        if not writer.done():
            writer.cancel()


def _plain(path: Path) -> bool:
    """No quote, backslash or carriage return in the file: PostgreSQL's CSV reads it as Python's does."""
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            if b'"' in block or b"\\" in block or b"\r" in block:
                return False
    return True


async def _copy_csv(conn, kind: Kind, path: Path, stage: str, report: ImportReport, progress) -> array | None:
    """COPY a plain CSV file as it is into the staging table (row numbers from its identity: the header
    is line 1) while Python reads the same bytes and checks each row (``FAST_ROWS``), PostgreSQL
    parsing on one core and Python checking on the other. Returns the numbers of the rows the check
    does not pass (for the row model); None, with nothing staged, when PostgreSQL cannot read the file:
    then Python reads it alone and says what is wrong where."""
    values = read_csv_values(path, kind.fields)
    header = next(values)
    values.close()
    if len(set(header)) != len(header):
        return None
    with open(path, "rb") as f:
        start = len(f.readline())
    fast, width = FAST_ROWS[kind.name], len(header)
    pick = itemgetter(*(header.index(f) if f in header else width for f in kind.fields))
    flagged = array("i")
    line = [1]

    def check(lines: list[str]) -> None:
        n = line[0]
        reader = csv.reader(lines)
        while True:
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error:  # a field over csv.field_size_limit(): Python reads the file again and says so
                n += 1
                flagged.append(n)
                continue
            n += 1
            if len(values) != width:
                flagged.append(n)  # COPY fails on it: Python reads the file again and says so
                continue
            values.append("")
            if fast(*pick(values)) is None:
                flagged.append(n)
        line[0] = n

    async def blocks():
        decoder = codecs.getincrementaldecoder("utf-8")("replace")  # invalid UTF-8 fails the COPY anyway
        read, rest = start, ""
        with open(path, "rb") as f:
            f.seek(start)
            while block := f.read(1 << 20):
                yield block  # PostgreSQL parses this block while Python checks it
                read += len(block)
                text = rest + decoder.decode(block)
                cut = text.rfind("\n") + 1
                rest = text[cut:]
                check(text[:cut].split("\n")[:-1])
                if progress:
                    progress(read, line[0] - 1)
        rest += decoder.decode(b"", final=True)
        if rest:
            check([rest])

    try:
        async with conn.transaction():
            status = await conn.copy_to_table(stage, source=blocks(), columns=header, format="csv")
    except asyncpg.PostgresError:
        return None
    report.rows = int(status.split()[-1])
    return flagged


async def _copy_direct(conn, kind: Kind, path: Path, report: ImportReport, progress) -> bool:
    """A first load of a plain CSV file: COPY it straight into the empty table (its indexes dropped,
    built again after), no staging table. Only when every row is as the table takes it: if Python's
    check flags a row, a cell is empty where the table has a default, or the primary key finds a
    duplicate, nothing of this is kept (False) and the file goes the staging way, which says why."""
    if await _has_rows(conn, kind.table):
        return False
    await conn.execute(f"LOCK TABLE {kind.table} IN ACCESS EXCLUSIVE MODE")
    if await _has_rows(conn, kind.table):
        return False
    t = time.monotonic()
    try:
        async with conn.transaction():
            indexes = await _drop_indexes(conn, kind.table)
            flagged = await _copy_csv(conn, kind, path, kind.table, report, progress)
            if flagged is None or flagged:
                raise _NotDirect
            t = report.step("copy", t)
            for sql in indexes:
                await conn.execute(sql)
            await conn.execute(f"ANALYZE {kind.table}")
            report.step("index", t)
    except (_NotDirect, asyncpg.UniqueViolationError):
        report.rows = 0
        report.steps.clear()
        return False
    report.counts.update(inserted=report.rows, updated=0, unchanged=0)
    return True


class _NotDirect(Exception):
    pass


async def _check_staged(conn, kind: Kind, stage: str, validator: "_Validator", flagged: array,
                        chunk_rows: int) -> None:
    """Put the staged rows that the plain check did not pass through the row model, chunk by chunk:
    refuse the bad ones, stage the others again as the model has them (normalized plates, say)."""
    if not flagged:
        return
    columns = ", ".join(kind.stage_types)
    tag = stage.removeprefix("import_stage_")
    fixed, rows_of = f"import_fixed_{tag}", f"import_flagged_{tag}"
    await conn.execute(f"CREATE TEMP TABLE {fixed} (LIKE {stage}) ON COMMIT DROP")
    await conn.execute(f"CREATE TEMP TABLE {rows_of} (row_no integer) ON COMMIT DROP")
    await conn.copy_records_to_table(rows_of, records=((n,) for n in flagged))
    await conn.execute(f"DECLARE import_flagged NO SCROLL CURSOR FOR SELECT row_no, {columns} FROM {stage} "
                       f"JOIN {rows_of} USING (row_no) ORDER BY row_no")
    while rows := await conn.fetch(f"FETCH {chunk_rows} FROM import_flagged"):
        records = validator.dicts([(r["row_no"], {k: v for k, v in r.items() if k != "row_no" and v not in (None, "")})
                                   for r in rows], count=False)
        if records and not validator.report.refused_count:
            await conn.copy_records_to_table(fixed, records=records, columns=["row_no", *kind.stage_types])
    await conn.execute("CLOSE import_flagged")
    if not validator.report.refused_count:
        await conn.execute(f"DELETE FROM {stage} s USING {rows_of} f WHERE s.row_no = f.row_no")
        await conn.execute(f"INSERT INTO {stage} SELECT * FROM {fixed}")


async def _write(conn, kind: Kind, stage: str, queue: asyncio.Queue, report: ImportReport) -> None:
    """COPY each validated chunk into the staging table as it comes; after a refusal, only drain the queue."""
    columns = ["row_no", *kind.stage_types]
    while (records := await queue.get()) is not None:
        if report.refused_count:
            continue
        try:
            await conn.copy_records_to_table(stage, records=records, columns=columns)
        except asyncpg.DataError as exc:
            report.refuse(Refusal(records[0][0], getattr(exc, "column_name", None) or "",
                                  scrub(_message(exc)) + f" (in the rows from {records[0][0]} to {records[-1][0]})"))


async def _duplicates(conn, kind: Kind, stage: str) -> list[Refusal]:
    """The rows whose key an earlier row of the file has: one hash aggregate when there are none."""
    keys = ", ".join(kind.key_exprs.values())
    if not await conn.fetchval(f"SELECT EXISTS (SELECT FROM {stage} GROUP BY {keys} HAVING count(*) > 1)"):
        return []
    what = "+".join(kind.key)
    rows = await conn.fetch(f"""SELECT row_no, first FROM (SELECT row_no, min(row_no) OVER (PARTITION BY {keys})
                                AS first FROM {stage}) d WHERE row_no <> first ORDER BY row_no LIMIT {KEEP_REFUSALS}""")
    return [Refusal(r["row_no"], what, f"the same {what} as row {r['first']}") for r in rows]


async def _apply(conn, kind: Kind, stage: str, report: ImportReport, source: str, t: float) -> None:
    """Refuse the file's duplicate keys, or upsert the staged file into the table. Into an empty table
    (a first load), a plain insert, then the indexes built once; there a duplicate key shows only when
    the unique index is built: then nothing is kept and the duplicates are looked for."""
    counts = report.counts
    staged = report.rows
    rebuild = kind.insert and staged >= REBUILD_ROWS and not await _has_rows(conn, kind.table)
    if rebuild:
        await conn.execute(f"LOCK TABLE {kind.table} IN ACCESS EXCLUSIVE MODE")
        rebuild = not await _has_rows(conn, kind.table)
    try:
        if rebuild:
            try:
                async with conn.transaction():
                    indexes = await _drop_indexes(conn, kind.table)
                    inserted = int((await conn.execute(kind.insert.format(stage=stage))).split()[-1])
                    t = report.step("insert", t)
                    for sql in indexes:
                        await conn.execute(sql)
                    await conn.execute(f"ANALYZE {kind.table}")
                    t = report.step("index", t)
            except asyncpg.UniqueViolationError as exc:
                for r in await _duplicates(conn, kind, stage) or [Refusal(0, "", scrub(_message(exc)))]:
                    report.refuse(r)
                report.step("duplicates", t)
                return
            up = {"inserted": inserted, "updated": 0}
        else:
            for r in await _duplicates(conn, kind, stage):
                report.refuse(r)
            t = report.step("duplicates", t)
            if report.refused_count:
                return
            await conn.execute(f"ANALYZE {stage}")
            up = await conn.fetchrow(kind.upsert.format(stage=stage))
            t = report.step("upsert", t)
        counts["inserted"], counts["updated"] = up["inserted"], up["updated"]
        counts["unchanged"] = staged - up["inserted"] - up["updated"]
        if kind.name == "contacts":
            counts["opted_out"] = int((await conn.execute(OPT_OUT.format(stage=stage), source)).split()[-1])
    except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as exc:
        report.refuse(Refusal(0, getattr(exc, "column_name", None) or "", scrub(_message(exc))))


async def _has_rows(conn, table: str) -> bool:
    return await conn.fetchval(f"SELECT EXISTS (SELECT FROM {table})")


async def _drop_indexes(conn, table: str) -> list[str]:
    """Drop ``table``'s indexes and the constraints they back; returns the statements that make them again."""
    constraints = await conn.fetch("""SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
                                       WHERE conrelid = $1::regclass AND contype IN ('p', 'u', 'x')""", table)
    indexes = await conn.fetch("""SELECT indexrelid::regclass::text AS name, pg_get_indexdef(indexrelid) AS def
                                    FROM pg_index i WHERE indrelid = $1::regclass AND NOT EXISTS
                                         (SELECT FROM pg_constraint c WHERE c.conrelid = i.indrelid
                                             AND c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x'))""", table)
    for c in constraints:
        await conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{c["conname"]}"')
    for i in indexes:
        await conn.execute(f"DROP INDEX {i['name']}")
    return ([f'ALTER TABLE {table} ADD CONSTRAINT "{c["conname"]}" {c["def"]}' for c in constraints]
            + [i["def"] for i in indexes])


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
