"""The chaos run's judge (bench/chaos_judge.py) on made-up Kafka contents: it must see every kind of
failure it claims to count, and nothing in a run where everything went right."""

from datetime import UTC, datetime, timedelta
from itertools import count

from bench.chaos_judge import (LEAVES_EARLY, LEAVES_EDGE, STAYS_ANSWERS, STAYS_SEEN, STAYS_SILENT, Car, Record,
                               judge)
from pipeline.cameras import registry
from pipeline.cases.machine import Rules
from pipeline.demo import city
from pipeline.sms import texts
from schemas import events
from schemas.codec import encode

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
RULES = Rules(window=timedelta(seconds=30), lateness=timedelta(seconds=10), capture_tolerance=timedelta(seconds=3),
              recheck_wait=timedelta(seconds=20))
CAM = city.CAMERAS[0]
BASE = "chaos.camera-events"
TOPIC = f"{BASE}.{city.INTEGRATOR}"
CAMERAS = {c.id: registry.camera({"id": c.id, "integrator": city.INTEGRATOR, "lat": c.lat, "lon": c.lon,
                                  "place": c.place, "zone": c.zone, "commissioned_on": city.COMMISSIONED})
           for c in city.CAMERAS}
PHONES = iter(f"1380000{n:04d}" for n in count())


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


class City:
    """Kafka's topics and the SMS centre's log as a run would leave them, built car by car."""

    def __init__(self):
        self.cars: list[Car] = []
        self.inputs: list[Record] = []
        self.case_events: list[dict] = []
        self.tickets: list[dict] = []
        self.commands: list[dict] = []
        self.dead: list[dict] = []
        self.sms: list[tuple[str, str]] = []
        self._offset = count()
        self._ids = count()

    def judge(self, acknowledged=None):
        return judge(self.cars, self.inputs, self.case_events, self.tickets, self.commands, self.dead, self.sms,
                     RULES, BASE, CAMERAS, acknowledged)

    # camera-events
    def put(self, event, appended_at: datetime, key: bytes | None = b"k") -> Record:
        record = Record(0, next(self._offset), appended_at, key, encode(event) if event is not None else None, TOPIC)
        self.inputs.append(record)
        return record

    def put_raw(self, key, value, appended_at: datetime = T0, topic: str = TOPIC) -> Record:
        record = Record(0, next(self._offset), appended_at, key, value, topic)
        self.inputs.append(record)
        return record

    def _kw(self, plate: str, at: datetime) -> dict:
        return dict(event_id=f"ev-{next(self._ids):06d}", camera_id=CAM.id, plate=plate, taken_at=at,
                    location=events.Location(lat=CAM.lat, lon=CAM.lon))

    def violation(self, plate, at):
        return events.ViolationDetected(**self._kw(plate, at), place=CAM.place,
                                        evidence=events.Evidence(image_url="https://evidence.test/v.jpg"))

    def capture(self, plate, at):
        return events.VehicleObserved(**self._kw(plate, at), place=CAM.place)

    def departure(self, plate, at):
        return events.VehicleDeparted(**self._kw(plate, at))

    def dead_letter(self, record: Record) -> None:
        self.dead.append({"type": "DeadLetter", "source_topic": record.topic, "partition": record.partition,
                          "offset": record.offset})

    # one car, from its violation to its case's end
    def car(self, plate: str, behaviour: str, outcome: str, *, recheck: bool = False, evidence_at: float | None = None,
            evidence_appended: float | None = None, ticket: str | None = None, warnings: int = 1,
            closed: bool = True, first_offence: bool = False, deadline_moved: float = 0) -> dict:
        """A car whose violation is taken at T0, warned at T0 + 1 s (deadline T0 + 31 s). ``evidence_at``:
        a capture (stays) or departure (leaves) taken that many seconds after the deadline, reaching Kafka
        ``evidence_appended`` seconds after the deadline (default: at once). ``first_offence``: at a camera
        of a first-offence zone (an outcome ``cautioned`` gets its notice SMS). ``deadline_moved``: the real
        deadline (on the ticket) is that much later than the announced one (a late delivery)."""
        phone = next(PHONES)
        self.cars.append(Car(plate, phone, behaviour, answers_rechecks=behaviour == STAYS_ANSWERS,
                             first_offence_zone=first_offence))
        violation = self.violation(plate, T0)
        self.put(violation, T0 + s(0.1))
        case = f"case-{plate}"
        deadline = T0 + s(31)
        self.case_events += [
            {"type": "CaseOpened", "case_id": case, "plate": plate, "detected_at": T0.isoformat()},
            {"type": "WarningSent", "case_id": case, "plate": plate, "accepted_at": (T0 + s(1)).isoformat(),
             "deadline_at": deadline.isoformat()}]
        text = texts.warning_text(texts.WarningFacts(plate, CAM.place, deadline, "海创园B1", 30, T0))
        self.sms += [(phone, text)] * warnings
        if evidence_at is not None:
            taken = deadline + s(evidence_at)
            event = self.capture(plate, taken) if behaviour.startswith("stays") else self.departure(plate, taken)
            self.put(event, deadline + s(evidence_appended if evidence_appended is not None else max(evidence_at, 0) + 0.2))
        if recheck:
            self.commands.append({"type": "RecheckRequested", "case_id": case, "plate": plate,
                                  "recheck_id": f"{case}:1", "answer_by": (deadline + s(30)).isoformat()})
        if ticket:
            self.tickets.append({"type": "TicketIssued", "ticket_number": ticket, "case_id": case, "plate": plate,
                                 "deadline_at": (deadline + s(deadline_moved)).isoformat(),
                                 "evidence": [{"taken_at": T0.isoformat()},
                                              {"taken_at": (deadline + s(evidence_at or 0)).isoformat()}]})
            self.sms.append((phone, texts.ticket_text(texts.TicketFacts(plate, CAM.place, ticket))))
        if outcome == "cautioned":
            self.sms.append((phone, texts.caution_text(texts.CautionFacts(plate, CAM.place, True))))
        if closed:
            self.case_events.append({"type": "CaseClosed", "case_id": case, "plate": plate, "outcome": outcome})
        return {"case": case, "phone": phone, "deadline": deadline}


