"""Reading a city's files: every row validated and refused rows named (row, field, reason);
GeoJSON and FIWARE NGSI-LD car parks read as the same car parks as CSV."""

import json
from zoneinfo import ZoneInfo

import pytest
from pydantic import TypeAdapter, ValidationError

from schemas.vehicles import PLATE_TYPES, VEHICLE_COLOURS, plate_types_of_colour
from pipeline.data.formats import FormatError, Problem, Writer, detect_format, read_rows
from pipeline.data.kinds import KINDS
from pipeline.data.models import CarParkRow, ContactRow, PlateRow, ZoneRow, plate_values

FIWARE_EXAMPLE = {  # the smart-data-models OffStreetParking normalized NGSI-LD example, trimmed
    "id": "urn:ngsi-ld:OffStreetParking:porto-ParkingLot-23889", "type": "OffStreetParking",
    "availableSpotNumber": {"type": "Property", "value": 132, "observedAt": "2018-09-21T12:00:00Z"},
    "category": {"type": "Property", "value": ["underground", "public", "feeCharged"]},
    "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-8.60961198807, 41.150691773]}},
    "name": {"type": "Property", "value": "Parque de estacionamento Trindade"},
    "totalSpotNumber": {"type": "Property", "value": 414},
    "@context": ["https://raw.githubusercontent.com/smart-data-models/dataModel.Parking/master/context.jsonld"],
}


def rows_of(path, fmt, kind="car-parks"):
    return list(read_rows(path, fmt, KINDS[kind].fields))


def test_every_kind_s_staging_columns_are_its_model_s_fields_in_order():
    for kind in KINDS.values():
        assert tuple(kind.stage_types) == kind.fields, kind.name


def test_a_fiware_offstreetparking_entity_reads_as_a_car_park(tmp_path):
    path = tmp_path / "parks.jsonld"
    key_values = {"id": "urn:ngsi-ld:OffStreetParking:cp-2", "type": "OffStreetParking", "name": "西溪",
                  "location": {"type": "Point", "coordinates": [120.02, 30.27]}, "totalSpotNumber": 90}
    path.write_text(json.dumps([FIWARE_EXAMPLE, key_values]))
    (n1, first), (n2, second) = rows_of(path, detect_format(path, None))
    assert (n1, n2) == (1, 2)
    park = CarParkRow.model_validate(first)
    assert (park.id, park.name, park.short_name) == ("porto-ParkingLot-23889", "Parque de estacionamento Trindade",
                                                     "Parque de estacionamento Trindade")
    assert (park.lat, park.lon, park.capacity) == (41.150691773, -8.60961198807, 414)
    assert CarParkRow.model_validate(second).capacity == 90


