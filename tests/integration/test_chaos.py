"""The chaos run, small (``bench.chaos.Plan.small``): 300 cars of the ground-truth city while a worker
is SIGKILLed and restarted, the broker restarts and Kannel is down for 20 s. It runs on a private
stack of its own (var/chaos-test, its own ports: scripts/services.sh with PW_VAR_DIR), started and
stopped here, so the shared services are never touched. The judge reads Kafka and the fake SMS
centre only; every counter must be zero. ``./dev chaos`` is the full run (README)."""

from bench.chaos import Plan, PrivateStack, run

TEST_STACK = PrivateStack(var_dir="var/chaos-test", kafka_port=29292, postgres_port=25632, kannel_admin_port=23200,
                          fakesmsc_port=20200, web_port=26300)


async def test_a_city_under_a_worker_kill_a_broker_restart_and_a_gateway_outage_gets_every_ticket_and_warning_once():
    report = await run(Plan.small(), TEST_STACK, say=lambda line: print(line, flush=True))

    print(report.table())
    assert report.cars == Plan.small().cars
    assert report.tickets_expected, "no car was expected to be ticketed: the city did not run"
    assert report.all_zeros(), report.table()
