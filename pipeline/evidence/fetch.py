"""Fetch an evidence image from the integrator's server, within bounds, and check it.

A fetch is refused (``Refused``: trying again cannot help) when the URL is not https, its host is not
allowed for the integrator (``PW_EVIDENCE_HOSTS``), the server redirects, the body is larger than
``PW_EVIDENCE_MAX_BYTES`` or is not a JPEG, PNG or WebP image by its content (Pillow, not the
Content-Type header). It fails (``Failed``: tried again later) on network errors, timeouts
(``PW_EVIDENCE_FETCH_SECONDS`` for the whole fetch) and HTTP errors. An image whose SHA-256 is not the
one the camera event carried is a ``Mismatch``. The TLS certificate is checked against the system's
CAs and ``PW_EVIDENCE_CA_FILE`` (the demo's CA).

``run_due`` is the worker's loop body: it leases due rows of ``evidence_fetches`` (``FOR UPDATE SKIP
LOCKED``, so workers share them), fetches outside any transaction and records the outcome.
"""

import asyncio
import hashlib
import io
import logging
import ssl
import warnings
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from PIL import Image

log = logging.getLogger(__name__)

TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
MAX_PIXELS = 50_000_000


class Refused(Exception):
    """The image cannot be obtained by trying again; the message says why."""


class Failed(Exception):
    """This attempt failed in a way that may pass (network, timeout, HTTP error)."""


class Mismatch(Exception):
    """The bytes are not the ones the camera event's ``sha256`` names."""

    def __init__(self, expected: str, got: str):
        super().__init__(f"SHA-256 {got[:16]}… is not the event's {expected[:16]}…")
        self.expected, self.got = expected, got


@dataclass(frozen=True)
class Fetched:
    data: bytes
    sha256: str
    content_type: str
    width: int
    height: int


def allowed_hosts(spec: str) -> dict[str, frozenset[str]]:
    """``name=host,host;other=host`` -> {name: hosts}; ``*`` names every integrator."""
    hosts: dict[str, frozenset[str]] = {}
    for entry in filter(None, (e.strip() for e in spec.split(";"))):
        name, sep, listed = entry.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"PW_EVIDENCE_HOSTS: {entry!r} is not name=host,host")
        hosts[name.strip()] = frozenset(h.strip().lower() for h in listed.split(",") if h.strip())
    return hosts


