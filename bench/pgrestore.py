"""A restore drill (issue 17, must 5, the database part): a base backup plus the WAL archive bring the
database back to a point in time.

Starts the Patroni cluster of ``scripts/pgcluster.sh`` under ``var/pgfailover``, writes rows 1-100,
takes a base backup (``scripts/pgcluster.sh backup``: pg_basebackup of the primary), writes rows
101-200, notes PostgreSQL's clock (the point to restore to), writes rows 201-300, switches WAL so the
archive has it all, then restores the backup into ``var/pgfailover/pgcluster/restore`` as a separate
server (port PW_PGCLUSTER_PORT+50) with ``restore_command`` reading the archive and
``recovery_target_time`` at the noted point, promoted at the end of recovery. Checked: the restored
database has rows 1-200 and none after. Stops what it started.

    ./dev pgrestore

Workers on a restored database (no output published twice, no SMS sent twice): `parkwarden after-restore`
and tests/integration/test_restore.py (README, "Backups and restore").
"""

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from bench.pgfailover import cluster
from pipeline.config import Settings
from pipeline.db.migrate import migrate

ROOT = Path(__file__).resolve().parents[1]


def as_postgres(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *args],
                          capture_output=True, text=True, cwd="/")


async def write(url: str, first: int, last: int) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        for n in range(first, last + 1):
            await conn.execute("INSERT INTO restore_drill (n) VALUES ($1)", n)
    finally:
        await conn.close()


async def drill(env: dict) -> int:
    url = env["PW_DATABASE_URL"]
    base = int(env.get("PW_PGCLUSTER_PORT", "56400"))
    var = ROOT / env["PW_VAR_DIR"]
    bin_dir = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))[-1]
    conn = await asyncpg.connect(url, timeout=10)
    await migrate(conn)
    await conn.execute("DROP TABLE IF EXISTS restore_drill")
    await conn.execute("CREATE TABLE restore_drill (n int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
    await conn.close()

    await write(url, 1, 100)
    started = time.monotonic()
    backup = Path(cluster("backup", env=env).strip().splitlines()[-1])
    print(f"base backup {backup} in {time.monotonic() - started:.1f} s "
          f"({sum(f.stat().st_size for f in backup.rglob('*') if f.is_file()) / 1e6:.0f} MB)")
    await write(url, 101, 200)
    conn = await asyncpg.connect(url, timeout=10)
    target = await conn.fetchval("SELECT clock_timestamp()")
    await asyncio.sleep(0.5)
    await conn.close()
    await write(url, 201, 300)
    # pg_switch_wal is the superuser's (scripts/pgcluster.sh's dev password).
    conn = await asyncpg.connect(url, user="postgres", password="postgres-pgcluster", timeout=10)
    segment = await conn.fetchval("SELECT pg_walfile_name(pg_switch_wal())")
    for _ in range(100):
        archived = await conn.fetchval("SELECT last_archived_wal FROM pg_stat_archiver")
        if archived and archived >= segment:
            break
        await asyncio.sleep(0.2)
    else:
        print(f"WAL {segment} not archived after 20 s (last: {archived})")
        return 1
    await conn.close()
    print(f"restore point {target.isoformat()} (PostgreSQL's clock), rows 1-200 before it, 201-300 after; WAL archived up to {archived}")

    restore = var / "pgcluster" / "restore"
    port = base + 50
    if restore.exists():
        shutil.rmtree(restore)
    shutil.copytree(backup, restore)
    archive = var / "pgcluster" / "wal-archive"
    with open(restore / "postgresql.auto.conf", "a") as conf:
        conf.write(f"\n# restore drill (bench/pgrestore.py)\nrestore_command = 'cp {archive}/%f %p'\n"
                   f"recovery_target_time = '{target.isoformat()}'\nrecovery_target_action = 'promote'\n")
    (restore / "recovery.signal").touch()
    (restore / "standby.signal").unlink(missing_ok=True)
    subprocess.run(["chown", "-R", "postgres:postgres", str(restore)], check=True)
    restore.chmod(0o700)
    log = restore / "restore.log"
    started = time.monotonic()
    done = as_postgres(str(bin_dir / "pg_ctl"), "start", "-D", str(restore), "-l", str(log), "-w", "-t", "120", "-o",
                       f"-p {port} -c archive_mode=off -c logging_collector=off -c unix_socket_directories={var / 'pgcluster' / 'run'}"
                       " -c synchronous_standby_names='' -c hot_standby=on")
    if done.returncode:
        print(f"pg_ctl start of the restored copy failed: {done.stdout}{done.stderr}")
        print(log.read_text()[-2000:])
        return 1
    try:
        login = urlsplit(url)
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user=login.username, password=login.password,
                                     database=login.path.lstrip("/"), timeout=10)
        for _ in range(300):
            if not await conn.fetchval("SELECT pg_is_in_recovery()"):
                break
            await asyncio.sleep(0.2)
        in_recovery = await conn.fetchval("SELECT pg_is_in_recovery()")
        rows = [r["n"] for r in await conn.fetch("SELECT n FROM restore_drill ORDER BY n")]
        await conn.close()
        print(f"restored and promoted in {time.monotonic() - started:.1f} s (still in recovery: {in_recovery}); "
              f"rows: {len(rows)} ({rows[0] if rows else '-'}..{rows[-1] if rows else '-'})")
        ok = rows == list(range(1, 201)) and not in_recovery
    finally:
        as_postgres(str(bin_dir / "pg_ctl"), "stop", "-D", str(restore), "-m", "fast", "-w")
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("RESULT:", "ok" if ok else "FAILED")
    return 0 if ok else 1


def main() -> None:
    env = dict(os.environ)
    env.setdefault("PW_VAR_DIR", "var/pgfailover")
    print(cluster("start", env=env).strip().splitlines()[-1])
    for line in cluster("env", env=env).splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value.strip("'")
    os.environ.update(env)
    Settings()  # the same settings check as the pipeline's
    try:
        code = asyncio.run(drill(env))
    finally:
        print(cluster("stop", env=env).strip().splitlines()[-1])
    sys.exit(code)


if __name__ == "__main__":
    main()
