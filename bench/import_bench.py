"""Bulk-import benchmark: `parkwarden data import plates` of 1 million plates into real PostgreSQL.

Creates a database of its own on the shared server (never the one the tests or the demo use),
applies the migrations, writes a CSV of generated plates to a temporary file, times the import
command as a separate process (the way an operator runs it) and reports rows per second and the
importing process's peak resident memory, with the load average (the machine may be shared), and the
rows/s of the import itself (the command's own figure, without Python's start-up). Then it imports
the same file again (every row unchanged, the nightly-snapshot case) and drops the database and the
file. Not a test: it prints figures for the README. Usage:
    ./dev bench import [--plates 1000000] [--repeat 3]
"""

import argparse
import asyncio
import csv
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from bench.e2e import drop_database
from pipeline.cases.store import init_connection
from pipeline.config import Settings
from pipeline.db.migrate import migrate

ROOT = Path(__file__).resolve().parents[1]
_ALNUM = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
_LETTERS = _ALNUM[:24]
_PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"


def plate(i: int) -> str:
    """The i-th of 31 x 24 x 34^5 distinct valid standard plates."""
    province, i = _PROVINCES[i % 31], i // 31
    letter, i = _LETTERS[i % 24], i // 24
    tail = ""
    for _ in range(5):
        tail, i = _ALNUM[i % 34] + tail, i // 34
    return province + letter + tail


def write_plates(path: Path, count: int) -> None:
    colours = "ABCEHJ"
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(("plate", "plate_type", "owner_id", "vehicle_make", "vehicle_colour"))
        for i in range(count):
            out.writerow((plate(i), "01" if i % 10 == 0 else "02", f"owner-{i // 2:07d}",
                          "Geely" if i % 3 == 0 else "", colours[i % len(colours)]))


def run_import(path: Path, env: dict) -> tuple[float, int, str]:
    """Seconds, peak RSS (KiB) of the import process, and its last line of output."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "data", "import", "plates", str(path)],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"import failed ({proc.returncode}):\n{out}")
    return seconds, usage.ru_maxrss, out.strip().splitlines()[-1]


def _load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


async def _empty(url: str) -> None:
    conn = await asyncpg.connect(url)
    await conn.execute("TRUNCATE plate_registry")
    await conn.close()


async def main(count: int, repeat: int) -> None:
    settings = Settings()
    admin_url = settings.database_url.get_secret_value()
    name = f"pw_bench_import_{uuid.uuid4().hex[:8]}"
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    tmp = Path(tempfile.mkdtemp(prefix="pw-import-bench-"))
    path = tmp / "plates.csv"
    try:
        conn = await asyncpg.connect(url)
        await init_connection(conn)
        await migrate(conn)
        await conn.close()
        started = time.perf_counter()
        write_plates(path, count)
        print(f"wrote {count:,} plates ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - started:.1f} s",
              flush=True)
        env = {**os.environ, "PW_DATABASE_URL": url}
        for n in range(repeat):
            if n:
                await _empty(url)
            for label in ("into an empty registry", "again (every row unchanged)"):
                before = _load()
                seconds, rss, line = run_import(path, env)
                own = re.search(r" in ([0-9.]+) s", line)
                itself = f"; the import itself {count / float(own[1]):,.0f} rows/s" if own else ""
                print(f"import {label}: {count / seconds:,.0f} rows/s ({seconds:.1f} s for {count:,} rows, "
                      f"with the command's start-up{itself}), peak RSS {rss / 1024:.0f} MiB; "
                      f"{before} before, {_load()} after\n  {line}", flush=True)
        cores = os.cpu_count()
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        print(f"machine: {cores} cores, {mem:.0f} GiB; PostgreSQL on the same machine")
    finally:
        path.unlink(missing_ok=True)
        tmp.rmdir()
        await admin.close()
        await drop_database(admin_url, name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plates", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="run both imports this many times (on a busy machine)")
    args = parser.parse_args()
    asyncio.run(main(args.plates, args.repeat))
