"""Reference topics: one message -> the row to write or delete (our JSON, Debezium change events,
tombstones) or a refusal with the reason (pipeline/reference/decode.py), and the owner cache forgetting."""

import json
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.reference.decode import Delete, Upsert, decode
from pipeline.reference.feed import forget
from pipeline.reference.tables import BY_NAME, Columns
from schemas.codec import Rejected

pytestmark = pytest.mark.unit

PLATES, CONTACTS, CAMERAS = BY_NAME["plates"], BY_NAME["contacts"], BY_NAME["cameras"]
POLICE = Columns({"plates": {"plate": "hphm", "plate_type": "hpzl", "owner_id": "sfzmhm", "vehicle_make": "clpp",
                             "vehicle_colour": "csys"}})
"""The traffic police's vehicle(hphm, hpzl, sfzmhm, ...) table."""


def debezium(before, after, op, table="vehicle", with_schema=True) -> bytes:
    """A change event as Debezium's PostgreSQL connector writes it (JSON converter)."""
    payload = {"before": before, "after": after, "op": op, "ts_ms": 1764500000000,
               "source": {"version": "3.0.0.Final", "connector": "postgresql", "name": "police", "db": "vehicles",
                          "schema": "public", "table": table, "txId": 556, "lsn": 24023128, "snapshot": "false",
                          "ts_ms": 1764499999000}}
    envelope = {"schema": {"type": "struct", "name": f"police.public.{table}.Envelope", "fields": []},
                "payload": payload} if with_schema else payload
    return json.dumps(envelope, ensure_ascii=False).encode()


def debezium_key(**columns) -> bytes:
    return json.dumps({"schema": {"type": "struct", "fields": []}, "payload": columns}, ensure_ascii=False).encode()


def test_our_json_plate_row_is_an_upsert_with_the_plate_normalized():
    change = decode(PLATES, "浙A12345".encode(), json.dumps({"plate": "浙A·12345", "owner_id": "o-1"}).encode(),
                    Columns())

    assert isinstance(change, Upsert) and change.format == "json"
    assert (change.key, change.record.plate, change.record.owner_id) == (("浙A12345", "02"), "浙A12345", "o-1")


def test_a_plate_key_names_the_plate_type_after_a_slash_and_without_one_means_type_02():
    large = decode(PLATES, "浙A·12345/01".encode(), json.dumps(
        {"plate": "浙A12345", "plate_type": "01", "owner_id": "o-1", "vehicle_make": "解放", "vehicle_colour": "C"}
    ).encode(), Columns())
    small = decode(PLATES, "浙A12345".encode(), None, Columns())

    assert isinstance(large, Upsert) and large.key == ("浙A12345", "01")
    assert (large.record.vehicle_make, large.record.vehicle_colour) == ("解放", "C")
    assert isinstance(small, Delete) and small.key == ("浙A12345", "02")


@pytest.mark.parametrize("key, row, field, words", [
    ("浙A12345", {"plate_type": "01"}, "plate_type", "the key says '浙A12345/02' but the row's plate_type is '01'"),
    ("浙A12345/01", {}, "plate_type", "the key says '浙A12345/01' but the row's plate_type is '02'"),
    ("浙A12345/09", {"plate_type": "09"}, "(key)", "the key's plate type: unknown plate type '09'"),
    ("浙A12345/", {}, "(key)", "unknown plate type ''"),
    ("浙A12345", {"plate_type": "2"}, "plate_type", "unknown plate type '2': a GA 24.7 code"),
    ("浙A12345", {"vehicle_colour": "blue"}, "vehicle_colour", "Input should be 'A', 'B'"),
])
def test_a_plate_of_an_unknown_type_or_keyed_as_another_registration_is_refused(key, row, field, words):
    value = json.dumps({"plate": "浙A12345", "owner_id": "o-1", **row}).encode()
    change = decode(PLATES, key.encode(), value, Columns())

    assert isinstance(change, Rejected)
    assert words in change.reason
    assert field in [e.field for e in change.errors]


