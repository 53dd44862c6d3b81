"""Integrators, on the real Kafka and PostgreSQL: the HTTP ingest (keys, limits, per-event answers,
fuzzed), dead letters that say how to fix an event, disorder decided by event time, the recheck
round trip with a camera, and the command-line tools."""

import asyncio
import base64
import json
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.demo import city
from pipeline.ingest import keys
from pipeline.ingest.ratelimit import RateLimiter
from schemas import contract, topics
from schemas.codec import encode
from schemas.events import CarParkStatus

from .conftest import KAFKA, ROOT, Stack, Worker, sleep_until, wait_for

CAMERA = city.CAMERAS[0]


def url(worker: Worker, path: str) -> str:
    return f"http://127.0.0.1:{worker.env['PW_WEB_PORT']}{path}"


async def add_key(stack: Stack, name: str, kind: str = "publisher", cameras=()) -> str:
    """An integrator's key; it owns ``cameras`` (an integrator may publish only for its own)."""
    return await stack.add_integrator(name, kind, tuple(cameras))


async def call(method: str, target: str, key: str | None = None, body: bytes | None = None,
               content_type: str = "application/json") -> tuple[int, dict, dict]:
    headers = {"Content-Type": content_type}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    async with aiohttp.ClientSession() as session:
        async with session.request(method, target, data=body, headers=headers) as response:
            return response.status, await response.json(content_type=None), dict(response.headers)


def jsonl(*messages) -> bytes:
    return b"\n".join(encode(m) for m in messages)


