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
properties, node, approval_seconds, run_dir, log = sys.argv[1:]
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
time.sleep(1.0)  # the broker's and then the controller's own shutdown (3-7 s in a real one)
""".replace("{APPROVED}", APPROVED)
APPROVAL_SECONDS = {1: 2.0, 2: 0.2, 3: 0.2}


def start_node(var: Path, node: int) -> subprocess.Popen:
    properties = var / "cluster" / f"kafka-{node}" / "server.properties"
    properties.parent.mkdir(parents=True)
    process = subprocess.Popen([sys.executable, "-c", NODE, str(properties), str(node), str(APPROVAL_SECONDS[node]),
                                str(var / "run"), str(var / "log" / f"cluster-kafka-{node}.log")])
    (var / "run" / f"cluster-kafka-{node}.pid").write_text(f"{process.pid}\n")
    threading.Thread(target=process.wait, daemon=True).start()  # reaped at once: no zombie looks alive
    return process


def test_the_cluster_stops_in_seconds_every_broker_with_its_controlled_shutdown_approved(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "log").mkdir()
    nodes = {n: start_node(tmp_path, n) for n in (1, 2, 3)}
    log = {n: tmp_path / "log" / f"cluster-kafka-{n}.log" for n in nodes}
    try:
        deadline = time.monotonic() + 30
        while not all(path.exists() for path in log.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        done = subprocess.run([str(ROOT / "scripts" / "cluster.sh"), "stop"], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "PW_VAR_DIR": str(tmp_path), "PW_KAFKA_STOP_TIMEOUT": "30"})
        took = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        logs = {n: path.read_text() for n, path in log.items()}
        assert took < 15, f"the stop took {took:.0f} s:\n{done.stdout}{done.stderr}{logs}"
        assert all(APPROVED in log for log in logs.values()), f"a node was not approved: {logs}"
        stopped_at = {n: float(logs[n].splitlines()[-1].split()[0]) for n in nodes}
        termed_at = {n: float(logs[n].splitlines()[1].split()[0]) for n in nodes}
        assert stopped_at[1] < min(termed_at[2], termed_at[3]), "node 1 was not stopped before the others"
        assert "SIGKILL" not in done.stderr and "cluster stopped in" in done.stdout
    finally:
        for process in nodes.values():
            if process.poll() is None:
                process.kill()
