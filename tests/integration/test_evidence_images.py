"""Issue 19 must 1: a ticketed case's two evidence images, served by the demo's HTTPS image server (its own
CA), are fetched once by the worker, stored in PostgreSQL, shown on the driver's ticket page and the
console's case page, printed in the notice, and purged with the case by retention."""

import asyncio
import hashlib
import io
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from pypdf import PdfReader
from pypdf.filters import ASCII85Decode

from pipeline.config import Settings
from pipeline.demo import city, photos
from pipeline.evidence import fetch
from pipeline.retention import job
from schemas import events

from tests.local_server import free_port

from .conftest import ROOT, Stack, wait_for
from .console_helpers import ConsoleClient, add_operator, base_url

ARTIFACTS = ROOT / "var" / "artifacts" / "evidence"


def captured(stack: Stack, kind, plate: str, server: str, camera: city.Camera) -> tuple[object, str]:
    """A camera event of ``kind`` whose image is on the demo server, with its SHA-256."""
    at = datetime.now(UTC).replace(microsecond=0)
    path, sha = photos.photo_for(camera.id, at, plate)
    return kind(event_id=stack.event_id(), camera_id=camera.id, plate=plate, taken_at=at,
                location=events.Location(lat=camera.lat, lon=camera.lon), place=camera.place, zone=camera.zone,
                evidence=events.Evidence(image_url=server + path, sha256=sha)), sha


