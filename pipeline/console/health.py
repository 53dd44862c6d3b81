"""The system's health, computed once per refresh: the console's strip, /readyz and /metrics.

Seven components, each green (ok), amber (warn) or red (bad) against the thresholds below, the same
numbers the Prometheus alert rules use (``deploy/prometheus/alerts.yml``, checked by a test):

- ``sms_gateway``: Kannel's bearerbox answers its admin status and an smsbox is connected to it;
- ``smsc_link``: every SMS-centre link Kannel has is online (read from Kannel's status.xml, not
  guessed from our rows), with the messages Kannel holds queued;
- ``delivery_reports``: warnings and notices the gateway accepted that have no delivery report yet,
  and the oldest one's age (only with a gateway that reports delivery);
- ``camera_events``: how far behind PostgreSQL's clock the camera events are read (the slowest
  partition's watermark);
- ``decisions_held``: due cases waiting for their partition to be read;
- ``outbox``: Kafka outputs not yet relayed, the oldest one's age, and those set aside;
- ``dead_letters``: unusable input in the last hour.
"""

import asyncio
import logging
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

log = logging.getLogger(__name__)

OK, WARN, BAD, UNKNOWN = "ok", "warn", "bad", "unknown"
LEVEL_VALUE = {OK: 0, WARN: 1, BAD: 2, UNKNOWN: 2}
"""As exported in ``parkwarden_health``: 0 green, 1 amber, 2 red (unknown counts as red)."""

REPORT_WINDOW = timedelta(hours=24)
"""Accepted messages older than this without a report are not waited for any more (they stay in
the case's timeline as "accepted")."""


@dataclass(frozen=True)
class Threshold:
    """Amber from ``warn``, red from ``bad`` (inclusive), in ``unit``."""
    warn: float
    bad: float
    unit: str

    def level(self, value: float) -> str:
        return BAD if value >= self.bad else WARN if value >= self.warn else OK


THRESHOLDS = {
    "sms_gateway": Threshold(1, 1, "down"),            # bearerbox or smsbox not answering: red at once
    "smsc_link": Threshold(1, 1, "links offline"),     # any SMS-centre link offline: red at once
    "delivery_reports": Threshold(120, 300, "s"),      # the oldest report awaited, seconds
    "camera_events": Threshold(30, 120, "s"),          # read behind now(), seconds
    "decisions_held": Threshold(5, 50, "cases"),
    "outbox": Threshold(30, 120, "s"),                 # the oldest row not relayed, seconds
    "dead_letters": Threshold(1, 100, "last hour"),
}
ORDER = tuple(THRESHOLDS)


@dataclass
class Component:
    name: str
    level: str
    value: float | None
    """The figure the level is judged on (see ``THRESHOLDS``); None when unknown."""
    detail: dict
    """The other figures shown beside it (counts, ages, what Kannel said)."""

    @property
    def threshold(self) -> Threshold:
        return THRESHOLDS[self.name]


@dataclass
class Health:
    at: datetime
    components: dict[str, Component]

    @property
    def degraded(self) -> list[str]:
        return [n for n, c in self.components.items() if c.level != OK]

    @property
    def worst(self) -> str:
        levels = [c.level for c in self.components.values()]
        return BAD if BAD in levels or UNKNOWN in levels else WARN if WARN in levels else OK

    @property
    def sms_centre_down(self) -> bool:
        return self.components["smsc_link"].level == BAD

    @property
    def gateway_down(self) -> bool:
        return self.components["sms_gateway"].level == BAD

    def as_json(self) -> dict:
        """For /readyz: a field per component."""
        return {n: {"level": c.level, "value": c.value, "warn_at": c.threshold.warn, "bad_at": c.threshold.bad,
                    "unit": c.threshold.unit, **c.detail} for n, c in self.components.items()}


# ── Kannel's status ──────────────────────────────────────────────────────────────────────────


def status_xml_url(url: str) -> str:
    """Kannel's admin status as XML, whichever of its forms (status, status.txt, status.html) was configured."""
    parts = urlsplit(url)
    path = parts.path
    for suffix in ("/status.txt", "/status.html", "/status.xml", "/status"):
        if path.endswith(suffix):
            path = path[: -len(suffix)] + "/status.xml"
            break
    return urlunsplit(parts._replace(path=path))


@dataclass(frozen=True)
class KannelStatus:
    answered: bool
    problem: str = ""
    smsboxes: int = 0
    links: tuple = ()
    """(smsc id, online?, Kannel's status text, messages queued for it)."""
    queued: int = 0
    """Messages Kannel holds queued (sent but not yet handed to an SMS centre)."""


def parse_kannel_status(xml: str) -> KannelStatus:
    """Read bearerbox's status.xml: the boxes connected, each SMSC link's state and the queue."""
    root = ET.fromstring(xml)
    boxes = [b for b in root.iter("box") if (b.findtext("type") or "").strip() == "smsbox"
             and (b.findtext("status") or "").startswith("on-line")]
    links = []
    for smsc in root.iter("smsc"):
        state = (smsc.findtext("status") or "").strip()
        links.append(((smsc.findtext("id") or smsc.findtext("name") or "?").strip(), state.startswith("online"),
                      state, int(smsc.findtext("queued") or 0)))
    queued = int(root.findtext("sms/sent/queued") or 0)
    return KannelStatus(True, smsboxes=len(boxes), links=tuple(links), queued=queued)


