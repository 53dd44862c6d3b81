"""A PostgreSQL failover drill (issue 17, must 2): the pipeline's own connection pool keeps writing
while the primary's postmaster is SIGKILLed.

Starts the Patroni cluster of ``scripts/pgcluster.sh`` (a primary, a synchronous standby, etcd of 3
members) under ``var/pgfailover``, migrates the database as ``parkwarden setup`` does, then writes
numbered rows, one transaction each, through ``bootstrap.connect_database`` (the worker's pool, with the
multi-host ``PW_DATABASE_URL`` and ``target_session_attrs=read-write``); a failure
``errors.is_transient`` calls the database's fault is retried, as workers do. After a few seconds the
primary's postmaster is SIGKILLed; Patroni fails over to the standby; the writes go on on the new
primary; the old primary comes back as a standby (pg_rewind when its WAL diverged). Checked at the end:
every acknowledged row is on the new primary and on the rejoined standby, none twice. Prints the time
from the kill to the first write committed on the new primary, and to the old primary's return as the
synchronous standby. Stops the cluster it started (``--keep`` leaves it running).

    ./dev pgfailover [--before 5] [--after 20] [--keep]

Ports from PW_PGCLUSTER_PORT (see scripts/pgcluster.sh). Not a test: a run takes about a minute.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from pipeline import bootstrap
from pipeline.config import Settings
from pipeline.db import errors
from pipeline.db.migrate import migrate

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "pgcluster.sh"


def cluster(*args: str, env: dict) -> str:
    done = subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"pgcluster.sh {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def rest(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)
    except OSError:
        return 0, {}


class Writer:
    """Numbered rows, one transaction each, retried on the database's faults until committed."""

    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool
        self.acked: dict[int, tuple[float, int]] = {}  # n -> (monotonic time of the ack, server port)
        self.retries = 0
        self.errors: list[str] = []
        self.stopping = False

    async def write(self, n: int) -> None:
        while True:
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    port = await conn.fetchval(
                        "INSERT INTO failover_drill (n, server_port) VALUES ($1, inet_server_port()) "
                        "ON CONFLICT (n) DO UPDATE SET n = EXCLUDED.n RETURNING inet_server_port()", n)
                self.acked[n] = (time.monotonic(), port)
                return
            except Exception as exc:  # noqa: BLE001 - sorted by errors.is_transient
                if not errors.is_transient(exc):
                    raise
                self.retries += 1
                if len(self.errors) < 12:
                    self.errors.append(errors.describe(exc)[:160])
                await asyncio.sleep(0.05)

    async def run(self) -> None:
        n = 0
        while not self.stopping:
            n += 1
            await self.write(n)
            await asyncio.sleep(0.02)


async def drill(args, env: dict) -> int:
    os.environ.update(env)
    settings = Settings()
    base = int(env.get("PW_PGCLUSTER_PORT", "56400"))
    pg_port = {1: base + 1, 2: base + 2}
    rest_port = {1: base + 11, 2: base + 12}

    admin = await asyncpg.connect(settings.database_url.get_secret_value(), timeout=10)
    print(f"migrations applied: {len(await migrate(admin))}")
    await admin.execute("DROP TABLE IF EXISTS failover_drill")
    await admin.execute("CREATE TABLE failover_drill (n int PRIMARY KEY, server_port int, at timestamptz DEFAULT clock_timestamp())")
    await admin.close()

    pool = await bootstrap.connect_database(settings, min_size=2, max_size=4)
    writer = Writer(pool)
    task = asyncio.create_task(writer.run())
    await asyncio.sleep(args.before)

    old = next(n for n in (1, 2) if rest(rest_port[n], "/primary")[0] == 200)
    new = 3 - old
    written_before = len(writer.acked)
    print(f"{written_before} rows written on pg{old} (primary, :{pg_port[old]}); SIGKILL its postmaster")
    print(cluster("kill-primary", env=env).strip())
    killed = time.monotonic()

    first_on_new = promoted = rejoined = None
    deadline = killed + args.after + 120
    while time.monotonic() < deadline:
        if task.done():
            task.result()
        if promoted is None and rest(rest_port[new], "/primary")[0] == 200:
            promoted = time.monotonic()
        if first_on_new is None:
            first_on_new = min((t for t, port in writer.acked.values() if port == pg_port[new] and t > killed), default=None)
        if rejoined is None and promoted is not None:
            status, state = rest(rest_port[old], "/sync")
            if status == 200 and state.get("role") == "replica" and state.get("state") == "running":
                rejoined = time.monotonic()
        if rejoined is not None and time.monotonic() - killed >= args.after:
            break
        await asyncio.sleep(0.1)
    writer.stopping = True
    await task

    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT n, server_port FROM failover_drill")
        timeline = (await conn.fetchval("SELECT timeline_id FROM pg_control_checkpoint()"))
        port_now = await conn.fetchval("SELECT inet_server_port()")
    await pool.close()
    on_primary = {r["n"] for r in rows}
    lost = sorted(set(writer.acked) - on_primary)
    on_standby = None
    if rejoined is not None:
        # What the rejoined old primary has (read-only, straight to it): all of it, once it has replayed.
        login = urlsplit(settings.database_url.get_secret_value())
        standby = await asyncpg.connect(host="127.0.0.1", port=pg_port[old], user=login.username,
                                        password=login.password, database=login.path.lstrip("/"), timeout=10)
        for _ in range(50):
            on_standby = await standby.fetchval("SELECT count(*) FROM failover_drill")
            if on_standby >= len(rows):
                break
            await asyncio.sleep(0.2)
        await standby.close()

    log = (ROOT / env["PW_VAR_DIR"] / "log" / f"pgcluster-patroni-{old}.log").read_text(errors="replace")
    rewind = [line.split(" INFO: ", 1)[-1] for line in log.splitlines() if "rewind" in line.lower()][-3:]

    def since_kill(t):
        return "never" if t is None else f"{t - killed:.1f} s"

    print(f"rows acknowledged: {len(writer.acked)} ({written_before} before the kill); on the new primary: {len(on_primary)}; "
          f"acknowledged but missing: {len(lost)}; retries: {writer.retries}")
    print(f"rows on the rejoined standby pg{old}: {on_standby}")
    print(f"kill -> pg{new} primary (Patroni's /primary): {since_kill(promoted)}")
    print(f"kill -> first write committed on pg{new}: {since_kill(first_on_new)}")
    print(f"kill -> pg{old} back as synchronous standby: {since_kill(rejoined)}")
    print(f"pool now on :{port_now}, timeline {timeline}")
    print("errors the writer retried (first ones): " + ("; ".join(dict.fromkeys(writer.errors)) or "none"))
    print("pg_rewind in pg{}'s Patroni log: {}".format(old, " | ".join(rewind) or "nothing"))
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    ok = not lost and first_on_new is not None and rejoined is not None and on_standby == len(on_primary)
    print("RESULT:", "ok" if ok else "FAILED")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=float, default=5, help="seconds of writes before the kill")
    parser.add_argument("--after", type=float, default=20, help="seconds of writes after the kill (at least)")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    args = parser.parse_args()
    env = dict(os.environ)
    env.setdefault("PW_VAR_DIR", "var/pgfailover")
    started = time.monotonic()
    print(cluster("start", env=env).strip())
    print(f"cluster started in {time.monotonic() - started:.0f} s")
    for line in cluster("env", env=env).splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value.strip("'")
    try:
        code = asyncio.run(drill(args, env))
    finally:
        if not args.keep:
            print(cluster("stop", env=env).strip().splitlines()[-1])
    sys.exit(code)


if __name__ == "__main__":
    main()
