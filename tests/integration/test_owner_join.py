"""Issue 11, musts 1 and 2 on the real stack: the owner join uses the plate type or colour and the vehicle
colour the camera read, and the contact registry's validity, opt-outs and languages. A misread plate never
warns a stranger: each doubt sends the case to an officer."""

import json

from pipeline.data.transfer import import_file
from pipeline.demo import city

from .conftest import Stack, wait_for

CAMERA = city.CAMERAS[0]


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


async def test_the_camera_reading_picks_the_registration_and_every_doubt_goes_to_an_officer(stack: Stack, tmp_path):
    plates = write(tmp_path / "plates.csv", "plate,plate_type,owner_id,vehicle_colour\n"
                   "浙A7K001,02,p-blue,A\n浙A7K001,01,fleet-yellow,\n"   # one number, two registrations
                   "浙A7K002,02,p-blue,A\n浙A7K002,01,fleet-yellow,\n"
                   "浙A7K003,02,p-white,A\n"
                   "浙A7K004,02,p-out,\n"
                   "浙A7K005,52,p-en,\n")
    contacts = write(tmp_path / "contacts.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"owner_id": "p-blue", "phone": "13800000001"},
        {"owner_id": "fleet-yellow", "phone": "13800000002", "owner_kind": "fleet", "contact_name": "调度 李"},
        {"owner_id": "p-white", "phone": "13800000003"},
        {"owner_id": "p-out", "phone": "13800000004", "sms_opt_out": True},
        {"owner_id": "p-en", "phone": "13800000005", "language": "en"}]))
    async with stack.pool.acquire() as conn:
        assert (await import_file(conn, "plates", plates)).applied
        assert (await import_file(conn, "contacts", contacts)).applied
    worker = stack.worker()
    await worker.ready()

    def violation(plate, **read):
        return stack.violation(plate, CAMERA).model_copy(update=read)

    await stack.publish(violation("浙A7K001"))
    ambiguous = await stack.wait_state("浙A7K001", "review", timeout=20)
    assert "more than one plate type" in ambiguous["reason"]

    await stack.publish(violation("浙A7K003", vehicle_colour="J"))  # registered white, read black
    assert "vehicle colour contradicts" in (await stack.wait_state("浙A7K003", "review", timeout=20))["reason"]
    await stack.publish(violation("浙A7K004"))
    assert "opt-out" in (await stack.wait_state("浙A7K004", "review", timeout=20))["reason"]

    # The same number read on a yellow plate: the large vehicle's registration, its fleet's phone.
    await stack.publish(violation("浙A7K002", plate_colour="yellow"))
    await stack.publish(violation("浙A7K005", plate_type="52"))
    yellow = await stack.wait_state("浙A7K002", "warned", timeout=20)
    assert yellow["plate_type"] == "01"
    await stack.wait_state("浙A7K005", "warned", timeout=20)

    async def texts():
        lines = stack.handset_lines()
        return lines if len(lines) >= 2 else None
    by_plate = {next(p for p in ("浙A7K002", "浙A7K005") if p in line["text"]): line for line in
                await wait_for(texts, 20, "the two warnings")}
    assert by_plate["浙A7K002"]["to"] == "138****0002", "the yellow plate's owner, not the blue one's"
    assert by_plate["浙A7K005"]["to"] == "138****0005"
    assert "Move by" in by_plate["浙A7K005"]["text"], "the owner's preferred language"
    assert "前驶离" in by_plate["浙A7K002"]["text"]
    assert len(stack.handset_lines()) == 2, "no SMS for a case an officer decides"
