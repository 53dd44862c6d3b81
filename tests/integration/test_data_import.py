"""`parkwarden data import|export` and the owner lookup on the real PostgreSQL (a test database
with the demo city): all or nothing, --dry-run, --snapshot, round trips, audit, owner_for's reasons."""

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from pipeline.data.all_kinds import export_kind, import_kind
from pipeline.data.transfer import export_file, import_file
from pipeline.demo import city
from pipeline.lookups.owners import PostgresOwnerDirectory
from tests.integration.conftest import ROOT
from tests.integration.test_demo_files import run_cli


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


async def test_a_file_with_one_bad_row_applies_nothing_and_names_the_row_and_field(stack, tmp_path):
    before = await stack.count("SELECT count(*) FROM plate_registry")
    path = write(tmp_path / "plates.csv", "plate,plate_type,owner_id\n浙A1B2C3,02,o-1\n浙A1B2C4,02,o-2\n"
                                          "浙A1B2C5,9,o-3\n浙A1B2C6,02,o-4\n")
    async with stack.pool.acquire() as conn:
        report = await import_file(conn, "plates", path, chunk_rows=2)
    assert not report.applied and report.refused_count == 1
    assert (report.refused[0].row, report.refused[0].field) == (4, "plate_type")
    assert await stack.count("SELECT count(*) FROM plate_registry") == before
    assert await stack.count("SELECT count(*) FROM audit_log WHERE action LIKE 'data_import:%' "
                             "AND actor <> 'demo:load'") == 0  # the demo city's own imports aside


async def test_the_same_plate_and_type_twice_in_a_file_is_refused_with_both_rows(stack, tmp_path):
    path = write(tmp_path / "plates.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"plate": "浙A1B2C3", "owner_id": "o-1"}, {"plate": "浙A1B2C4", "owner_id": "o-2"},
        {"plate": "浙A1B2C3", "plate_type": "01", "owner_id": "o-3"}, {"plate": "浙A·1b2c3", "owner_id": "o-4"}]))
    async with stack.pool.acquire() as conn:
        report = await import_file(conn, "plates", path, chunk_rows=3)
    assert [(r.row, r.reason) for r in report.refused] == [(4, "the same plate+plate_type as row 1")]
    assert await stack.count("SELECT count(*) FROM plate_registry WHERE plate = '浙A1B2C3'") == 0


async def test_a_dry_run_counts_what_would_change_and_changes_nothing(stack, tmp_path):
    plate, owner = (await stack.pool.fetchrow("SELECT plate, owner_id FROM plate_registry LIMIT 1")).values()
    path = write(tmp_path / "plates.csv", f"plate,owner_id,vehicle_colour\n{plate},{owner},A\n浙A1B2C3,o-new,\n")
    async with stack.pool.acquire() as conn:
        report = await import_file(conn, "plates", path, dry_run=True)
    assert report.counts == {"inserted": 1, "updated": 1, "unchanged": 0} and not report.applied
    assert await stack.count("SELECT count(*) FROM plate_registry WHERE plate = '浙A1B2C3'") == 0
    assert await stack.count("SELECT count(*) FROM plate_registry WHERE vehicle_colour IS NOT NULL") == 0


async def test_a_snapshot_retires_absent_plates_and_one_back_in_the_file_returns(stack, tmp_path):
    kept = [r["plate"] for r in await stack.pool.fetch("SELECT plate FROM plate_registry ORDER BY plate LIMIT 2")]
    total = await stack.count("SELECT count(*) FROM plate_registry")
    path = write(tmp_path / "plates.csv", "plate,owner_id\n" + "".join(f"{p},o-{i}\n" for i, p in enumerate(kept)))
    async with stack.pool.acquire() as conn:
        report = await import_file(conn, "plates", path, snapshot=True, actor="test", force=True)
    assert report.applied and report.counts["retired"] == total - 2 and report.counts["updated"] == 2
    assert await stack.count("SELECT count(*) FROM plate_registry WHERE retired_at IS NULL") == 2
    audit = await stack.pool.fetchrow("SELECT actor, detail FROM audit_log WHERE action = 'data_import:plates' "
                                      "ORDER BY id DESC LIMIT 1")
    assert audit["actor"] == "test" and audit["detail"]["file"] == "plates.csv" and audit["detail"]["retired"] == total - 2
    gone = await stack.pool.fetchval("SELECT plate FROM plate_registry WHERE retired_at IS NOT NULL LIMIT 1")
    async with stack.pool.acquire() as conn:
        answer = await PostgresOwnerDirectory(0, 0).owner_for(gone, conn)
        assert answer.review_reason == "not_registered"
        await import_file(conn, "plates", write(tmp_path / "back.csv", f"plate,owner_id\n{gone},o-9\n"))
        assert (await PostgresOwnerDirectory(0, 0).owner_for(gone, conn)).review_reason == "no_valid_contact"


