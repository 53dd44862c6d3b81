"""SMS texts, built to fit one segment.

One segment is 70 UCS-2 code units, or 160 characters when the whole text is in the GSM-7
alphabet. Plates carry a Chinese province character, so warnings are UCS-2 and get 70. A text
that would be longer is shortened by construction: the place and the car-park name give up
characters (ending in "…") until it fits; the plate, the deadline and the counts never do.
A driver-page code (10 characters) is never cut: it takes the place of the time the free spaces
were counted (the page shows live counts), and a warning that cannot fit with it even with the
names cut short goes without it (the warning matters; the page is optional). Should even that not
fit (a long signature), the car-park line goes too: the warning itself always leaves.
"""

from dataclasses import dataclass
from datetime import datetime

GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
MIN_NAME = 2


def segment_limit(text: str) -> int:
    return 160 if set(text) <= GSM7 else 70


def length(text: str) -> int:
    """Length as the SMS centre counts it (UTF-16 code units for UCS-2)."""
    if set(text) <= GSM7:
        return len(text)
    return len(text.encode("utf-16-le")) // 2


def fits_one_segment(text: str) -> bool:
    return length(text) <= segment_limit(text)


class TextTooLong(ValueError):
    pass


@dataclass(frozen=True)
class WarningFacts:
    plate: str
    place: str
    deadline: datetime  # local time
    car_park: str | None
    free_spaces: int | None
    counted_at: datetime | None  # local time
    code: str | None = None  # driver-page code, when the driver page is on


@dataclass(frozen=True)
class TicketFacts:
    plate: str
    place: str
    ticket_number: str


@dataclass(frozen=True)
class CautionFacts:
    """A warning notice instead of a ticket: a first offence, or a camera in its first days."""

    plate: str
    place: str
    first_offence: bool


OWNER_LANGUAGES = {"zh": "zh-CN", "en": "en"}
"""The contact registry's language codes (an owner's preferred language) -> the templates'."""

TEMPLATES = {
    "zh-CN": {
        "warning": "【{sig}】{plate}在{place}违停，请于{deadline}前驶离。最近停车场:{park}余{free}位({counted})",
        "warning_no_park": "【{sig}】{plate}在{place}违停，请于{deadline}前驶离。附近停车场暂无空位",
        "warning_only": "【{sig}】{plate}在{place}违停，请于{deadline}前驶离。",
        "ticket": "【{sig}】{plate}在{place}违停未驶离，已开具告知单{number}。查询或申诉请拨12345",
        "code": "查询码{code}",
        "warning_with_code": "【{sig}】{plate}在{place}违停，请于{deadline}前驶离。最近停车场:{park}余{free}位",
        "caution_first": "【{sig}】{plate}在{place}违停未驶离，系首次违停，予以警告不罚款。请规范停车",
        "caution_new_camera": "【{sig}】{plate}在{place}违停未驶离，设备试运行期间予以警告不罚款。请规范停车",
    },
    "en": {
        "warning": "{plate} no parking at {place}. Move by {deadline}. P:{park} {free} free {counted}",
        "warning_no_park": "{plate} no parking at {place}. Move by {deadline}. No free parking near",
        "warning_only": "{plate} no parking at {place}. Move by {deadline}.",
        "ticket": "{plate} at {place}: ticket {number}. Check/contest: call 12345",
        "code": " #{code}",
        "warning_with_code": "{plate} no parking at {place}. Move by {deadline}. P:{park} {free} free",
        "warning_no_park_with_code": "{plate} no parking at {place}. Move by {deadline}. Car parks full",
        "caution_first": "{plate} at {place}: first offence, warning only, no fine",
        "caution_new_camera": "{plate} at {place}: camera on trial, warning only, no fine",
    },
}


def _shorten(name: str, size: int) -> str:
    return name if len(name) <= size else name[: max(size - 1, 1)] + "…"


