"""Versioned schema migrations: ``migrations/NNNN_name.sql``, applied once each, in order.

Each file runs in its own transaction and is recorded with its checksum; an applied file that
was edited afterwards is an error (write a new migration instead). Concurrent runs are
serialized by an advisory lock, so every worker may call ``migrate`` at start.

Each migration waits at most ``lock_timeout`` for the locks it needs: a migration queued behind a
long transaction would otherwise hold up every query on its tables (the running workers') for as
long as it waits. When it times out nothing of that migration is applied, and the error says so.
Once it has its locks a migration may run as long as it needs (no statement timeout: an index on a
big table takes a while, and stopping it half way would only start it again). A worker waits for
another one's migrations however long they take.

A worker older than the schema it finds (the database holds a migration this code does not have: a
newer version ran its migrations) refuses to start, naming both versions, before it applies anything:
in a rolling upgrade the new version migrates first and old workers are not started again.
"""

import hashlib
from pathlib import Path

import asyncpg

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK = 0x7061726B  # "park"


class MigrationError(RuntimeError):
    pass


class SchemaNewerThanCode(MigrationError):
    """The database was migrated by a newer version of parkwarden than the one starting."""


async def migrate(conn: asyncpg.Connection, lock_timeout: float = 5.0) -> list[str]:
    """Apply pending migrations; return the versions applied now."""
    applied_now = []
    await conn.execute("SET lock_timeout = 0; SET statement_timeout = 0")
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"]: r["checksum"] for r in await conn.fetch("SELECT * FROM schema_migrations")}
        paths = sorted(MIGRATIONS.glob("*.sql"))
        unknown = sorted(set(done) - {path.stem for path in paths})
        if unknown:
            ours = paths[-1].stem if paths else "none"
            raise SchemaNewerThanCode(
                f"the database's schema is newer than this version of parkwarden: it is at {max(done)} "
                f"(applied by a newer version: {', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''}), "
                f"this code knows migrations up to {ours}. Start the newer version instead; an older worker "
                "is not started on a newer schema."
            )
        for path in paths:
            sql = path.read_text()
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if path.stem in done:
                if done[path.stem] != checksum:
                    raise MigrationError(
                        f"migration {path.name} changed after it was applied; "
                        "revert the edit and add a new migration file instead"
                    )
                continue
            try:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout * 1000)}ms'")
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)", path.stem, checksum
                    )
            except asyncpg.LockNotAvailableError:
                raise MigrationError(
                    f"migration {path.name} waited more than {lock_timeout:g} s for a lock on a table in use and "
                    "was not applied (nothing of it was). Something holds that table: a long transaction or a "
                    "busy worker (see pg_stat_activity). Run `parkwarden setup` again when it is quiet, or stop "
                    "the workers first."
                ) from None
            applied_now.append(path.stem)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK)
        await conn.execute("RESET lock_timeout; RESET statement_timeout")
    return applied_now