async def test_a_snapshot_that_is_empty_or_takes_away_too_much_is_refused_naming_the_counts(stack, tmp_path):
    total = await stack.count("SELECT count(*) FROM plate_registry WHERE retired_at IS NULL")
    kept = await stack.pool.fetch("SELECT plate, plate_type, owner_id FROM plate_registry WHERE retired_at IS NULL "
                                  "ORDER BY plate, plate_type LIMIT $1", total - total // 5)
    header_only = write(tmp_path / "empty.csv", "plate,owner_id\n")
    most = write(tmp_path / "most.csv", "plate,plate_type,owner_id\n" + "".join(",".join(r.values()) + "\n"
                                                                                 for r in kept))
    async with stack.pool.acquire() as conn:
        empty = await import_file(conn, "plates", header_only, snapshot=True)
        short = await import_file(conn, "plates", most, snapshot=True)
        assert not empty.applied and not short.applied
        assert [str(r) for r in empty.refused] == [
            f"row 0: --snapshot: the file has no rows: as a snapshot it would retire all {total:,} plates; nothing "
            "was applied (give --force to empty the registry)"]
        assert f"would retire {total // 5:,} of the {total:,} plates in use (20.0%), more than --max-change 10%" \
            in str(short.refused[0])
        assert await stack.count("SELECT count(*) FROM plate_registry WHERE retired_at IS NULL") == total
        assert (await import_file(conn, "plates", most, snapshot=True, max_change=0.25)).applied
        assert await stack.count("SELECT count(*) FROM plate_registry WHERE retired_at IS NULL") == len(kept)

    parks = write(tmp_path / "parks.csv", "id,name,lat,lon,capacity\n")
    code, out = await run_cli(stack, "data", "import", "car-parks", str(parks), "--snapshot")
    assert code == 1 and "would delete all 20 car parks" in out
    code, out = await run_cli(stack, "data", "import", "car-parks", str(parks), "--snapshot", "--force")
    assert code == 0 and "20 deleted" in out, out


async def test_a_cameras_snapshot_is_one_integrator_s_and_leaves_the_others_cameras(stack, tmp_path):
    mine, theirs = city.CAMERAS[:2], city.CAMERAS[2:]
    await stack.add_integrator("acme", cameras=tuple(mine))
    path = tmp_path / "acme.csv"
    async with stack.pool.acquire() as conn:
        await export_kind(conn, "cameras", path)
        lines = path.read_text(encoding="utf-8").splitlines()
        path.write_text("\n".join([lines[0]] + [line for line in lines[1:] if ",acme," in line][:1]) + "\n",
                        encoding="utf-8")  # one of acme's two cameras
        unscoped = await import_kind(conn, "cameras", path, snapshot=True, force=True)
        assert [(r.field, r.reason.split(":")[0]) for r in unscoped.refused] == [
            ("--integrator", "a cameras snapshot is the whole list of one integrator's cameras")]
        other = await import_kind(conn, "cameras", path, snapshot=True, integrator=city.INTEGRATOR, force=True)
        assert [(r.row, r.field) for r in other.refused] == [(2, "integrator")]
        refused = await import_kind(conn, "cameras", path, snapshot=True, integrator="acme")
        assert "would remove 1 of the 2 cameras of acme in use (50.0%)" in str(refused.refused[0])
        report = await import_kind(conn, "cameras", path, snapshot=True, integrator="acme", max_change=0.5)
        assert report.applied and report.counts["removed"] == 1
    assert await stack.count("SELECT count(*) FROM cameras WHERE removed_at IS NULL AND integrator = $1",
                             city.INTEGRATOR) == len(theirs), "the other integrator's cameras stay"
    assert await stack.count("SELECT count(*) FROM cameras WHERE removed_at IS NULL AND integrator = 'acme'") == 1


async def test_car_parks_and_zones_absent_from_a_snapshot_are_deleted(stack, tmp_path):
    path = write(tmp_path / "parks.geojson", json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "cp-new", "properties": {"name": "新停车场", "capacity": 40},
         "geometry": {"type": "Point", "coordinates": [120.0, 30.3]}}]}))
    async with stack.pool.acquire() as conn:
        report = await import_file(conn, "car-parks", path, snapshot=True, force=True)
        assert report.applied and report.counts["inserted"] == 1 and report.counts["deleted"] >= 1
        assert [r["id"] for r in await conn.fetch("SELECT id FROM car_parks")] == ["cp-new"]
        zones = await conn.fetch("SELECT id FROM zones")
        cameras_zones = {r["zone"] for r in await conn.fetch("SELECT DISTINCT zone FROM cameras")}
        kept = [z["id"] for z in zones if z["id"] in cameras_zones]
        zone_file = write(tmp_path / "zones.csv", "id,name\n" + "".join(f"{z},{z}\n" for z in kept))
        report = await import_file(conn, "zones", zone_file, snapshot=True, force=True)
        assert report.applied and report.counts["deleted"] == len(zones) - len(kept)


