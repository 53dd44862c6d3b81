"""The alert rules and the dashboard that ship in monitoring/: Prometheus's own promtool checks the
rules and runs their unit tests (series crossing each threshold), the rules' thresholds are the
console's, and every metric the rules and the dashboard's panels name is one a worker exports."""

import asyncio
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.console import health, metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "monitoring" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "monitoring" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "monitoring" / "grafana" / "parkwarden-health.json"
METRIC = re.compile(r"\bparkwarden_[a-z_]+")

HEALTH_FIGURES = {"parkwarden_sms_gateway_up", "parkwarden_smsc_links_offline", "parkwarden_sms_reports_pending",
                  "parkwarden_sms_reports_pending_oldest_seconds", "parkwarden_camera_events_lag_seconds",
                  "parkwarden_decisions_held_total", "parkwarden_outbox_backlog", "parkwarden_outbox_oldest_seconds",
                  "parkwarden_dead_letters_last_hour"}
ALERT_THRESHOLDS = {  # alert: (health component, which threshold)
    "ParkwardenSmsGatewayDown": None, "ParkwardenSmsCentreLinkDown": ("smsc_link", "bad"),
    "ParkwardenDeliveryReportsLate": ("delivery_reports", "warn"),
    "ParkwardenDeliveryReportsMissing": ("delivery_reports", "bad"),
    "ParkwardenCameraEventsLagging": ("camera_events", "warn"), "ParkwardenCameraEventsStalled": ("camera_events", "bad"),
    "ParkwardenDecisionsHeld": ("decisions_held", "warn"), "ParkwardenDecisionsHeldMany": ("decisions_held", "bad"),
    "ParkwardenOutboxBacklog": ("outbox", "warn"), "ParkwardenOutboxStuck": ("outbox", "bad"),
    "ParkwardenOutboxSetAside": None,
    "ParkwardenDeadLetters": ("dead_letters", "warn"), "ParkwardenDeadLettersFlood": ("dead_letters", "bad"),
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: run `scripts/promtool.sh install` (Debian's prometheus package)", pytrace=False)
    return found


def rules() -> list[dict]:
    """Each rule's alert, expr, for and annotation keys, read from the YAML's plain layout."""
    found, current = [], None
    for line in RULES.read_text().splitlines():
        if m := re.match(r"\s+- alert: (\w+)", line):
            current = {"alert": m.group(1), "annotations": []}
            found.append(current)
        elif current and (m := re.match(r"\s+(expr|for): (.+)", line)):
            current[m.group(1)] = m.group(2).strip()
        elif current and (m := re.match(r"\s+(summary|runbook): ", line)):
            current["annotations"].append(m.group(1))
    return found


def test_promtool_finds_the_rules_valid():
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERT_THRESHOLDS)} rules found" in result.stdout


def test_each_alert_fires_only_after_its_threshold_is_crossed_for_its_duration():
    result = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                            timeout=60, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested == set(ALERT_THRESHOLDS), "every alert has its promtool test"


def test_every_alert_waits_a_while_says_what_to_do_and_uses_the_consoles_threshold():
    found = rules()
    assert [r["alert"] for r in found] == list(ALERT_THRESHOLDS)
    for rule in found:
        assert re.fullmatch(r"\d+m", rule.get("for", "")), f"{rule['alert']}: a for: duration"
        assert rule["annotations"] == ["summary", "runbook"], f"{rule['alert']}: summary and runbook"
        where = ALERT_THRESHOLDS[rule["alert"]]
        if where:
            component, level = where
            number = float(re.search(r"(>=|>|==) (\d+(?:\.\d+)?)$", rule["expr"]).group(2))
            assert number == getattr(health.THRESHOLDS[component], level), rule["alert"]


async def exported_names() -> set[str]:
    """The metric names a worker's /metrics carries, from the real exposition code (figures made up)."""
    counts = {"cases": {"warned": 1}, "sms": [("warning", "accepted", 1)], "dead_letters_today": 0, "tickets_today": 0,
              "deadline_lag": 0.0, "outbox_backlog": 0, "outbox_oldest_age": 0.0, "outbox_set_aside": 0}
    partitions = [{"partition": 0, "held": 0, "behind_seconds": 1.0}]
    kannel = health.parse_kannel_status((ROOT / "tests/unit/kannel/status_online.xml").read_text())
    judged = health.assess(datetime.now(UTC), kannel, {"dead_letters_last_hour": 0, "reports_pending": 0,
                                                       "oldest_report_seconds": 0.0}, counts, partitions)

    def fixed(value):
        async def read():
            return value
        return metrics.Refreshed(60, read)

    text = await metrics.exposition(metrics.WorkerMetrics(), fixed(counts),
                                    fixed({"capture_to_warning": {0.95: 1.0}}), fixed(partitions),
                                    fixed({("camera-events", 0): 0}), fixed(judged))
    names = set()
    for family in text_string_to_metric_families(text.decode()):
        names.update(sample.name for sample in family.samples)
    return names


def test_every_panel_and_every_alert_names_a_metric_the_workers_export():
    names = asyncio.run(exported_names())
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert panels, "the dashboard has panels"
    for panel in panels:
        for target in panel["targets"]:
            named = METRIC.findall(target["expr"])
            assert named, f"panel {panel['title']!r} names no parkwarden metric"
            assert set(named) <= names, f"panel {panel['title']!r}: {set(named) - names} not exported"
    for rule in rules():
        assert set(METRIC.findall(rule["expr"])) <= names, rule["alert"]
    shown = {name for panel in panels for target in panel["targets"] for name in METRIC.findall(target["expr"])}
    assert HEALTH_FIGURES <= shown, f"no panel for {HEALTH_FIGURES - shown}"
