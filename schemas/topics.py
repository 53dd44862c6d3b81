"""The topic registry: every Kafka topic parkwarden uses, with its key and value formats.

Topic names below are the base names; a deployment may prefix them (``PW_TOPIC_PREFIX``) so that
several environments share one cluster.
"""

from dataclasses import dataclass

from pydantic import BaseModel

from schemas import events, reference


@dataclass(frozen=True)
class Topic:
    name: str
    key: str
    values: tuple[type[BaseModel], ...]
    direction: str  # "in" (integrators write) or "out" (parkwarden writes)
    about: str


CAMERA_EVENTS = Topic(
    "camera-events",
    key="normalized plate (UTF-8), so that one car's events stay in order on one partition",
    values=(events.ViolationDetected, events.VehicleObserved, events.VehicleDeparted),
    direction="in",
    about="What cameras see: violations, sightings, departures. One topic per integrator, "
          "camera-events.<integrator>: the topic says who wrote the event (camera_events_of).",
)
CAR_PARK_STATUS = Topic(
    "car-park-status",
    key="car park id",
    values=(events.CarParkStatus,),
    direction="in",
    about="Live free spaces per car park.",
)
CASE_EVENTS = Topic(
    "case-events",
    key="normalized plate",
    values=(events.CaseOpened, events.WarningSent, events.WarningDelivered, events.SmsSent, events.CaseClosed),
    direction="out",
    about="Every change of a case, in order per plate.",
)
TICKETS = Topic(
    "tickets",
    key="normalized plate",
    values=(events.TicketIssued, events.TicketVoided, events.AppealDecided),
    direction="out",
    about="Electronic tickets with their evidence, voids and appeal decisions, each with its link in the ticket record.",
)
CAMERA_COMMANDS = Topic(
    "camera-commands",
    key="camera id",
    values=(events.RecheckRequested,),
    direction="out",
    about="Requests to cameras for a fresh capture. One topic per integrator, camera-commands.<integrator>: "
          "each reads only its own cameras' requests.",
)
DEAD_LETTERS = Topic(
    "dead-letters",
    key="source topic",
    values=(events.DeadLetter,),
    direction="out",
    about="Input messages that could not be used, with the reason and the original bytes.",
)

PLATES = Topic(
    "reference.plates",
    key="normalized plate (UTF-8), followed by / and the plate type unless it is 02 (浙A12345, 浙A12345/01), "
        "or the Debezium key of the source row",
    values=(reference.PlateRecord,),
    direction="in",
    about="The plate registry ((plate, plate type) -> owner), compacted: the latest row per registration; a "
          "tombstone retires it. Our JSON or a Debezium change event.",
)
CONTACTS = Topic(
    "reference.contacts",
    key="owner id, or the Debezium key of the source row",
    values=(reference.ContactRecord,),
    direction="in",
    about="The contact registry (owner -> phone from now on), compacted; a tombstone ends the owner's contact now. "
          "Our JSON or a Debezium change event.",
)
CAR_PARKS = Topic(
    "reference.car-parks",
    key="car park id, or the Debezium key of the source row",
    values=(reference.CarParkRecord,),
    direction="in",
    about="Car parks (where they are, their capacity), compacted; a tombstone deletes. Our JSON or Debezium.",
)
CAMERAS = Topic(
    "reference.cameras",
    key="camera id, or the Debezium key of the source row",
    values=(reference.CameraRecord,),
    direction="in",
    about="The camera registry, compacted; a tombstone removes the camera. Our JSON or Debezium.",
)
REFERENCE = (PLATES, CONTACTS, CAR_PARKS, CAMERAS)
"""The compacted reference topics (``cleanup.policy=compact``), materialized into PostgreSQL by the workers."""


def camera_events_of(base: str, integrator: str) -> str:
    """The camera-events topic of one integrator: ``<base>.<integrator>`` (``base`` already prefixed)."""
    return f"{base}.{integrator}"


def camera_commands_of(base: str, integrator: str) -> str:
    """The camera-commands topic of one integrator: ``<base>.<integrator>`` (``base`` already prefixed)."""
    return f"{base}.{integrator}"


def integrator_of(base: str, topic: str) -> str | None:
    """The integrator whose camera-events topic ``topic`` is; None for the bare ``base`` or another topic."""
    if topic.startswith(base + ".") and len(topic) > len(base) + 1:
        return topic[len(base) + 1:]
    return None


def is_camera_events(base: str, topic: str) -> bool:
    """``topic`` is the bare camera-events topic or one integrator's."""
    return topic == base or integrator_of(base, topic) is not None


ALL = (CAMERA_EVENTS, CAR_PARK_STATUS, CASE_EVENTS, TICKETS, CAMERA_COMMANDS, DEAD_LETTERS) + REFERENCE
