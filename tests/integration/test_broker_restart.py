"""The broker restarts after what the suite does to it and still takes every login (issue 15, must 0).

The suite creates and deletes ~1,500 topics and makes and removes integrators' SCRAM users; then
`./dev demo` (or `./dev bench`) starts the broker again on the same var/. This runs a broker of its own
(var/restart-test, ports 29492/29493: scripts/services.sh with PW_VAR_DIR; below the ephemeral range,
as bench/chaos.py's, so no other test's connection can hold them while it restarts), does the same on a smaller
scale, restarts it and logs in again. The shared services are never touched.

The cause it guards against: Kafka 3.9's ``ScramDelta.apply`` drops a mechanism's whole user map when a
deletion finds that map empty, which happens when a broker restarts on a metadata log without a snapshot
and the deletion comes first in hash order: every SCRAM user is lost and every login refused. Withdrawing a
login therefore overwrites the user's password (``principals.withdraw``); it never deletes the user."""

import asyncio
import os
import shlex
import subprocess
import time
import uuid

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline import bootstrap
from pipeline.config import Settings
from pipeline.ingest import principals
from tests.integration.conftest import ROOT

VAR = ROOT / "var" / "restart-test"
STACK = {"PW_VAR_DIR": str(VAR), "PW_KAFKA_PORT": "29492", "PW_KAFKA_CONTROLLER_PORT": "29493"}


def services(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PW_")} | STACK
    done = subprocess.run([str(ROOT / "scripts" / "services.sh"), *args], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"services.sh {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def stack_settings(monkeypatch) -> Settings:
    for line in services("env").splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        monkeypatch.setenv(name, shlex.split(value)[0] if value else "")
    return Settings()


async def login_works(settings: Settings, user: str, password: str) -> list[str]:
    options = bootstrap.kafka_client_options(settings) | {"sasl_plain_username": user, "sasl_plain_password": password}
    admin = AIOKafkaAdminClient(request_timeout_ms=15_000, **options)
    await admin.start()
    try:
        return await admin.list_topics()
    finally:
        await admin.close()


async def churn_topics(settings: Settings, count: int) -> None:
    admin = AIOKafkaAdminClient(request_timeout_ms=60_000, **bootstrap.kafka_client_options(settings))
    await admin.start()
    try:
        for _ in range(0, count, 50):
            names = [f"churn-{uuid.uuid4().hex[:10]}" for _ in range(50)]
            await admin.create_topics([NewTopic(name, 4, 1) for name in names])
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def test_the_broker_restarted_after_topics_and_users_came_and_went_takes_every_login(monkeypatch):
    services("stop", "kafka")
    subprocess.run(["rm", "-rf", str(VAR / "kafka" / "data-sasl")], check=True)
    services("start", "kafka")
    try:
        settings = stack_settings(monkeypatch)
        await churn_topics(settings, 100)
        # "gone-0" comes first in the hash order of Kafka's ScramDelta (bucket 0 of 16, before parkwarden's
        # 2 and broker's 12): had its withdrawal been a deletion, the broker would restart without a user.
        for name in ("gone-0", "churn-acme", "churn-platform"):
            await principals.grant(settings, name)
            await principals.withdraw(settings, name)

        data = VAR / "kafka" / "data-sasl"
        deadline = time.monotonic() + 60
        while (left := [d.name for d in data.iterdir() if d.name.endswith("-delete")]) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert not left, f"{len(left)} deleted partitions still on disk 60 s after their topics were deleted"

        stopped = services("stop", "kafka")
        assert "SIGKILL" not in stopped, stopped
        started = services("start", "kafka")
        assert "kafka ready" in started, started

        assert isinstance(await login_works(settings, "parkwarden", "parkwarden-kafka"), list)
        assert isinstance(await login_works(settings, "broker", "broker-kafka"), list)
        password = await principals.grant(settings, "churn-after")
        assert isinstance(await login_works(settings, "churn-after", password), list)
    finally:
        services("stop", "kafka")
