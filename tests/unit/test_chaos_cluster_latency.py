"""The cluster chaos run's warnings' latency, split by the fault window each violation was taken in."""

from datetime import UTC, datetime, timedelta

from bench.chaos_cluster import latency_by_window
from bench.chaos_judge import Report

T0 = datetime(2026, 12, 7, 18, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_each_warning_counts_in_the_windows_it_was_taken_in_or_outside_them_all():
    report = Report(warning_delays=[(at(5), 1.0), (at(15), 30.0), (at(16), 40.0), (at(25), 9.0), (at(50), 2.0)],
                    windows=[("broker 2 SIGKILLed until back in sync", at(10), at(30)),
                             ("worker 0 SIGKILLed (+15 s)", at(20), at(35)),
                             ("worker 1 SIGKILLed (+15 s)", at(24), at(39))])
    lines = latency_by_window(report).splitlines()
    broker = next(line for line in lines if line.strip().startswith("broker 2"))
    workers = next(line for line in lines if line.strip().startswith("workers SIGKILLed"))
    outside = next(line for line in lines if "outside every fault window" in line)
    assert "3 warnings" in broker and "p50   30.0 s" in broker
    assert "1 warnings" in workers and "max    9.0 s" in workers  # counted once, though in two kills' windows
    assert "2 warnings" in outside and "max    2.0 s" in outside
