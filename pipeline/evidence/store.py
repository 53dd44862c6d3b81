"""The evidence images' rows: which sightings to fetch, their outcome, the images themselves.

Images live in PostgreSQL (``evidence_images``, bytea keyed by SHA-256, each stored once), because every
worker and the console already read it: no shared disk to mount, back up or keep in step, and retention
purges an image in the same transaction as the rest of its case's evidence (pipeline/retention/job.py).
"""

from uuid import UUID

NOT_OBTAINED = {"failed", "mismatch"}


_OF_CASE = """(f.case_id = $1 OR f.integrator IN (
    SELECT coalesce(x ->> 'integrator', '') FROM cases c, LATERAL (SELECT c.violation UNION ALL SELECT c.fresh_capture) v(x)
    WHERE c.id = $1 AND x ->> 'event_id' = f.event_id))"""
"""A fetch row of case $1's capture: made for it, or for an earlier case that used the same sighting (the
violation of a case an officer warned again: ``want`` keeps the first case's row)."""


WANT = """INSERT INTO evidence_fetches (integrator, event_id, case_id, url) VALUES ($1, $2, $3, $4)
    ON CONFLICT (integrator, event_id) DO NOTHING"""


async def want(conn, case_id: UUID, sighting) -> None:
    """Fetch the image of ``sighting`` (a case's violation or fresh capture), once; nothing without a URL."""
    if sighting is None or not sighting.evidence_url:
        return
    await conn.execute(
        WANT,
        sighting.integrator or "", sighting.event_id, case_id, sighting.evidence_url)


async def status_of(conn, case_id, event_ids: list[str]) -> dict[str, dict]:
    """event id -> {state, reason, sha256, ...} of the case's captures that have a fetch row (made for this
    case, or for an earlier case that used the same sighting, e.g. the violation of a case warned again)."""
    rows = await conn.fetch(
        """SELECT f.event_id, f.state, f.reason, f.image_sha256, f.got_sha256, f.attempts, i.content_type, i.width,
                  i.height
           FROM evidence_fetches f LEFT JOIN evidence_images i ON i.sha256 = f.image_sha256
           WHERE f.event_id = ANY($2::text[]) AND """ + _OF_CASE, case_id, event_ids)
    return {r["event_id"]: {"state": r["state"], "reason": r["reason"], "sha256": r["image_sha256"],
                            "got_sha256": r["got_sha256"], "attempts": r["attempts"],
                            "content_type": r["content_type"], "width": r["width"], "height": r["height"]}
            for r in rows}


async def image(conn, sha256: str):
    """(data, content_type) of a stored image, or None."""
    return await conn.fetchrow("SELECT data, content_type FROM evidence_images WHERE sha256 = $1", sha256)


async def image_of_capture(conn, case_id, event_id: str):
    """(data, content_type) of a case's capture's stored image, or None."""
    return await conn.fetchrow(
        """SELECT i.data, i.content_type FROM evidence_fetches f JOIN evidence_images i ON i.sha256 = f.image_sha256
           WHERE f.event_id = $2 AND f.state = 'stored' AND """ + _OF_CASE, case_id, event_id)


async def images_by_event(conn, case_id, event_ids: list[str]) -> dict[str, bytes]:
    rows = await conn.fetch(
        """SELECT f.event_id, i.data FROM evidence_fetches f JOIN evidence_images i ON i.sha256 = f.image_sha256
           WHERE f.event_id = ANY($2::text[]) AND f.state = 'stored' AND """ + _OF_CASE, case_id, event_ids)
    return {r["event_id"]: bytes(r["data"]) for r in rows}
