"""Schema migrations on the real PostgreSQL (pipeline/db/migrate.py)."""

import asyncio
import shutil
import uuid

import asyncpg
import pytest

from pipeline.db import migrate as migrations

from .conftest import ADMIN_URL, drop_database


@pytest.fixture
async def database():
    name = f"pw_test_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        await drop_database(name)


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