@pytest.mark.parametrize("with_schema", [True, False], ids=["envelope", "schemas-disabled"])
@pytest.mark.parametrize("op", ["c", "u", "r"])
def test_a_debezium_insert_update_or_snapshot_read_of_the_police_table_is_an_upsert_of_our_columns(op, with_schema):
    row = {"hphm": "浙A12345", "hpzl": "01", "sfzmhm": "330106198801011234", "clpp": "大众", "csys": "H",
           "ccdjrq": 12000}
    change = decode(PLATES, debezium_key(hphm="浙A12345", hpzl="01"),
                    debezium({"hphm": "浙A12345", "hpzl": "01"}, row, op, with_schema=with_schema), POLICE)

    assert isinstance(change, Upsert) and change.format == "debezium"
    assert change.key == ("浙A12345", "01")
    assert (change.record.plate_type, change.record.owner_id, change.record.vehicle_make,
            change.record.vehicle_colour) == ("01", "330106198801011234", "大众", "H")


def test_a_debezium_key_without_the_plate_type_column_names_type_02():
    row = {"hphm": "浙A12345", "sfzmhm": "330106198801011234"}
    change = decode(PLATES, debezium_key(hphm="浙A12345"), debezium(None, row, "c"), POLICE)
    other_type = decode(PLATES, debezium_key(hphm="浙A12345"), debezium(None, {**row, "hpzl": "01"}, "c"), POLICE)

    assert isinstance(change, Upsert) and change.key == ("浙A12345", "02")
    assert isinstance(other_type, Rejected) and "the key says '浙A12345/02'" in other_type.reason


def test_a_debezium_delete_and_a_tombstone_remove_the_row_their_key_names():
    delete = decode(PLATES, debezium_key(hphm="浙A12345", hpzl="01"),
                    debezium({"hphm": "浙A12345", "hpzl": "01"}, None, "d"), POLICE)
    tombstone = decode(PLATES, debezium_key(hphm="浙A12345", hpzl="01"), None, POLICE)
    plain = decode(CONTACTS, b"o-1", None, Columns())
    other_row = decode(PLATES, debezium_key(hphm="浙A12345", hpzl="01"),
                       debezium({"hphm": "浙A12345", "hpzl": "02"}, None, "d"), POLICE)

    assert isinstance(delete, Delete) and delete.key == ("浙A12345", "01") and delete.format == "debezium"
    assert isinstance(tombstone, Delete) and tombstone.key == ("浙A12345", "01") and tombstone.format == "tombstone"
    assert isinstance(plain, Delete) and plain.key == ("o-1",)
    assert isinstance(other_row, Rejected) and [e.field for e in other_row.errors] == ["before.hpzl"]


def test_a_contact_carries_its_language_kind_designated_name_and_opt_out():
    row = {"owner_id": "fleet-7", "phone": "13800138000", "language": "en", "owner_kind": "fleet",
           "contact_name": "Li Lei", "sms_opt_out": True}
    change = decode(CONTACTS, b"fleet-7", json.dumps(row).encode(), Columns())
    default = decode(CONTACTS, b"o-1", json.dumps({"owner_id": "o-1", "phone": "13800138000"}).encode(), Columns())

    assert isinstance(change, Upsert) and change.key == ("fleet-7",)
    assert (change.record.language, change.record.owner_kind, change.record.contact_name,
            change.record.sms_opt_out) == ("en", "fleet", "Li Lei", True)
    assert isinstance(default, Upsert)
    assert (default.record.language, default.record.owner_kind, default.record.sms_opt_out) == (None, "person", False)


def test_a_debezium_date_column_in_days_since_1970_is_a_date():
    row = {"id": "cam-x-1", "integrator": "acme", "lat": 30.28, "lon": 120.0, "place": "文一西路", "zone": "yuhang",
           "direction": None, "commissioned_on": 20_393}
    change = decode(CAMERAS, b'{"id": "cam-x-1"}', debezium(None, row, "c", table="cameras"), Columns())

    assert isinstance(change, Upsert) and change.record.commissioned_on == date(2025, 11, 1)


