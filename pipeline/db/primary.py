"""Connections that stay on the primary when PostgreSQL fails over.

``PW_DATABASE_URL`` may name several servers with ``target_session_attrs=read-write`` (libpq's
multi-host form, see README "PostgreSQL that fails over"): a new connection goes to whichever is the
primary now. A connection already open stays where it is: if its server says it is read-only
(SQLSTATE 25006: a standby, or a primary that was demoted without closing its sessions), the error
is transient (``errors.is_transient``) and this connection is closed when it goes back to the pool,
so that the work's next try connects again and finds the primary. Connections the server closed
(57P01 admin shutdown when Patroni stops or demotes it, a crash) are replaced by the pool itself.

A connection also goes back to the pool without asyncpg's reset statement (``pg_advisory_unlock_all();
CLOSE ALL; UNLISTEN *; RESET ALL``, one more round trip on every release, most of them on the camera
events' path) unless a statement on it may have left something in the session: ``reset``.
"""

import functools
import re

import asyncpg

_SESSION_STATE = re.compile(r"advisory_lock|set_config|(?:^|;)\s*(?:SET\s+(?!LOCAL\b)|RESET\b|LISTEN\b|DECLARE\b)",
                            re.IGNORECASE)
"""Statements that may outlive their transaction in the session: a session-level advisory lock
(``pg_advisory_lock``, ``pg_try_advisory_lock``; not the ``_xact_`` ones), a setting (``SET`` without
``LOCAL``, ``set_config``), ``LISTEN``, a cursor (``DECLARE ... WITH HOLD``)."""


@functools.lru_cache(maxsize=4096)
def leaves_session_state(query: str) -> bool:
    """Whether ``query`` may leave state in the session that the next user of the connection must not inherit."""
    return _SESSION_STATE.search(query) is not None


class PrimaryConnection(asyncpg.Connection):
    """An ``asyncpg.Connection`` that leaves its pool once its server has refused a write as read-only."""

    on_standby = False
    session_state = False
    """A statement since the last reset may have left state in the session (``leaves_session_state``)."""

    def _saw(self, exc: BaseException) -> None:
        if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
            self.on_standby = True

    def _note(self, query) -> None:
        if not self.session_state and isinstance(query, str) and leaves_session_state(query):
            self.session_state = True

    async def execute(self, query, *args, **kwargs):
        self._note(query)
        try:
            return await super().execute(query, *args, **kwargs)
        except asyncpg.PostgresError as exc:
            self._saw(exc)
            raise

    async def _execute(self, query, *args, **kwargs):
        self._note(query)
        try:
            return await super()._execute(query, *args, **kwargs)
        except asyncpg.PostgresError as exc:
            self._saw(exc)
            raise

    async def _executemany(self, query, *args, **kwargs):
        self._note(query)
        try:
            return await super()._executemany(query, *args, **kwargs)
        except asyncpg.PostgresError as exc:
            self._saw(exc)
            raise

    async def reset(self, *, timeout=None):
        """Called by the pool on release: a connection to a read-only server is closed, not kept."""
        if self.on_standby:
            self.terminate()
            return
        await super().reset(timeout=timeout)
        self.session_state = False


async def reset(conn: asyncpg.Connection) -> None:
    """The pool's reset, after asyncpg has rolled back a transaction left open: a connection to a
    read-only server is closed; one that may hold session state (``leaves_session_state``: a session
    advisory lock its holder could not release, a setting) gets asyncpg's full reset statement; any
    other goes back as it is, without a round trip."""
    if isinstance(conn, PrimaryConnection) and conn.on_standby:
        conn.terminate()
    elif not isinstance(conn, PrimaryConnection) or conn.session_state:
        await conn.execute(conn.get_reset_query())
        if isinstance(conn, PrimaryConnection):
            conn.session_state = False
