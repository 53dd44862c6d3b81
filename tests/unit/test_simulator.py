"""The camera simulator's disorder (pipeline/demo/simulator.py): late and out-of-order events."""

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.demo import city
from pipeline.demo.simulator import Simulator
from schemas import events, topics

pytestmark = pytest.mark.unit


class FakeProducer:
    def __init__(self):
        self.sent: list[tuple[str, bytes | None, dict]] = []

    async def send_and_wait(self, topic, value, key=None):
        self.sent.append((topic, key, json.loads(value)))


def simulator(**rates) -> Simulator:
    sim = Simulator("unused:9092", "t.", 30, duplicate_rate=0, **rates)
    sim.producer = FakeProducer()
    return sim


def departure(sim: Simulator, plate: str):
    camera = city.CAMERAS[0]
    return events.VehicleDeparted(event_id=sim._event_id(camera.id), camera_id=camera.id, plate=plate,
                                  taken_at=datetime.now(UTC), location=events.Location(lat=camera.lat, lon=camera.lon))


async def test_an_out_of_order_event_is_sent_right_after_the_same_cars_next_event():
    sim = simulator(out_of_order_rate=1.0)
    first = departure(sim, "浙A12345")
    await sim._send(topics.CAMERA_EVENTS, "浙A12345", first)
    assert sim.producer.sent == []
    sim.out_of_order_rate = 0.0

    second = departure(sim, "浙A12345")
    await sim._send(topics.CAMERA_EVENTS, "浙A12345", second)

    assert [m["event_id"] for _, _, m in sim.producer.sent] == [second.event_id, first.event_id]
    assert sim.tally.out_of_order == 1


async def test_a_late_event_is_held_back_then_sent_with_its_true_event_time():
    sim = simulator(late_rate=1.0, late_by_seconds=3)
    event = departure(sim, "浙A12345")
    await sim._send(topics.CAMERA_EVENTS, "浙A12345", event)

    await sim._release_held(datetime.now(UTC) + timedelta(seconds=1))
    assert sim.producer.sent == []
    await sim._release_held(datetime.now(UTC) + timedelta(seconds=3.5))

    [(topic, key, message)] = sim.producer.sent
    assert (topic, key, message["event_id"]) == ("t.camera-events.demo", "浙A12345".encode(), event.event_id)
    assert datetime.fromisoformat(message["taken_at"]) == event.taken_at
    assert sim.tally.late == 1


async def test_car_park_counts_are_never_delayed():
    sim = simulator(late_rate=1.0, out_of_order_rate=1.0)

    await sim._report_car_parks(all_of_them=True)

    assert len(sim.producer.sent) == len(city.CAR_PARKS)


def test_with_the_demo_image_server_captures_point_at_it_with_the_images_sha256():
    from pipeline.cli import demo_environment
    from pipeline.demo import photos
    from pipeline.demo.simulator import ParkedCar
    from pipeline.evidence import fetch

    env = demo_environment({})
    sim = Simulator("unused:9092", "t.", 30, evidence_url=env["PW_DEMO_EVIDENCE_URL"])
    camera, at = city.CAMERAS[0], datetime(2026, 11, 26, 2, 42, 7, 250000, tzinfo=UTC)
    car = ParkedCar("浙A12345", camera, "stays", at, at, at, camera.lat, camera.lon)
    capture = sim._capture(events.ViolationDetected, car, at)

    url, sha = capture.evidence.image_url, capture.evidence.sha256
    assert url.startswith("https://localhost:6443/e/")
    assert sha == hashlib.sha256(photos.car_photo(camera.id, "20261126024207", "浙A12345")).hexdigest()
    # The demo's workers may fetch it: the host is allowed for the simulator's integrator.
    fetch.Fetcher(fetch.allowed_hosts(env["PW_EVIDENCE_HOSTS"]), 1, 1).check(url, city.INTEGRATOR)
