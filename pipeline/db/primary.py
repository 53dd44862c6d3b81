"""Connections that stay on the primary when PostgreSQL fails over.

``PW_DATABASE_URL`` may name several servers with ``target_session_attrs=read-write`` (libpq's
multi-host form, see README "PostgreSQL that fails over"): a new connection goes to whichever is the
primary now. A connection already open stays where it is: if its server says it is read-only
(SQLSTATE 25006: a standby, or a primary that was demoted without closing its sessions), the error
is transient (``errors.is_transient``) and this connection is closed when it goes back to the pool,
so that the work's next try connects again and finds the primary. Connections the server closed
(57P01 admin shutdown when Patroni stops or demotes it, a crash) are replaced by the pool itself.
"""

import asyncpg


class PrimaryConnection(asyncpg.Connection):
    """An ``asyncpg.Connection`` that leaves its pool once its server has refused a write as read-only."""

    on_standby = False

    def _saw(self, exc: BaseException) -> None:
        if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
            self.on_standby = True

    async def execute(self, *args, **kwargs):
        try:
            return await super().execute(*args, **kwargs)
        except asyncpg.PostgresError as exc:
            self._saw(exc)
            raise

    async def _execute(self, *args, **kwargs):
        try:
            return await super()._execute(*args, **kwargs)
        except asyncpg.PostgresError as exc:
            self._saw(exc)
            raise

    async def _executemany(self, *args, **kwargs):
        try:
            return await super()._executemany(*args, **kwargs)
        except asyncpg.PostgresError as exc:
            self._saw(exc)
            raise

    async def reset(self, *, timeout=None):
        """Called by the pool on release: a connection to a read-only server is closed, not kept."""
        if self.on_standby:
            self.terminate()
            return
        await super().reset(timeout=timeout)
