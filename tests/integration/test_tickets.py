"""The ticket record, the evidence pack, the notice and appeals, on the real stack (issue 10, musts 5-7).

One worker and two tickets are shared by the tests of this module (issued once, on the real
pipeline), so the tests read in order: the record and its links, the pack, the notice, then the
appeals (a driver's on the driver page, an officer's by phone) and their decisions.
"""

import asyncio
import io
import json
import os
import re
import subprocess
import sys
from uuid import uuid4

import aiohttp
import asyncpg
import pytest
from pypdf import PdfReader

from pipeline.cases.store import init_connection
from pipeline.db.migrate import migrate
from pipeline.tickets import chain
from schemas import topics

from tests.privacy import no_phone_in

from .conftest import ADMIN_URL, ROOT, Stack, drop_database, wait_for
from .console_helpers import ConsoleClient, add_operator, base_url, ticketed_case

pytestmark = pytest.mark.xdist_group("tickets-scene")  # the tests share the scene and read in order: one xdist worker

ARTIFACTS = ROOT / "var" / "artifacts" / "tickets"
DECISION_SECONDS = 3.0


class Scene:
    """The module's stack, worker, operator client and two tickets."""

    stack: Stack
    worker: object
    client: ConsoleClient
    tickets: list  # tickets rows
    codes: dict  # ticket number -> the case's driver-page code


@pytest.fixture(scope="module")
async def scene(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("tickets"))
    await stack.start()
    s = Scene()
    s.stack = stack
    try:
        s.worker = stack.worker(PW_DRIVER_PAGE="true", PW_LATENESS_SECONDS="3",
                                PW_APPEAL_DECISION_DAYS=str(DECISION_SECONDS / 86400))
        await s.worker.ready()
        await add_operator(stack, "li", "supervisor")
        await stack.all_car_parks_free()
        plates = await stack.plates_with_phone(2)
        issued = await asyncio.gather(*(ticketed_case(stack, p) for p in plates))
        s.tickets = [t for _, _, t in issued]
        s.codes = {t["number"]: await stack.pool.fetchval("SELECT driver_code FROM cases WHERE id = $1", t["case_id"])
                   for t in s.tickets}
        s.client = ConsoleClient(base_url(s.worker))
        await s.client.login("li")
        yield s
        await s.client.close()
    finally:
        await stack.close()


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PW_DATABASE_URL": stack.db_url, "PW_DRIVER_PAGE": "true"}, timeout=60)


def phone_photo() -> bytes:
    """A JPEG as a phone takes it: with EXIF (the phone's model and a GPS position)."""
    from PIL import Image

    image = Image.new("RGB", (640, 480), (40, 90, 160))
    exif = Image.Exif()
    exif[0x0110] = "PhoneModel X"  # Model
    exif[0x8825] = {1: "N", 2: (30.0, 16.0, 45.0)}  # GPS
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    assert b"Exif" in out.getvalue()
    return out.getvalue()


async def verified(stack: Stack) -> chain.Verdict:
    async with stack.pool.acquire() as conn:
        return await chain.verify(conn)


def links_on_the_topic(messages: list[dict]) -> list[dict]:
    return sorted((m for m in messages if m.get("chain")), key=lambda m: m["chain"]["seq"])


def check_as_a_consumer(messages: list[dict]) -> None:
    """What docs/integrators.md tells a consumer to do: recompute each link from its message."""
    prev = chain.GENESIS
    for seq, message in enumerate(links_on_the_topic(messages), start=1):
        link = message["chain"]
        assert (link["seq"], link["prev"]) == (seq, prev), f"link {seq} does not follow"
        assert chain.link_hash(seq, prev, chain.canonical(chain.record_of(message))) == link["hash"]
        prev = link["hash"]


# ── the record ──────────────────────────────────────────────────────────────────────────────