def test_a_geojson_feature_collection_of_points_reads_as_car_parks_and_a_polygon_is_refused(tmp_path):
    path = tmp_path / "parks.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "cp-1", "properties": {"name": "仓前", "capacity": 90},
         "geometry": {"type": "Point", "coordinates": [119.9989, 30.2931]}},
        {"type": "Feature", "properties": {"id": "cp-2", "name": "x", "capacity": 1},
         "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}}]}))
    (_, park), (n, problem) = rows_of(path, "geojson")
    assert CarParkRow.model_validate(park).lat == 30.2931
    assert n == 2 and problem == Problem("geometry", "a car park is a GeoJSON Point [lon, lat]")


def test_car_parks_written_as_geojson_and_fiware_read_back_the_same(tmp_path):
    parks = [{"id": "cp-1", "name": "仓前街道公共停车场", "short_name": "仓前", "lat": 30.2931, "lon": 119.9989,
              "capacity": 90, "address": "余杭区仓前街道办事处西侧", "phone": "0571-88000001", "free_spaces": None}]
    for fmt, name in (("geojson", "p.geojson"), ("fiware", "p.jsonld"), ("csv", "p.csv"), ("jsonl", "p.jsonl")):
        writer = Writer(tmp_path / name, fmt, KINDS["car-parks"].fields)
        for p in parks:
            writer.write(p)
        writer.close()
        back = [CarParkRow.model_validate(r).model_dump() for _, r in rows_of(tmp_path / name, fmt)]
        assert back == [{k: v for k, v in parks[0].items() if k != "free_spaces"}], fmt


def test_a_csv_with_a_bad_row_names_its_line_and_field(tmp_path):
    path = tmp_path / "plates.csv"
    path.write_text("plate,plate_type,owner_id,vehicle_colour\n浙A12345,02,o1,A\n浙A1234,07,o2,Q\n浙·b 54321,,o3,\n",
                    encoding="utf-8")
    rows = rows_of(path, "csv", "plates")
    assert [n for n, _ in rows] == [2, 3, 4]
    with pytest.raises(ValidationError) as refused:
        TypeAdapter(list[PlateRow]).validate_python([r for _, r in rows])
    problems = {(e["loc"][0], e["loc"][1]) for e in refused.value.errors()}
    assert problems == {(1, "plate"), (1, "vehicle_colour")}
    good = PlateRow.model_validate(rows[2][1])
    assert (good.plate, good.plate_type) == ("浙B54321", "02"), "normalized, and the small-car type by default"


def test_an_unknown_csv_column_refuses_the_file_naming_the_known_ones(tmp_path):
    path = tmp_path / "plates.csv"
    path.write_text("plate,owner_id,vehicle_color\n浙A12345,o1,A\n", encoding="utf-8")
    with pytest.raises(FormatError, match="'vehicle_color'.*vehicle_colour"):
        rows_of(path, "csv", "plates")


def test_a_json_line_that_is_not_json_is_a_problem_of_its_line(tmp_path):
    path = tmp_path / "zones.jsonl"
    path.write_text('{"id": "school", "name": "学校"}\n{"id": \n\n[1]\n', encoding="utf-8")
    rows = rows_of(path, "jsonl", "zones")
    assert rows[0] == (1, {"id": "school", "name": "学校"})
    assert rows[1][0] == 2 and isinstance(rows[1][1], Problem)
    assert rows[2] == (4, Problem("", "each line must be a JSON object"))


def test_contacts_need_a_period_in_order_and_fleets_a_designated_contact():
    with pytest.raises(ValidationError) as refused:
        TypeAdapter(list[ContactRow]).validate_python(
            [{"owner_id": "fleet-1", "phone": "13800138000", "owner_kind": "fleet",
              "valid_from": "2026-02-01", "valid_to": "2026-01-01"}], context={"tz": ZoneInfo("Asia/Shanghai")})
    fields = {e["loc"][1] for e in refused.value.errors()}
    assert fields == {"valid_to", "contact_name"}
    assert "13800138000" not in str(refused.value.errors(include_input=False))
    contact = ContactRow.model_validate({"owner_id": "o", "phone": "13800138000", "valid_from": "2026-02-01"},
                                        context={"tz": ZoneInfo("Asia/Shanghai")})
    assert contact.valid_from.isoformat() == "2026-02-01T00:00:00+08:00", "a date is midnight in the city"


def test_zone_exempt_hours_go_in_pairs():
    with pytest.raises(ValidationError, match="both or neither"):
        ZoneRow.model_validate({"id": "school", "name": "学校", "exempt_reason": "night", "exempt_from_hour": 22})
    assert ZoneRow.model_validate({"id": "school", "name": "学校", "window_seconds": "300"}).window_seconds == 300


def test_the_code_catalogues_name_each_code_in_both_languages():
    assert PLATE_TYPES["02"].zh == "小型汽车" and PLATE_TYPES["02"].plate_colour == "blue"
    assert PLATE_TYPES["52"].plate_colour == "green" and PLATE_TYPES["23"].plate_colour == "white"
    assert VEHICLE_COLOURS["A"].en == "white"
    assert plate_types_of_colour("green") == ["52"]


def test_the_plain_check_of_a_plate_row_takes_a_row_only_as_the_row_model_has_it():
    """``plate_values`` (a plates import's hot path) passes a row only when PlateRow would give exactly
    those values; any other row goes to the model, which normalizes or refuses it."""
    from pipeline.data.models import plate_values

    cases = [("浙A1B2C3", "02", "o-1", "Geely", "A"), ("浙A1B2C3", "", "o-1", "", ""), ("浙AD12345", "52", "o", "", "J"),
             ("浙a1b2c3", "02", "o-1", "", ""), ("浙A·1B2C3", "", "o-1", "", ""), ("浙A1B2C3", "2", "o-1", "", ""),
             ("浙A1B2C3", "02", " o-1", "", ""), ("浙A1B2C3", "02", "o-1\u3000", "", ""), ("浙A1B2C3", "02", "", "", ""),
             ("浙A1B2C3", "02", "o" * 65, "", ""), ("浙A1B2C3", "02", "o-1", " Geely", ""), ("浙A1B2C3", "02", "o-1", "  ", ""),
             ("浙A1B2C3", "02", "o-1", "G" * 201, ""), ("浙A1B2C3", "02", "o-1", "", "a"), ("浙A1B2C3", "02", "o-1", "", "Q"),
             ("浙A1B2CI", "02", "o-1", "", ""), ("A1B2C3", "02", "o-1", "", "")]
    names = ("plate", "plate_type", "owner_id", "vehicle_make", "vehicle_colour")
    for values in cases:
        fast = plate_values(*values)
        try:
            model = tuple(PlateRow.model_validate({k: v for k, v in zip(names, values) if v != ""}).__dict__.values())
        except ValidationError:
            model = None
        assert fast is None or fast == model, values
    assert plate_values(*cases[0]) == cases[0] and plate_values(*cases[1]) == ("浙A1B2C3", "02", "o-1", None, None)


# ── identifiers are matched whole (fullmatch), a trailing newline included ───────────────────────────

@pytest.mark.parametrize("plate", ["浙AL9R34\n", "浙AD12345\n"])
def test_a_plate_with_a_trailing_newline_is_stored_without_it(plate):
    assert PlateRow(plate=plate, owner_id="o-1").plate == plate.strip()
    assert plate_values(plate, "", "o-1", "", "") is None, "the plain check leaves it to the row model"


def test_an_operator_name_with_a_trailing_newline_is_refused():
    from pipeline.console import auth

    auth.check_name_and_role("li", "viewer")
    with pytest.raises(auth.OperatorError):
        auth.check_name_and_role("li\n", "viewer")


# ── a hostile file gets a refusal per row, never a traceback ─────────────────────────────────────────

def test_a_geojson_feature_that_is_a_string_or_has_no_point_is_refused_on_its_own_row(tmp_path):
    path = tmp_path / "parks.geojson"
    good = {"type": "Feature", "properties": {"id": "cp-1", "name": "停车场", "capacity": 9},
            "geometry": {"type": "Point", "coordinates": [120.0, 30.3]}}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        "a string", good, {"geometry": {"type": "Point", "coordinates": 7}}, {"geometry": "Point"},
        {"properties": [1], "geometry": {"type": "Point", "coordinates": [120.0, 30.3]}}]}), encoding="utf-8")

    rows = rows_of(path, "geojson")

    assert [(n, type(r).__name__) for n, r in rows] == [(1, "Problem"), (2, "dict"), (3, "Problem"), (4, "Problem"),
                                                        (5, "Problem")]
    assert "not str" in rows[0][1].reason and rows[4][1].reason == "properties must be a JSON object"


