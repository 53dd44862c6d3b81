"""Chinese licence plates: normalization and validation.

Cameras and integrators write plates in many ways (``浙A·12345``, ``浙a 12345``, full-width
letters). Every plate is normalized before it is validated, keyed or stored, so that one car
always has one key and its events stay in order on one Kafka partition.
"""

import re
import unicodedata

PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
_LETTER = "A-HJ-NP-Z"  # plates never use I or O
_ALNUM = "A-HJ-NP-Z0-9"

STANDARD = re.compile(rf"^[{PROVINCES}][{_LETTER}][{_ALNUM}]{{4}}[{_ALNUM}挂学警港澳]$")
"""Blue/yellow plates: province, issuing-office letter, five characters (the last may be a suffix)."""

NEW_ENERGY = re.compile(
    rf"^[{PROVINCES}][{_LETTER}](?:[DF][{_ALNUM}][0-9]{{4}}|[0-9]{{5}}[DF])$"
)
"""Green 8-character new-energy plates: D/F first (small cars) or last (large vehicles)."""

_SEPARATORS = re.compile(r"[\s·•・.\-_]")


def normalize_plate(raw: str) -> str:
    """Return the canonical form: NFKC (full-width to ASCII), separators removed, upper case."""
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", raw)).upper()


def plate_problem(plate: str) -> str | None:
    """Why a normalized plate is not a valid Chinese plate, or None when it is."""
    if not plate:
        return "plate is empty"
    if plate[0] not in PROVINCES:
        return f"plate must start with a province character ({PROVINCES[:6]}...), got {plate[0]!r}"
    if len(plate) not in (7, 8):
        return f"plate must have 7 characters (8 for new-energy plates), got {len(plate)}"
    pattern = STANDARD if len(plate) == 7 else NEW_ENERGY
    if not pattern.fullmatch(plate):
        kind = "standard" if len(plate) == 7 else "new-energy"
        return f"{plate!r} is not a valid {kind} plate (letters I and O are never used)"
    return None


def checked_plate(value: object) -> object:
    """A plate field's before-validator: the plate normalized, or a ValueError saying why it is not a
    valid plate (non-strings are left to the field's type check)."""
    if not isinstance(value, str):
        return value
    plate = normalize_plate(value)
    problem = plate_problem(plate)
    if problem:
        raise ValueError(problem)
    return plate
