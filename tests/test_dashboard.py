"""The Grafana dashboard: generated from code, importable, and built on known metrics."""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from tools import PROCESS_WIDE, known_metric_names, promql_metric_names

from exporter import metrics

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "grafana" / "generate_dashboard.py"
DASHBOARD = ROOT / "grafana" / "dashboards" / "webex-campaign-exporter.json"
ALERTS = ROOT / "prometheus" / "alerts.yaml"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
KNOWN_METRICS = known_metric_names()


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_dashboard", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def _targets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for p in _panels(dashboard) for t in p["targets"]]


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for t in _targets(dashboard)]


def _rows(dashboard: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Row title -> the panels that follow it, up to the next row."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            current = rows.setdefault(panel["title"], [])
        else:
            current.append(panel)
    return rows


def test_committed_json_is_the_generator_output() -> None:
    generator = _load_generator()
    assert generator.OUTPUT == DASHBOARD
    assert generator.render() == DASHBOARD.read_text(), (
        "dashboard JSON is out of date: run python grafana/generate_dashboard.py"
    )


def test_is_a_dashboard_grafana_10_and_11_import(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "webex-campaign-exporter"
    assert dashboard["title"]
    # 36 is Grafana 9.x's schema; 10 and 11 migrate it on import.
    assert 36 <= dashboard["schemaVersion"] <= 39
    assert "id" not in dashboard or dashboard["id"] is None, "an id would clash on import"


def test_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids))


def _cells(panel: dict[str, Any]) -> set[tuple[int, int]]:
    pos = panel["gridPos"]
    return {
        (x, y)
        for x in range(pos["x"], pos["x"] + pos["w"])
        for y in range(pos["y"], pos["y"] + pos["h"])
    }


def test_grid_positions_fit_and_do_not_overlap(dashboard: dict[str, Any]) -> None:
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0
        assert pos["y"] >= 0
        assert pos["w"] > 0
        assert pos["h"] > 0
        assert pos["x"] + pos["w"] <= 24, f"{panel['title']} is wider than the grid"
    for a, b in itertools.combinations(dashboard["panels"], 2):
        assert not _cells(a) & _cells(b), f"{a['title']!r} overlaps {b['title']!r}"


def test_rows_are_expanded_with_panels_at_top_level(dashboard: dict[str, Any]) -> None:
    # Panels nested in a row that is not collapsed would not be shown.
    for row in (p for p in dashboard["panels"] if p["type"] == "row"):
        assert row["collapsed"] is False
        assert row["panels"] == []