def _fit(template: str, names: dict[str, str], fixed: dict[str, str]) -> str:
    """Render, shortening the longest of ``names`` one character at a time until it fits."""
    sizes = {k: len(v) for k, v in names.items()}
    while True:
        text = template.format(**fixed, **{k: _shorten(v, sizes[k]) for k, v in names.items()})
        if fits_one_segment(text):
            return text
        longest = max(sizes, key=sizes.get)
        if sizes[longest] <= MIN_NAME:
            raise TextTooLong(f"cannot fit one SMS segment even with names cut to {MIN_NAME}: {text!r}")
        sizes[longest] -= 1


def warning_text(facts: WarningFacts, language: str = "zh-CN", signature: str = "杭州城管") -> str:
    t = TEMPLATES[language]
    fixed = {"sig": signature, "plate": facts.plate, "deadline": f"{facts.deadline:%H:%M}"}
    names = {"place": facts.place}
    kind = "warning_no_park"
    if facts.car_park is not None:
        fixed |= {"free": str(facts.free_spaces), "counted": f"{facts.counted_at:%H:%M}"}
        names |= {"park": facts.car_park}
        kind = "warning"
    if facts.code:
        template = t.get(f"{kind}_with_code", t[kind]) + t["code"].replace("{code}", facts.code)
        try:
            return _fit(template, names, fixed)
        except TextTooLong:
            pass  # without the code rather than no warning
    try:
        return _fit(t[kind], names, fixed)
    except TextTooLong:
        return _fit(t["warning_only"], {"place": facts.place}, fixed)


def ticket_text(facts: TicketFacts, language: str = "zh-CN", signature: str = "杭州城管") -> str:
    t = TEMPLATES[language]
    fixed = {"sig": signature, "plate": facts.plate, "number": facts.ticket_number}
    return _fit(t["ticket"], {"place": facts.place}, fixed)


@dataclass(frozen=True)
class AppealFacts:
    plate: str
    ticket_number: str
    outcome: str  # "upheld" or "voided"


APPEAL_TEMPLATES = {
    "zh-CN": {
        "voided": "【{sig}】{plate}告知单{number}申诉成立，告知单已撤销。",
        "upheld": "【{sig}】{plate}告知单{number}申诉未获支持，维持原告知单。详询12345",
    },
    "en": {
        "voided": "{plate} {number}: appeal allowed, ticket cancelled.",
        "upheld": "{plate} {number}: appeal refused, ticket stands. Tel 12345",
    },
}


def appeal_decision_text(facts: AppealFacts, language: str = "zh-CN", signature: str = "杭州城管") -> str:
    """The driver's SMS on an appeal's decision (one segment; nothing in it is shortened)."""
    text = APPEAL_TEMPLATES[language][facts.outcome].format(sig=signature, plate=facts.plate,
                                                            number=facts.ticket_number)
    if not fits_one_segment(text):
        raise TextTooLong(f"more than one segment: {text!r}")
    return text


def caution_text(facts: CautionFacts, language: str = "zh-CN", signature: str = "杭州城管") -> str:
    """A warning notice (首违警告, or a new camera's trial): still there at the deadline, no fine."""
    t = TEMPLATES[language]
    template = t["caution_first"] if facts.first_offence else t["caution_new_camera"]
    return _fit(template, {"place": facts.place}, {"sig": signature, "plate": facts.plate})


WITHDRAWN_TEMPLATES = {
    "zh-CN": "【{sig}】{plate}的违停告知单{number}已撤销，无需处理。详询12345",
    "en": "{plate} ticket {number} withdrawn, nothing to pay. Tel 12345",
}


def withdrawal_text(plate: str, ticket_number: str, language: str = "zh-CN", signature: str = "杭州城管") -> str:
    """The owner's SMS when an officer voids a ticket (one segment; nothing in it is shortened)."""
    text = WITHDRAWN_TEMPLATES[language].format(sig=signature, plate=plate, number=ticket_number)
    if not fits_one_segment(text):
        raise TextTooLong(f"more than one segment: {text!r}")
    return text