async def records(stack: Stack, t: topics.Topic, until, timeout: float = 20, integrator: str = city.INTEGRATOR) -> list:
    """Kafka records (with keys) of a topic (camera events: ``integrator``'s), from the start, until
    ``until(records)`` holds."""
    consumer = AIOKafkaConsumer(stack.topic(t, integrator), **KAFKA,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    found = []
    try:
        async def enough():
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                found.extend(batch)
            return until(found)
        await wait_for(enough, timeout, f"records on {t.name}")
        return found
    finally:
        await consumer.stop()


async def run_cli(stack: Stack, *args: str, **env: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", *args, cwd=ROOT, env={**stack.env, "COLUMNS": "200", **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode, out.decode()


# ── HTTP ingest ────────────────────────────────────────────────────────────────────────────


async def test_http_ingest_checks_the_key_the_size_the_type_and_the_rate_and_answers_for_each_event(stack: Stack):
    worker = stack.worker(PW_INGEST_MAX_BODY_BYTES="8192", PW_INGEST_MAX_EVENTS="5",
                          PW_INGEST_RATE_PER_SECOND="0.1", PW_INGEST_RATE_BURST="10")
    key, operator, hasty = await add_key(stack, "cam-vendor", cameras=[CAMERA]), await add_key(stack, "ops", "operator"), \
        await add_key(stack, "hasty")
    revoked = await add_key(stack, "gone")
    async with stack.pool.acquire() as conn:
        await keys.revoke(conn, "gone")
    await worker.ready()
    events_url = url(worker, "/v1/camera-events")
    good, other = await stack.plates_with_phone(2)
    body = jsonl(stack.violation(good))

    status, reply, headers = await call("POST", events_url, None, body)
    assert status == 401 and "Authorization: Bearer" in reply["error"] and "Bearer" in headers["WWW-Authenticate"]
    for wrong in ("pwk_not-a-key", revoked):
        status, reply, _ = await call("POST", events_url, wrong, body)
        assert status == 401 and "unknown or revoked" in reply["error"]

    status, reply, _ = await call("POST", events_url, key, body, "text/plain")
    assert status == 415 and "application/json" in reply["error"]
    too_big = json.dumps([json.loads(encode(stack.violation(good)))] * 40, ensure_ascii=False).encode()
    assert len(too_big) > 8192
    status, reply, _ = await call("POST", events_url, key, too_big)
    assert status == 413 and "8192 bytes" in reply["error"]
    status, reply, _ = await call("POST", events_url, key, jsonl(*[stack.departure(good)] * 6), "application/x-ndjson")
    assert status == 413 and "at most 5" in reply["error"]
    status, reply, _ = await call("POST", events_url, key, b"{this is not json")
    assert status == 400 and "not JSON" in reply["error"]

    first, bad, second = stack.violation(good), stack.violation(good), stack.violation(other)
    bad_json = {**json.loads(encode(bad)), "plate": "浙I12345", "location": {"lat": 95, "lon": 120}}
    decorated = {**json.loads(encode(second)), "plate": f"{other[0]}{other[1].lower()}·{other[2:]}"}
    batch = json.dumps([json.loads(encode(first)), bad_json, decorated], ensure_ascii=False).encode()
    status, reply, _ = await call("POST", events_url, key, batch)
    assert status == 422
    assert reply["accepted"] == 2
    [refused] = reply["rejected"]
    assert (refused["index"], refused["event_id"]) == (1, bad.event_id)
    assert {e["field"] for e in refused["errors"]} == {"plate", "location.lat"}
    assert "I and O" in refused["reason"]
    published = await records(stack, topics.CAMERA_EVENTS, lambda rs: len(rs) >= 2, integrator="cam-vendor")
    assert {(r.key.decode(), json.loads(r.value)["event_id"], json.loads(r.value)["plate"]) for r in published} == \
        {(good, first.event_id, good), (other, second.event_id, other)}, "on Kafka, keyed by normalized plate"
    assert dict(published[0].headers)["parkwarden-source"] == b"http:cam-vendor"
    await stack.wait_state(other, "warned", timeout=15)

    status, reply, _ = await call("POST", events_url, key, jsonl(stack.observation(good), stack.departure(good)),
                                  "application/x-ndjson")
    assert (status, reply) == (202, {"accepted": 2, "rejected": []})
    status_body = encode(CarParkStatus(car_park_id=city.CAR_PARKS[0][0], free_spaces=7,
                                       reported_at=datetime.now(UTC)))
    status, reply, _ = await call("POST", url(worker, "/v1/car-park-status"), key, status_body)
    assert (status, reply["accepted"]) == (202, 1)

    status, reply, _ = await call("GET", url(worker, "/v1/dead-letters"), key)
    assert status == 403 and "operator key" in reply["error"]
    status, reply, _ = await call("GET", url(worker, "/v1/dead-letters"), operator)
    assert status == 200 and reply["total"] == 0

    answers = [await call("POST", url(worker, "/v1/car-park-status"), hasty, status_body) for _ in range(11)]
    assert [s for s, _, _ in answers] == [202] * 10 + [429]
    _, reply, headers = answers[-1]
    assert 1 <= int(headers["Retry-After"]) <= 10 and "rate limit" in reply["error"]


async def test_a_keys_rate_limit_is_shared_by_every_worker_and_refills_at_its_rate(stack: Stack):
    """Two limiters with their own connections stand for two workers behind a load balancer."""
    other_pool = await asyncpg.create_pool(stack.db_url, min_size=1, max_size=1)
    try:
        here, there = RateLimiter(stack.pool, rate_per_second=0.5, burst=3), RateLimiter(other_pool, 0.5, 3)
        assert [await here.take("cam-vendor") for _ in range(2)] == [0, 0]
        assert await there.take("cam-vendor") == 0, "the third of the burst, on the other worker"
        assert await there.take("cam-vendor") == pytest.approx(2, abs=0.2), "one token every 2 s"
        assert await here.take("cam-vendor") == pytest.approx(2, abs=0.2), "refused on this worker too"
        assert await here.take("car-parks") == 0, "other keys have their own bucket"

        async def seconds_pass(seconds: int) -> None:  # the bucket's clock is the database's
            await stack.pool.execute("UPDATE ingest_buckets SET at = at - make_interval(secs => $1)", seconds)
        await seconds_pass(2)
        assert await there.take("cam-vendor") == 0, "refused requests took no tokens"
        await seconds_pass(600)
        takes = [await here.take("cam-vendor") for _ in range(4)]
        assert takes[:3] == [0, 0, 0] and takes[3] > 0, "a bucket holds at most the burst"
    finally:
        await other_pool.close()


async def test_the_schema_files_and_examples_are_served_as_checked_in(stack: Stack):
    worker = stack.worker()
    await worker.ready()

    status, index, _ = await call("GET", url(worker, "/v1/schemas"))
    assert status == 200 and "/v1/schemas/CameraEvent.schema.json" in index["schemas"]
    for path in index["schemas"] + index["examples"]:
        async with aiohttp.ClientSession() as session, session.get(url(worker, path)) as response:
            assert response.status == 200, path
            folder = contract.SCHEMA_DIR if path.startswith("/v1/schemas/") else contract.EXAMPLES_DIR
            assert await response.read() == (folder / path.rsplit("/", 1)[1]).read_bytes()
    status, reply, _ = await call("GET", url(worker, "/v1/schemas/..%2Fevents.py"))
    assert status == 404 and "/v1/schemas" in reply["error"]


CONTENT_TYPES = ["application/json", "application/x-ndjson", "application/json; charset=utf-8", "text/plain",
                 "application/x-www-form-urlencoded", ""]
VIOLATION = json.loads((contract.EXAMPLES_DIR / "ViolationDetected.json").read_text(encoding="utf-8"))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(list(VIOLATION)) | st.text(max_size=6),
                                                                inner, max_size=6),
    max_leaves=10,
)
event_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["ViolationDetected", "VehicleObserved", "VehicleDeparted", "CarParkStatus", "x"])},
    optional={k: st.just(v) | json_values for k, v in VIOLATION.items() if k != "type"})
