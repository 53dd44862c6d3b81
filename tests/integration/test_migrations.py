"""Schema migrations on the real PostgreSQL (pipeline/db/migrate.py)."""

import asyncio
import shutil

import asyncpg
import pytest

from pipeline.db import migrate as migrations


async def test_a_migration_waiting_behind_a_busy_table_gives_up_with_what_to_do_and_applies_nothing(
        database, tmp_path, monkeypatch):
    conn = await asyncpg.connect(database)
    busy = await asyncpg.connect(database)
    try:
        await migrations.migrate(conn)
        folder = tmp_path / "migrations"
        shutil.copytree(migrations.MIGRATIONS, folder)
        (folder / "9999_index_cases_by_zone.sql").write_text(
            "CREATE TABLE zone_notes (zone text);\nCREATE INDEX cases_by_zone ON cases (zone);\n")
        monkeypatch.setattr(migrations, "MIGRATIONS", folder)

        writer = busy.transaction()  # a worker's transaction writing to cases, not yet committed
        await writer.start()
        await busy.execute("LOCK TABLE cases IN ROW EXCLUSIVE MODE")
        with pytest.raises(migrations.MigrationError) as refused:
            await asyncio.wait_for(migrations.migrate(conn, lock_timeout=0.5), 30)
        assert "9999_index_cases_by_zone.sql" in str(refused.value) and "parkwarden setup" in str(refused.value)
        assert await conn.fetchval("SELECT to_regclass('zone_notes')") is None, "nothing of it was applied"
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations WHERE version LIKE '9999%'") == 0

        await writer.rollback()
        assert await migrations.migrate(conn, lock_timeout=0.5) == ["9999_index_cases_by_zone"]
    finally:
        await busy.close()
        await conn.close()


async def test_a_worker_waits_for_another_workers_migrations_past_its_own_lock_timeout(database):
    conn = await asyncpg.connect(database, server_settings={"lock_timeout": "200", "statement_timeout": "200"})
    migrating = await asyncpg.connect(database)
    try:
        await migrating.execute("SELECT pg_advisory_lock($1)", migrations._LOCK)  # another worker's migrations
        applying = asyncio.create_task(migrations.migrate(conn))

        async def waiting() -> bool:
            return await migrating.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted") == 1
        for _ in range(300):
            if await waiting():
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)  # five times the connection's own lock_timeout
        assert not applying.done() and await waiting(), "it waits for the other worker"

        await migrating.execute("SELECT pg_advisory_unlock($1)", migrations._LOCK)
        applied = await asyncio.wait_for(applying, 120)
        assert applied[0] == "0001_initial" and len(applied) == len(list(migrations.MIGRATIONS.glob("*.sql")))
        assert await conn.fetchval("SHOW lock_timeout") == "200ms", "the connection's own settings are back"
        assert await conn.fetchval("SHOW statement_timeout") == "200ms"
    finally:
        await migrating.close()
        await conn.close()


async def test_a_worker_older_than_the_schema_refuses_to_start_naming_both_versions(database, tmp_path, monkeypatch):
    conn = await asyncpg.connect(database)
    try:
        newer = tmp_path / "newer"
        shutil.copytree(migrations.MIGRATIONS, newer)
        (newer / "9998_newer_table.sql").write_text("CREATE TABLE newer_table (id int);\n")
        monkeypatch.setattr(migrations, "MIGRATIONS", newer)
        assert await migrations.migrate(conn) != []  # the new version migrates first

        older = sorted(p.stem for p in tmp_path.glob("newer/*.sql"))[-2]
        monkeypatch.setattr(migrations, "MIGRATIONS", newer.parent / "older")
        shutil.copytree(newer, newer.parent / "older", ignore=shutil.ignore_patterns("9998_*"))
        with pytest.raises(migrations.SchemaNewerThanCode) as refused:
            await migrations.migrate(conn)
        assert "9998_newer_table" in str(refused.value) and older in str(refused.value)
        monkeypatch.setattr(migrations, "MIGRATIONS", newer)
        assert await migrations.migrate(conn) == [], "the newer version starts as before"
    finally:
        await conn.close()
