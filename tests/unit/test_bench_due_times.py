"""`./dev bench due` spreads the deadlines it moves (or seeds) so that the asked number come due in
each second, chunk after chunk, without a gap or an overlap between chunks (issue 16, must 3)."""

from collections import Counter
from datetime import UTC, datetime, timedelta

from bench.due import due_times

FIRST = datetime(2026, 12, 8, 4, 0, tzinfo=UTC)


def test_per_second_come_due_in_each_second():
    times = due_times(FIRST, 0, 10_000, 2000)
    per_second = Counter(int((t - FIRST).total_seconds()) for t in times)
    assert per_second == {0: 2000, 1: 2000, 2: 2000, 3: 2000, 4: 2000}
    assert times[0] == FIRST and times == sorted(times)


def test_chunks_continue_where_the_last_one_ended():
    whole = due_times(FIRST, 0, 7000, 500)
    chunks = due_times(FIRST, 0, 3000, 500) + due_times(FIRST, 3000, 3000, 500) + due_times(FIRST, 6000, 1000, 500)
    assert chunks == whole
    assert whole[-1] == FIRST + timedelta(seconds=6999 / 500)


def test_every_plate_of_a_million_is_a_distinct_plate_the_pipeline_accepts():
    from bench.due import plate_of
    from schemas.plates import normalize_plate, plate_problem

    plates = [plate_of(i) for i in range(0, 1_000_000, 997)] + [plate_of(i) for i in (799_999, 800_000, 999_999)]
    assert [p for p in plates if plate_problem(normalize_plate(p))] == []
    assert len({plate_of(i) for i in range(1_000_000)}) == 1_000_000