async def test_each_ticket_is_published_with_its_link_and_verify_names_the_link_of_an_altered_ticket(scene):
    stack = scene.stack
    issued = await stack.consume(topics.TICKETS, lambda ms: len(links_on_the_topic(ms)) >= 2)
    check_as_a_consumer(issued)
    assert {m["ticket_number"] for m in issued} == {t["number"] for t in scene.tickets}

    ok = cli(stack, "tickets", "verify")
    assert ok.returncode == 0 and "ticket record intact: 2 link(s)" in ok.stdout, ok.stdout + ok.stderr

    altered = scene.tickets[1]["number"]
    seq = await stack.pool.fetchval("SELECT seq FROM ticket_chain WHERE ticket_number = $1", altered)
    await stack.pool.execute("UPDATE tickets SET place = '别处' WHERE number = $1", altered)
    try:
        broken = cli(stack, "tickets", "verify")
        assert broken.returncode == 1
        assert f"BROKEN: link {seq} (TicketIssued {altered}): the stored ticket differs from its record (place)" \
            in broken.stderr, broken.stderr
    finally:
        await stack.pool.execute("UPDATE tickets SET place = $2 WHERE number = $1", altered, scene.tickets[1]["place"])

    body = await stack.pool.fetchval("SELECT body FROM ticket_chain WHERE seq = 1")
    alter = """UPDATE ticket_chain SET body = replace(body, '"plate":"', '"plate":"X') WHERE seq = 1"""
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await stack.pool.execute(alter)
    async with stack.pool.acquire() as conn:  # the tables' owner may take the right back: verify still sees it
        await conn.execute("GRANT UPDATE ON ticket_chain TO CURRENT_USER;"
                           "ALTER TABLE ticket_chain DISABLE TRIGGER ticket_chain_link_sealed")
        await conn.execute(alter)
        try:
            verdict = await verified(stack)
            assert verdict.broken.startswith("link 1 (TicketIssued ") and "the link was altered" in verdict.broken
        finally:
            await conn.execute("UPDATE ticket_chain SET body = $1 WHERE seq = 1", body)
            await conn.execute("ALTER TABLE ticket_chain ENABLE TRIGGER ticket_chain_link_sealed;"
                               "REVOKE UPDATE ON ticket_chain FROM CURRENT_USER;"
                               "GRANT UPDATE (seq, prev, hash, appended_at) ON ticket_chain TO CURRENT_USER")
    assert (await verified(stack)).intact


async def test_appends_that_wait_on_each_others_rows_commit_in_turn_without_deadlock():
    """Transaction A appends, then waits for a row B holds; B appends and commits. With the chain's
    lock taken at append time this is a deadlock (A holds the chain, B waits for it); taken at
    commit, both commit, one after the other, and the chain holds. (A database of its own.)"""
    name = f"pw_test_chain_{uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        a, b = await asyncpg.connect(url), await asyncpg.connect(url)
        for conn in (a, b):
            await init_connection(conn)
        await migrate(a)
        case_id = uuid4()
        await a.execute("""INSERT INTO cases (id, plate, state, zone, place, camera_id, lat, lon, violation,
                               window_seconds, detected_at, opened_at, updated_at)
                           VALUES ($1, '浙A12345', 'ticketed', 'yuhang', '文一西路', 'cam-1', 30.28, 120.0, '{}', 600,
                                   now(), now(), now())""", case_id)
        await a.execute("""INSERT INTO tickets (number, case_id, plate, issued_at, deadline_at, place, zone, lat, lon, evidence)
                           VALUES ('YH261126000001', $1, '浙A12345', now(), now(), '文一西路', 'yuhang', 30.28, 120.0, '[]')""",
                        case_id)
        ticket = await a.fetchrow("SELECT * FROM tickets")
        message = chain.issued_message(ticket)
        tx_a, tx_b = a.transaction(), b.transaction()
        await tx_a.start()
        await tx_b.start()
        await b.execute("SELECT 1 FROM cases WHERE id = $1 FOR UPDATE", case_id)
        await chain.append(a, "tickets", message, ticket["number"])
        a_waits = asyncio.ensure_future(a.execute("SELECT 1 FROM cases WHERE id = $1 FOR UPDATE", case_id))
        await asyncio.sleep(0.3)
        await asyncio.wait_for(chain.append(b, "tickets", message, ticket["number"]), 5)
        await tx_b.commit()
        await asyncio.wait_for(a_waits, 5)
        await tx_a.commit()
        links = await a.fetch("SELECT seq, prev, hash FROM ticket_chain ORDER BY seq")
        assert [r["seq"] for r in links] == [1, 2] and links[1]["prev"] == links[0]["hash"]
        published = [json.loads(r["value"]) for r in await a.fetch("SELECT value FROM outbox ORDER BY id")]
        assert sorted(m["chain"]["seq"] for m in published) == [1, 2]
        check_as_a_consumer(published)
        await a.close()
        await b.close()
    finally:
        await drop_database(name)


