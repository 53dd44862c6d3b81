"""What the driver page says about a case, in every state it can be in: pure (no I/O), takes ``now``.

``say`` turns a case (its state, deadline, ticket and appeal as read from PostgreSQL) into the
page's words, in Chinese and English: a headline, what happens next and until when, what the
driver can still do. ``Said.version`` changes whenever the words do, so an open page that polls
``/d/{code}/state.json`` reloads itself on a change (a void, a decision, the deadline passing).
"""

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

Words = tuple[str, str]
"""(Chinese, English)"""


@dataclass(frozen=True)
class TicketFacts:
    number: str
    issued_at: datetime
    voided_at: datetime | None = None
    void_reason: str | None = None


@dataclass(frozen=True)
class AppealFacts:
    reference: str
    received_at: datetime
    due_at: datetime
    decided_at: datetime | None = None
    outcome: str | None = None  # "upheld" | "voided" once decided
    reason: str | None = None


@dataclass(frozen=True)
class Afterwards:
    """What a driver may still do once a ticket stands, as the city configures it."""

    appeal_window: timedelta
    reconsideration_days: int = 60
    """行政复议: within 60 days of learning of the decision (行政复议法 第二十条)."""
    lawsuit_months: int = 6
    """行政诉讼: within 6 months (行政诉讼法 第四十六条)."""
    pay: Words = ("凭告知单号到交警违法处理窗口或“交管12123”处理", "Settle it with the ticket number at a "
                  "traffic-police office or in the 12123 app")
    phone: str = "12345"


@dataclass(frozen=True)
class Said:
    key: str
    headline: Words
    lines: tuple[Words, ...] = ()
    countdown_to: datetime | None = None
    """The deadline the page counts down to (only while the car may still move in time)."""
    can_appeal: bool = False

    @property
    def version(self) -> str:
        text = "\n".join([self.key, *self.headline, *(w for line in self.lines for w in line)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def say(state: str, deadline_at: datetime | None, now: datetime, tz: ZoneInfo, after: Afterwards,
        caution: str = "", ticket: TicketFacts | None = None, appeal: AppealFacts | None = None) -> Said:
    """The words for a case in ``state`` at ``now`` (times shown in ``tz``)."""
    hm = (lambda t: f"{t.astimezone(tz):%H:%M}")
    day = (lambda t: f"{t.astimezone(tz):%Y-%m-%d %H:%M}")
    if ticket is not None:
        return _ticket(ticket, appeal, now, day, after)
    match state:
        case "detected":
            return Said("detected", ("正在通知车主", "Notifying the owner"))
        case "warned" if deadline_at is not None and now < deadline_at:
            d = hm(deadline_at)
            return Said("warned", (f"请于{d}前驶离", f"Please move by {d}"),
                        ((f"{d}后仍在原处，将开具违停告知单", f"Still here after {d}: a parking ticket is issued"),
                         ("按时驶离则无需处理", "Leave in time and nothing more happens")),
                        countdown_to=deadline_at)
        case "warned" | "rechecking":
            return Said("checking", ("驶离期限已过，正在核查", "The deadline has passed: checking"),
                        (("车辆仍在原处将开具告知单；已驶离则无需处理",
                          "Still there: a ticket is issued. Left: nothing more happens"),))
        case "moved":
            return Said("moved", ("车辆已驶离，无需处理", "The car left: nothing more to do"))
        case "to_confirm":
            return Said("to_confirm", ("告知单待执法人员确认", "A ticket awaits an officer's confirmation"),
                        (("确认后短信通知", "You get an SMS once it is confirmed"),))
        case "rejected":
            return Said("rejected", ("执法人员未确认告知单，无需处理", "An officer did not confirm the ticket: "
                                                            "nothing more to do"))
        case "cautioned":
            if caution.startswith("first_offence"):
                return Said("cautioned", ("首次违停，予以警告，不罚款", "First offence: a warning, no fine"),
                            (("请规范停车", "Please park where it is allowed"),))
            return Said("cautioned", ("设备试运行期间，予以警告，不罚款", "Camera on trial: a warning, no fine"),
                        (("请规范停车", "Please park where it is allowed"),))
        case "unconfirmed":
            return Said("unconfirmed", ("未能核实车辆仍在原处，不予处罚", "The car could not be confirmed still "
                                                              "there: no ticket"))
        case "review":
            return Said("review", ("人工审核中", "Under review by an officer"),
                        (("期间不会自动开单，结果短信通知", "No ticket is issued automatically meanwhile; you get "
                                                   "an SMS"),))
        case "exempt":
            return Said("exempt", ("豁免，无需处理", "Exempt: nothing to do"))
        case "cancelled":
            return Said("cancelled", ("案件已撤销，无需处理", "Case closed by an officer: nothing to do"))
        case "ticketed":
            return Said("ticketed", ("已开具告知单", "A ticket was issued"))
    return Said(state, (state, state))


def _ticket(ticket: TicketFacts, appeal: AppealFacts | None, now: datetime, day, after: Afterwards) -> Said:
    n = ticket.number
    until = ticket.issued_at + after.appeal_window
    pay = after.pay
    further = (f"如不服，可于收到决定之日起{after.reconsideration_days}日内申请行政复议，或{after.lawsuit_months}个月内"
               f"提起行政诉讼", f"If you disagree: ask for administrative reconsideration within "
               f"{after.reconsideration_days} days, or go to court within {after.lawsuit_months} months")
    if appeal is not None and appeal.outcome == "voided":
        return Said("appeal_voided", (f"申诉成立，告知单{n}已撤销", f"Appeal allowed: ticket {n} is void"),
                    ((f"申诉编号{appeal.reference} · {day(appeal.decided_at)}",
                      f"Appeal {appeal.reference} · {day(appeal.decided_at)}"),
                     ("无需缴款或其他处理", "Nothing to pay, nothing more to do")))
    if ticket.voided_at is not None:
        return Said("voided", (f"告知单{n}已撤销，无需处理", f"Ticket {n} is void: nothing more to do"),
                    ((f"撤销原因：{ticket.void_reason or '–'}", f"Reason: {ticket.void_reason or '–'}"),))
    if appeal is not None and appeal.outcome == "upheld":
        return Said("appeal_upheld", (f"申诉未获支持，告知单{n}维持", f"Appeal refused: ticket {n} stands"),
                    ((f"申诉编号{appeal.reference} · {day(appeal.decided_at)}：{appeal.reason or ''}",
                      f"Appeal {appeal.reference} · {day(appeal.decided_at)}: {appeal.reason or ''}"),
                     further, pay))
    if appeal is not None:
        return Said("under_appeal", (f"申诉处理中 · 编号{appeal.reference}", f"Appeal {appeal.reference} under review"),
                    ((f"{day(appeal.received_at)}收到，最迟{day(appeal.due_at)}前答复，结果短信通知",
                      f"Received {day(appeal.received_at)}; decision by {day(appeal.due_at)}, sent by SMS"),
                     ("答复前无需缴款", "Nothing to pay before the decision")))
    if now <= until:
        return Said("ticketed", (f"已开具告知单{n}", f"Ticket {n} issued"),
                    ((f"如有异议，可于{day(until)}前在本页申诉", f"To contest it, appeal on this page by {day(until)}"),
                     pay), can_appeal=True)
    return Said("appeal_closed", (f"已开具告知单{n}", f"Ticket {n} issued"),
                ((f"申诉期已于{day(until)}结束", f"The appeal window closed on {day(until)}"),
                 (f"咨询请拨{after.phone}", f"Questions: call {after.phone}"), pay))