async def test_every_registry_exported_in_every_format_imports_back_unchanged(stack, tmp_path):
    async with stack.pool.acquire() as conn:
        await conn.execute("INSERT INTO sms_opt_out (phone, source) SELECT phone, 'test' FROM contact_registry LIMIT 3")
        await conn.execute("UPDATE contact_registry SET language = 'en', owner_kind = 'company', contact_name = '王经理', "
                           "valid_to = now() + interval '30 days' WHERE owner_id IN (SELECT owner_id FROM contact_registry LIMIT 2)")
        for kind, formats in (("plates", ("csv", "jsonl")), ("contacts", ("csv", "jsonl")), ("zones", ("csv", "jsonl")),
                              ("car-parks", ("csv", "jsonl", "geojson", "fiware"))):
            total = await conn.fetchval({"plates": "SELECT count(*) FROM plate_registry", "contacts":
                                         "SELECT count(*) FROM contact_registry", "zones": "SELECT count(*) FROM zones",
                                         "car-parks": "SELECT count(*) FROM car_parks"}[kind])
            for fmt in formats:
                path = tmp_path / f"{kind}.{fmt}"
                assert await export_file(conn, kind, path, fmt) == total
                report = await import_file(conn, kind, path, fmt, snapshot=True)
                assert report.applied, (kind, fmt, report.refused[:3])
                changed = {k: v for k, v in report.counts.items() if k != "unchanged" and v}
                assert changed == {} and report.counts["unchanged"] == total, (kind, fmt, report.counts)
        assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'data_export:contacts'") == 2


async def test_owner_for_names_the_owner_or_the_reason_for_review(stack, tmp_path):
    now = datetime.now(UTC)
    path = write(tmp_path / "plates.csv", "plate,plate_type,owner_id,vehicle_colour\n"
                                          "浙A7K001,02,p-blue,A\n浙A7K001,01,fleet-yellow,\n浙A7K002,02,p-old,\n"
                                          "浙A7K003,02,p-out,J\n浙A7K004,52,p-en,\n")
    contacts = write(tmp_path / "contacts.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"owner_id": "p-blue", "phone": "13800000001"},
        {"owner_id": "fleet-yellow", "phone": "13800000002", "owner_kind": "fleet", "contact_name": "调度 李"},
        {"owner_id": "p-old", "phone": "13800000003", "valid_to": (now - timedelta(days=1)).isoformat()},
        {"owner_id": "p-out", "phone": "13800000004", "sms_opt_out": True},
        {"owner_id": "p-en", "phone": "13800000005", "valid_from": (now - timedelta(days=10)).isoformat(),
         "language": "en"},
        {"owner_id": "p-en", "phone": "13800000006", "valid_from": (now + timedelta(days=10)).isoformat()}]))
    owners = PostgresOwnerDirectory(max_size=100, ttl_seconds=600)
    async with stack.pool.acquire() as conn:
        assert (await import_file(conn, "plates", path)).applied
        assert (await import_file(conn, "contacts", contacts)).counts["opted_out"] == 1

        async def reason(plate, **kw):
            return (await owners.owner_for(plate, conn, **kw)).review_reason

        assert await reason("浙A7K001") == "plate_type_ambiguous"
        assert await owners.phone_for("浙A7K001", conn) is None, "never a guessed owner"
        fleet = await owners.owner_for("浙A7K001", conn, plate_types=("01",), vehicle_colour="J")
        assert (fleet.owner_id, fleet.phone) == ("fleet-yellow", "13800000002"), "no colour on record: no contradiction"
        assert await reason("浙A7K001", plate_types=("02",), vehicle_colour="J") == "vehicle_colour_mismatch"
        assert await reason("浙A7K001", plate_types=("02",), vehicle_colour="A") is None
        assert await reason("浙A7K001", plate_types=("52",)) == "plate_type_mismatch"
        assert await reason("浙A7K002") == "no_valid_contact"
        assert (await owners.owner_for("浙A7K002", conn, at=now - timedelta(days=2))).phone == "13800000003"
        assert await reason("浙A7K003") == "sms_opt_out"
        assert await reason("浙Z9Z999") == "not_registered"
        english = await owners.owner_for("浙A7K004", conn)
        assert (english.phone, english.language) == ("13800000005", "en")
        later = await owners.owner_for("浙A7K004", conn, at=now + timedelta(days=11))
        assert (later.phone, later.language) == ("13800000006", None), "the newer number; no language: the city's"


