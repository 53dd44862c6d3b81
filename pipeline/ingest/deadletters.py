"""Reading the dead letters: input messages the pipeline could not use, newest first.

The pipeline writes them (``CaseService._dead_letter``, ``ReferenceFeed._dead_letter``: the
``dead_letters`` table and the ``dead-letters`` topic). Operators list them all from the command line;
over HTTP each integrator reads only its own (``Scope``).
"""

import base64
from dataclasses import dataclass

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
        "raw_sha256": row["raw_sha256"].hex() if row["raw_sha256"] is not None else None,
    }


@dataclass(frozen=True)
class Scope:
    """The dead letters one integrator may read: those of its own camera-events topic, and those of
    ``car-park-status`` keyed by a car park registered to it (topics as prefixed)."""

    integrator: str
    camera_events_topic: str
    car_park_status_topic: str


def _in_scope(n: int) -> str:
    """The condition on ``dead_letters d``, its three parameters from ``$n`` (``_scope_args``)."""
    return f"""(${n}::text IS NULL OR d.source_topic = ${n + 1}
                OR d.source_topic = ${n + 2} AND EXISTS (SELECT FROM car_parks p WHERE p.integrator = ${n}
                                                                             AND convert_to(p.id, 'UTF8') = d.key))"""


def _scope_args(scope: Scope | None) -> tuple:
    return (None, None, None) if scope is None else (scope.integrator, scope.camera_events_topic,
                                                      scope.car_park_status_topic)


async def recent(conn: asyncpg.Connection, limit: int, before_id: int | None = None,
                 scope: Scope | None = None) -> list:
    """The newest dead letters (all of them, or those ``scope`` allows), newest first."""
    return await conn.fetch(
        f"""SELECT id, source_topic, partition, "offset", key, reason, errors, raw, received_at, raw_sha256
              FROM dead_letters d
             WHERE ($2::bigint IS NULL OR id < $2) AND {_in_scope(3)} ORDER BY id DESC LIMIT $1""",
        limit, before_id, *_scope_args(scope))


async def total(conn: asyncpg.Connection, scope: Scope | None = None) -> int:
    return await conn.fetchval(f"SELECT count(*) FROM dead_letters d WHERE {_in_scope(1)}", *_scope_args(scope))
