"""plate -> phone: looked up on the caller's connection, cached with a TTL (misses too)."""

from pipeline.lookups.owners import PostgresOwnerDirectory, decide_owner


class Connection:
    def __init__(self, phones: dict[str, str]):
        self.phones = phones
        self.queries = 0

    async def fetch(self, sql: str, plate: str, at=None):
        self.queries += 1
        phone = self.phones.get(plate)
        return [{"plate_type": "02", "owner_id": "o1", "vehicle_colour": None, "phone": phone, "language": "zh",
                 "opted_out": False}] if phone else []


async def test_the_owner_s_phone_is_looked_up_on_the_caller_s_connection_never_a_second_one():
    """A second connection from the pool, taken while the caller's transaction holds one, could
    wait on itself forever when the pool is busy (issue 9); the directory has no pool at all."""
    conn = Connection({"浙A12345": "13800138000"})
    owners = PostgresOwnerDirectory(max_size=10, ttl_seconds=60)
    assert await owners.phone_for("浙A12345", conn) == "13800138000"
    assert await owners.phone_for("浙B00000", conn) is None
    assert await owners.phone_for("浙A12345", conn) == "13800138000"
    assert await owners.phone_for("浙B00000", conn) is None
    assert conn.queries == 2, "hits and misses are cached"


def registration(plate_type="02", owner_id="o1", vehicle_colour=None, phone="13800138000", language="zh",
                 opted_out=False) -> dict:
    return {"plate_type": plate_type, "owner_id": owner_id, "vehicle_colour": vehicle_colour, "phone": phone,
            "language": language, "opted_out": opted_out}


def test_a_plate_under_two_types_and_no_type_from_the_camera_goes_to_review_not_to_a_guessed_owner():
    both = [registration("01", "fleet-1"), registration("02", "person-2", phone="13900139000")]
    assert decide_owner(both, None, None).review_reason == "plate_type_ambiguous"
    assert decide_owner(both, None, None).phone is None
    answer = decide_owner(both, ("02",), None)
    assert answer.found and answer.owner_id == "person-2" and answer.phone == "13900139000"
    assert decide_owner(both, ("52",), None).review_reason == "plate_type_mismatch"


def test_a_vehicle_colour_that_contradicts_the_registry_goes_to_review():
    white_car = [registration(vehicle_colour="A")]
    assert decide_owner(white_car, None, "J").review_reason == "vehicle_colour_mismatch"
    assert decide_owner(white_car, None, "A").found
    assert decide_owner([registration()], None, "J").found, "a registry without a colour contradicts nothing"


def test_an_opted_out_phone_or_no_valid_contact_goes_to_review():
    assert decide_owner([registration(opted_out=True)], None, None).review_reason == "sms_opt_out"
    assert decide_owner([registration(phone=None)], None, None).review_reason == "no_valid_contact"
    assert decide_owner([], None, None).review_reason == "not_registered"
    english = decide_owner([registration(language="en")], None, None)
    assert english.language == "en"


def test_an_answer_never_shows_the_phone_unmasked():
    answer = decide_owner([registration()], None, None)
    assert "13800138000" not in repr(answer) and "138****8000" in repr(answer)


async def test_invalidate_and_clear_drop_what_is_cached():
    conn = Connection({"浙A12345": "13800138000"})
    owners = PostgresOwnerDirectory(max_size=10, ttl_seconds=600)
    await owners.phone_for("浙A12345", conn)
    conn.phones["浙A12345"] = "13900139000"
    assert await owners.phone_for("浙A12345", conn) == "13800138000", "cached until told"
    owners.invalidate("浙A12345")
    assert await owners.phone_for("浙A12345", conn) == "13900139000"
    conn.phones["浙A12345"] = "13700137000"
    owners.clear()
    assert await owners.phone_for("浙A12345", conn) == "13700137000"


def test_given_a_number_under_two_types_of_the_colour_the_camera_read_when_deciding_then_an_officer_decides():
    """A yellow plate may be a large vehicle's or a trailer's: a number registered as both is never guessed."""
    large, trailer, small = registration("01", "o1"), registration("15", "o2"), registration("02", "o3")
    yellow = ("01", "07", "13", "15", "16")
    assert decide_owner([large, trailer, small], yellow, None).review_reason == "plate_type_ambiguous"
    answer = decide_owner([large, small], yellow, None)
    assert answer.found and answer.owner_id == "o1"
    assert decide_owner([small], yellow, None).review_reason == "plate_type_mismatch"