async def test_a_tickets_photos_are_fetched_once_shown_printed_and_purged(tmp_path):
    tls = photos.make_ca(tmp_path / "ca")
    port = free_port()
    server = await photos.serve(tls, "127.0.0.1", port)
    (tmp_path / "stack").mkdir()
    stack = Stack(tmp_path / "stack")
    await stack.start()
    try:
        worker = stack.worker(PW_DRIVER_PAGE="true", PW_EVIDENCE_CA_FILE=str(tls.ca_file),
                              PW_EVIDENCE_HOSTS=f"{city.INTEGRATOR}=localhost", PW_EVIDENCE_POLL_SECONDS="0.2")
        await worker.ready()
        await add_operator(stack, "li", "supervisor")
        await stack.all_car_parks_free()
        [plate] = await stack.plates_with_phone(1)
        camera, base = city.CAMERAS[0], f"https://localhost:{port}"
        violation, first_sha = captured(stack, events.ViolationDetected, plate, base, camera)
        await stack.publish(violation)
        case = await stack.wait_state(plate, "warned", timeout=20)
        await asyncio.sleep(max(0.0, (case["deadline_at"] - datetime.now(UTC)).total_seconds()) + 1)
        still_there, second_sha = captured(stack, events.VehicleObserved, plate, base, camera)
        await stack.publish(still_there)
        case = await stack.wait_state(plate, "ticketed", timeout=20)
        assert first_sha != second_sha

        async def both_stored():
            rows = await stack.pool.fetch("SELECT state, image_sha256, attempts, reason FROM evidence_fetches "
                                          "WHERE case_id = $1", case["id"])
            return rows if len(rows) == 2 and all(r["state"] == "stored" for r in rows) else None
        rows = await wait_for(both_stored, timeout=20)
        assert sorted(r["image_sha256"] for r in rows) == sorted([first_sha, second_sha])
        assert [r["attempts"] for r in rows] == [1, 1]
        assert await stack.pool.fetchval("SELECT count(*) FROM evidence_images") == 2

        # The driver's ticket page: both thumbnails, each opening the image as it was captured.
        code = await stack.pool.fetchval("SELECT driver_code FROM cases WHERE id = $1", case["id"])
        driver = ConsoleClient(base_url(worker))
        try:
            status, html = await driver.page(f"/d/{code}")
            assert status == 200
            for n, sha in ((1, first_sha), (2, second_sha)):
                assert f'<img class="thumb" src="/d/{code}/evidence/{n}"' in html
                async with driver.http.get(f"{driver.base}/d/{code}/evidence/{n}") as r:
                    assert r.status == 200 and r.content_type == "image/jpeg"
                    assert hashlib.sha256(await r.read()).hexdigest() == sha
            async with driver.http.get(f"{driver.base}/d/{code}/notice.pdf") as r:
                assert r.status == 200
                pdf = await r.read()
        finally:
            await driver.close()

        # The notice: one page, both images embedded as captured, rendered by poppler.
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "notice.pdf").write_bytes(pdf)
        reader = PdfReader(io.BytesIO(pdf))
        assert len(reader.pages) == 1
        drawn = [x.get_object() for x in reader.pages[0]["/Resources"]["/XObject"].values()]
        printed = {hashlib.sha256(ASCII85Decode.decode(x._data)).hexdigest() for x in drawn
                   if x["/Subtype"] == "/Image" and x["/Filter"] == ["/ASCII85Decode", "/DCTDecode"]}
        assert printed == {first_sha, second_sha}  # the JPEGs as captured, not re-encoded
        rendered = subprocess.run(["pdftoppm", "-r", "100", "-png", "-singlefile", str(ARTIFACTS / "notice.pdf"),
                                   str(ARTIFACTS / "notice")], capture_output=True, timeout=60)
        assert rendered.returncode == 0, rendered.stderr
        assert "not obtained" not in reader.pages[0].extract_text()

        # The console's case page and appeal page: the two thumbnails, behind the login.
        console = ConsoleClient(base_url(worker))
        try:
            async with console.http.get(f"{console.base}/console/evidence/{first_sha}",
                                        allow_redirects=False) as r:
                assert r.status == 303
            await console.login("li")
            status, html = await console.page(f"/console/cases/{case['id']}")
            assert status == 200 and 'id="evidence-photos"' in html
            for sha in (first_sha, second_sha):
                assert f'src="/console/evidence/{sha}"' in html
            number = await stack.pool.fetchval("SELECT number FROM tickets WHERE case_id = $1", case["id"])
            status, html = await console.page(f"/console/tickets/{number}/appeal")  # beside an appeal
            assert status == 200 and all(f'src="/console/evidence/{sha}"' in html for sha in (first_sha, second_sha))
            async with console.http.get(f"{console.base}/console/evidence/{second_sha}") as r:
                assert r.status == 200 and hashlib.sha256(await r.read()).hexdigest() == second_sha
        finally:
            await console.close()

        # Retention: the images go with the decided case's other evidence.
        async with stack.pool.acquire() as conn:
            later = datetime.now(UTC) + timedelta(days=Settings().retention_decided_case_days + 30)
            done = await job.run(conn, job.Policy(), later)
        assert done["decided_cases"]["evidence_images"] == 2
        assert await stack.pool.fetchval("SELECT count(*) FROM evidence_images") == 0
        assert await stack.pool.fetchval("SELECT count(*) FROM evidence_fetches") == 0

        # A fetch that fails in a way that may pass is tried again later, then given up with its reason.
        worker.stop()  # this part runs the loop's body itself
        await stack.pool.execute("INSERT INTO evidence_fetches (integrator, event_id, case_id, url) VALUES ($1, $2, $3, $4)",
                                 city.INTEGRATOR, "gone-1", case["id"], f"{base}/missing.jpg")
        fetcher = fetch.Fetcher(fetch.allowed_hosts(f"{city.INTEGRATOR}=localhost"), 1 << 20, 5, str(tls.ca_file))
        retry = fetch.Retry(attempts=2, first_wait=1.5, lease_seconds=30)
        query = "SELECT state, attempts, reason, extract(epoch FROM next_attempt_at - now())::float8 AS wait FROM evidence_fetches"
        try:
            await fetch.run_due(stack.pool, fetcher, retry)
            first = await stack.pool.fetchrow(query)
            assert (first["state"], first["attempts"], first["reason"]) == ("pending", 1, "HTTP 404")
            assert 0.5 < first["wait"] <= 1.5
            await fetch.run_due(stack.pool, fetcher, retry)
            assert (await stack.pool.fetchrow(query))["attempts"] == 1, "not before its time"
            await asyncio.sleep(first["wait"] + 0.2)
            await fetch.run_due(stack.pool, fetcher, retry)
            last = await stack.pool.fetchrow(query)
            assert (last["state"], last["attempts"], last["reason"]) == ("failed", 2, "HTTP 404 (gave up after 2 attempts)")
        finally:
            await fetcher.close()
    finally:
        await stack.close()
        await server.cleanup()