def a_city_where_everything_went_right() -> City:
    c = City()
    c.car("浙A10001", STAYS_SEEN, "ticketed", evidence_at=1, ticket="YH261130000001")
    c.car("浙A10002", STAYS_ANSWERS, "ticketed", recheck=True, evidence_at=25, ticket="YH261130000002")
    c.car("浙A10003", STAYS_SILENT, "unconfirmed", recheck=True)
    c.car("浙A10004", LEAVES_EARLY, "moved", evidence_at=-12)
    c.car("浙A10005", LEAVES_EDGE, "moved", evidence_at=-2.5)
    c.car("浙A10006", STAYS_SEEN, "cautioned", evidence_at=2, first_offence=True)
    c.car("浙A10007", STAYS_SEEN, "ticketed", evidence_at=2, ticket="YH261130000003", deadline_moved=0.6)
    c.dead_letter(c.put_raw("浙A10001".encode(), None))  # a tombstone
    c.dead_letter(c.put_raw(b"bad", b"{not json"))
    c.dead_letter(c.put_raw(None, encode(c.violation("浙A19999", T0))))  # no key
    return c


def test_a_run_where_everything_went_right_is_all_zeros():
    report = a_city_where_everything_went_right().judge()

    assert report.all_zeros(), report.table()
    assert report.cars == 7
    assert sorted(report.tickets_expected) == ["浙A10001", "浙A10002", "浙A10007"]
    assert report.tickets_issued == ["YH261130000001", "YH261130000002", "YH261130000003"]
    assert report.notices_expected == report.notices_issued == ["浙A10006"]


def test_the_same_ticket_published_twice_by_the_outbox_is_one_ticket_with_one_sms():
    c = a_city_where_everything_went_right()
    c.tickets.append(dict(c.tickets[0]))

    assert c.judge().all_zeros()


