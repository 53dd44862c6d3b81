"""The published contract: JSON Schema files generated from the models in ``schemas.events`` and
``schemas.reference``.

The files live in ``schemas/json/v<SCHEMA_VERSION>/<Name>.schema.json``, are checked in, and are
served at ``/v1/schemas/<Name>.schema.json``. ``parkwarden schemas --write`` regenerates them; a
unit test fails when they drift from the models. The models stay the reference: they also
normalize plates and convert GCJ-02 positions, which a JSON Schema cannot say.
"""

import json
from pathlib import Path

from pydantic import BaseModel, TypeAdapter

from schemas import events, reference, topics
from schemas.events import SCHEMA_VERSION

SCHEMA_DIR = Path(__file__).parent / "json" / f"v{SCHEMA_VERSION}"
EXAMPLES_DIR = Path(__file__).parent / "examples"
DIALECT = "https://json-schema.org/draft/2020-12/schema"

MODELS: tuple[type[BaseModel], ...] = (
    events.ViolationDetected, events.VehicleObserved, events.VehicleDeparted, events.CarParkStatus,
    events.CaseOpened, events.WarningSent, events.WarningDelivered, events.SmsSent, events.CaseClosed, events.TicketIssued,
    events.TicketVoided,
    events.AppealDecided,
    events.RecheckRequested, events.DeadLetter,
    reference.PlateRecord, reference.ContactRecord, reference.CarParkRecord, reference.CameraRecord,
)
"""Every message with its own schema file (and its own example in ``schemas/examples``)."""

CAMERA_EVENT = "CameraEvent"
"""The union of the three camera events, picked by ``type``: what ``camera-events`` carries."""


def _topic_of(name: str) -> topics.Topic:
    if name == CAMERA_EVENT:
        return topics.CAMERA_EVENTS
    return next(t for t in topics.ALL if any(v.__name__ == name for v in t.values))


def _decorate(name: str, schema: dict, module: str = events.__name__) -> dict:
    topic = _topic_of(name)
    return {
        "$schema": DIALECT,
        "$comment": f"Generated from {module.replace('.', '/')}.py by `parkwarden schemas --write`; do not edit by hand.",
        "x-parkwarden-schema-version": SCHEMA_VERSION,
        "x-parkwarden-topic": topic.name,
        "x-parkwarden-key": topic.key,
        **schema,
    }


def json_schemas() -> dict[str, dict]:
    """File name -> JSON Schema, for every published message and the camera-event union."""
    found = {f"{m.__name__}.schema.json": _decorate(m.__name__, m.model_json_schema(), m.__module__) for m in MODELS}
    union = TypeAdapter(events.CameraEvent).json_schema()
    union["title"] = CAMERA_EVENT
    union["description"] = ("One camera event: ViolationDetected, VehicleObserved or VehicleDeparted, "
                            "picked by its 'type'.")
    found[f"{CAMERA_EVENT}.schema.json"] = _decorate(CAMERA_EVENT, union)
    return dict(sorted(found.items()))


def render(schema: dict) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def drift(directory: Path = SCHEMA_DIR) -> list[str]:
    """File names that are missing, stale or unexpected in ``directory``; empty when up to date."""
    wanted = json_schemas()
    present = {p.name for p in directory.glob("*.schema.json")} if directory.exists() else set()
    stale = [name for name, schema in wanted.items()
             if name not in present or (directory / name).read_text(encoding="utf-8") != render(schema)]
    return sorted(stale + sorted(present - set(wanted)))


def write(directory: Path = SCHEMA_DIR) -> list[str]:
    """Regenerate the schema files; return the names written (only those that changed)."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = drift(directory)
    wanted = json_schemas()
    for name in changed:
        if name in wanted:
            (directory / name).write_text(render(wanted[name]), encoding="utf-8")
        else:
            (directory / name).unlink()
    return changed