@pytest.mark.parametrize("key, value, field, words", [
    (b"o-1", b"{not json", "", "not JSON"),
    (b"o-1", b"[1, 2]", "(message)", "not a JSON object"),
    (b"o-1", json.dumps({"owner_id": "o-1", "phone": "call me"}).encode(), "phone", "invalid ContactRecord"),
    (b"o-1", json.dumps({"owner_id": "o-1", "phone": "13800138000", "fax": "1"}).encode(), "fax", "invalid"),
    (b"o-2", json.dumps({"owner_id": "o-1", "phone": "13800138000"}).encode(), "owner_id", "the key says 'o-2'"),
    (None, json.dumps({"owner_id": "o-1", "phone": "13800138000"}).encode(), "(key)", "no key"),
    (b"o-1", debezium(None, {"owner_id": "o-1", "phone": "13800138000"}, "t"), "op", "unknown Debezium op 't'"),
    (b"o-1", debezium(None, {"owner_id": "o-1", "phone": "13800138000"}, "x"), "op", "unknown Debezium op"),
    (b"o-1", debezium(None, None, "u"), "after", "without the row in 'after'"),
    (b"o-1", debezium(None, {"owner_id": "o-1"}, "c"), "after.phone", "Field required"),
    (b"o-1", json.dumps({"schema": {}, "payload": None}).encode(), "payload", "no payload"),
    (b"o-1", json.dumps({"owner_id": "o-1", "phone": "13800138000", "owner_kind": "company"}).encode(),
     "contact_name", "a fleet or company needs its designated contact's name"),
    (b"o-1", json.dumps({"owner_id": "o-1", "phone": "13800138000", "language": "fr"}).encode(), "language",
     "Input should be 'zh' or 'en'"),
])
def test_a_message_that_cannot_be_used_is_refused_naming_the_field_and_the_reason(key, value, field, words):
    change = decode(CONTACTS, key, value, Columns())

    assert isinstance(change, Rejected)
    assert words in change.reason
    assert change.raw == value
    if field:
        assert field in [e.field for e in change.errors]


def test_a_debezium_row_missing_a_mapped_column_names_the_source_column():
    change = decode(PLATES, debezium_key(hphm="浙A12345"), debezium(None, {"hphm": "浙A12345"}, "c"), POLICE)

    assert isinstance(change, Rejected) and [e.field for e in change.errors] == ["after.sfzmhm"]


def test_a_debezium_row_with_an_unknown_plate_type_names_the_source_column():
    row = {"hphm": "浙A12345", "hpzl": "09", "sfzmhm": "330106198801011234"}
    change = decode(PLATES, debezium_key(hphm="浙A12345", hpzl="02"), debezium(None, row, "c"), POLICE)
    keyed = decode(PLATES, debezium_key(hphm="浙A12345", hpzl="09"), debezium(None, row, "c"), POLICE)

    assert isinstance(change, Rejected) and [e.field for e in change.errors] == ["after.hpzl"]
    assert "unknown plate type '09'" in change.reason
    assert isinstance(keyed, Rejected) and "the key's plate type: unknown plate type '09'" in keyed.reason


def test_a_column_mapping_naming_an_unknown_kind_or_field_is_refused():
    with pytest.raises(ValueError, match="unknown kind"):
        Columns.parse('{"vehicles": {}}')
    with pytest.raises(ValueError, match="map our fields"):
        Columns.parse('{"plates": {"hpzl": "hpzl"}}')
    assert Columns.parse("").source(PLATES, "plate") == "plate"


class Directory:
    def __init__(self):
        self.forgotten = []

    def invalidate(self, plate):
        self.forgotten.append(plate)


def test_changed_plates_are_forgotten_by_the_owner_directory():
    directory = Directory()
    forget(directory, ["浙A12345", "浙B54321"])
    assert directory.forgotten == ["浙A12345", "浙B54321"]


# ── hostile input: decoding never raises, and what it lets through is in bounds ─────────────────────

JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-10**30, max_value=10**30)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
                | st.sampled_from(["浙A12345", "浙AL9R34\n", "13800138000", "\x00", "\ud800", "2026-11-01", "x" * 300]))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@st.composite
