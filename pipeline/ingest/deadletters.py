"""Reading the dead letters: input messages the pipeline could not use, newest first.

The pipeline writes them (``CaseService._dead_letter``: the ``dead_letters`` table and the
``dead-letters`` topic); operators list them here, from the command line or over HTTP.
"""

import base64

import asyncpg


def as_json(row) -> dict:
    """A dead letter as the ``DeadLetter`` message carries it, plus its row ``id``."""
    key = row["key"]
    return {
        "id": row["id"],
        "source_topic": row["source_topic"],
        "partition": row["partition"],
        "offset": row["offset"],
        "key": key.decode("utf-8", "replace") if key is not None else None,
        "reason": row["reason"],
        "errors": row["errors"],
        "raw_base64": base64.b64encode(row["raw"]).decode(),
        "received_at": row["received_at"].isoformat(),
    }


async def recent(conn: asyncpg.Connection, limit: int, before_id: int | None = None) -> list:
    return await conn.fetch(
        """SELECT id, source_topic, partition, "offset", key, reason, errors, raw, received_at FROM dead_letters
           WHERE $2::bigint IS NULL OR id < $2 ORDER BY id DESC LIMIT $1""",
        limit, before_id)


async def total(conn: asyncpg.Connection) -> int:
    return await conn.fetchval("SELECT count(*) FROM dead_letters")
