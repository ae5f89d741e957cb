"""The alerting rules: valid for promtool, unit-tested, and consistent with the metrics."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tools import PROCESS_WIDE, known_metric_names, promql_metric_names, require_tool

from exporter import metrics

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "prometheus" / "alerts.yaml"
RULE_TESTS = sorted((ROOT / "prometheus" / "tests").glob("*.yaml"))
# Each alert's runbook is its heading on docs/runbooks.md (tests/test_docs.py checks the page).
RUNBOOK_BASE = (
    "https://github.com/webex-campaign-exporter/webex-campaign-exporter/blob/main/docs/runbooks.md#"
)
SEVERITIES = {"critical", "warning", "info"}
# `up` is Prometheus's own per-target series, the only foreign name a rule may use.
KNOWN_METRICS = known_metric_names() | {"up"}


def _alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def _is_per_tenant(rule: dict[str, Any]) -> bool:
    """Whether the rule is about tenants, not about an exporter process (`up`, config)."""
    names = promql_metric_names(rule["expr"]) - {"up"}
    return any(not PROCESS_WIDE.fullmatch(name) for name in names)


ALERTS = _alerts()
ALERT_IDS = [a["alert"] for a in ALERTS]
PER_TENANT = [a for a in ALERTS if _is_per_tenant(a)]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool")
    result = _run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    promtool = require_tool("promtool")
    assert RULE_TESTS, "no promtool unit tests under prometheus/tests/"
    result = _run(promtool, "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_issue_s_alerts_exist() -> None:
    assert set(ALERT_IDS) >= {
        "WebexCampaignApiDown",
        "WebexCampaignApiAuthFailing",
        "WebexCampaignApiThrottled",
        "WebexCampaignApiErrors",
        "WebexCampaignSnapshotStale",
        "WebexCampaignTargetGroupErrorRecords",
        "WebexCampaignTargetGroupErrorRatioHigh",
        "WebexCampaignTargetGroupStuckInProgress",
        "WebexCampaignImportsSlow",
    }
    assert len(set(ALERT_IDS)) == len(ALERT_IDS), "duplicate alert names"


def _rule_test_cases() -> dict[str, list[list[Any]]]:
    """alertname -> list of exp_alerts lists found in the promtool unit tests."""
    cases: dict[str, list[list[Any]]] = {}
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == ["../alerts.yaml"], f"{path.name} must test the canonical file"
        for test in doc["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.setdefault(case["alertname"], []).append(case.get("exp_alerts") or [])
    return cases


@pytest.mark.parametrize("alert", ALERT_IDS)
def test_every_alert_has_a_firing_and_a_silent_case(alert: str) -> None:
    cases = _rule_test_cases().get(alert, [])
    firing = [c for c in cases if c]
    assert firing, f"{alert}: no promtool case where it fires"
    assert [c for c in cases if not c], f"{alert}: no promtool case where it stays silent"
    for expected in (e for case in firing for e in case):
        assert expected["exp_labels"]["severity"], f"{alert}: firing case must check labels"
        assert set(expected["exp_annotations"]) >= {"summary", "description", "runbook_url"}


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_alert_has_severity_annotations_and_runbook(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    assert annotations["runbook_url"] == RUNBOOK_BASE + rule["alert"].lower()
    assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), "every alert waits before firing"


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_description_names_tenant_and_group(rule: dict[str, Any]) -> None:
    description = rule["annotations"]["description"]
    used = promql_metric_names(rule["expr"])
    if used & {m.name for m in metrics.PER_GROUP}:
        for label in ("tenant", "name", "id"):
            assert f"$labels.{label}" in description, f"description must name the group {label}"
    elif _is_per_tenant(rule):
        assert "$labels.tenant" in description
    else:
        # `up` and the process-wide series carry no tenant: name the exporter instead.
        assert "$labels.instance" in description


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_expressions_use_only_known_metrics(rule: dict[str, Any]) -> None:
    expr = rule["expr"]
    prefixed = set(re.findall(r"\bwebex_campaign_\w+", expr))
    assert prefixed <= KNOWN_METRICS, f"not in exporter.metrics: {prefixed - KNOWN_METRICS}"
    assert promql_metric_names(expr) <= KNOWN_METRICS
    assert prefixed, "an alert of this exporter must use its metrics"


def test_never_matches_on_a_job_name() -> None:
    # Users name their scrape jobs as they like (and the Helm chart picks its own).
    for rule in ALERTS:
        assert not re.search(r"\bjob\s*=~?", rule["expr"]), rule["alert"]


AGGREGATIONS = r"sum|min|max|avg|group|count|stddev|stdvar|topk|bottomk|quantile|count_values"


def test_process_wide_alerts_are_the_exporter_s() -> None:
    process_wide = {a["alert"] for a in ALERTS} - {a["alert"] for a in PER_TENANT}
    assert process_wide == {
        "WebexCampaignExporterDown",
        "WebexCampaignExporterConfigReloadFailed",
    }


@pytest.mark.parametrize("rule", PER_TENANT, ids=[a["alert"] for a in PER_TENANT])
def test_per_tenant_alerts_never_aggregate_the_tenant_away(rule: dict[str, Any]) -> None:
    # One exporter polls several tenants and several exporters (shards) share them: an alert
    # must fire once per tenant in trouble, labelled with it (prometheus/tests/tenants_test.yaml).
    expr = rule["expr"]
    assert not re.search(rf"\b(?:{AGGREGATIONS})\s*\(", expr), "aggregate with by or without"
    for keyword, labels in re.findall(r"\b(by|on|without|ignoring)\s*\(([^)]*)\)", expr):
        kept = keyword in ("by", "on")
        names = {label.strip() for label in labels.split(",")}
        assert ("tenant" in names) == kept, f"{keyword} ({labels}) loses the tenant"
