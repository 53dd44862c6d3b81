"""What the `parkwarden` sub-commands share: who runs them, and one database connection for their work."""

import asyncio
import getpass

from pipeline.config import Settings


def actor() -> str:
    """The audit log's actor for a command-line change: ``cli:<user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no user name (a container): still say where it came from
        return "cli"


def run_on_connection(work):
    """Run ``await work(conn)`` on a connection of the workers' kind (``bootstrap.connect_database``)."""
    from pipeline import bootstrap

    async def go():
        pool = await bootstrap.connect_database(Settings())
        try:
            async with pool.acquire() as conn:
                return await work(conn)
        finally:
            await pool.close()
    return asyncio.run(go())
