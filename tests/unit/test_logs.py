"""The worker's log through an outage (pipeline/logs.py): a repeated error is written once, then at most
once every few seconds with the count of those held back."""

import io
import logging

import pytest

from pipeline.logs import RepeatFilter, quiet_repeats

from tests.unit.conftest import Ticking

pytestmark = pytest.mark.unit


@pytest.fixture
def timer() -> Ticking:
    return Ticking()


def logger_writing_to(name: str, *streams: io.StringIO) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    for stream in streams:
        logger.addHandler(logging.StreamHandler(stream))
    return logger


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_given_a_broker_outage_then_a_thousand_identical_fetch_errors_make_one_line_then_one_with_the_count(timer):
    out = io.StringIO()
    fetcher = logger_writing_to("test.aiokafka.fetcher", out)
    fetcher.handlers[0].addFilter(RepeatFilter(every=10, timer=timer))

    for attempt in range(1000):
        fetcher.error("Failed fetch messages from %s: %s", 1, f"KafkaConnectionError attempt {attempt}")
        timer.now += 0.001
    timer.now += 10
    fetcher.error("Failed fetch messages from %s: %s", 1, "KafkaConnectionError again")

    assert lines(out) == [
        "Failed fetch messages from 1: KafkaConnectionError attempt 0",
        "Failed fetch messages from 1: KafkaConnectionError again [999 more like this in the last 11 s]",
    ]


def test_given_other_templates_levels_or_loggers_then_each_kind_is_counted_on_its_own(timer):
    out = io.StringIO()
    a, b = logger_writing_to("test.kinds.a", out), logger_writing_to("test.kinds.b", out)
    repeats = RepeatFilter(every=10, timer=timer)
    for handler in (*a.handlers, *b.handlers):
        handler.addFilter(repeats)

    for _ in range(3):
        a.error("Unable connect to %s", "x")
        a.error("Heartbeat failed: %r", "y")
        a.warning("Unable connect to %s", "x")
        b.error("Unable connect to %s", "x")

    assert lines(out) == ["Unable connect to x", "Heartbeat failed: 'y'", "Unable connect to x", "Unable connect to x"]


def test_given_records_below_the_level_then_they_always_pass(timer):
    out = io.StringIO()
    faust = logger_writing_to("test.faust.consumer", out)
    faust.handlers[0].addFilter(RepeatFilter(every=10, timer=timer))

    for _ in range(3):
        faust.info("Setting newly assigned partitions %s", "{0-3}")

    assert len(lines(out)) == 3, "Faust's assignments are read by people and by the tests"


def test_given_a_quiet_period_then_the_next_record_passes_without_a_count(timer):
    out = io.StringIO()
    log = logger_writing_to("test.quiet", out)
    log.handlers[0].addFilter(RepeatFilter(every=10, timer=timer))

    log.error("PostgreSQL unreachable")
    timer.now += 30
    log.error("PostgreSQL unreachable")

    assert lines(out) == ["PostgreSQL unreachable", "PostgreSQL unreachable"]


def test_given_the_worker_logger_then_every_handler_gets_the_first_record_and_none_the_repeats_installed_once():
    to_file, to_terminal = io.StringIO(), io.StringIO()
    root = logger_writing_to("test.worker.root", to_file, to_terminal)

    quiet_repeats(root)
    quiet_repeats(root)
    for _ in range(50):
        logging.getLogger("test.worker.root.aiokafka").error("Unable connect to %s", "127.0.0.1:9")

    assert lines(to_file) == lines(to_terminal) == ["Unable connect to 127.0.0.1:9"]
    assert all(len([f for f in h.filters if isinstance(f, RepeatFilter)]) == 1 for h in root.handlers)


class Counting(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.mark.parametrize("level", [logging.WARNING, logging.ERROR])
def test_given_faust_at_warn_or_above_then_no_debug_record_is_made_and_records_at_the_level_pass(level):
    import faust
    from faust.utils import terminal

    from pipeline.logs import worker_root_logger

    root = logger_writing_to("test.worker.spinner", io.StringIO())
    root.setLevel(level)
    worker = faust.Worker.__new__(faust.Worker)  # Faust's own root-logger set-up, with its spinner
    worker.spinner = terminal.Spinner(file=io.StringIO())
    worker.on_setup_root_logger(root, level)
    worker_root_logger(root, level)
    made = Counting()
    root.addHandler(made)

    logging.getLogger("test.worker.spinner.aiokafka.producer").debug("Sending (key=%s value=%s)", b"k", b"v")
    logging.getLogger("test.worker.spinner.aiokafka.producer").log(level, "broker away")

    assert [r.getMessage() for r in made.records] == ["broker away"]