def test_a_car_answering_its_recheck_in_time_but_closed_unconfirmed_is_a_missed_ticket_and_a_blind_decision():
    c = City()
    c.car("浙A20001", STAYS_ANSWERS, "unconfirmed", recheck=True, evidence_at=25, evidence_appended=30)

    report = c.judge()

    assert len(report.tickets_missed) == 1 and report.tickets_missed[0].startswith("浙A20001 ")
    assert len(report.blind_decisions) == 1 and "unconfirmed although" in report.blind_decisions[0]


def test_an_answer_that_reached_kafka_after_the_recheck_horizon_expects_no_ticket():
    c = City()
    c.car("浙A20002", STAYS_ANSWERS, "unconfirmed", recheck=True, evidence_at=25, evidence_appended=41)

    report = c.judge()

    assert report.all_zeros(), report.table()
    assert report.tickets_expected == []


def test_a_recheck_requested_although_the_capture_at_the_deadline_was_already_in_kafka_is_blind():
    c = City()
    c.car("浙A20003", STAYS_SEEN, "ticketed", recheck=True, evidence_at=1, evidence_appended=5, ticket="YH1")

    report = c.judge()

    assert len(report.blind_decisions) == 1 and "recheck requested" in report.blind_decisions[0]
    assert not report.tickets_missed and not report.tickets_wrong


def test_a_recheck_requested_although_the_departure_was_already_in_kafka_is_blind():
    c = City()
    c.car("浙A20004", LEAVES_EDGE, "moved", recheck=True, evidence_at=-2.5, evidence_appended=9)

    assert len(c.judge().blind_decisions) == 1


def test_tickets_for_a_car_that_left_for_a_car_never_captured_after_its_deadline_and_a_second_ticket_are_wrong():
    c = City()
    c.car("浙A30001", LEAVES_EDGE, "ticketed", evidence_at=-2.5, ticket="YH1")
    c.car("浙A30002", STAYS_SILENT, "ticketed", recheck=True, ticket="YH2")
    c.car("浙A30003", STAYS_SEEN, "ticketed", evidence_at=1, ticket="YH3")
    c.tickets.append({**c.tickets[-1], "ticket_number": "YH4"})
    c.sms.append((c.cars[-1].phone, texts.ticket_text(texts.TicketFacts("浙A30003", CAM.place, "YH4"))))

    report = c.judge()

    assert [w.split()[0] for w in report.tickets_wrong] == ["浙A30001", "浙A30002", "浙A30003"]
    assert "second ticket" in report.tickets_wrong[-1]


def test_warnings_twice_none_or_to_another_phone_are_counted():
    c = City()
    c.car("浙A40001", LEAVES_EARLY, "moved", evidence_at=-12, warnings=2)
    c.car("浙A40002", LEAVES_EARLY, "moved", evidence_at=-12, warnings=0)
    elsewhere = c.car("浙A40003", LEAVES_EARLY, "moved", evidence_at=-12, warnings=0)
    c.sms.append(("13999999999", texts.warning_text(texts.WarningFacts("浙A40003", CAM.place, elsewhere["deadline"],
                                                                      None, None, None))))

    report = c.judge()

    assert report.warnings_duplicated == ["浙A40001"]
    assert report.warnings_lost == ["浙A40002", "浙A40003"]


def test_a_ticket_without_its_sms_or_with_two_is_counted():
    c = City()
    c.car("浙A50001", STAYS_SEEN, "ticketed", evidence_at=1, ticket="YH1")
    c.car("浙A50002", STAYS_SEEN, "ticketed", evidence_at=1, ticket="YH2")
    c.sms = [m for m in c.sms if "YH1" not in m[1]] + [m for m in c.sms if "YH2" in m[1]]

    report = c.judge()

    assert report.ticket_sms_lost == ["YH1"]
    assert report.ticket_sms_duplicated == ["YH2"]


def test_malformed_messages_missing_from_the_dead_letters_are_named_by_partition_and_offset():
    c = City()
    tombstone = c.put_raw("浙A60001".encode(), None)
    keyless = c.put_raw(None, encode(c.violation("浙A60002", T0)))
    c.dead_letter(c.put_raw(b"bad", b'{"type": "ViolationDetected"}'))

    report = c.judge()

    assert report.malformed_missing == [f"{TOPIC} 0@{tombstone.offset}", f"{TOPIC} 0@{keyless.offset}"]