def test_variables(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert list(variables) == ["datasource", "job", "instance", "tenant"]
    queries = {
        "job": "label_values(webex_campaign_exporter_build_info, job)",
        "instance": 'label_values(webex_campaign_exporter_build_info{job=~"$job"}, instance)',
        "tenant": 'label_values(webex_campaign_up{job=~"$job", instance=~"$instance"}, tenant)',
    }
    for name, query in queries.items():
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == DATASOURCE
        assert variable["query"] == query
        # Several releases, shards and tenants: pick any number of them, or All.
        assert variable["multi"] is True
        assert variable["includeAll"] is True
        # Any value, but never a missing label.
        assert variable["allValue"] == ".+"


def test_every_panel_and_target_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    for panel in _panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_every_panel_has_description_and_unit(dashboard: dict[str, Any]) -> None:
    for panel in _panels(dashboard):
        assert panel["description"].strip(), panel["title"]
        defaults = panel["fieldConfig"]["defaults"]
        # A stat that maps its values to text needs no unit.
        assert defaults.get("unit") or defaults.get("mappings"), panel["title"]


def test_every_expression_uses_only_known_metrics(dashboard: dict[str, Any]) -> None:
    for expr in _exprs(dashboard):
        prefixed = set(re.findall(r"\bwebex_campaign_\w+", expr))
        assert prefixed, expr
        assert prefixed <= KNOWN_METRICS, f"not in exporter.metrics: {prefixed - KNOWN_METRICS}"
        assert promql_metric_names(expr) <= KNOWN_METRICS, expr


SELECTOR = re.compile(r"\b(webex_campaign_\w+)(\{[^}]*\})?")
TENANTS_OF_THE_EXPORTER = re.compile(
    r' and on \(job, instance\) webex_campaign_up\{job=~"\$job", instance=~"\$instance",'
    r' tenant=~"\$tenant"\}'
)


def test_every_selector_is_filtered_by_job_instance_and_tenant(dashboard: dict[str, Any]) -> None:
    for expr in _exprs(dashboard):
        assert 'tenant="' not in expr, "several tenants may be chosen: match with =~"
        for selector in SELECTOR.finditer(expr):
            matchers = selector.group(2) or ""
            for variable in ("job", "instance"):
                assert f'{variable}=~"${variable}"' in matchers, expr
            if PROCESS_WIDE.fullmatch(selector.group(1)):
                # No tenant label: it would never match. The exporters that poll a chosen
                # tenant instead.
                assert "tenant" not in matchers, expr
                assert TENANTS_OF_THE_EXPORTER.search(expr[selector.end() :]), expr
            else:
                assert 'tenant=~"$tenant"' in matchers, expr


def test_rates_use_rate_interval(dashboard: dict[str, Any]) -> None:
    calls = [
        (m.group(0), target.get("instant", False))
        for target in _targets(dashboard)
        for m in re.finditer(r"\b(?:rate|irate|increase)\([^\[]*\[[^\]]*\]", target["expr"])
    ]
    assert calls, "the dashboard shows API request rates"
    for call, instant in calls:
        # An instant query counts over the whole time range shown, at its end.
        assert call.endswith("[$__range]" if instant else "[$__rate_interval]"), call


def test_has_the_panels_the_issue_asks_for(dashboard: dict[str, Any]) -> None:
    by_type: dict[str, set[str]] = {}
    for panel in _panels(dashboard):
        by_type.setdefault(panel["type"], set()).add(panel["title"])
    assert by_type["stat"] >= {
        "Groups ready",
        "Groups in progress",
        "Groups stuck in progress",
        "Groups with errors",
        "API up",
        "Snapshot age",
    }
    assert "Target groups" in by_type["table"]
    series = " ".join(sorted(by_type["timeseries"]))
    for words in ("Valid records", "Error records", "API requests and failures", "Poll duration"):
        assert words in series


def test_table_shows_records_error_ratio_state_and_time_in_state(
    dashboard: dict[str, Any],
) -> None:
    (table,) = (p for p in _panels(dashboard) if p["title"] == "Target groups")
    exprs = " ".join(t["expr"] for t in table["targets"])
    for metric in (
        metrics.TOTAL_RECORDS,
        metrics.VALID_RECORDS,
        metrics.ERROR_RECORDS,
        metrics.STATE,
        metrics.STATE_SINCE,
    ):
        assert metric.name in exprs
    assert all(t["format"] == "table" and t["instant"] for t in table["targets"])
    organize = next(t for t in table["transformations"] if t["id"] == "organize")
    renamed = organize["options"]["renameByName"]
    ref_ids = {f"Value #{t['refId']}" for t in table["targets"]}
    assert ref_ids <= set(renamed), "every query's value column gets a title"
    overridden = {o["matcher"]["options"] for o in table["fieldConfig"]["overrides"]}
    hidden = {name for name, on in organize["options"]["excludeByName"].items() if on}
    # The labels a Kubernetes scrape adds say which exporter, not which group.
    assert hidden >= {"__name__", "namespace", "pod", "service", "endpoint", "container"}
    assert hidden >= {"instance", "job"}
    assert not hidden & {"tenant", "name", "id", "behaviour"}
    assert [t["id"] for t in table["transformations"]][:1] == ["merge"], "merge before hiding"
    assert {"State", "Error ratio", "Time in state"} <= overridden <= set(renamed.values())


def test_per_series_panels_show_and_keep_the_tenant(dashboard: dict[str, Any]) -> None:
    # Several tenants chosen: each line or bar is one tenant's, and says which.
    drawn = [p for p in _panels(dashboard) if p["type"] in ("timeseries", "bargauge")]
    assert drawn
    for panel in drawn:
        for target in panel["targets"]:
            assert "{{tenant}}" in target["legendFormat"], panel["title"]
            for labels in re.findall(r"\bby \(([^)]*)\)", target["expr"]):
                assert "tenant" in labels.split(", "), f"{panel['title']}: by ({labels})"
            assert not re.search(r"\b(?:sum|min|max|avg|count)\(", target["expr"]), panel["title"]


def test_tenant_health_row_shows_up_snapshot_age_and_failures_by_code(
    dashboard: dict[str, Any],
) -> None:
    rows = _rows(dashboard)
    assert list(rows)[:2] == ["Overview", "Tenant health"], "right below the overview"
    panels = {p["title"]: p for p in rows["Tenant health"]}
    table = panels["Tenant health"]
    exprs = [t["expr"] for t in table["targets"]]
    assert exprs[0].startswith("max by (tenant, instance) (webex_campaign_up{")
    assert exprs[1].startswith(
        "max by (tenant, instance) (time() - webex_campaign_last_poll_success_timestamp_seconds{"
    )
    assert exprs[2].startswith(
        "sum by (tenant, instance) (increase(webex_campaign_api_failures_total{"
    )
    assert all(t["format"] == "table" and t["instant"] for t in table["targets"])
    organize = next(t for t in table["transformations"] if t["id"] == "organize")
    shown = organize["options"]["renameByName"]
    assert {shown["tenant"], shown["instance"]} == {"Tenant", "Exporter"}, "which shard"
    assert not organize["options"]["excludeByName"].keys() & {"tenant", "instance"}
    (failures,) = panels["API failures by tenant and code"]["targets"]
    assert failures["expr"].startswith(
        "sum by (tenant, code) (increase(webex_campaign_api_failures_total{"
    )
    assert failures["legendFormat"] == "{{tenant}} {{code}}"


def test_exporter_health_row_shows_config_reload_status(dashboard: dict[str, Any]) -> None:
    panels = {p["title"]: p for p in _rows(dashboard)["Exporter health"]}
    (reload,) = panels["Config reload"]["targets"]
    assert reload["expr"].startswith(
        "min by (instance) (webex_campaign_config_last_reload_successful{"
    )
    assert reload["legendFormat"] == "{{instance}}"
    (loaded,) = panels["Config loaded"]["targets"]
    assert "webex_campaign_config_last_reload_success_timestamp_seconds" in loaded["expr"]
    texts = {
        m["options"][value]["text"]
        for m in panels["Config reload"]["fieldConfig"]["defaults"]["mappings"]
        for value in m["options"]
    }
    assert texts == {"OK", "Failed"}


def _threshold_after(expr: str, metric: str) -> float:
    match = re.search(metric + r"[^>]*>\s*([0-9.]+)", expr)
    assert match, f"no threshold on {metric} in {expr}"
    return float(match.group(1))


def test_stuck_threshold_matches_the_alert(dashboard: dict[str, Any]) -> None:
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    alert = next(r for r in rules if r.get("alert") == "WebexCampaignTargetGroupStuckInProgress")
    (stuck,) = (p for p in _panels(dashboard) if p["title"] == "Groups stuck in progress")
    metric = metrics.STATE_SINCE.name
    assert _threshold_after(stuck["targets"][0]["expr"], metric) == _threshold_after(
        alert["expr"], metric
    )


def test_import_panels_show_durations_and_finished_imports_by_tenant_and_behaviour(
    dashboard: dict[str, Any],
) -> None:
    panels = {p["title"]: p for p in _panels(dashboard)}
    duration = panels["Import duration by tenant and behaviour"]
    per_hour = panels["Imports finished per hour by tenant and behaviour"]
    assert duration["fieldConfig"]["defaults"]["unit"] == "s"
    quantiles = [t["expr"] for t in duration["targets"]]
    levels = [re.findall(r"^histogram_quantile\(([0-9.]+),", q) for q in quantiles]
    assert levels == [["0.5"], ["0.9"]]
    for expr in quantiles:
        assert metrics.IMPORT_DURATION.name + "_bucket" in expr
        assert "sum by (tenant, behaviour, le)" in expr
    (finished,) = (t["expr"] for t in per_hour["targets"])
    assert metrics.TRANSITIONS.name in finished
    assert 'from="in_progress", to="ready"' in finished
    assert finished.startswith("sum by (tenant, behaviour) (rate(")
    assert finished.endswith(" * 3600")
    for panel in (duration, per_hour):
        # Imports are rare events: a rate over one scrape interval would be mostly empty.
        assert panel["interval"] == "5m"
        assert all("{{tenant}} {{behaviour}}" in t["legendFormat"] for t in panel["targets"])


def _docs_section(title: str) -> str:
    """The `## title` section of docs/metrics.md, where the dashboard is described."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    return text.partition(f"## {title}\n")[2].partition("\n## ")[0]


def test_docs_dashboard_table_lists_the_rows_and_panel_titles(dashboard: dict[str, Any]) -> None:
    section = _docs_section("Dashboard")
    lines = [line for line in section.splitlines() if line.startswith("| ")][1:]
    documented = [line.strip("|").split("|")[0].strip() for line in lines]
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert documented == rows


def test_docs_name_every_dashboard_variable(dashboard: dict[str, Any]) -> None:
    section = _docs_section("Dashboard")
    for variable in dashboard["templating"]["list"]:
        assert f"**{variable['label']}**" in section, variable["name"]
