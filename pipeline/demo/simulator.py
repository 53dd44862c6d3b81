"""A camera simulator: cars that park illegally and stay, leave early or leave late; cameras that
patrol and answer recheck requests; car parks reporting free spaces; some duplicate, late,
out-of-order and malformed events. For demos and load, against the real Kafka broker.

A *late* event is held back ``late_by_seconds`` after it was taken (its event time stays true);
an *out-of-order* event is held until the same car's next event has been sent, so it arrives
after a later one (or after ``HOLD_LIMIT`` if the car has no next event).
"""

import asyncio
import json
import logging
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import count

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline.demo import city, photos
from schemas import events, topics
from schemas.codec import encode

log = logging.getLogger(__name__)

BEHAVIOURS = ("stays", "leaves_early", "leaves_late")
HOLD_LIMIT = timedelta(seconds=10)


@dataclass
class ParkedCar:
    plate: str
    camera: city.Camera
    behaviour: str
    arrived: datetime
    leaves: datetime
    next_patrol: datetime
    lat: float
    lon: float


@dataclass
class Tally:
    violations: int = 0
    observations: int = 0
    departures: int = 0
    duplicates: int = 0
    late: int = 0
    out_of_order: int = 0
    malformed: int = 0
    recheck_answers: int = 0
    statuses: int = 0
    by_behaviour: dict = field(default_factory=lambda: {b: 0 for b in BEHAVIOURS})

    def line(self) -> str:
        b = self.by_behaviour
        return (f"cars {self.violations} (stay {b['stays']}, early {b['leaves_early']}, late {b['leaves_late']}) · "
                f"sightings {self.observations} · departures {self.departures} · rechecks answered "
                f"{self.recheck_answers} · duplicates {self.duplicates} · late {self.late} · out of order "
                f"{self.out_of_order} · malformed {self.malformed}")


