"""The chaos run on a cluster (issue 17, musts 3 and 4): ``./dev chaos --cluster``.

The city, the workers, the SIGKILLs of workers and the judge are those of ``bench.chaos``; here are the
stack and the faults that differ. The stack: the 3-broker KRaft cluster of ``scripts/cluster.sh``
(topics at replication factor 3, min.insync.replicas 2), the Patroni pair of ``scripts/pgcluster.sh``
(a primary, a synchronous standby, etcd of 3; the workers reach the primary through the multi-host
``PW_DATABASE_URL`` with ``target_session_attrs=read-write``) and Kannel of ``scripts/services.sh``, all
under ``var/chaos-cluster`` on ports 46200-46399. The faults, each at its time of the plan:

- the broker leading most camera-events partitions is SIGKILLed, and started again later; measured (with
  confluent-kafka's AdminClient): the time from the kill until every partition it led has a new leader,
  and until it is back in every in-sync replica set;
- the PostgreSQL primary's postmaster is SIGKILLed; measured: the time until Patroni promoted the
  standby, until the first decision of a worker committed on the new primary (the first ``audit_log`` row
  dated after the kill, by PostgreSQL's clock, and when the poll saw it), and until the old primary is
  back as the synchronous standby, with what Patroni's log says about pg_rewind;
- a rolling restart (an upgrade's way): every worker stopped with SIGTERM and started again, one at a
  time, the next once the previous is ready, while cars arrive.

Each fault's window (from its start to the service back) splits the warnings' latency (violation taken ->
warning accepted by the gateway) into during each fault and outside all of them.
"""

import asyncio
import json
import os
import shlex
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from bench.chaos import ROOT, Faults, PrivateStack
from bench.chaos_judge import Report
from pipeline import bootstrap
from schemas import topics


