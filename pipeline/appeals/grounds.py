"""What an appeal (申诉) is made of, and the rules on what may be filed and decided (pure: no I/O).

A driver appeals a ticket on the driver page (ticket number + plate + the code from the SMS), or
an officer records an appeal received by phone. An appeal names one ground from ``GROUNDS``,
may add free text and up to ``MAX_ATTACHMENTS`` attachment URLs (https only), and is filed until
the appeal window after the ticket closes (``Terms.appeal_window``). One appeal per ticket. Its
decision is due ``Terms.appeal_decision`` after it was received; later, it is flagged overdue.
An officer decides: ``upheld`` (the ticket stands) or ``voided`` (the ticket is voided), always
with a reason.
"""

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from schemas.events import APPEAL_GROUNDS

GROUNDS: dict[str, tuple[str, str]] = {
    "moved_within_window": ("已在期限内驶离", "I moved within the window"),
    "warning_not_received": ("未收到告知短信", "I did not receive the warning"),
    "emergency_vehicle": ("执行紧急任务的特种车辆", "Emergency vehicle on duty"),
    "stolen_or_cloned_plate": ("车辆被盗或号牌被套用", "Stolen vehicle or cloned plate"),
    "emergency_avoidance": ("紧急避险", "Emergency avoidance"),
    "wrong_zone_or_signage": ("区域或标志有误", "Wrong zone or signage"),
    "other": ("其他", "Other"),
}
"""Each ground: (Chinese, English). The same keys as ``schemas.events.APPEAL_GROUNDS``."""
assert tuple(GROUNDS) == APPEAL_GROUNDS

OUTCOMES: dict[str, tuple[str, str]] = {
    "upheld": ("维持告知单", "Ticket upheld"),
    "voided": ("撤销告知单", "Ticket voided"),
}
CHANNELS = {"driver_page": ("司机页面", "driver page"), "phone": ("电话", "phone")}
STATEMENT_MAX = 2000
MAX_ATTACHMENTS = 5
URL_MAX = 2048


def reference(ticket_number: str) -> str:
    """An appeal's reference, told to the driver on the page and by SMS (one appeal per ticket)."""
    return f"SS{ticket_number}"


class NotAllowed(Exception):
    """An appeal or a decision the rules refuse; ``key`` names the explanation (see ``words``)."""

    def __init__(self, key: str, **params):
        super().__init__(key, params)
        self.key = key
        self.params = params


@dataclass(frozen=True)
class Filing:
    """What an appellant files: a ground, their words, attachment URLs."""

    ground: str
    statement: str
    attachments: tuple[str, ...]


def filing(ground: str | None, statement: str | None, attachments: str | list[str] | None) -> Filing:
    """Check what was filed; ``attachments`` as a list or as text with one URL per line."""
    ground = (ground or "").strip()
    if ground not in GROUNDS:
        raise NotAllowed("bad_ground")
    statement = (statement or "").strip()
    if len(statement) > STATEMENT_MAX:
        raise NotAllowed("statement_too_long", max=STATEMENT_MAX)
    if ground == "other" and len(statement) < 3:
        raise NotAllowed("statement_needed")
    if isinstance(attachments, str):
        attachments = attachments.split()
    urls = tuple(u.strip() for u in (attachments or []) if u.strip())
    if len(urls) > MAX_ATTACHMENTS:
        raise NotAllowed("too_many_attachments", max=MAX_ATTACHMENTS)
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname or len(url) > URL_MAX or any(c.isspace() for c in url):
            raise NotAllowed("attachment_not_https", url=url[:80])
    return Filing(ground, statement, urls)


def check_can_file(ticket_voided: bool, already_appealed: bool, now: datetime, until: datetime) -> None:
    """An appeal may be filed against a standing ticket, once, until the appeal window closes."""
    if ticket_voided:
        raise NotAllowed("ticket_void")
    if already_appealed:
        raise NotAllowed("already_appealed")
    if now > until:
        raise NotAllowed("window_closed", until=until)


def check_decision(outcome: str | None, already_decided: bool) -> str:
    if already_decided:
        raise NotAllowed("already_decided")
    if outcome not in OUTCOMES:
        raise NotAllowed("bad_outcome")
    return outcome


def overdue(due_at: datetime, decided_at: datetime | None, now: datetime) -> bool:
    """An appeal still undecided after its due date."""
    return decided_at is None and now > due_at
