"""SMS texts, built to fit.

The city's first system promised an SMS of under 50 characters, and the default texts keep that:
``BRIEF`` (50) UTF-16 code units, signature included. With the driver page on, a warning and a ticket
carry a short link (``PW_PUBLIC_BASE_URL`` + ``/d/`` + the code, at the end, after a space, glued to
nothing) and may use the whole segment: 70 UCS-2 code units, or 160 characters when the whole text is
in the GSM-7 alphabet (plates carry a Chinese province character, so warnings are UCS-2).

A text that would be longer is shortened by construction: the place and the car-park name give up
characters (ending in "…") until it fits; the plate, the deadline, the counts, the ticket number and
the link never do. A text tries its richest form first and gives up, in order, what matters least:
the car park's line, then (with a link) the ticket number, then the link itself (the page is
optional; the warning is not). Should even that not fit (a long signature), the brief text may take
the whole segment: the warning itself always leaves.
"""

from dataclasses import dataclass
from datetime import datetime

GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
MIN_NAME = 2
BRIEF = 50
"""The default texts' length (UTF-16 code units, with the signature): the seed's promise."""
READABLE_NAME = 4
"""A richer form is dropped rather than cut a place below this many characters."""


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
    link: str | None = None  # the driver page's short link for this case, when the page is on


@dataclass(frozen=True)
class TicketFacts:
    plate: str
    place: str
    ticket_number: str
    link: str | None = None  # the ticket's driver page, when the page is on


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
        "warning": "【{sig}】{plate}在{place}违停，{deadline}前驶离。{park}余{free}位",
        "warning_no_park": "【{sig}】{plate}在{place}违停，{deadline}前驶离。附近停车场已满",
        "warning_only": "【{sig}】{plate}在{place}违停，{deadline}前驶离",
        "warning_link": "【{sig}】{plate}在{place}违停，{deadline}前驶离。{park}余{free}位 {link}",
        "warning_link_no_park": "【{sig}】{plate}在{place}违停，请于{deadline}前驶离，车位见 {link}",
        "warning_link_only": "【{sig}】{plate}在{place}违停，{deadline}前驶离 {link}",
        "ticket": "【{sig}】{plate}在{place}违停，告知单{number}，详询12345",
        "ticket_link": "【{sig}】{plate}在{place}违停未驶离，已开具告知单{number}，详情 {link}",
        "ticket_link_only": "【{sig}】{plate}在{place}违停未驶离，已开告知单 {link}",
        "caution_first": "【{sig}】{plate}在{place}违停未驶离，首次违停警告不罚款",
        "caution_new_camera": "【{sig}】{plate}在{place}违停未驶离，试运行期间警告不罚款",
    },
    "en": {
        "warning": "{plate} at {place}: Move by {deadline}. {park} {free} free",
        "warning_no_park": "{plate} at {place}: Move by {deadline}. Car parks full",
        "warning_only": "{plate} at {place}: Move by {deadline}.",
        "warning_link": "{plate} no parking at {place}. Move by {deadline}. {park} {free} free {link}",
        "warning_link_no_park": "{plate} no parking at {place}. Move by {deadline}. Parking: {link}",
        "warning_link_only": "{plate} at {place}: Move by {deadline} {link}",
        "ticket": "{plate} at {place}: ticket {number}. 12345",
        "ticket_link": "{plate} at {place}: ticket {number}. See {link}",
        "ticket_link_only": "{plate} at {place}: ticket. See {link}",
        "caution_first": "{plate} at {place}: first offence, warning, no fine",
        "caution_new_camera": "{plate} at {place}: camera on trial, warning, no fine",
    },
}


def _shorten(name: str, size: int) -> str:
    return name if len(name) <= size else name[: max(size - 1, 1)] + "…"


def _fit(template: str, names: dict[str, str], fixed: dict[str, str], limit: int | None = None,
         min_name: int = MIN_NAME) -> str:
    """Render within ``limit`` (and one segment), shortening the longest of ``names`` one character at a
    time until it fits; TextTooLong if a name would go below ``min_name``."""
    sizes = {k: len(v) for k, v in names.items()}
    while True:
        text = template.format(**fixed, **{k: _shorten(v, sizes[k]) for k, v in names.items()})
        if fits_one_segment(text) and (limit is None or length(text) <= limit):
            return text
        longest = max(sizes, key=sizes.get)
        if sizes[longest] <= min_name:
            raise TextTooLong(f"cannot fit {limit or 'one segment'} even with names cut to {min_name}: {text!r}")
        sizes[longest] -= 1