# ── the evidence pack and the notice ───────────────────────────────────────────────────────


async def test_the_evidence_pack_holds_both_captures_the_warning_the_rule_and_the_link(scene):
    stack, ticket = scene.stack, scene.tickets[0]
    out = cli(stack, "tickets", "pack", ticket["number"])
    assert out.returncode == 0, out.stderr
    pack = json.loads(out.stdout)
    violation, fresh = pack["captures"]
    assert (violation["role"], fresh["role"]) == ("violation", "still_there")
    for capture, evidence in zip(pack["captures"], ticket["evidence"]):
        assert capture["event_id"] == evidence["event_id"] and capture["camera_id"] == evidence["camera_id"]
        assert capture["image_url"] == evidence["evidence_url"] and capture["image_url"].startswith("https://")
        assert capture["position"] == {"lat": evidence["lat"], "lon": evidence["lon"]}
        assert "integrator" in capture and "image_sha256" in capture and capture["received_at"]
    assert pack["between"]["distance_m"] == 0 and pack["between"]["interval_seconds"] >= stack.window
    warning = pack["warning"]
    assert warning["accepted_at"] and warning["text"].startswith("【杭州城管】") and warning["deadline_at"]
    assert pack["decision"]["reason"] == "still at the place at the deadline"
    assert pack["decision"]["rule"]["key"] == "still_there" and "50 m" in pack["decision"]["rule"]["en"]
    link = await stack.pool.fetchrow("SELECT seq, hash FROM ticket_chain WHERE ticket_number = $1", ticket["number"])
    assert pack["record"]["links"][0]["hash"] == link["hash"]
    assert pack["record"]["verification_code"] == chain.verification_code(link["hash"])
    assert pack["appeal"]["open"] and pack["appeal"]["until"] > pack["ticket"]["issued_at"]
    no_phone_in(out.stdout, "the evidence pack")

    status, body = await scene.client.page(f"/console/tickets/{ticket['number']}/pack.json")
    assert status == 200 and json.loads(body)["record"] == pack["record"]


async def test_the_notice_is_a_pdf_in_chinese_and_english_with_the_number_and_verification_code(scene, tmp_path):
    stack, ticket = scene.stack, scene.tickets[0]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "notice.pdf"
    out = cli(stack, "tickets", "notice", ticket["number"], "-o", str(path))
    assert out.returncode == 0, out.stderr
    text = "".join(page.extract_text() for page in PdfReader(path).pages)
    code = chain.verification_code(await stack.pool.fetchval(
        "SELECT hash FROM ticket_chain WHERE ticket_number = $1", ticket["number"]))
    for words in ("电子违停告知单", "Electronic notice", ticket["number"], ticket["plate"], ticket["place"], code,
                  "申诉", "How to appeal", "/d/ticket", "《中华人民共和国道路交通安全法》第九十三条", "二百元以下罚款"):
        assert words in text.replace("\n", ""), words
    assert len(PdfReader(path).pages) == 1

    # As a driver's printer or viewer sees it: rendered by poppler, the QR code opens the ticket's page.
    rendered = subprocess.run(["pdftoppm", "-r", "150", "-png", "-singlefile", str(path), str(ARTIFACTS / "notice")],
                              capture_output=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    drawn = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, timeout=60).stdout
    assert "第九十三条" in drawn and ticket["number"] in drawn
    import zxingcpp
    from PIL import Image

    [qr] = [b for b in zxingcpp.read_barcodes(Image.open(ARTIFACTS / "notice.png")) if b.format == zxingcpp.BarcodeFormat.QRCode]
    assert re.fullmatch(rf"http://\S+/d/{scene.codes[ticket['number']]}", qr.text), qr.text

    async with scene.client.http.get(f"{scene.client.base}/console/tickets/{ticket['number']}/notice.pdf") as r:
        assert r.status == 200 and r.content_type == "application/pdf"
        assert ticket["number"] in PdfReader(io.BytesIO(await r.read())).pages[0].extract_text()
    status, html = await scene.client.page(f"/console/cases/{ticket['case_id']}")
    assert f'/console/tickets/{ticket["number"]}/notice.pdf' in html and 'id="appeal-link"' in html