def test_the_command_exits_non_zero_naming_what_to_fix_and_never_shows_a_phone(stack, tmp_path):
    path = write(tmp_path / "contacts.csv", "owner_id,phone,owner_kind\no-1,13800138000,company\no-2,12345,person\n")
    done = subprocess.run([sys.executable, "-m", "pipeline", "data", "import", "contacts", str(path)], cwd=ROOT,
                          env={**stack.env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "row 2: contact_name: Value error, a fleet or company needs its designated contact's name" in done.stderr
    assert "row 3: phone:" in done.stderr and "nothing was applied" in done.stderr
    assert "13800138000" not in done.stdout + done.stderr


async def test_a_first_load_into_an_empty_registry_keeps_its_indexes_and_refuses_duplicates(stack, tmp_path,
                                                                                            monkeypatch):
    """A big file into an empty table is inserted first and indexed after (REBUILD_ROWS, lowered here):
    a duplicate then shows only when the primary key is built; it is still refused naming both rows."""
    from pipeline.data import transfer

    monkeypatch.setattr(transfer, "REBUILD_ROWS", 2)
    indexes = "SELECT count(*) FROM pg_indexes WHERE tablename = 'plate_registry'"
    async with stack.pool.acquire() as conn:
        await conn.execute("DELETE FROM plate_registry")
        before = await conn.fetchval(indexes)
        twice = write(tmp_path / "twice.csv", "plate,owner_id\n浙A1B2C3,o-1\n浙A1B2C4,o-2\n浙a·1b2c3,o-3\n")
        report = await import_file(conn, "plates", twice)
        assert [(r.row, r.field, r.reason) for r in report.refused] == [(4, "plate+plate_type",
                                                                         "the same plate+plate_type as row 2")]
        assert await conn.fetchval("SELECT count(*) FROM plate_registry") == 0
        assert await conn.fetchval(indexes) == before
        same = write(tmp_path / "same.csv", "plate,owner_id\n浙A1B2C3,o-1\n浙A1B2C3,o-1\n")  # COPYed straight in
        report = await import_file(conn, "plates", same)
        assert [(r.row, r.reason) for r in report.refused] == [(3, "the same plate+plate_type as row 2")]
        assert await conn.fetchval("SELECT count(*) FROM plate_registry") == 0
        assert await conn.fetchval(indexes) == before
        for name, text in (("ok.csv", "plate,owner_id\n浙A1B2C3,o-1\n浙a·1b2c4, o-2 \n"),
                           ("clean.csv", "plate,owner_id\n浙A1B2C3,o-1\n浙A1B2C4,o-2\n")):
            report = await import_file(conn, "plates", write(tmp_path / name, text), snapshot=True)
            assert report.applied and report.counts == {"inserted": 2, "updated": 0, "unchanged": 0, "retired": 0}
            assert ("copy" in report.steps) == (name == "clean.csv"), "only rows as they stand are COPYed straight in"
            assert await conn.fetchval(indexes) == before
            assert {tuple(r) for r in await conn.fetch("SELECT plate, plate_type, owner_id FROM plate_registry")} == {
                ("浙A1B2C3", "02", "o-1"), ("浙A1B2C4", "02", "o-2")}
            await conn.execute("DELETE FROM plate_registry")
        await conn.execute("DELETE FROM contact_registry")
        contact_indexes = await conn.fetchval(indexes.replace("plate_registry", "contact_registry"))
        contacts = "owner_id,phone,valid_from,sms_opt_out\no-1,13800000001,,true\no-1,13800000002,2026-01-01,\n"
        twice = write(tmp_path / "contacts-twice.csv", contacts + "o-1,13800000003,,\n")
        report = await import_file(conn, "contacts", twice)
        assert [(r.row, r.reason) for r in report.refused] == [(4, "the same owner_id+valid_from as row 2")]
        report = await import_file(conn, "contacts", write(tmp_path / "contacts.csv", contacts))
        assert report.applied and report.counts == {"inserted": 2, "updated": 0, "unchanged": 0, "opted_out": 1}
        assert await conn.fetchval(indexes.replace("plate_registry", "contact_registry")) == contact_indexes
        assert await conn.fetchval("SELECT count(*) FROM contact_registry WHERE owner_id = 'o-1'") == 2


async def test_a_plain_csv_copied_by_postgresql_gives_what_python_s_reading_gives(stack, tmp_path):
    """A plain CSV (no quotes) is COPYed as it is and checked by Python at the same time; one with a quote
    is read by Python alone. Both normalize, default and refuse the same rows, with the same row numbers."""
    rows = ["浙A1B2C3,02,o-1,Geely,A", "浙a·1b2c4,, o-2 ,,", "浙A1B2C5,01,o-3,  ,", "浙A1B2C6,02,,BYD,Q",
            "浙A1B2C7,52,o-4,,"]
    plain = write(tmp_path / "plain.csv", "plate,plate_type,owner_id,vehicle_make,vehicle_colour\n" + "\n".join(rows) + "\n")
    quoted = write(tmp_path / "quoted.csv", plain.read_text().replace("Geely", '"Geely"'))
    async with stack.pool.acquire() as conn:
        refusals = []
        for path in (plain, quoted):
            report = await import_file(conn, "plates", path, dry_run=True)
            refusals.append([(r.row, r.field) for r in report.refused])
        assert refusals[0] == refusals[1] == [(4, "vehicle_make"), (5, "owner_id"), (5, "vehicle_colour")]
        good = "\n".join(rows[:2] + rows[4:]) + "\n"
        applied = []
        for name, text in (("plain", good), ("quoted", good.replace("Geely", '"Geely"'))):
            report = await import_file(conn, "plates", write(tmp_path / f"{name}-good.csv", "plate,plate_type,owner_id,"
                                                             "vehicle_make,vehicle_colour\n" + text))
            assert report.applied, report.refused
            applied.append([tuple(r) for r in await conn.fetch(
                "SELECT plate, plate_type, owner_id, vehicle_make, vehicle_colour FROM plate_registry "
                "WHERE plate LIKE '浙A1B2C%' ORDER BY plate")])
        assert applied[0] == applied[1] == [("浙A1B2C3", "02", "o-1", "Geely", "A"), ("浙A1B2C4", "02", "o-2", None, None),
                                            ("浙A1B2C7", "52", "o-4", None, None)]


async def test_a_csv_row_with_too_few_values_is_named_whichever_reader_reads_the_file(stack, tmp_path):
    path = write(tmp_path / "short.csv", "plate,owner_id\n浙A1B2C3,o-1\n浙A1B2C4\n")
    async with stack.pool.acquire() as conn:
        report = await import_file(conn, "plates", path)
    assert [str(r) for r in report.refused] == ["row 3: (row): 1 values for 2 columns"]


async def test_a_hostile_plates_file_is_refused_row_by_row_on_either_reading_path(stack, tmp_path):
    """A field over the CSV reader's limit in a plain CSV (COPYed by PostgreSQL while Python checks it) and in
    JSON lines; deep nesting and a 5,000-digit number in JSON lines: each a refusal of its row."""
    plain = write(tmp_path / "plates.csv", f"plate,owner_id\n浙A1B2C3,o-1\n浙A1B2C4,{'o' * 200_000}\n浙A1B2C5,o-3\n")
    lines = write(tmp_path / "plates.jsonl", "\n".join([
        json.dumps({"plate": "浙A1B2C3", "owner_id": "o-1"}, ensure_ascii=False), "[" * 100_000 + "]" * 100_000,
        '{"plate": "浙A1B2C4", "owner_id": ' + "9" * 5000 + "}"]))
    async with stack.pool.acquire() as conn:
        csv_report = await import_file(conn, "plates", plain)
        json_report = await import_file(conn, "plates", lines)
    assert [(r.row, r.field) for r in csv_report.refused] == [(3, "owner_id")]
    assert [r.row for r in json_report.refused] == [2, 3]
    assert await stack.count("SELECT count(*) FROM plate_registry WHERE plate LIKE '浙A1B2C%'") == 0