def test_json_lines_nested_too_deeply_or_with_a_5000_digit_number_are_refused_on_their_own_lines(tmp_path):
    path = tmp_path / "parks.jsonl"
    good = json.dumps({"id": "cp-1", "name": "停车场", "lat": 30.3, "lon": 120.0, "capacity": 9}, ensure_ascii=False)
    path.write_text("\n".join([good, "[" * 100_000 + "]" * 100_000, '{"id": "cp-2", "capacity": ' + "9" * 5000 + "}",
                               good.replace("cp-1", "cp-3")]) + "\n", encoding="utf-8")

    rows = rows_of(path, "jsonl")

    assert [(n, type(r).__name__) for n, r in rows] == [(1, "dict"), (2, "Problem"), (3, "Problem"), (4, "dict")]
    assert "nested too deeply" in rows[1][1].reason and "digits" in rows[2][1].reason


def test_a_csv_field_over_the_reader_s_limit_is_refused_on_its_own_row_and_the_rows_after_it_are_read(tmp_path):
    path = tmp_path / "parks.csv"
    path.write_text("id,name,lat,lon,capacity\ncp-1,停车场,30.3,120.0,9\n"
                    f"cp-2,{'长' * 200_000},30.3,120.0,9\ncp-3,停车场,30.3,120.0,{'9' * 5000}\ncp-4,停车场,30.3,120.0,9\n",
                    encoding="utf-8")

    rows = rows_of(path, "csv")

    assert [n for n, r in rows if isinstance(r, Problem)] == [3]
    assert "field larger than field limit" in rows[1][1].reason
    with pytest.raises(ValidationError, match="capacity"):
        CarParkRow(**rows[2][1])
    assert rows[3][1]["id"] == "cp-4"


def test_a_file_that_is_not_utf8_or_a_document_nested_too_deeply_is_refused_as_a_whole(tmp_path):
    latin = tmp_path / "parks.csv"
    latin.write_bytes("id,name,lat,lon,capacity\ncp-1,Gare du Nord,48.88,2.35,9\ncp-2,Caf\xe9,48.8,2.3,9\n".encode("latin-1"))
    deep = tmp_path / "parks.geojson"
    deep.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")

    with pytest.raises(FormatError, match="not UTF-8"):
        rows_of(latin, "csv")
    with pytest.raises(FormatError, match="RecursionError"):
        rows_of(deep, "geojson")


def test_hostile_camera_files_are_refused_row_by_row(tmp_path):
    from pipeline.cameras.registry import CameraProblem, read_file
    from pipeline.data.all_kinds import _camera_rows

    header = "id,integrator,lat,lon,place,zone,direction,commissioned_on\n"
    rows = read_file((header + f"cam-1,acme,30.3,120.0,{'路' * 200_000},yuhang,,2026-01-01\n"
                      "cam-2,acme,30.3,120.0,文一西路,yuhang,,2026-01-01\n").encode())
    assert [type(r).__name__ for _, r in rows] == ["CameraProblem", "Camera"]
    lines = read_file(b'{"id": "cam-1"}\n' + b"[" * 100_000 + b"]" * 100_000 + b"\n")
    assert all(isinstance(r, CameraProblem) for _, r in lines) and "nested too deeply" in str(lines[1][1])
    geojson = tmp_path / "cameras.geojson"
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": ["cam-1", None, {"geometry": 1}]}))
    assert [str(r).split(":")[0] for _, r in _camera_rows(geojson, "geojson")] == [
        "a feature must be a JSON object, not str", "a feature must be a JSON object, not NoneType", "lat, lon"]