# ── appeals ─────────────────────────────────────────────────────────────────────────────────


async def test_a_driver_appeals_on_the_driver_page_an_officer_voids_the_ticket_and_the_driver_is_told(scene):
    stack, ticket = scene.stack, scene.tickets[0]
    number, code = ticket["number"], scene.codes[ticket["number"]]
    base = base_url(scene.worker)
    page_of_case = f"{base}/d/{code}"
    [ticket_sms] = [line["text"] for line in stack.handset_lines()
                    if ticket["plate"] in line["text"] and "告知单" in line["text"]]
    assert re.search(rf" http://\S+/d/{code}$", ticket_sms), "the ticket SMS links to the ticket's page"
    async with aiohttp.ClientSession() as driver:
        async def post(path: str, allow_redirects=True, **form) -> tuple[int, str]:
            async with driver.post(f"{base}{path}", data=form, allow_redirects=allow_redirects) as r:
                return r.status, await r.text()

        status, page = await post("/d/ticket", number=number.lower(), plate=ticket["plate"],
                                  code="ZZZZZZZZZZ" if code != "ZZZZZZZZZZ" else "YYYYYYYYYY")
        assert status == 404 and "未找到" in page
        async with driver.post(f"{base}/d/ticket", data={"number": number.lower(), "plate": ticket["plate"],
                                                         "code": code.lower()}, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == f"/d/{code}", "number, plate and code lead to the page"
        async with driver.get(page_of_case) as r:
            status, page = r.status, await r.text()
        assert status == 200 and 'id="appeal-form"' in page and ticket["place"] in page
        assert ticket["evidence"][0]["evidence_url"] in page, "the driver sees the evidence"
        no_phone_in(page, "the driver's ticket page")
        async with driver.get(f"{page_of_case}/notice.pdf") as r:
            assert r.status == 200 and number in PdfReader(io.BytesIO(await r.read())).pages[0].extract_text()

        status, page = await post(f"/d/{code}/appeal", ground="warning_not_received", statement="手机当时没信号",
                                  attachments="http://example.com/a.jpg")
        assert status == 409 and "https" in page and "手机当时没信号" in page, "refused, the driver's words kept"
        assert await stack.count("SELECT count(*) FROM appeals") == 0
        form = aiohttp.FormData()
        for name, value in (("ground", "warning_not_received"), ("statement", "手机当时没信号"),
                            ("attachments", "https://photos.example.com/signal.png")):
            form.add_field(name, value)
        form.add_field("photos", phone_photo(), filename="IMG_0001.JPG", content_type="image/jpeg")
        async with driver.post(f"{base}/d/{code}/appeal", data=form, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == f"/d/{code}", "post, then redirect, then get"
        async with driver.get(page_of_case) as r:
            status, page = r.status, await r.text()
        assert status == 200 and "申诉处理中" in page and f"SS{number}" in page, "the appeal's reference"
        photo_url = re.search(r'<img class="thumb" src="([^"]+)"', page).group(1)
        async with driver.get(f"{base}{photo_url}") as r:
            kept = await r.read()
            assert r.status == 200 and r.content_type == "image/jpeg"
        assert b"Exif" not in kept and b"GPS" not in kept, "the photo's metadata is gone"
        status, page = await post(f"/d/{code}/appeal", ground="other", statement="again")
        assert status == 409 and "已有申诉" in page

    async def received():
        return [line for line in stack.handset_lines() if f"SS{number}" in line["text"] and "受理" in line["text"]]
    await wait_for(received, 20, "the appeal's reference at the handset")
    appeal = await stack.pool.fetchrow("SELECT * FROM appeals WHERE ticket_number = $1", number)
    assert (appeal["channel"], appeal["ground"], appeal["recorded_by"]) == ("driver_page", "warning_not_received", "driver")
    assert appeal["attachments"] == ["https://photos.example.com/signal.png"]
    assert abs((appeal["due_at"] - appeal["received_at"]).total_seconds() - DECISION_SECONDS) < 0.01
    assert await stack.count("SELECT count(*) FROM appeal_photos WHERE appeal_id = $1", appeal["id"]) == 1

    # The officer's queue: the appeal, overdue once its due date has passed, with the evidence beside it.
    client = scene.client
    async def overdue():
        status, html = await client.page("/console/appeals")
        row = re.search(rf'<tr data-appeal="{appeal["id"]}" class="([a-z]*)"', html)
        return row and row.group(1) == "overdue"
    await wait_for(overdue, 20, "the appeal to be flagged overdue")
    status, html = await client.page(f"/console/appeals/{appeal['id']}")
    assert status == 200 and "未收到告知短信" in html and "手机当时没信号" in html
    assert ticket["evidence"][1]["evidence_url"] in html and 'id="verification-code"' in html

    status, _, location = await client.post(f"/console/appeals/{appeal['id']}/decide",
                                            {"outcome": "voided", "reason": "运营商证实当时基站故障"})
    assert status == 303 and location.endswith("done=appeal_decided")
    status, _, _ = await client.post(f"/console/appeals/{appeal['id']}/decide", {"outcome": "upheld", "reason": "again"})
    assert status == 409, "decided once"

    voided = await stack.pool.fetchrow("SELECT * FROM tickets WHERE number = $1", number)
    assert voided["voided_at"] and voided["voided_by"] == "operator:li"
    assert voided["void_reason"] == "appeal allowed: 运营商证实当时基站故障"
    assert await stack.count("SELECT count(*) FROM audit_log WHERE action IN ('appeal_filed', 'appeal_decided') "
                             "AND case_id = $1", ticket["case_id"]) == 2
    messages = await stack.consume(topics.TICKETS, lambda ms: {"AppealDecided", "TicketVoided"} <= {m["type"] for m in ms})
    decided = next(m for m in messages if m["type"] == "AppealDecided")
    assert (decided["outcome"], decided["ground"], decided["officer"]) == ("voided", "warning_not_received", "operator:li")
    assert next(m for m in messages if m["type"] == "TicketVoided")["ticket_number"] == number
    check_as_a_consumer(messages)

    async def told():
        return [line for line in stack.handset_lines() if f"告知单{number}申诉" in line["text"]]
    line = (await wait_for(told, 20, "the appeal decision at the handset"))[0]
    assert line["text"] == f"【杭州城管】{ticket['plate']}告知单{number}申诉成立，已撤销"
    assert (await verified(stack)).intact


async def test_an_officer_records_an_appeal_taken_by_phone_and_upholds_the_ticket(scene):
    stack, ticket, client = scene.stack, scene.tickets[1], scene.client
    number = ticket["number"]
    status, html = await client.page(f"/console/tickets/{number}/appeal")
    assert status == 200 and 'id="record-appeal"' in html
    status, html, _ = await client.post(f"/console/tickets/{number}/appeal",
                                        {"plate": "浙A00000", "ground": "emergency_vehicle", "statement": "", "attachments": ""})
    assert status == 409 and "车牌与告知单不符" in html
    status, _, location = await client.post(f"/console/tickets/{number}/appeal",
                                            {"plate": ticket["plate"], "ground": "emergency_vehicle",
                                             "statement": "称是救护车", "attachments": ""})
    assert status == 303 and "done=appeal_filed" in location
    appeal = await stack.pool.fetchrow("SELECT * FROM appeals WHERE ticket_number = $1", number)
    assert (appeal["channel"], appeal["recorded_by"]) == ("phone", "operator:li")
    status, _, _ = await client.post(f"/console/appeals/{appeal['id']}/decide", {"outcome": "upheld", "reason": "x"})
    assert status == 409, "a decision needs a reason"
    status, _, _ = await client.post(f"/console/appeals/{appeal['id']}/decide",
                                     {"outcome": "upheld", "reason": "该车辆不在特种车辆登记中"})
    assert status == 303
    assert (await stack.pool.fetchval("SELECT voided_at FROM tickets WHERE number = $1", number)) is None

    async def told():
        return [line for line in stack.handset_lines() if f"告知单{number}申诉" in line["text"]]
    line = (await wait_for(told, 20, "the appeal decision at the handset"))[0]
    assert "申诉未获支持" in line["text"]
    links = await stack.pool.fetch("SELECT kind FROM ticket_chain WHERE ticket_number = $1 ORDER BY seq", number)
    assert [r["kind"] for r in links] == ["TicketIssued", "AppealDecided"]
    verdict = await verified(stack)
    assert verdict.intact and verdict.links == 5, verdict.problems  # 2 issued, 2 decided, 1 voided