def test_events_lost_or_dead_lettered_and_violations_without_a_case_are_never_decided():
    c = City()
    c.cars.append(Car("浙A70001", next(PHONES), LEAVES_EARLY, False))
    c.put(c.violation("浙A70001", T0), T0)  # no CaseOpened for it
    valid = c.put(c.capture("浙A70002", T0), T0)
    c.dead_letter(valid)

    report = c.judge(acknowledged={"ev-lost"})

    assert len(report.never_decided) == 3
    assert any("no case opened" in n for n in report.never_decided)
    assert any("dead letter" in n for n in report.never_decided)
    assert any("ev-lost (acknowledged, not in camera-events)" in n for n in report.never_decided)


def test_cases_without_a_close_are_left_open():
    c = City()
    c.car("浙A80001", STAYS_SILENT, "unconfirmed", recheck=True, closed=False)

    assert [c.split()[-1] for c in c.judge().cases_left_open] == ["(浙A80001)"]


def test_a_ticket_instead_of_a_first_offence_notice_is_wrong_and_the_notice_missed():
    c = City()
    c.car("浙A90001", STAYS_SEEN, "ticketed", evidence_at=1, ticket="YH1", first_offence=True)

    report = c.judge()

    assert [w.split(" ", 2)[2] for w in report.tickets_wrong] == ["(a ticket for a first offence)"]
    assert len(report.tickets_missed) == 1


def test_a_notice_outside_a_first_offence_zone_is_wrong_and_the_ticket_missed():
    c = City()
    c.car("浙A90002", STAYS_SEEN, "cautioned", evidence_at=1)

    report = c.judge()

    assert len(report.tickets_wrong) == 1 and "not a first-offence zone" in report.tickets_wrong[0]
    assert len(report.tickets_missed) == 1


def test_a_ticket_on_a_capture_taken_before_the_deadline_that_a_late_delivery_moved_is_wrong():
    c = City()
    c.car("浙A90003", STAYS_SEEN, "ticketed", evidence_at=-1, ticket="YH1", deadline_moved=3)

    assert c.judge().tickets_wrong == ["浙A90003 YH1 (evidence taken before the deadline)"]


def test_an_event_for_a_camera_not_registered_to_the_topics_integrator_must_be_a_dead_letter_not_a_case():
    c = City()
    elsewhere = c.put_raw(b"k", encode(c.violation("浙A90004", T0)), topic=f"{BASE}.someone-else")
    bare = c.put_raw(b"k", encode(c.violation("浙A90005", T0)), topic=BASE)
    c.dead_letter(bare)

    report = c.judge()

    assert report.malformed_missing == [f"{BASE}.someone-else 0@{elsewhere.offset}"]
    assert not report.never_decided


def test_a_capture_is_at_the_place_of_its_registered_camera_whatever_position_the_event_gives():
    c = City()
    c.car("浙A90006", STAYS_SEEN, "unconfirmed", recheck=True)
    far = c.capture("浙A90006", T0 + s(32)).model_copy(update={"location": events.Location(lat=31.0, lon=121.0)})
    c.put(far, T0 + s(32.2))

    report = c.judge()

    assert report.tickets_expected == ["浙A90006"]
    assert len(report.tickets_missed) == 1


def test_the_warnings_latency_is_also_given_for_the_warnings_clear_of_the_gateway_s_outage():
    c = a_city_where_everything_went_right()
    held = next(e for e in c.case_events if e["type"] == "WarningSent" and e["plate"] == "浙A10003")
    held["accepted_at"] = (T0 + s(100)).isoformat()  # the gateway was down from T0 + 50 s to T0 + 90 s

    notes = judge(c.cars, c.inputs, c.case_events, c.tickets, c.commands, c.dead, c.sms, RULES, BASE, CAMERAS,
                  outages=[(T0 + s(50), T0 + s(90))]).notes

    assert "violation taken -> warning accepted by the gateway: p50 1.0 s, p99 1.0 s, max 100.0 s" in notes
    assert ("of which the 6 clear of the SMS gateway's outage (violation -> acceptance not overlapping it): "
            "p50 1.0 s, p99 1.0 s, max 1.0 s (target p99 < 30 s)") in notes
