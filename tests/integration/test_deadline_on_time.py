"""A deadline is decided when it comes due (deadline + lateness allowance), not at the next tick of
a loop: the deadline loop brings the watermarks up to now itself and sleeps until the next case is
due (issue 16: 2,000 deadlines a second, p99 under a second late)."""

from .conftest import Stack


async def test_a_deadline_is_decided_when_it_comes_due_not_a_tick_later(stack: Stack):
    worker = stack.worker(PW_TICK_SECONDS="4")  # every loop's tick, the watermarks' too
    await worker.ready()
    plate = (await stack.plates_with_phone(1))[0]

    await stack.publish(stack.violation(plate))
    case = await stack.wait_state(plate, "warned", timeout=15)
    await stack.wait_state(plate, "rechecking", timeout=20)

    late = await stack.pool.fetchval(
        """SELECT extract(epoch FROM min(at) - $2)::float8 FROM audit_log
           WHERE case_id = $1 AND detail ->> 'cause' = 'deadline'""", case["id"], case["wake_at"])
    assert 0 <= late < 1.0, f"decided {late:.2f} s after it came due"