class Simulator:
    def __init__(self, bootstrap: str, topic_prefix: str, window_seconds: float, *, cars_per_minute: float = 12,
                 max_cars: int = 50, duration_seconds: float = 120, patrol_seconds: float = 10,
                 duplicate_rate: float = 0.05, malformed_rate: float = 0.02, late_rate: float = 0.0,
                 late_by_seconds: float = 3.0, out_of_order_rate: float = 0.0,
                 behaviour_weights: tuple[float, float, float] = (0.45, 0.4, 0.15), seed: int = 1,
                 integrator: str = city.INTEGRATOR, kafka_options: dict | None = None, evidence_url: str | None = None):
        self.bootstrap = bootstrap
        self.evidence_url = evidence_url
        """The demo's image server (pipeline/demo/photos.py): captures point at it, with the image's SHA-256."""
        self.kafka_options = kafka_options or {"bootstrap_servers": bootstrap}
        """Camera events go to the cameras' integrator's own topic, camera-events.<integrator>."""
        self.topic = lambda t: (f"{topic_prefix}{t.name}.{integrator}" if t in (topics.CAMERA_EVENTS, topics.CAMERA_COMMANDS)
                                else f"{topic_prefix}{t.name}")
        """Cameras write to their integrator's camera-events.<integrator> and read camera-commands.<integrator>."""
        self.window = timedelta(seconds=window_seconds)
        self.cars_per_minute = cars_per_minute
        self.max_cars = max_cars
        self.duration = duration_seconds
        self.patrol = timedelta(seconds=patrol_seconds)
        self.duplicate_rate = duplicate_rate
        self.malformed_rate = malformed_rate
        self.late_rate = late_rate
        self.late_by = timedelta(seconds=late_by_seconds)
        self.out_of_order_rate = out_of_order_rate
        self._late: list[tuple[datetime, topics.Topic, str, bytes]] = []
        self._overtaken: dict[str, list[tuple[datetime, topics.Topic, bytes]]] = {}
        self.weights = behaviour_weights
        self.rng = random.Random(seed)
        self.plates = [p for p, _, _ in city.plates(2000)]
        self.parked: dict[str, ParkedCar] = {}
        self.tally = Tally()
        self._ids = count(1)
        self._run = f"{datetime.now(UTC):%H%M%S}-{seed}"
        self.producer: AIOKafkaProducer | None = None

    def _event_id(self, camera: str) -> str:
        return f"{camera}:{self._run}:{next(self._ids):06d}"

    async def _send(self, topic: topics.Topic, key: str, message, duplicate_ok: bool = True) -> None:
        """Send a message; a camera event (``duplicate_ok``) may be duplicated, late or overtaken."""
        raw = encode(message)
        now = datetime.now(UTC)
        if duplicate_ok and self.rng.random() < self.late_rate:
            self._late.append((now + self.late_by, topic, key, raw))
            self.tally.late += 1
            return
        if duplicate_ok and self.rng.random() < self.out_of_order_rate:
            self._overtaken.setdefault(key, []).append((now, topic, raw))
            self.tally.out_of_order += 1
            return
        await self.producer.send_and_wait(self.topic(topic), raw, key=key.encode())
        for _, held_topic, held in self._overtaken.pop(key, []):
            await self.producer.send_and_wait(self.topic(held_topic), held, key=key.encode())
        if duplicate_ok and self.rng.random() < self.duplicate_rate:
            await self.producer.send_and_wait(self.topic(topic), raw, key=key.encode())
            self.tally.duplicates += 1

    async def _release_held(self, now: datetime | None = None) -> None:
        """Send late events whose time has come and overtaken ones held too long (all of them if ``now`` is None)."""
        due = [h for h in self._late if now is None or h[0] <= now]
        self._late = [h for h in self._late if h not in due]
        for _, topic, key, raw in due:
            await self.producer.send_and_wait(self.topic(topic), raw, key=key.encode())
        for key in list(self._overtaken):
            if now is None or now - self._overtaken[key][0][0] >= HOLD_LIMIT:
                for _, topic, raw in self._overtaken.pop(key):
                    await self.producer.send_and_wait(self.topic(topic), raw, key=key.encode())

    async def _send_malformed(self) -> None:
        cam = self.rng.choice(city.CAMERAS)
        broken = self.rng.choice([
            b"{not json",
            json.dumps({"type": "ViolationDetected", "event_id": self._event_id(cam.id), "camera_id": cam.id,
                        "plate": "XX12345", "taken_at": datetime.now(UTC).isoformat(),
                        "location": {"lat": cam.lat, "lon": cam.lon}, "place": cam.place,
                        "evidence": {"image_url": "https://evidence.example/x.jpg"}}).encode(),
            json.dumps({"type": "VehicleObserved", "event_id": self._event_id(cam.id), "camera_id": cam.id,
                        "plate": "浙A12345", "taken_at": "2026-11-26T10:42:00",
                        "location": {"lat": 95.0, "lon": cam.lon}, "place": cam.place}).encode(),
        ])
        await self.producer.send_and_wait(self.topic(topics.CAMERA_EVENTS), broken, key=b"malformed")
        self.tally.malformed += 1

    def _capture(self, cls, car: ParkedCar, at: datetime, **extra):
        if self.evidence_url:
            path, sha = photos.photo_for(car.camera.id, at, car.plate)
            evidence = events.Evidence(image_url=self.evidence_url + path, sha256=sha)
        else:
            evidence = events.Evidence(image_url=f"https://evidence.example/{car.camera.id}/{at:%Y%m%d%H%M%S}.jpg")
        return cls(event_id=self._event_id(car.camera.id), camera_id=car.camera.id, plate=car.plate, taken_at=at,
                   location=events.Location(lat=car.lat, lon=car.lon), place=car.camera.place, zone=car.camera.zone,
                   evidence=evidence, plate_colour="green" if len(car.plate) == 8 else "blue", **extra)

    async def _arrive(self, now: datetime) -> None:
        free = [p for p in self.plates if p not in self.parked]
        plate = self.rng.choice(free)
        camera = self.rng.choice(city.CAMERAS)
        behaviour = self.rng.choices(BEHAVIOURS, self.weights)[0]
        w = self.window.total_seconds()
        stay = {"stays": w * 2 + 30, "leaves_early": w * self.rng.uniform(0.3, 0.7),
                "leaves_late": w + self.rng.uniform(3, 8)}[behaviour]
        car = ParkedCar(plate, camera, behaviour, now, now + timedelta(seconds=stay), now + self.patrol,
                        camera.lat + self.rng.uniform(-0.0001, 0.0001), camera.lon + self.rng.uniform(-0.0001, 0.0001))
        self.parked[plate] = car
        self.tally.violations += 1
        self.tally.by_behaviour[behaviour] += 1
        await self._send(topics.CAMERA_EVENTS, plate, self._capture(events.ViolationDetected, car, now))

    async def _step(self, now: datetime) -> None:
        for car in list(self.parked.values()):
            if now >= car.leaves:
                del self.parked[car.plate]
                self.tally.departures += 1
                await self._send(topics.CAMERA_EVENTS, car.plate, events.VehicleDeparted(
                    event_id=self._event_id(car.camera.id), camera_id=car.camera.id, plate=car.plate, taken_at=now,
                    location=events.Location(lat=car.lat, lon=car.lon)))
            elif now >= car.next_patrol:
                car.next_patrol = now + self.patrol
                self.tally.observations += 1
                await self._send(topics.CAMERA_EVENTS, car.plate, self._capture(events.VehicleObserved, car, now))

    async def _report_car_parks(self, all_of_them: bool) -> None:
        now = datetime.now(UTC)
        chosen = city.CAR_PARKS if all_of_them else self.rng.sample(city.CAR_PARKS, 3)
        for cp_id, _name, _short, _lat, _lon, capacity in chosen:
            free = 0 if self.rng.random() < 0.15 else self.rng.randint(1, max(1, capacity // 3))
            await self._send(topics.CAR_PARK_STATUS, cp_id,
                             events.CarParkStatus(car_park_id=cp_id, free_spaces=free, reported_at=now),
                             duplicate_ok=False)
            self.tally.statuses += 1

    async def _answer_rechecks(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(self.topic(topics.CAMERA_COMMANDS), group_id=f"simulator-cameras-{self._run}",
                                    auto_offset_reset="latest", **self.kafka_options)
        await consumer.start()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        await self._answer(events.RecheckRequested.model_validate_json(record.value))
        finally:
            await consumer.stop()

    async def _answer(self, request: events.RecheckRequested) -> None:
        now = datetime.now(UTC)
        car = self.parked.get(request.plate)
        camera_id = request.camera_id
        if car is not None:
            car.next_patrol = now + self.patrol
            await self._send(topics.CAMERA_EVENTS, car.plate,
                             self._capture(events.VehicleObserved, car, now, recheck_id=request.recheck_id))
        else:
            await self._send(topics.CAMERA_EVENTS, request.plate, events.VehicleDeparted(
                event_id=self._event_id(camera_id), camera_id=camera_id, plate=request.plate, taken_at=now,
                location=request.location, recheck_id=request.recheck_id))
        self.tally.recheck_answers += 1

    async def run(self, progress=print) -> Tally:
        """Cars arrive for ``duration_seconds`` (at most ``max_cars``); then no new ones come and the
        simulator goes on until every parked car has left in its own time (at most two windows and
        30 s more), patrolling and answering recheck requests, so that each case gets its ending."""
        self.producer = AIOKafkaProducer(acks="all", linger_ms=2, **self.kafka_options)
        await self.producer.start()
        stop = asyncio.Event()
        answering = asyncio.create_task(self._answer_rechecks(stop))
        try:
            await self._report_car_parks(all_of_them=True)
            started = datetime.now(UTC)
            end = started + timedelta(seconds=self.duration)
            tick, last_report = 0, started
            while (now := datetime.now(UTC)) < end or self.parked:
                arriving = now < end and self.tally.violations < self.max_cars
                if arriving and self.rng.random() < self.cars_per_minute / 60:
                    await self._arrive(now)
                if now < end and self.rng.random() < self.malformed_rate:
                    await self._send_malformed()
                await self._step(now)
                await self._release_held(now)
                tick += 1
                if tick % 5 == 0:
                    await self._report_car_parks(all_of_them=False)
                if (now - last_report).total_seconds() >= 10:
                    progress(f"simulator: {self.tally.line()}")
                    last_report = now
                if self.tally.violations >= self.max_cars and not self.parked:
                    break
                await asyncio.sleep(1.0)
        finally:
            stop.set()
            await answering
            await self._release_held()
            await self.producer.stop()
        progress(f"simulator done: {self.tally.line()}")
        return self.tally