def hostile_row(draw, kind):
    """A row with the kind's own columns (so that validation is reached), each any JSON value or a good one."""
    good = GOOD_ROWS[kind.name]
    row = {field: draw(st.just(value) | JSON_VALUES) for field, value in good.items()}
    return draw(st.just(row) | st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4) | JSON_VALUES)


@st.composite
def hostile_message(draw, kind):
    """(key, value) as a hostile or careless data platform might send them to ``kind``'s topic."""
    good_key = GOOD_KEYS[kind.name]
    key = draw(st.just(good_key) | st.none() | st.binary(max_size=20)
               | JSON_VALUES.map(lambda v: json.dumps({"schema": {}, "payload": v}).encode())
               | st.dictionaries(st.sampled_from(kind.key), JSON_VALUES, max_size=2).map(lambda v: json.dumps(v).encode()))
    op = draw(st.sampled_from(["c", "u", "r", "d", "t", "m"]) | JSON_VALUES)
    payload = {"op": op, "before": draw(hostile_row(kind)), "after": draw(hostile_row(kind)),
               "source": draw(JSON_VALUES)}
    value = draw(st.none() | st.binary(max_size=40)
                 | st.just(payload).map(lambda p: json.dumps({"schema": {}, "payload": p}).encode())
                 | st.just(payload).map(lambda p: json.dumps(p).encode())
                 | hostile_row(kind).map(lambda r: json.dumps(r).encode())
                 | st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n))
    return key, value


GOOD_ROWS = {
    "plates": {"plate": "浙A12345", "plate_type": "02", "owner_id": "o-1", "vehicle_make": "大众"},
    "contacts": {"owner_id": "o-1", "phone": "13800138000", "language": "zh"},
    "car-parks": {"id": "cp-1", "name": "停车场", "short_name": "停车", "lat": 30.28, "lon": 120.0, "capacity": 50},
    "cameras": {"id": "cam-1", "integrator": "acme", "lat": 30.28, "lon": 120.0, "place": "文一西路", "zone": "yuhang",
                "commissioned_on": "2025-11-01"},
}
GOOD_KEYS = {"plates": "浙A12345".encode(), "contacts": b"o-1", "car-parks": b"cp-1", "cameras": b"cam-1"}


def in_bounds(change) -> None:
    """What a change may carry to PostgreSQL: ids of at most 200 characters, text PostgreSQL stores."""
    assert all(len(v) <= 200 and "\x00" not in v for v in change.key)
    if isinstance(change, Upsert):
        for value in change.record.__dict__.values():
            if isinstance(value, str):
                value.encode("utf-8")
                assert "\x00" not in value and "\n" not in value.strip()


@pytest.mark.parametrize("kind", list(BY_NAME.values()), ids=list(BY_NAME))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_decoding_any_json_or_debezium_envelope_never_raises_and_lets_only_bounded_values_through(kind, data):
    key, value = data.draw(hostile_message(kind))
    change = decode(kind, key, value, Columns())

    assert isinstance(change, (Upsert, Delete, Rejected))
    if isinstance(change, Rejected):
        assert change.reason and change.raw == (value or b"")
    else:
        in_bounds(change)


def test_a_debezium_date_out_of_range_is_refused_naming_the_column():
    row = {**GOOD_ROWS["cameras"], "commissioned_on": 99_999_999}
    change = decode(CAMERAS, b"cam-1", debezium(None, row, "c", table="cameras"), Columns())

    assert isinstance(change, Rejected)
    assert [e.field for e in change.errors] == ["after.commissioned_on"]
    assert "not a date between 1900-01-01 and 2199-12-31" in change.reason


@pytest.mark.parametrize("kind, value, field", [
    ("cameras", {**GOOD_ROWS["cameras"], "place": "文一\x00西路"}, "place"),
    ("contacts", {**GOOD_ROWS["contacts"], "contact_name": "\ud800"}, "contact_name"),
])
def test_text_postgresql_cannot_store_is_refused_naming_the_field(kind, value, field):
    change = decode(BY_NAME[kind], GOOD_KEYS[kind], json.dumps(value).encode(), Columns())

    assert isinstance(change, Rejected) and [e.field for e in change.errors] == [field]
