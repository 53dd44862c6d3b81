"""A camera event is decoded in one step (pydantic parses the JSON), and whatever that step refuses is
decoded the careful way: either way the worker gets the same message, or the same reasons to set it aside."""

import json
from pathlib import Path

import pytest

from schemas.codec import Rejected, camera_event_adapter, decode_camera_event, validate_with
from schemas.events import validation_context

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples"
CONTEXT = validation_context({"https", "s3"})


def careful(raw: bytes):
    """The two-step decoding (JSON first, then validation) the one step must agree with."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        return Rejected(raw, f"not JSON: {type(exc).__name__}", ())
    return validate_with(camera_event_adapter, data, raw, CONTEXT)


VALID = [(EXAMPLES / f"{name}.json").read_bytes() for name in ("VehicleObserved", "VehicleDeparted", "ViolationDetected")]


def _variant(name: str, **changes) -> bytes:
    event = json.loads((EXAMPLES / f"{name}.json").read_text())
    event.update(changes)
    return json.dumps(event, ensure_ascii=False).encode()


ODD = [
    _variant("VehicleObserved", plate="浙A·12345"),                          # normalized on arrival
    _variant("ViolationDetected", location={"lat": 30.28, "lon": 120.02, "datum": "gcj02"}),  # converted
    _variant("VehicleObserved", evidence={"image_url": "s3://bucket/a.jpg"}),  # a scheme the operator allows
    _variant("VehicleObserved", taken_at="2026-11-26T10:42:00"),              # no offset
    _variant("VehicleObserved", colour="red"),                                # unknown field
    _variant("VehicleObserved", type="Teleported"),                           # unknown type
    _variant("VehicleObserved", evidence={"image_url": "javascript:alert(1)"}),
    _variant("VehicleObserved", location={"lat": float("nan"), "lon": 120.0}),  # NaN: JSON only to Python
    b'{"type": "VehicleObserved", "plate": 12345}',
    b"not json at all",
    b"\xff\xfe",
    b"[1, 2]",
]


@pytest.mark.parametrize("raw", VALID + ODD)
def test_the_one_step_decodes_as_the_careful_way(raw: bytes):
    fast = decode_camera_event(raw, CONTEXT)
    slow = careful(raw)
    if isinstance(slow, Rejected):
        assert isinstance(fast, Rejected)
        assert fast.errors == slow.errors
        if not slow.reason.startswith("not JSON"):
            assert fast.reason == slow.reason
    else:
        assert fast == slow
        assert type(fast) is type(slow)
