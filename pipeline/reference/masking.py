"""What a reference feed's dead letter may keep of a refused message: no personal data.

A refused ``reference.contacts`` or ``reference.plates`` message holds phones, owner ids (an identity
card number, say) and contact names. Its dead letter keeps a masked copy instead of the bytes, so that
the table, the ``dead-letters`` topic and ``GET /v1/dead-letters`` show the shape of the message and
what was wrong, never whose it was; the SHA-256 of the original bytes lets the data platform find the
message in its own records (with the topic, partition and offset).

Masked: the values of the personal fields (``PERSONAL``, under our names or the source columns they
are mapped to) wherever they stand in the message or its key; any run of six or more digits
anywhere, in text or as a whole number (phones and id numbers under columns nobody mapped, or in a
message that is not JSON; Debezium's times and log positions too); those same values wherever a
reason or an error message repeats them.
"""

import hashlib
import json
import re

from pipeline.lookups.owners import mask_phone
from pipeline.reference.tables import Columns, Kind
from schemas.codec import Rejected
from schemas.events import FieldError

PERSONAL = ("owner_id", "phone", "contact_name")
"""The fields of a reference row that name or reach a person."""
_DIGITS = re.compile(r"\+?[0-9]{6,}")
_SHORTEST_REPEATED = 3
"""Values shorter than this are not looked for in reasons (they would mask ordinary words)."""


def mask_id(text: str) -> str:
    """33**************34: the first and last two characters of an id of eight or more, else stars only."""
    return f"{text[:2]}{'*' * (len(text) - 4)}{text[-2:]}" if len(text) >= 8 else "*" * len(text)


def _mask_digits(text: str) -> str:
    return _DIGITS.sub(lambda m: mask_phone(m.group()) if 7 <= len(m.group().lstrip("+")) <= 15
                       else mask_id(m.group()), text)


class _Masker:
    def __init__(self, kind: Kind, columns: Columns):
        self.names = {name for f in PERSONAL if f in kind.model.model_fields
                      for name in (f, columns.source(kind, f))}
        self.found: set[str] = set()

    def value(self, value):
        """A personal field's value, masked (remembered, to mask it in the reason too)."""
        if isinstance(value, (dict, list)):
            return self.walk(value, personal=True)
        if value is None or isinstance(value, bool):
            return value
        text = str(value) if not isinstance(value, float) else repr(value)
        self.found.add(text)
        return mask_phone(text) if re.fullmatch(r"\+?[0-9]{7,15}", text) else mask_id(text)

    def walk(self, data, personal: bool = False):
        if personal and not isinstance(data, (dict, list)):
            return self.value(data)
        if isinstance(data, dict):
            return {k: self.value(v) if personal or k in self.names else self.walk(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.walk(v, personal) for v in data]
        if isinstance(data, str):
            return _mask_digits(data)
        if isinstance(data, (int, float)) and not isinstance(data, bool) and _DIGITS.search(str(data)):
            return _mask_digits(str(data))  # a phone written as a number: 13000000000 or 13000000000.0
        return data

    def text(self, text: str) -> str:
        """Free text (a reason, a message): the personal values found, then digit runs, masked."""
        for value in sorted(self.found, key=len, reverse=True):
            if len(value) >= _SHORTEST_REPEATED:
                text = text.replace(value, mask_id(value))
        return _mask_digits(text)


def masked(kind: Kind, columns: Columns, key: bytes | None, rejected: Rejected) -> tuple[bytes | None, Rejected, bytes]:
    """(key, the refusal, SHA-256 of the original bytes) with every personal value masked. Never raises:
    a message that cannot be masked is kept without its bytes and key."""
    try:
        return _masked(kind, columns, key, rejected)
    except Exception:  # noqa: BLE001 - see the docstring
        reason = _mask_digits(rejected.reason.split(":")[0])
        return None, Rejected(b"", reason, ()), hashlib.sha256(rejected.raw).digest()


def _masked(kind: Kind, columns: Columns, key: bytes | None, rejected: Rejected) -> tuple[bytes | None, Rejected, bytes]:
    masker = _Masker(kind, columns)
    raw = _masked_json(masker, rejected.raw)
    key_text = None if key is None else key.decode("utf-8", "replace")
    if key_text is not None:
        parsed = _json(key) if key_text.lstrip().startswith("{") else None  # as ``decode`` reads keys
        if parsed is not None:
            key_text = json.dumps(masker.walk(parsed), ensure_ascii=False).encode("utf-8", "replace").decode()
        elif kind.name == "contacts":
            key_text = masker.value(key_text.strip())  # a contact's key is its owner id
        else:
            key_text = _mask_digits(key_text)
    reason = masker.text(rejected.reason)
    errors = tuple(FieldError(field=masker.text(e.field), message=masker.text(e.message)) for e in rejected.errors)
    return (None if key_text is None else key_text.encode()), Rejected(raw, reason, errors), \
        hashlib.sha256(rejected.raw).digest()


def _json(raw: bytes):
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _masked_json(masker: _Masker, raw: bytes) -> bytes:
    """The message as JSON with the personal values masked; a message that is not JSON as text with
    every "name": "value" of a personal field and every digit run masked."""
    data = _json(raw) if raw else None
    if data is not None:
        try:
            return json.dumps(masker.walk(data), ensure_ascii=False).encode("utf-8", "replace")
        except RecursionError:
            return b"(nested too deeply to keep)"
    text = raw.decode("utf-8", "replace")
    for name in masker.names:
        text = re.sub(rf'("{re.escape(name)}"\s*:\s*)("(?:[^"\\]|\\.)*"|[^,}}\s]+)',
                      lambda m: m.group(1) + json.dumps(masker.value(m.group(2).strip('"')), ensure_ascii=False),
                      text)
    return masker.text(text).encode("utf-8", "replace")