def image_of(data: bytes) -> tuple[str, int, int]:
    """(content type, width, height) of an image by its content; Refused if it is not one we keep."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                kind, (w, h) = im.format, im.size
                if w * h > MAX_PIXELS:
                    raise Refused(f"image too large ({w}x{h})")
                im.verify()
    except Refused:
        raise
    except Exception:  # noqa: BLE001 - whatever Pillow cannot read is not an image
        raise Refused("not an image (content is not JPEG, PNG or WebP)") from None
    if kind not in TYPES:
        raise Refused(f"not an image we keep ({kind}; JPEG, PNG or WebP)")
    return TYPES[kind], w, h


class Fetcher:
    def __init__(self, hosts: dict[str, frozenset[str]], max_bytes: int, seconds: float, ca_file: str | None = None):
        self.hosts, self.max_bytes, self.seconds = hosts, max_bytes, seconds
        self.tls = ssl.create_default_context()
        if ca_file:
            self.tls.load_verify_locations(ca_file)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def of(cls, settings) -> "Fetcher":
        return cls(allowed_hosts(settings.evidence_hosts), settings.evidence_max_bytes,
                   settings.evidence_fetch_seconds, settings.evidence_ca_file)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def check(self, url: str, integrator: str) -> None:
        """Refused unless ``url`` is https on a host allowed for ``integrator``."""
        parts = urlsplit(url)
        if parts.scheme != "https":
            raise Refused(f"not https ({parts.scheme or 'no scheme'})")
        host = (parts.hostname or "").lower()
        if host not in self.hosts.get(integrator, frozenset()) | self.hosts.get("*", frozenset()):
            raise Refused(f"host {host} not allowed for integrator {integrator or '—'} (PW_EVIDENCE_HOSTS)")

    async def fetch(self, url: str, integrator: str, expected_sha256: str | None = None) -> Fetched:
        self.check(url, integrator)
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.tls, limit=8))
        try:
            async with asyncio.timeout(self.seconds):
                data = await self._get(url)
        except TimeoutError:
            raise Failed(f"no answer within {self.seconds:g} s") from None
        except aiohttp.ClientSSLError as exc:
            raise Failed(f"TLS: {exc.__class__.__name__}") from None
        except aiohttp.ClientError as exc:
            raise Failed(f"{exc.__class__.__name__}: {exc}"[:200]) from None
        content_type, w, h = image_of(data)
        sha = hashlib.sha256(data).hexdigest()
        if expected_sha256 and sha != expected_sha256.lower():
            raise Mismatch(expected_sha256.lower(), sha)
        return Fetched(data, sha, content_type, w, h)

    async def _get(self, url: str) -> bytes:
        async with self._session.get(url, allow_redirects=False, headers={"Accept": "image/*"}) as r:
            if 300 <= r.status < 400:
                raise Refused(f"redirect (HTTP {r.status}) not followed")
            if r.status != 200:
                raise Failed(f"HTTP {r.status}")
            if r.content_length is not None and r.content_length > self.max_bytes:
                raise Refused(f"too big ({r.content_length} bytes, at most {self.max_bytes})")
            body = bytearray()
            async for chunk in r.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > self.max_bytes:
                    raise Refused(f"too big (over {self.max_bytes} bytes)")
            return bytes(body)


@dataclass(frozen=True)
class Retry:
    attempts: int
    first_wait: float
    lease_seconds: float

    @classmethod
    def of(cls, settings) -> "Retry":
        return cls(settings.evidence_fetch_attempts, settings.evidence_retry_seconds,
                   settings.evidence_fetch_seconds * 3 + 30)


_LEASE = """
UPDATE evidence_fetches f SET attempts = f.attempts + 1, next_attempt_at = now() + make_interval(secs => $2)
WHERE (f.integrator, f.event_id) IN (SELECT integrator, event_id FROM evidence_fetches
                                     WHERE state = 'pending' AND next_attempt_at <= now()
                                     ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING f.event_id, f.integrator, f.url, f.attempts,
          coalesce(f.expected_sha256, (SELECT s.evidence->>'sha256' FROM sightings s
                                       WHERE s.event_id = f.event_id AND s.integrator = f.integrator)) AS expected"""


async def run_due(pool, fetcher: Fetcher, retry: Retry, batch: int = 4) -> bool:
    """Fetch up to ``batch`` due images; True if there were any (more may be due)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(_LEASE, batch, retry.lease_seconds)
    if not rows:
        return False
    outcomes = await asyncio.gather(*(_attempt(fetcher, r) for r in rows))
    async with pool.acquire() as conn:
        for row, outcome in zip(rows, outcomes):
            async with conn.transaction():
                await _record(conn, row, outcome, retry)
    return len(rows) == batch


async def _attempt(fetcher: Fetcher, row):
    try:
        return await fetcher.fetch(row["url"], row["integrator"], row["expected"])
    except (Refused, Failed, Mismatch) as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - one bad image must not stop the loop
        log.exception("evidence fetch of %s", row["event_id"])
        return Failed(f"{exc.__class__.__name__}")


async def _record(conn, row, outcome, retry: Retry) -> None:
    key = (row["integrator"], row["event_id"])
    where = "WHERE integrator = $1 AND event_id = $2"
    if isinstance(outcome, Fetched):
        await conn.execute(
            """INSERT INTO evidence_images (sha256, content_type, width, height, data) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (sha256) DO NOTHING""",
            outcome.sha256, outcome.content_type, outcome.width, outcome.height, outcome.data)
        await conn.execute(f"""UPDATE evidence_fetches SET state = 'stored', image_sha256 = $3, fetched_at = now(),
                               reason = NULL, expected_sha256 = $4 {where}""", *key, outcome.sha256, row["expected"])
    elif isinstance(outcome, Mismatch):
        await conn.execute(f"""UPDATE evidence_fetches SET state = 'mismatch', got_sha256 = $3, expected_sha256 = $4,
                               reason = $5, fetched_at = now() {where}""",
                           *key, outcome.got, outcome.expected, str(outcome))
        log.warning("evidence %s/%s: %s", *key, outcome)
    elif isinstance(outcome, Refused) or row["attempts"] >= retry.attempts:
        reason = str(outcome) if isinstance(outcome, Refused) else f"{outcome} (gave up after {row['attempts']} attempts)"
        await conn.execute(f"UPDATE evidence_fetches SET state = 'failed', reason = $3, fetched_at = now() {where}",
                           *key, reason)
    else:
        wait = retry.first_wait * 2 ** (row["attempts"] - 1)
        await conn.execute(f"""UPDATE evidence_fetches SET reason = $3, next_attempt_at = now() + make_interval(secs => $4)
                               {where}""", *key, str(outcome), wait)