def _first_that_fits(forms: list[tuple[str, dict[str, str], dict[str, str], int | None, int]]) -> str:
    for template, names, fixed, limit, min_name in forms[:-1]:
        try:
            return _fit(template, names, fixed, limit, min_name)
        except TextTooLong:
            continue
    return _fit(*forms[-1])


def warning_text(facts: WarningFacts, language: str = "zh-CN", signature: str = "杭州城管") -> str:
    """The warning: brief (``BRIEF``), or with the driver page's link in one segment."""
    t = TEMPLATES[language]
    fixed = {"sig": signature, "plate": facts.plate, "deadline": f"{facts.deadline:%H:%M}"}
    place = {"place": facts.place}
    with_park = None
    if facts.car_park is not None:
        with_park = ({"place": facts.place, "park": facts.car_park}, fixed | {"free": str(facts.free_spaces)})
    forms = []
    if facts.link:
        linked = fixed | {"link": facts.link}
        if with_park:
            forms.append((t["warning_link"], with_park[0], with_park[1] | {"link": facts.link}, None, READABLE_NAME))
        forms += [(t["warning_link_no_park"], place, linked, None, READABLE_NAME),
                  (t["warning_link_only"], place, linked, None, READABLE_NAME)]
    brief = t["warning"] if with_park else t["warning_no_park"]
    names, values = with_park or (place, fixed)
    forms += [(brief, names, values, BRIEF, MIN_NAME), (t["warning_only"], place, fixed, BRIEF, MIN_NAME),
              (brief, names, values, None, MIN_NAME), (t["warning_only"], place, fixed, None, MIN_NAME)]
    return _first_that_fits(forms)


def ticket_text(facts: TicketFacts, language: str = "zh-CN", signature: str = "杭州城管") -> str:
    """The ticket's SMS: brief with the number and where to appeal, or with the ticket's page link."""
    t = TEMPLATES[language]
    fixed = {"sig": signature, "plate": facts.plate, "number": facts.ticket_number}
    place = {"place": facts.place}
    forms = []
    if facts.link:
        linked = fixed | {"link": facts.link}
        forms += [(t["ticket_link"], place, linked, None, READABLE_NAME),
                  (t["ticket_link_only"], place, linked, None, READABLE_NAME)]
    forms += [(t["ticket"], place, fixed, BRIEF, MIN_NAME), (t["ticket"], place, fixed, None, MIN_NAME)]
    return _first_that_fits(forms)


@dataclass(frozen=True)
class AppealFacts:
    plate: str
    ticket_number: str
    outcome: str  # "upheld" or "voided"


APPEAL_TEMPLATES = {
    "zh-CN": {
        "voided": "【{sig}】{plate}告知单{number}申诉成立，已撤销",
        "upheld": "【{sig}】{plate}告知单{number}申诉未获支持，详询12345",
    },
    "en": {
        "voided": "{plate} {number} cancelled on appeal",
        "upheld": "{plate} {number}: appeal refused. 12345",
    },
}


RECEIVED_TEMPLATES = {
    "zh-CN": "【{sig}】{plate}申诉已受理，编号{reference}，{due}前答复",
    "en": "{plate} appeal {reference} reply by {due}",
}


def appeal_received_text(plate: str, reference: str, due: datetime, language: str = "zh-CN",
                         signature: str = "杭州城管") -> str:
    """The driver's SMS when an appeal is filed: its reference and when the decision is due (local date)."""
    due_text = f"{due.month}月{due.day}日" if language == "zh-CN" else f"{due:%d %b}"
    text = RECEIVED_TEMPLATES[language].format(sig=signature, plate=plate, reference=reference, due=due_text)
    if not fits_one_segment(text):
        raise TextTooLong(f"more than one segment: {text!r}")
    return text


def appeal_decision_text(facts: AppealFacts, language: str = "zh-CN", signature: str = "杭州城管") -> str:
    """The driver's SMS on an appeal's decision (``BRIEF``, or one segment with a long signature; nothing
    in it is shortened)."""
    text = APPEAL_TEMPLATES[language][facts.outcome].format(sig=signature, plate=facts.plate,
                                                            number=facts.ticket_number)
    if not fits_one_segment(text):
        raise TextTooLong(f"more than one segment: {text!r}")
    return text


def caution_text(facts: CautionFacts, language: str = "zh-CN", signature: str = "杭州城管") -> str:
    """A warning notice (首违警告, or a new camera's trial): still there at the deadline, no fine."""
    t = TEMPLATES[language]
    template = t["caution_first"] if facts.first_offence else t["caution_new_camera"]
    fixed = {"sig": signature, "plate": facts.plate}
    return _first_that_fits([(template, {"place": facts.place}, fixed, BRIEF, MIN_NAME),
                             (template, {"place": facts.place}, fixed, None, MIN_NAME)])


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
