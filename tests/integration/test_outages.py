"""Outages survived quietly, on the real Kafka and PostgreSQL: a worker started before its broker or
its database waits for them (saying so once in a while) and then works; HTTP ingest answers 503 with
Retry-After while PostgreSQL is away, and keeps taking events from keys it has seen.

The services are never stopped: the worker reaches them through a TCP relay (tests/local_server.py)
that the test opens late or cuts."""

import asyncio
import json
from urllib.parse import urlsplit

import aiohttp

from pipeline.demo import city
from pipeline.ingest import keys
from schemas import topics
from schemas.codec import encode
from tests.local_server import TcpProxy

from .conftest import BASE, Stack, Worker, wait_for
from .test_integrators import records


def url(worker: Worker, path: str) -> str:
    return f"http://127.0.0.1:{worker.env['PW_WEB_PORT']}{path}"


async def post_events(worker: Worker, key: str, *events) -> tuple[int, dict, dict]:
    body = b"\n".join(encode(e) for e in events)
    headers = {"Content-Type": "application/x-ndjson", "Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url(worker, "/v1/camera-events"), data=body, headers=headers) as r:
            return r.status, await r.json(content_type=None), dict(r.headers)


async def dead_letters(worker: Worker, key: str) -> tuple[int, dict, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.get(url(worker, "/v1/dead-letters"), headers={"Authorization": f"Bearer {key}"}) as r:
            return r.status, await r.json(content_type=None), dict(r.headers)


def log_of(worker: Worker) -> str:
    return worker.log_path.read_text(errors="replace")


async def logged(worker: Worker, text: str, times: int = 1, timeout: float = 60) -> None:
    """Wait until ``text`` is in the worker's log ``times`` times; fail at once if the worker exits."""
    async def seen():
        assert worker.proc.poll() is None, f"worker exited with {worker.proc.returncode}:\n{log_of(worker)[-3000:]}"
        return log_of(worker).count(text) >= times
    await wait_for(seen, timeout, f"{times} x {text!r} in the worker's log", every=0.25)


async def test_a_worker_started_before_postgresql_waits_saying_so_once_in_a_while_then_starts(stack: Stack):
    pg_port = urlsplit(stack.db_url).port
    database = TcpProxy("127.0.0.1", pg_port)
    worker = stack.worker(PW_DATABASE_URL=stack.db_url.replace(f":{pg_port}/", f":{database.port}/"))
    try:
        waiting = f"waiting for PostgreSQL at 127.0.0.1:{database.port}/{stack.db_name}"
        await logged(worker, waiting, times=2)
        log = log_of(worker)
        assert log.count(waiting) == 2, "said once in a while, not in a tight loop"
        assert "scripts/services.sh start postgres" in log
        assert "parkwarden:parkwarden@" not in log, "the database URL is shown without its credentials"

        await database.start()
        await worker.ready()
    finally:
        worker.stop()
        await database.stop()


async def test_a_worker_started_before_kafka_waits_saying_so_once_in_a_while_then_decides(stack: Stack):
    kafka_host, kafka_port = BASE.kafka_bootstrap.rsplit(":", 1)
    broker = TcpProxy(kafka_host, int(kafka_port))
    worker = stack.worker(PW_KAFKA_BOOTSTRAP=f"127.0.0.1:{broker.port}")
    try:
        waiting = f"waiting for Kafka at 127.0.0.1:{broker.port}"
        await logged(worker, waiting, times=2)
        log = log_of(worker)
        assert log.count(waiting) == 2, "said once in a while, not in a tight loop"
        assert "scripts/services.sh start kafka" in log
        assert log.count(f'Unable connect to "127.0.0.1:{broker.port}"') <= 4, "aiokafka's own errors are rate-limited"

        await broker.start()
        await worker.ready()
        await stack.all_car_parks_free()
        plate = (await stack.plates_with_phone(1))[0]
        await stack.publish(stack.violation(plate))
        await stack.wait_state(plate, "warned")
    finally:
        worker.stop()
        await broker.stop()


async def test_ingest_answers_503_for_a_new_key_and_keeps_taking_known_keys_while_postgresql_is_away(stack: Stack):
    pg_port = urlsplit(stack.db_url).port
    database = TcpProxy("127.0.0.1", pg_port)
    await database.start()
    worker = stack.worker(PW_DATABASE_URL=stack.db_url.replace(f":{pg_port}/", f":{database.port}/"),
                          PW_INGEST_KEY_CACHE_SECONDS="0.5")
    async with stack.pool.acquire() as conn:
        _, known = await keys.add(conn, "cam-vendor")
        _, newcomer = await keys.add(conn, "car-parks")
        _, operator = await keys.add(conn, "ops", "operator")
    await stack.register_camera(city.CAMERAS[0], "cam-vendor")
    await stack.register_camera(city.CAMERAS[1], "car-parks")
    try:
        await worker.ready()
        plate = (await stack.plates_with_phone(1))[0]
        before = stack.departure(plate)
        assert (await post_events(worker, known, before))[0] == 202
        assert (await dead_letters(worker, operator))[0] == 200

        await database.stop()
        await asyncio.sleep(1)  # past PW_INGEST_KEY_CACHE_SECONDS: the worker no longer trusts its cache
        during = stack.departure(plate)
        status, reply, _ = await post_events(worker, known, during)
        assert (status, reply) == (202, {"accepted": 1, "rejected": []}), \
            "a key seen before the outage keeps working, the rate limit does not fail"
        for key in (newcomer, keys.new_key()):
            status, reply, headers = await post_events(worker, key, stack.departure(plate, city.CAMERAS[1]))
            assert status == 503 and int(headers["Retry-After"]) >= 1, (status, reply)
            assert "resend" in reply["error"]
        status, reply, headers = await dead_letters(worker, operator)
        assert status == 503 and int(headers["Retry-After"]) >= 1 and "unreachable" in reply["error"]
        published = await records(stack, topics.CAMERA_EVENTS, lambda rs: len(rs) >= 2, integrator="cam-vendor")
        assert {json.loads(r.value)["event_id"] for r in published} == {before.event_id, during.event_id}

        await database.start()

        async def newcomer_accepted():
            return (await post_events(worker, newcomer, stack.departure(plate, city.CAMERAS[1])))[0] == 202
        await wait_for(newcomer_accepted, 30, "the new key to be accepted once PostgreSQL is back", every=0.5)
        assert "ingest: unexpected error" not in log_of(worker)
    finally:
        worker.stop()
        await database.stop()