bodies = st.one_of(
    st.binary(max_size=2000),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.lists(event_like, max_size=6).map(lambda es: json.dumps(es, ensure_ascii=False).encode()),
    st.lists(event_like | json_values, max_size=6).map(
        lambda es: b"\n".join(json.dumps(e, ensure_ascii=False).encode() for e in es)),
)


async def test_fuzzed_http_ingest_never_answers_5xx_and_the_worker_keeps_going(stack: Stack):
    worker = stack.worker(PW_INGEST_RATE_PER_SECOND="100000", PW_INGEST_RATE_BURST="100000",
                          PW_INGEST_MAX_BODY_BYTES="65536")
    key = await add_key(stack, "fuzzer", cameras=city.CAMERAS)
    await worker.ready()
    answers: list[int] = []

    @settings(max_examples=250, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, content_type=st.sampled_from(CONTENT_TYPES),
           path=st.sampled_from(["/v1/camera-events", "/v1/car-park-status"]))
    def post_anything(body, content_type, path):
        request = urllib.request.Request(url(worker, path), data=body, method="POST",
                                         headers={"Authorization": f"Bearer {key}", "Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, reply = response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            status, reply = error.code, json.loads(error.read())
        answers.append(status)
        assert status in (202, 400, 403, 413, 415, 422), (status, reply)
        if status in (202, 422):
            assert isinstance(reply["accepted"], int)
            assert all(r["errors"] and all(e["field"] for e in r["errors"]) for r in reply["rejected"])
        else:
            assert reply["error"]

    await asyncio.to_thread(post_anything)

    assert worker.proc.poll() is None, "the worker survived the fuzzing"
    status, reply, _ = await call("POST", url(worker, "/v1/camera-events"), key,
                                  encode(stack.violation((await stack.plates_with_phone(1))[0])))
    assert (status, reply["accepted"]) == (202, 1)
    assert {202, 422, 400}.issubset(answers), "the fuzzing reached the validator, not only the guards"


async def test_fuzzed_kafka_input_never_stops_the_stream_and_every_bad_message_is_a_dead_letter(stack: Stack):
    worker = stack.worker()
    blobs: list[bytes] = []

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.binary(min_size=1, max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
    def collect(blob):
        if blob not in blobs:
            blobs.append(blob)

    collect()
    await worker.ready()
    for blob in blobs:
        await stack.publish_raw(blob, key=b"fuzz")
    plate = (await stack.plates_with_phone(1))[0]
    await stack.publish(stack.violation(plate))

    await stack.wait_state(plate, "warned", timeout=30)
    async def all_dead():
        return await stack.count("SELECT count(*) FROM dead_letters") == len(blobs)
    await wait_for(all_dead, 20, f"{len(blobs)} dead letters")
    assert worker.proc.poll() is None


# ── dead letters ───────────────────────────────────────────────────────────────────────────


async def test_dead_letters_carry_the_reason_the_fields_the_original_bytes_and_where_they_came_from(stack: Stack):
    operator = await add_key(stack, "ops", "operator")
    worker = stack.worker()
    await worker.ready()
    observed = stack.observation((await stack.plates_with_phone(1))[0])
    bad_fields = json.dumps({**json.loads(encode(observed)), "plate": "浙I12345",
                             "location": {"lat": 95, "lon": 120}}, ensure_ascii=False).encode()
    unknown_car_park = encode(CarParkStatus(car_park_id="cp-nowhere", free_spaces=3, reported_at=datetime.now(UTC)))
    sent = [
        (topics.CAMERA_EVENTS, b"{not json", b"cam-1"),
        (topics.CAMERA_EVENTS, bad_fields, "浙I12345".encode()),
        (topics.CAR_PARK_STATUS, unknown_car_park, b"cp-nowhere"),
    ]
    own_car_park = city.CAR_PARKS[0][0]  # registered to ops: its bad counts are ops's dead letters
    await stack.pool.execute("UPDATE car_parks SET integrator = 'ops' WHERE id = $1", own_car_park)
    own_count = b'{"car_park_id": "' + own_car_park.encode() + b'", "free_spaces": -1}'

    where = []
    for t, raw, key in sent:
        meta = await stack.producer.send_and_wait(stack.topic(t, "ops"), raw, key=key)
        where.append((meta.topic, meta.partition, meta.offset))
    await stack.producer.send_and_wait(stack.topic(topics.CAR_PARK_STATUS), own_count, key=own_car_park.encode())

    letters = await stack.consume(topics.DEAD_LETTERS, lambda ms: len(ms) >= 4)
    by_origin = {(m["source_topic"], m["partition"], m["offset"]): m for m in letters}
    assert set(where) <= set(by_origin) and len(by_origin) == 4, \
        "each dead letter names its source topic, partition and offset"
    for (t, raw, key), origin in zip(sent, where):
        letter = by_origin[origin]
        assert base64.b64decode(letter["raw_base64"]) == raw
        assert letter["key"] == key.decode()
        assert letter["reason"] and letter["received_at"]
    not_json, fields, car_park = (by_origin[w] for w in where)
    assert "not JSON" in not_json["reason"]
    assert {e["field"] for e in fields["errors"]} == {"plate", "location.lat"}
    assert "I and O" in fields["reason"] and "less than or equal to 90" in fields["reason"]
    assert [e["field"] for e in car_park["errors"]] == ["car_park_id"]
    assert "register it" in car_park["reason"]

    status, reply, _ = await call("GET", url(worker, "/v1/dead-letters?limit=2"), operator)
    assert status == 200 and reply["total"] == 3, \
        "an integrator reads the dead letters of its own topic and of its own car parks' counts only"
    newest = reply["dead_letters"]
    assert len(newest) == 2 and newest[0]["id"] > newest[1]["id"], "newest first"
    status, older, _ = await call("GET", url(worker, f"/v1/dead-letters?before={newest[-1]['id']}"), operator)
    assert len(older["dead_letters"]) == 1, "nor, page by page, another source's (the unknown car park's)"
    listed = [base64.b64decode(d["raw_base64"]) for d in newest + older["dead_letters"]]
    assert sorted(listed) == sorted([raw for t, raw, _ in sent if t == topics.CAMERA_EVENTS] + [own_count])
    other = await add_key(stack, "ops-2", "operator")
    status, reply, _ = await call("GET", url(worker, "/v1/dead-letters"), other)
    assert (status, reply["total"], reply["dead_letters"]) == (200, 0, []), "another integrator reads none of them"

    code, out = await run_cli(stack, "dead-letters", "--limit", "5")
    assert code == 0, out
    assert "4 newest of 4" in out and "cp-nowhere" in out and "not JSON" in out
    code, out = await run_cli(stack, "dead-letters", "--json")
    assert code == 0, out
    assert {base64.b64decode(json.loads(line)["raw_base64"]) for line in out.splitlines()} == \
        {r for _, r, _ in sent} | {own_count}


async def test_evidence_links_that_are_not_https_are_refused_on_http_and_dead_lettered_on_kafka(stack: Stack):
    worker = stack.worker(PW_EVIDENCE_URL_SCHEMES="https,s3")
    key = await add_key(stack, "cam-vendor", cameras=[city.CAMERAS[0]])
    await worker.ready()
    plate = (await stack.plates_with_phone(1))[0]

    def violation_with(image_url: str) -> dict:
        return {**json.loads(encode(stack.violation(plate))), "evidence": {"image_url": image_url}}
    script, plain_http, s3 = (violation_with("javascript://%0aalert(document.cookie)"),
                              violation_with("http://evidence.test/a.jpg"), violation_with("s3://evidence/a.jpg"))
    status, reply, _ = await call("POST", url(worker, "/v1/camera-events"), key,
                                  json.dumps([script, plain_http, s3]).encode())
    assert status == 422 and reply["accepted"] == 1, "s3 is allowed by this operator"
    assert [r["index"] for r in reply["rejected"]] == [0, 1]
    for refused in reply["rejected"]:
        assert [e["field"] for e in refused["errors"]] == ["evidence.image_url"]
        assert "https://, s3://" in refused["reason"]

    raw = json.dumps(violation_with("javascript://%0aalert(1)")).encode()
    await stack.producer.send_and_wait(stack.topic(topics.CAMERA_EVENTS), raw, key=plate.encode())
    [letter] = await stack.consume(topics.DEAD_LETTERS, lambda ms: len(ms) >= 1)
    assert base64.b64decode(letter["raw_base64"]) == raw
    assert [e["field"] for e in letter["errors"]] == ["evidence.image_url"]
    assert "'javascript' is not accepted" in letter["reason"]
    await stack.wait_state(plate, "warned", timeout=20)  # the s3 one opened the case
    assert await stack.count("SELECT count(*) FROM sightings WHERE evidence->>'image_url' NOT LIKE 's3://%'") == 0


# ── disorder ───────────────────────────────────────────────────────────────────────────────


async def test_late_and_out_of_order_events_are_decided_by_event_time_within_the_lateness_bound(stack: Stack):
    worker = stack.worker(PW_LATENESS_SECONDS="5", PW_RECHECK_WAIT_SECONDS="10")
    await worker.ready()
    await stack.all_car_parks_free()
    overtaken, early_seen, late_departure = await stack.plates_with_phone(3)
    t0 = datetime.now(UTC)

    # A departure that overtook its violation: the violation opens the case, the departure closes it.
    await stack.publish(stack.departure(overtaken, at=t0 + timedelta(seconds=1)))
    # Observations around a violation, out of order: neither counts as still there at the deadline.
    await stack.publish(stack.observation(early_seen, at=t0 + timedelta(seconds=1)))
    await stack.publish(stack.violation(overtaken, at=t0))
    await stack.publish(stack.violation(early_seen, at=t0))
    await stack.publish(stack.observation(early_seen, at=t0 - timedelta(seconds=5)))
    await stack.publish(stack.violation(late_departure, at=t0))

    moved = await stack.wait_state(overtaken, "moved", timeout=15)
    assert moved["reason"] == "left within the window"
    assert await stack.count("SELECT count(*) FROM sms_messages WHERE case_id = $1 AND status = 'accepted'",
                             moved["id"]) == 0, "no warning for a car that had already left"

    warned = await stack.wait_state(late_departure, "warned", timeout=15)
    await sleep_until(warned["deadline_at"] + timedelta(seconds=0.3))
    assert (await stack.case_of(late_departure))["state"] == "warned", "premise: past the deadline, before the decision"
    await stack.publish(stack.departure(late_departure, at=warned["deadline_at"] - timedelta(seconds=1)))
    left = await stack.wait_state(late_departure, "moved", timeout=15)
    assert left["reason"] == "left within the window"

    await stack.wait_state(early_seen, "rechecking", timeout=30)
    requests = await stack.consume(topics.CAMERA_COMMANDS, lambda ms: len(ms) >= 1)
    await stack.wait_state(early_seen, "unconfirmed", timeout=30)
    assert [r["plate"] for r in requests] == [early_seen], "no recheck for cases already decided by event time"
    assert await stack.count("SELECT count(*) FROM tickets") == 0


# ── recheck ────────────────────────────────────────────────────────────────────────────────


async def test_recheck_round_trip_with_a_camera_fresh_capture_tickets_departure_moves_silence_is_unconfirmed(
        stack: Stack):
    # Cameras get 15 s to answer: the test reads the four requests and answers within that time.
    worker = stack.worker(PW_RECHECK_WAIT_SECONDS="15")
    await worker.ready()
    await stack.all_car_parks_free()
    stays, leaves, stale, silent = plates = await stack.plates_with_phone(4)
    violations = {plate: stack.violation(plate) for plate in plates}
    for v in violations.values():
        await stack.publish(v)
    for plate in plates:
        await stack.wait_state(plate, "rechecking", timeout=30)

    commands = await records(stack, topics.CAMERA_COMMANDS, lambda rs: len(rs) >= 4)
    answers = {}
    for record in commands:
        request = json.loads(record.value)
        assert record.key.decode() == request["camera_id"] == CAMERA.id, "keyed by camera id"
        assert datetime.fromisoformat(request["answer_by"]) > datetime.fromisoformat(request["requested_at"])
        plate = request["plate"]
        if plate == stays:
            answers[plate] = stack.observation(plate).model_copy(update={"recheck_id": request["recheck_id"]})
        elif plate == leaves:
            answers[plate] = stack.departure(plate).model_copy(update={"recheck_id": request["recheck_id"]})
        elif plate == stale:  # an old capture sent as the answer is not a fresh capture
            answers[plate] = stack.observation(plate, at=violations[plate].taken_at).model_copy(
                update={"recheck_id": request["recheck_id"]})
    for answer in answers.values():
        await stack.publish(answer)

    outcomes = {plate: (await stack.wait_state(plate, state, timeout=40))["state"]
                for plate, state in ((stays, "ticketed"), (leaves, "moved"), (stale, "unconfirmed"),
                                     (silent, "unconfirmed"))}
    assert outcomes == {stays: "ticketed", leaves: "moved", stale: "unconfirmed", silent: "unconfirmed"}
    tickets = await stack.pool.fetch("SELECT plate, evidence FROM tickets")
    assert [t["plate"] for t in tickets] == [stays], "never a ticket without a fresh capture"
    assert [e["event_id"] for e in tickets[0]["evidence"]] == [violations[stays].event_id, answers[stays].event_id]


# ── command line ───────────────────────────────────────────────────────────────────────────


async def test_events_publish_sends_a_file_by_http_and_by_kafka_and_sums_up_what_was_rejected(stack: Stack, tmp_path):
    worker = stack.worker()
    key = await add_key(stack, "cli-vendor", cameras=[CAMERA])
    await worker.ready()
    by_http, by_kafka, spare = await stack.plates_with_phone(3)
    http_file = tmp_path / "http.jsonl"
    http_file.write_bytes(jsonl(stack.violation(by_http)) + b"\n" + json.dumps(
        {**json.loads(encode(stack.violation(spare))), "taken_at": "2026-11-26T10:42:00"}).encode() + b"\n")
    kafka_file = tmp_path / "kafka.json"
    kafka_file.write_bytes(json.dumps([json.loads(encode(stack.violation(by_kafka)))], ensure_ascii=False).encode())

    code, out = await run_cli(stack, "events", "publish", str(http_file), "--to", "http",
                              "--url", url(worker, ""), "--key", key)
    assert code == 1, out
    assert "sent" in out and "rejected" in out and "line 2" in out and "taken_at" in out and "UTC offset" in out
    await stack.wait_state(by_http, "warned", timeout=15)

    code, out = await run_cli(stack, "events", "publish", str(kafka_file), "--to", "kafka")
    assert code == 2 and "--integrator" in out, "camera events on Kafka go to the integrator's own topic"
    code, out = await run_cli(stack, "events", "publish", str(kafka_file), "--to", "kafka", "--integrator", "cli-vendor")
    assert code == 0, out
    await stack.wait_state(by_kafka, "warned", timeout=15)
    assert await stack.case_of(spare) is None

    code, out = await run_cli(stack, "events", "publish", str(kafka_file), "--to", "http",
                              "--url", url(worker, ""), "--key", "pwk_wrong")
    assert code == 1 and "401" in out and "unknown or revoked" in out


async def test_integrators_add_prints_a_key_once_that_the_ingest_accepts_and_only_its_hash_is_kept(stack: Stack):
    worker = stack.worker()
    await worker.ready()

    code, out = await run_cli(stack, "integrators", "add", "new-vendor")
    assert code == 0, out
    [key] = [line for line in out.splitlines() if line.startswith("pwk_")]
    await stack.register_camera(CAMERA, "new-vendor")
    assert await stack.count("SELECT count(*) FROM integrators WHERE key_sha256 = $1", keys.key_digest(key)) == 1
    assert await stack.count("SELECT count(*) FROM integrators WHERE position($1 in key_prefix) > 0", key) == 0
    status, reply, _ = await call("POST", url(worker, "/v1/camera-events"), key,
                                  encode(stack.violation((await stack.plates_with_phone(1))[0])))
    assert (status, reply["accepted"]) == (202, 1)
    code, out = await run_cli(stack, "integrators", "add", "new-vendor")
    assert code == 1 and "exists" in out
    code, out = await run_cli(stack, "integrators", "list")
    assert code == 0 and "new-vendor" in out and key not in out
