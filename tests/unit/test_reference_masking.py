"""A reference feed's dead letter keeps no personal data (pipeline/reference/masking.py): phones, owner ids
and contact names are masked in the message, its key, the reason and the errors; the original bytes'
SHA-256 is kept instead."""

import hashlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.reference.decode import decode
from pipeline.reference.masking import masked
from pipeline.reference.tables import BY_NAME, Columns
from schemas.codec import Rejected
from tests.privacy import no_phone_in
from tests.unit.test_reference_decode import hostile_message

pytestmark = pytest.mark.unit

CONTACTS, PLATES = BY_NAME["contacts"], BY_NAME["plates"]
PHONE, OWNER, NAME = "13812348000", "330106198801011234", "张三丰"
TELECOM = Columns({"contacts": {"owner_id": "zjhm", "phone": "sjhm", "contact_name": "lxr", "language": "yy"}})


def no_personal_data(text: str, where: str) -> None:
    no_phone_in(text, where, PHONE)
    for value in (OWNER, OWNER[-8:], NAME):
        if value in text:
            raise AssertionError(f"an owner's id or name reached {where}")


def masked_refusal(kind, key: bytes | None, value: bytes, columns: Columns = Columns()):
    rejected = decode(kind, key, value, columns)
    assert isinstance(rejected, Rejected)
    return masked(kind, columns, key, rejected)


def everything(key, rejected) -> str:
    return " ".join([(key or b"").decode(), rejected.raw.decode(), rejected.reason,
                     *(f"{e.field} {e.message}" for e in rejected.errors)])


@pytest.mark.parametrize("key, value", [
    # a refused contact in our JSON: the key names another owner (the reason repeats both ids)
    (b"330106198801019999", json.dumps({"owner_id": OWNER, "phone": PHONE, "owner_kind": "fleet",
                                        "contact_name": NAME})),
    # a Debezium update under the telecom's column names, with an unknown column holding the number too
    (json.dumps({"zjhm": OWNER}), json.dumps({"schema": {}, "payload": {
        "op": "u", "before": None, "after": {"zjhm": OWNER, "sjhm": PHONE, "lxr": NAME, "yy": "fr", "bz": PHONE}}})),
    # not JSON at all
    (OWNER, f'{{"zjhm": "{OWNER}", "sjhm": {PHONE}, "lxr": "{NAME}" <cut>'),
    # a phone as a JSON number
    (OWNER, json.dumps({"owner_id": OWNER, "phone": int(PHONE), "lang": 1})),
    # a phone as a JSON number with a fraction, under a column nobody mapped (found by the test below)
    (OWNER, json.dumps({"owner_id": OWNER, "": float(PHONE), "lang": 1})),
])
def test_a_refused_contact_keeps_no_phone_owner_id_or_name_and_the_hash_of_its_bytes(key, value):
    key, value = (key.encode() if isinstance(key, str) else key), value.encode()
    key_kept, rejected, digest = masked_refusal(CONTACTS, key, value, TELECOM)

    no_personal_data(everything(key_kept, rejected), "the dead letter")
    assert digest == hashlib.sha256(value).digest()
    assert rejected.reason and rejected.raw, "the dead letter still says what was wrong, and shows the message's shape"


def test_the_masked_message_keeps_its_shape_and_the_fields_that_are_not_personal():
    value = json.dumps({"owner_id": OWNER, "phone": PHONE, "language": "fr"}).encode()
    _, rejected, _ = masked_refusal(CONTACTS, OWNER.encode(), value)

    kept = json.loads(rejected.raw)
    assert kept == {"owner_id": "33**************34", "phone": "138****8000", "language": "fr"}
    assert [e.field for e in rejected.errors] == ["language"]


def test_a_refused_plate_keeps_its_plate_and_masks_its_owner():
    value = json.dumps({"plate": "浙A12345", "owner_id": OWNER, "vehicle_colour": "blue"}, ensure_ascii=False).encode()
    key, rejected, _ = masked_refusal(PLATES, "浙A12345".encode(), value)

    assert key.decode() == "浙A12345" and "浙A12345" in rejected.raw.decode()
    no_personal_data(everything(key, rejected), "the dead letter")


def test_a_contact_s_plain_key_is_its_owner_id_masked_as_it_was_written():
    key, _, _ = masked_refusal(CONTACTS, OWNER.encode(), b"{not json")

    assert key == b"33**************34"


@pytest.mark.parametrize("kind", list(BY_NAME.values()), ids=list(BY_NAME))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_no_refused_message_however_hostile_leaves_a_phone_in_its_dead_letter(kind, data):
    key, value = data.draw(hostile_message(kind))
    rejected = decode(kind, key, value, Columns())
    if isinstance(rejected, Rejected):
        key_kept, kept, _ = masked(kind, Columns(), key, rejected)
        no_phone_in(everything_lenient(key_kept, kept), "the dead letter")


def everything_lenient(key, rejected) -> str:
    return " ".join([(key or b"").decode("utf-8", "replace"), rejected.raw.decode("utf-8", "replace"),
                     rejected.reason, *(f"{e.field} {e.message}" for e in rejected.errors)])
