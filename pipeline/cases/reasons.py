"""Why a case is where it is: every reason and note the pipeline writes, from one catalogue.

Cases, the audit log and ``CaseClosed`` events keep the English text (integrators, logs and the
command line read it). The console shows it in the operator's language by matching the text back
to its template here: ``pipeline/console/i18n.py`` has the Chinese for every key, and a unit test
keeps the two in step. ``{detail}`` holds a nested reason or an operator's own words; ``{state}``
a case state.
"""

import re
from functools import cache

REASONS: dict[str, str] = {
    # opening a case
    "too_late": "violation reported {minutes} min after it was seen: too late to warn",
    "no_phone": "no phone on record for the owner: an officer decides",
    "not_registered": "plate not in the plate registry: an officer decides",
    "plate_type_ambiguous": "plate registered under more than one plate type the camera's reading allows: an officer decides",
    "plate_type_mismatch": "plate not registered under the plate type the camera read: an officer decides",
    "vehicle_colour_mismatch": "vehicle colour contradicts the plate registry (a misread plate?): an officer decides",
    "no_valid_contact": "no phone valid now for the owner in the contact registry: an officer decides",
    "sms_opt_out": "the owner's phone is on the SMS opt-out list: an officer decides",
    "whitelisted": "whitelisted plate: {detail}",
    "exempt_zone": "exempt zone: {detail}",
    "exempt_hours": "exempt hours {start}-{until} in zone: {detail}",
    # captures and departures
    "already": "case already {state}",
    "capture_before_violation": "capture taken before the violation: kept as a sighting only",
    "seen_elsewhere_after_deadline": "seen elsewhere after the deadline, no capture at the place: no ticket",
    "seen_elsewhere": "seen elsewhere ({where}): the car moved",
    "older_capture": "older capture at the same place: kept as evidence",
    "capture_same_place": "capture at the same place",
    "capture_in_future": "capture stamped in the future (camera clock ahead): not evidence",
    "left_known": "already seen leaving earlier after the deadline",
    "left_after_deadline_kept": "seen leaving after the deadline: decided at the deadline on the captures taken before",
    "settling": "waiting for events taken before the answer to arrive",
    "same_stay": "seen again at the place of a case already {state} (the same stay): kept as evidence",
    "departure_after_ticket": "departure before the deadline arrived after the ticket: for review",
    "departure_before_violation": "departure taken before the violation: ignored",
    "left_after_deadline": "left after the deadline, before a fresh capture: no ticket",
    "left_in_window": "left within the window",
    # the warning
    "accepted_already": "warning accepted for a case already {state}",
    "failed_already": "warning failed for a case already {state}",
    "warning_failed": "warning failed: {detail}",
    "daily_limit": "daily limit of {n} SMS to this phone reached",
    "delivery_known": "delivery already known",
    "delivered": "warning delivered to the phone",
    "delivered_late": "warning delivered after it was accepted: the deadline moves to {deadline}",
    "awaiting_delivery": "waiting for the report that the warning reached the phone",
    "delivery_unknown": "no report that the warning reached the phone: an officer decides",
    "undelivered_already": "undelivered warning reported for a case already {state}",
    "undelivered": "warning not delivered: {detail}",
    # the deadline
    "not_due": "not due",
    "recheck_requested": "no fresh capture at the deadline: recheck requested",
    "unconfirmed": "no fresh capture after the recheck request: no ticket",
    "never_delivered": "still there at the deadline, but the warning was never reported delivered: an officer decides",
    "still_there": "still at the place at the deadline",
    "still_there_recheck": "captured at the place after the deadline (recheck)",
    "first_offence": "no ticket nor warning notice in the last {n} months: a first-offence warning notice instead of a ticket",
    "new_camera": "camera {where} commissioned on {day}, in its first {n} days: a warning notice instead of a ticket",
    "to_confirm": "{detail}: the ticket takes effect once an officer confirms it",
    "decision_failed": "the pipeline could not decide this case ({detail}): an officer decides",
    # the SMS gateway (a message's last error)
    "too_long": "text is {units} units, more than one segment",
    "kannel_unreachable": "Kannel unreachable ({error}); is it running? scripts/services.sh status",
    "kannel_no_answer": "no answer from Kannel after the request was sent ({error})",
    "kannel_credentials": "Kannel refused our credentials (403): check PW_KANNEL_USERNAME/PASSWORD",
    "kannel_refused": "Kannel refused the message (400): {answer}",
    "kannel_answered": "Kannel answered {status}: {answer}",
    "provider_unreachable": "SMS provider unreachable ({error})",
    "provider_answered": "SMS provider answered {status}",
    "provider_refused": "SMS provider refused the message ({status}): {answer}",
    "kannel_not_routable": "Kannel refused the message as not routable (403): {answer}",
    "provider_credentials": "SMS provider refused our token ({status}): check PW_SMS_HTTP_TOKEN",
    "sent_again": "in doubt, no answer recorded and no delivery report: to be sent again",
    "gateway_horizon": "the SMS gateway did not take the message within {seconds} s: {detail}",
    "set_aside": "message set aside: {error}",
    # operators
    "warned_again": "warned again as case {case_id}: {detail}",
    "ticketed_on_review": "ticketed on review: {detail}",
    "confirmed": "ticket confirmed by an officer: {detail}",
    "rejected": "ticket rejected by an officer: {detail}",
}


def why(key: str, **params: object) -> str:
    """The English reason ``key`` with its parameters filled in."""
    return REASONS[key].format(**params)


@cache
def _patterns() -> list[tuple[str, re.Pattern]]:
    patterns = []
    for key, template in REASONS.items():
        parts = re.split(r"\{(\w+)\}", template)
        regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.*?)" for i, p in enumerate(parts))
        patterns.append((key, re.compile(f"^{regex}$", re.DOTALL)))
    return patterns


def parse(text: str) -> tuple[str, dict[str, str]] | None:
    """(key, parameters) of a reason written from the catalogue, or None for other text."""
    for key, pattern in _patterns():
        if m := pattern.match(text):
            return key, m.groupdict()
    return None