@dataclass(frozen=True)
class ClusterStack(PrivateStack):
    """The cluster's stack: ``kafka_port`` is scripts/cluster.sh's base port (brokers at +0..+2,
    controllers at +10..+12), ``postgres_port`` scripts/pgcluster.sh's (PostgreSQL at +1/+2, Patroni's
    REST API at +11/+12, etcd at +21..+23 and +31..+33)."""

    var_dir: str = str(ROOT / "var" / "chaos-cluster")  # absolute: Patroni and etcd run as postgres, elsewhere
    kafka_port: int = 46200
    postgres_port: int = 46220
    kannel_admin_port: int = 46300
    fakesmsc_port: int = 46320
    web_port: int = 46340
    unused_port: int = 46390
    """The single broker's and PostgreSQL's ports (services.sh wants them set; nothing listens there)."""

    def env(self) -> dict[str, str]:
        return {**super().env(), "PW_CLUSTER_KAFKA_PORT": str(self.kafka_port),
                "PW_PGCLUSTER_PORT": str(self.postgres_port), "PW_KAFKA_PORT": str(self.unused_port),
                "PW_KAFKA_CONTROLLER_PORT": str(self.unused_port + 1), "PW_PG_PORT": str(self.unused_port + 2)}

    def pg_port(self, node: int) -> int:
        return self.postgres_port + node

    def rest_port(self, node: int) -> int:
        return self.postgres_port + 10 + node

    def database_url(self, name: str) -> str:
        hosts = ",".join(f"127.0.0.1:{self.pg_port(n)}" for n in (1, 2))
        return f"postgresql://parkwarden:parkwarden@{hosts}/{name}?target_session_attrs=read-write"

    def node_url(self, node: int, name: str) -> str:
        return f"postgresql://parkwarden:parkwarden@127.0.0.1:{self.pg_port(node)}/{name}"

    async def database_ready(self, name: str, timeout: float = 60) -> None:
        """Wait until every node has the new database: a standby has its WAL (synchronous commit) but may not
        have replayed it yet, and asyncpg, trying the hosts in turn, stops at one that refuses the
        database instead of trying the next."""
        deadline = time.monotonic() + timeout
        for node in (1, 2):
            while True:
                try:
                    await (await asyncpg.connect(self.node_url(node, name), timeout=5)).close()
                    break
                except (OSError, asyncpg.PostgresError, TimeoutError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)

    async def start(self) -> None:
        await asyncio.gather(self.script("cluster.sh", "start"), self.script("pgcluster.sh", "start"))
        await self.services("start", "kannel")

    async def stop(self) -> None:
        """Stop all three, whatever fails (each script stops its processes by their PIDs)."""
        done = await asyncio.gather(self.services("stop", "kannel"), self.script("pgcluster.sh", "stop"),
                                    self.script("cluster.sh", "stop"), return_exceptions=True)
        failed = [d for d in done if isinstance(d, BaseException)]
        if failed:
            raise failed[0]

    async def client_env(self) -> dict[str, str]:
        found = {}
        for script in ("cluster.sh", "pgcluster.sh"):  # Kafka's from the first, PW_DATABASE_URL from the second
            for line in (await self.script(script, "env")).splitlines():
                name, _, value = line.removeprefix("export ").partition("=")
                if line.startswith("export ") and (script == "cluster.sh" or name == "PW_DATABASE_URL"):
                    found[name] = shlex.split(value)[0] if value else ""
        return found

    def patroni(self, node: int, path: str) -> tuple[int, dict]:
        """Patroni's REST API of ``node``: (HTTP status, body); (0, {}) when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.rest_port(node)}{path}", timeout=2) as answer:
                return answer.status, json.load(answer)
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.load(exc)
            except ValueError:
                return exc.code, {}
        except (OSError, ValueError):
            return 0, {}

    def postmaster_pid(self, node: int) -> int:
        pid_file = Path(self.var_dir) / "pgcluster" / f"pg{node}" / "data" / "postmaster.pid"
        pid = int(pid_file.read_text().splitlines()[0])
        if b"postgres" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            raise RuntimeError(f"{pid_file} names no running postgres ({pid})")
        return pid


class ClusterFaults(Faults):
    """The single-broker run's worker kills, and the cluster's faults (see the module's docstring)."""

    stack: ClusterStack

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.figures: list[str] = []

    def figure(self, line: str) -> None:
        self.figures.append(line)
        self.say(f"[{self.now():5.0f} s] {line}")

    async def run(self) -> None:
        await asyncio.gather(self.kills(), self.services_in_turn(), self.cluster_faults())

    async def cluster_faults(self) -> None:
        p = self.plan
        planned = [(t, fault) for t, fault in ((p.broker_kill_at, self.broker_kill), (p.postgres_kill_at, self.primary_kill),
                                               (p.rolling_restart_at, self.rolling_restart)) if t is not None]
        for t, fault in sorted(planned, key=lambda pair: pair[0]):
            await self._at(t)
            await fault()

    # Kafka -----------------------------------------------------------------------------------

    def _partitions(self) -> dict[tuple[str, int], tuple[int, list[int]]]:
        """(topic, partition) -> (leader, in-sync replicas) of this run's topics, from the cluster's metadata."""
        metadata = self.admin.list_topics(timeout=10)
        prefix = self.run_of.settings.topic_prefix
        return {(name, p): (meta.leader, list(meta.isrs)) for name, t in metadata.topics.items()
                if name.startswith(prefix) for p, meta in t.partitions.items()}

    async def partitions(self) -> dict[tuple[str, int], tuple[int, list[int]]] | None:
        try:
            return await asyncio.to_thread(self._partitions)
        except Exception:  # noqa: BLE001 - the cluster is changing its mind: ask again
            return None

    async def broker_kill(self) -> None:
        self.admin = bootstrap.admin_client(self.run_of.settings, "chaos-faults")
        before = await self.partitions()
        camera = set(self.run_of.camera_topics(topics.CAMERA_EVENTS))
        led = Counter(leader for (name, _), (leader, _) in before.items() if name in camera)
        node = led.most_common(1)[0][0]
        theirs = [tp for tp, (leader, _) in before.items() if leader == node]
        self.say(f"[{self.now():5.0f} s] fault: broker {node} (leads {led[node]} of {sum(led.values())} camera-events "
                 f"partitions, {len(theirs)} of the run's {len(before)}) SIGKILLed")
        began = datetime.now(UTC)
        await self.stack.script("cluster.sh", "kill", str(node))
        killed = time.monotonic()
        moved = await self._until(lambda now: all(now[tp][0] not in (node, -1) for tp in theirs), 300)
        self.figure(f"broker {node} SIGKILLed: its {len(theirs)} partitions had new leaders "
                    + (f"{moved - killed:.1f} s after the kill" if moved else "NOT within 300 s"))
        await asyncio.sleep(max(0.0, killed + self.plan.broker_down_for - time.monotonic()))
        for attempt in range(5):  # a port of the ephemeral range may be held a moment by a client's connection
            try:
                await self.stack.script("cluster.sh", "start-node", str(node))
                break
            except RuntimeError as exc:
                if attempt == 4:
                    raise
                self.say(f"[{self.now():5.0f} s] fault: starting broker {node} again failed, again in 5 s "
                         f"({str(exc).splitlines()[0]})")
                await asyncio.sleep(5)
        restarted = time.monotonic()
        back = await self._until(lambda now: all(node in isr for _, isr in now.values()), 600)
        self.figure(f"broker {node} started again at {restarted - killed:.0f} s: back in every in-sync replica set "
                    + (f"{back - restarted:.1f} s after its start" if back else "NOT within 600 s"))
        self.windows.append((f"broker {node} SIGKILLed until back in sync", began, datetime.now(UTC)))
        self.done.append(f"broker {node} SIGKILLed at {killed - self.started:.0f} s, started again at "
                         f"{restarted - self.started:.0f} s")

    async def _until(self, ready, timeout: float) -> float | None:
        """Poll the cluster's metadata until ``ready(partitions)``; the monotonic time it was, or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = await self.partitions()
            if now is not None and ready(now):
                return time.monotonic()
            await asyncio.sleep(0.25)
        return None

    # PostgreSQL ------------------------------------------------------------------------------

    def _role(self, node: int, path: str) -> bool:
        return self.stack.patroni(node, path)[0] == 200

    async def primary_kill(self) -> None:
        stack = self.stack
        old = None
        for n in (1, 2):
            if await asyncio.to_thread(self._role, n, "/primary"):
                old = n
        if old is None:
            raise RuntimeError("no PostgreSQL node is primary before the kill")
        new = 3 - old
        log = Path(stack.log_dir) / f"pgcluster-patroni-{old}.log"
        log_offset = log.stat().st_size if log.exists() else 0
        pid = stack.postmaster_pid(old)
        senders = walsenders(pid) if self.plan.diverge_for else []
        if senders:  # its WAL goes on (commits wait for the standby, in vain): the timelines will diverge
            for sender in senders:
                os.kill(sender, signal.SIGSTOP)
            self.say(f"[{self.now():5.0f} s] fault: pg{old}'s walsender {senders} stopped (SIGSTOP) for "
                     f"{self.plan.diverge_for:.0f} s before the kill: the standby gets none of its WAL from now")
            await asyncio.sleep(self.plan.diverge_for)
        self.say(f"[{self.now():5.0f} s] fault: PostgreSQL primary pg{old} (postmaster {pid}) SIGKILLed")
        began = datetime.now(UTC)
        os.kill(pid, signal.SIGKILL)
        for sender in senders:  # dies with its postmaster (a stopped process cannot exit by itself)
            os.kill(sender, signal.SIGKILL)
        killed = time.monotonic()
        promoted = first_seen = first_dated = rejoined = None
        conn = None
        try:
            while time.monotonic() - killed < 600:
                if promoted is None and await asyncio.to_thread(self._role, new, "/primary"):
                    promoted = time.monotonic()
                if promoted is not None and first_seen is None:
                    try:
                        conn = conn or await asyncpg.connect(stack.node_url(new, self.run_of.db_name), timeout=5)
                        at = await conn.fetchval("SELECT min(at) FROM audit_log WHERE at > $1 AND case_id IS NOT NULL",
                                                 began)
                        if at is not None:
                            first_seen, first_dated = time.monotonic(), (at - began).total_seconds()
                    except (OSError, asyncpg.PostgresError, TimeoutError):
                        conn = None
                if rejoined is None and await asyncio.to_thread(self._role, old, "/sync"):
                    rejoined = time.monotonic()
                if promoted and first_seen and rejoined:
                    break
                await asyncio.sleep(0.5)
        finally:
            if conn is not None:
                await conn.close()
        def since(t):
            return f"{t - killed:.1f} s" if t else "NOT within 600 s"
        self.figure(f"PostgreSQL primary pg{old} SIGKILLed: pg{new} promoted after {since(promoted)}; first decision "
                    f"committed on it dated {first_dated:.1f} s after the kill (PostgreSQL's clock), seen by the "
                    f"0.5 s poll at {since(first_seen)}; pg{old} back as synchronous standby after {since(rejoined)}"
                    if first_dated is not None else
                    f"PostgreSQL primary pg{old} SIGKILLed: pg{new} promoted after {since(promoted)}; NO decision "
                    f"committed on it within 600 s; pg{old} back as synchronous standby after {since(rejoined)}")
        self.figure(f"pg_rewind: {rewind_summary(log, log_offset)}")
        self.windows.append((f"PostgreSQL primary pg{old} SIGKILLed until back as standby", began, datetime.now(UTC)))
        self.done.append(f"PostgreSQL primary pg{old} SIGKILLed at {killed - self.started:.0f} s")

    # the workers -----------------------------------------------------------------------------

    async def rolling_restart(self) -> None:
        workers = self.workers
        workers.rolling = True
        began = datetime.now(UTC)
        start = self.now()
        self.say(f"[{start:5.0f} s] fault: rolling restart of the {len(workers.procs)} workers (SIGTERM, one at a time)")
        steps = []
        try:
            for i in range(len(workers.procs)):
                stopping, starting = await workers.restart_gently(i)
                steps.append(f"worker {i}: exited {stopping:.1f} s after SIGTERM, ready {starting:.1f} s after its start")
        finally:
            workers.rolling = False
        self.figure(f"rolling restart from {start:.0f} s to {self.now():.0f} s: " + "; ".join(steps))
        self.windows.append(("rolling restart of the workers", began, datetime.now(UTC)))
        self.done.append(f"rolling restart of the workers from {start:.0f} s to {self.now():.0f} s")


def walsenders(postmaster: int) -> list[int]:
    """The WAL senders of a PostgreSQL server (children of its postmaster)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            title = (proc / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == postmaster and b"walsender" in title:
            found.append(int(proc.name))
    return found


def rewind_summary(log: Path, offset: int) -> str:
    """What Patroni's log of the old primary says about pg_rewind since ``offset``."""
    if not log.exists():
        return f"no Patroni log at {log}"
    with log.open("rb") as f:
        f.seek(offset)
        lines = f.read().decode(errors="replace").splitlines()
    said = [line.split(": ", 1)[-1] for line in lines if "rewind" in line.lower()]
    if not said:
        return ("not run: Patroni's log of the old primary does not mention pg_rewind (its timeline had not "
                "diverged: it rejoined as a standby directly)")
    return "Patroni's log of the old primary says: " + " | ".join(dict.fromkeys(said))


def percentiles(values: list[float]) -> str:
    if not values:
        return "no warnings"
    d = sorted(values)
    return (f"{len(d):4d} warnings, p50 {d[len(d) // 2]:6.1f} s, p99 {d[max(0, int(len(d) * 0.99) - 1)]:6.1f} s, "
            f"max {d[-1]:6.1f} s")


def latency_by_window(report: Report) -> str:
    """The warnings' latency (violation taken -> warning accepted) by the fault window the violation was
    taken in (the worker kills together), and outside every window."""
    groups: dict[str, list[float]] = {}
    outside = []
    for taken_at, delay in report.warning_delays:
        inside = [label for label, began, ended in report.windows if began <= taken_at <= ended]
        for label in dict.fromkeys("workers SIGKILLed (each kill and the next 15 s)" if label.startswith("worker ") else label
                                   for label in inside):
            groups.setdefault(label, []).append(delay)
        if not inside:
            outside.append(delay)
    lines = ["warnings' latency (violation taken -> warning accepted by the gateway), by when the violation was taken:"]
    lines += [f"  {label:<58} {percentiles(values)}" for label, values in groups.items()]
    lines.append(f"  {'outside every fault window':<58} {percentiles(outside)}")
    lines.append(f"  {'all':<58} {percentiles([d for _, d in report.warning_delays])}")
    return "\n".join(lines)
