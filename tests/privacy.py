"""Checks that a text holds no phone number, failing without showing the text or the number.

pytest shows both sides of a failed ``assert phone not in text``, which would put the number in the
test output; these helpers raise with a message that names only the place.
"""

import re

from pipeline.lookups.owners import mask_phone

# A mainland mobile number standing alone (not inside a longer number, a UUID or a hex digest).
ANY_PHONE = re.compile(r"(?<![0-9A-Fa-f-])1[3-9][0-9]{9}(?![0-9A-Fa-f])")


def no_phone_in(text: str, where: str, phone: str | None = None) -> None:
    """No full mainland mobile number (or, given ``phone``, not even its last eight digits) in ``text``."""
    if ANY_PHONE.search(text) or (phone is not None and phone[-8:] in text):
        raise AssertionError(f"a phone number reached {where}")


def masked_phone_in(text: str, phone: str, where: str) -> None:
    """The number shows masked (138****8000) in ``text``, and not in full."""
    no_phone_in(text, where, phone)
    if mask_phone(phone) not in text:
        raise AssertionError(f"the masked phone number is missing from {where}")


def dead_letters_text(rows) -> str:
    """The dead letters' rows (``key``, ``reason``, ``errors``, ``raw``) as one text, for ``no_phone_in``."""
    return " ".join(f"{(r['key'] or b'').decode('utf-8', 'replace')} {r['reason']} {r['errors']} "
                    f"{r['raw'].decode('utf-8', 'replace')}" for r in rows)