async def read_kannel_status(session: aiohttp.ClientSession, url: str, timeout: float = 2.0) -> KannelStatus:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                return KannelStatus(False, f"HTTP {response.status}")
            return parse_kannel_status(await response.text())
    except (aiohttp.ClientError, TimeoutError, ET.ParseError, ValueError) as exc:
        return KannelStatus(False, type(exc).__name__)


# ── our own figures ──────────────────────────────────────────────────────────────────────────


async def read_figures(conn: asyncpg.Connection, reports_awaited: bool) -> dict:
    """Delivery reports awaited and dead letters in the last hour, on PostgreSQL's clock (indexes:
    migration 0060 and dead_letters' received_at)."""
    row = await conn.fetchrow(
        """SELECT now() AS now,
             (SELECT count(*) FROM dead_letters WHERE received_at > now() - interval '1 hour') AS dead_letters,
             (SELECT count(*) FROM sms_messages WHERE status = 'accepted' AND accepted_at > now() - $1::interval)
                 AS reports_pending,
             (SELECT min(accepted_at) FROM sms_messages WHERE status = 'accepted' AND accepted_at > now() - $1::interval)
                 AS oldest_report""", REPORT_WINDOW)
    oldest = (row["now"] - row["oldest_report"]).total_seconds() if row["oldest_report"] and reports_awaited else 0.0
    return {"now": row["now"], "dead_letters_last_hour": row["dead_letters"],
            "reports_pending": row["reports_pending"] if reports_awaited else 0, "oldest_report_seconds": oldest}


def assess(now: datetime, kannel: KannelStatus | None, figures: dict, counts: dict, partitions: list) -> Health:
    """Judge each component. ``kannel`` None: no Kannel status to read (another gateway, or
    PW_KANNEL_STATUS_URL not set): its two components are shown as not watched, never red."""
    comps: dict[str, Component] = {}
    if kannel is None:
        comps["sms_gateway"] = Component("sms_gateway", OK, None, {"not_watched": True})
        comps["smsc_link"] = Component("smsc_link", OK, None, {"not_watched": True})
    elif not kannel.answered:
        comps["sms_gateway"] = Component("sms_gateway", BAD, 1, {"problem": kannel.problem})
        comps["smsc_link"] = Component("smsc_link", UNKNOWN, None, {"problem": "gateway not answering"})
    else:
        down = 0 if kannel.smsboxes else 1
        comps["sms_gateway"] = Component("sms_gateway", THRESHOLDS["sms_gateway"].level(down), down,
                                         {"smsboxes": kannel.smsboxes, "queued": kannel.queued})
        offline = [lk for lk in kannel.links if not lk[1]]
        n = len(offline) if kannel.links else 1
        comps["smsc_link"] = Component(
            "smsc_link", THRESHOLDS["smsc_link"].level(n), n,
            {"links": [{"id": i, "online": on, "status": st, "queued": q} for i, on, st, q in kannel.links],
             "queued": kannel.queued})
    age = figures["oldest_report_seconds"]
    comps["delivery_reports"] = Component("delivery_reports", THRESHOLDS["delivery_reports"].level(age), round(age),
                                          {"pending": figures["reports_pending"]})
    read = [p["behind_seconds"] for p in partitions if p["behind_seconds"] is not None]
    behind = max(0.0, max(read, default=0.0))
    comps["camera_events"] = Component("camera_events", THRESHOLDS["camera_events"].level(behind), round(behind),
                                       {"partitions": len(partitions)})
    held = sum(p["held"] for p in partitions)
    comps["decisions_held"] = Component("decisions_held", THRESHOLDS["decisions_held"].level(held), held, {})
    oldest = counts["outbox_oldest_age"]
    level = THRESHOLDS["outbox"].level(oldest)
    if counts["outbox_set_aside"] and level == OK:
        level = WARN
    comps["outbox"] = Component("outbox", level, round(oldest), {"backlog": counts["outbox_backlog"],
                                                                 "set_aside": counts["outbox_set_aside"]})
    dead = figures["dead_letters_last_hour"]
    comps["dead_letters"] = Component("dead_letters", THRESHOLDS["dead_letters"].level(dead), dead, {})
    return Health(now, {n: comps[n] for n in ORDER})


class HealthReader:
    """Reads Kannel's status (when the gateway is Kannel) and our figures, then judges them."""

    def __init__(self, kannel_status_url: str | None):
        self.kannel_url = status_xml_url(kannel_status_url) if kannel_status_url else None
        self._session: aiohttp.ClientSession | None = None

    async def kannel(self) -> KannelStatus | None:
        if self.kannel_url is None:
            return None
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return await read_kannel_status(self._session, self.kannel_url)

    async def read(self, pool: asyncpg.Pool, counts: dict, partitions: list, reports_awaited: bool) -> Health:
        async with pool.acquire() as conn:
            figures, kannel = await asyncio.gather(read_figures(conn, reports_awaited), self.kannel())
        return assess(figures["now"], kannel, figures, counts, partitions)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def as_dict(health: Health) -> dict:
    return {"at": health.at, "worst": health.worst, "components": {n: asdict(c) for n, c in health.components.items()}}
