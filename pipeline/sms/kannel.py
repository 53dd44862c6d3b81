"""Kannel adapter: its smsbox HTTP ``sendsms`` API, UCS-2, with a delivery-report URL per message.

Kannel accepts (``202 0: Accepted for delivery``) or queues (``202 3: Queued for later delivery``,
when the SMS centre link is down; it delivers later) — both count as accepted: the window starts.
The gateway is down or cannot take anything now (``TemporaryFailure``: no connection, ``503
Temporal failure, try again later``, any other 5xx, ``403`` for our credentials): the message waits
and is tried again. This message is refused (``PermanentFailure``: ``403 Not routable. Do not try
again.``, ``400`` such as a missing or invalid receiver): its case goes to review.
Kannel cuts a text longer than one segment without saying so, so a text that does not fit is
refused here, before it is sent. Delivery reports come back to ``/sms/delivery-report`` with our
own message id in the URL (Kannel's own ids differ between two reports of one message), signed
(``sig``: HMAC-SHA256 of the id under ``PW_SMS_REPORT_SECRET``) so that nobody else can report on it.
"""

import hashlib
import hmac
import re
from datetime import UTC, datetime
from urllib.parse import unquote_to_bytes, urlencode
from uuid import UUID

import aiohttp

from pipeline.cases.reasons import why
from pipeline.lookups.owners import scrub
from pipeline.sms import texts
from pipeline.sms.gateway import Accepted, InDoubt, OutgoingSms, PermanentFailure, TemporaryFailure

# Kannel's dlr-mask bits and what they mean for us.
DLR_STATUS = {1: "delivered", 2: "failed", 4: "queued", 8: "smsc_accepted", 16: "smsc_rejected"}


def report_signature(secret: str, sms_id) -> str:
    """The ``sig`` of a message's delivery-report URL: HMAC-SHA256 of our message id (its canonical
    text), hex. It does not cover the status, which Kannel fills in after we sign."""
    return hmac.new(secret.encode(), str(UUID(str(sms_id))).encode(), hashlib.sha256).hexdigest()


class KannelGateway:
    def __init__(self, sendsms_url: str, username: str, password: str, sender: str, report_url: str,
                 timeout_seconds: float = 5, *, report_secret: str):
        self.sendsms_url = sendsms_url
        self.username = username
        self.password = password
        self.sender = sender
        self.report_url = report_url
        self.report_secret = report_secret
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    def _dlr_url(self, sms: OutgoingSms) -> str:
        # %d status, %T SMSC time (unix), %A SMSC answer: Kannel fills these in.
        return (f"{self.report_url}?id={sms.id}&sig={report_signature(self.report_secret, sms.id)}"
                "&status=%d&at=%T&answer=%A")

    async def send(self, sms: OutgoingSms) -> Accepted:
        if not texts.fits_one_segment(sms.text):
            raise PermanentFailure(why("too_long", units=texts.length(sms.text)))
        params = {
            "username": self.username, "password": self.password, "from": self.sender, "to": sms.phone,
            "text": sms.text, "charset": "UTF-8", "coding": "2", "dlr-mask": "31", "dlr-url": self._dlr_url(sms),
        }
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        try:
            async with self._session.get(f"{self.sendsms_url}?{urlencode(params)}") as response:
                body = scrub((await response.text()).strip())
                status = response.status
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # The exception text may hold the URL, which holds the phone number: do not pass it on.
            raise TemporaryFailure(why("kannel_unreachable", error=type(exc).__name__)) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The request went out: Kannel may have queued the message. Sending it again could
            # text the driver twice, so its delivery reports decide (see SmsService.settle_in_doubt_sms).
            raise InDoubt(why("kannel_no_answer", error=type(exc).__name__)) from None
        if status == 202 or status == 200:
            return Accepted(datetime.now(UTC), f"kannel:{body[:40]}")
        if status == 403 and "not routable" in body.lower():
            raise PermanentFailure(why("kannel_not_routable", answer=body[:100]))
        if status == 403:
            raise TemporaryFailure(why("kannel_credentials"))
        if status == 400:
            raise PermanentFailure(why("kannel_refused", answer=body[:100]))
        raise TemporaryFailure(why("kannel_answered", status=status, answer=body[:100]))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


_FAKESMSC = re.compile(r"Got message \d+: <(\S+) (\S+) (ucs-2|text) (\S*)>")


def read_fakesmsc_line(line: str) -> tuple[str, str] | None:
    """(receiver, text) from a line of Kannel's fake SMS centre log, or None for other lines.

    fakesmsc logs ``Got message N: <from to ucs-2 %8F%DD...>``: the text URL-encoded, in UTF-16BE
    for UCS-2 messages, with spaces as ``+``.
    """
    m = _FAKESMSC.search(line)
    if not m:
        return None
    raw = unquote_to_bytes(m.group(4).replace("+", " "))
    return m.group(2), raw.decode("utf-16-be") if m.group(3) == "ucs-2" else raw.decode("latin-1")
