"""``scripts/cluster.sh stop`` stops the 3 combined KRaft nodes in seconds: each broker's controlled
shutdown is approved while a quorum of controllers is left.

The nodes here are stand-ins that follow KRaft's rule: a SIGTERMed node asks the controllers to approve
its controlled shutdown; the approval needs 2 of the 3 nodes still running (without it the node waits:
Kafka waits 5 minutes). It comes in the answer to a heartbeat: at once for a broker that leads nothing
by then, at the next heartbeat (2 s later) for node 1, which led most partitions when it asked.
Stopped all at once, as before, node 1's approval came after the two others had gone and the stop waited
PW_KAFKA_STOP_TIMEOUT, as broker 1 did at the end of the cluster chaos run."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from pipeline.config import ROOT

APPROVED = "The controller has asked us to exit controlled shutdown."
NODE = r"""
import os, signal, sys, time
properties, node, approval_seconds, shutdown_seconds, run_dir, log = sys.argv[1:]
terminated = []
signal.signal(signal.SIGTERM, lambda *_: terminated.append(time.monotonic()))
with open(log, "a") as out:
    out.write(f"{time.time():.3f} started\n")
def alive(n):
    try:
        os.kill(int(open(f"{run_dir}/cluster-kafka-{n}.pid").read()), 0)
        return True
    except (OSError, ValueError):
        return False
while not terminated:
    time.sleep(0.02)
with open(log, "a") as out:
    out.write(f"{time.time():.3f} SIGTERM\n")
time.sleep(float(approval_seconds))
while sum(alive(n) for n in (1, 2, 3)) < 2:  # no quorum of controllers: no approval, ever
    time.sleep(0.05)
with open(log, "a") as out:
    out.write(f"{time.time():.3f} {APPROVED}\n")
    out.writelines(f"closing the log of partition {p}\n" for p in range(3000))  # as long as a real one
time.sleep(float(shutdown_seconds))  # the broker's and then the controller's own shutdown (3-7 s in a real one)
""".replace("{APPROVED}", APPROVED)


def start_node(var: Path, node: int, approval_seconds: float, shutdown_seconds: float = 1.0) -> subprocess.Popen:
    properties = var / "cluster" / f"kafka-{node}" / "server.properties"
    properties.parent.mkdir(parents=True)
    process = subprocess.Popen([sys.executable, "-c", NODE, str(properties), str(node), str(approval_seconds),
                                str(shutdown_seconds), str(var / "run"), str(var / "log" / f"cluster-kafka-{node}.log")])
    (var / "run" / f"cluster-kafka-{node}.pid").write_text(f"{process.pid}\n")
    threading.Thread(target=process.wait, daemon=True).start()  # reaped at once: no zombie looks alive
    return process


def stop(var: Path, nodes: dict[int, subprocess.Popen]) -> tuple[subprocess.CompletedProcess, float, dict[int, str]]:
    """``cluster.sh stop`` once every stand-in node is up: its output, how long it took, each node's log."""
    log = {n: var / "log" / f"cluster-kafka-{n}.log" for n in nodes}
    deadline = time.monotonic() + 30
    while not all(path.exists() for path in log.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    done = subprocess.run([str(ROOT / "scripts" / "cluster.sh"), "stop"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PW_VAR_DIR": str(var), "PW_KAFKA_STOP_TIMEOUT": "30"})
    return done, time.monotonic() - started, {n: path.read_text() for n, path in log.items()}


def at(log: str, what: str) -> float:
    return next(float(line.split()[0]) for line in log.splitlines() if line.endswith(what))


def stack(tmp_path: Path) -> Path:
    (tmp_path / "run").mkdir()
    (tmp_path / "log").mkdir()
    return tmp_path


def test_the_cluster_stops_in_seconds_every_broker_with_its_controlled_shutdown_approved(tmp_path):
    var = stack(tmp_path)
    nodes = {1: start_node(var, 1, approval_seconds=2.0), 2: start_node(var, 2, approval_seconds=0.2),
             3: start_node(var, 3, approval_seconds=0.2)}
    try:
        done, took, logs = stop(var, nodes)
        assert done.returncode == 0, done.stderr
        assert took < 15, f"the stop took {took:.0f} s:\n{done.stdout}{done.stderr}"
        assert all(APPROVED in log for log in logs.values()), f"a node was not approved: {done.stdout}{done.stderr}"
        assert at(logs[1], APPROVED) < min(at(logs[2], "SIGTERM"), at(logs[3], "SIGTERM")), \
            "node 1 was not stopped before the others"
        assert "SIGKILL" not in done.stderr and "cluster stopped in" in done.stdout
    finally:
        for process in nodes.values():
            if process.poll() is None:
                process.kill()


def test_an_approved_node_slow_to_close_is_not_killed_once_the_quorum_is_gone(tmp_path):
    """Node 1 is down (crashed); nodes 2 and 3 are approved at once; node 3 is gone in 0.3 s, node 2 takes 11 s
    to close, past the 10 s after which an unapproved node would be killed."""
    var = stack(tmp_path)
    nodes = {2: start_node(var, 2, approval_seconds=0.2, shutdown_seconds=11),
             3: start_node(var, 3, approval_seconds=0.2, shutdown_seconds=0.3)}
    try:
        done, took, logs = stop(var, nodes)
        assert done.returncode == 0, done.stderr
        assert "SIGKILL" not in done.stderr, done.stderr
        assert nodes[2].returncode == 0 and 10 < took < 20, f"{took:.0f} s, node 2 ended with {nodes[2].returncode}"
    finally:
        for process in nodes.values():
            if process.poll() is None:
                process.kill()
