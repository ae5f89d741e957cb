"""The dashboard and alert rules against a real Prometheus scraping the demo exporter.

Starts the installed `webex-campaign-exporter --demo` twice, as two shards of one job that
poll one tenant each, and Debian's `prometheus` on loopback (temporary data directory,
1 s scrape and rule evaluation), then runs every dashboard query, with both tenants chosen,
and every alert expression through Prometheus's HTTP API.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tools import CONFIG_RELOAD_METRICS, exporter_script, promql_metric_names, require_tool

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "grafana" / "dashboards" / "webex-campaign-exporter.json"
ALERTS = ROOT / "prometheus" / "alerts.yaml"
STARTUP_TIMEOUT_S = 20.0
# What Grafana would put in for a 1 s scrape interval and a short time range.
JOB = "e2e-any-name"
# One tenant per exporter: two shards of one job (the first is also the relabel checks').
TENANTS = ("demo", "demo-b")
GRAFANA_VARIABLES = {
    "$__rate_interval": "4s",
    "$__interval": "1s",
    "$__range": "1m",
    "$job": JOB,
    "$instance": ".+",  # the variable's All value
    "$tenant": f"({'|'.join(TENANTS)})",  # how Grafana writes two chosen values
}
# Failure rates are filtered with `> 0`: a healthy demo tenant has none to show.
MAY_BE_EMPTY = re.compile(r"webex_campaign_api_failures_total")
# The alerts a healthy demo tenant must not trigger, even ignoring their `for`.
SILENT_ON_DEMO = {
    "WebexCampaignExporterDown",
    "WebexCampaignExporterConfigReloadFailed",
    "WebexCampaignApiDown",
    "WebexCampaignApiAuthFailing",
    "WebexCampaignApiThrottled",
    "WebexCampaignApiErrors",
    "WebexCampaignSnapshotStale",
}


@dataclass(frozen=True)
class Query:
    name: str
    expr: str


def _substitute(expr: str) -> str:
    # Longest names first so that $__range is not cut short by a shorter match.
    for variable in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(variable, GRAFANA_VARIABLES[variable])
    assert "$" not in expr, f"unsubstituted Grafana variable in {expr}"
    return expr


def _dashboard_queries() -> list[Query]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        Query(f"{panel['title']}/{target['refId']}", _substitute(target["expr"]))
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def _multi_query_tables() -> dict[str, list[Query]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return {
        panel["title"]: [
            Query(f"{panel['title']}/{t['refId']}", _substitute(t["expr"]))
            for t in panel["targets"]
        ]
        for panel in dashboard["panels"]
        if panel["type"] == "table" and len(panel.get("targets", [])) > 1
    }


def _alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for group in doc["groups"] for r in group["rules"] if "alert" in r]


DASHBOARD_QUERIES = _dashboard_queries()
ALERT_QUERIES = [Query(r["alert"], r["expr"]) for r in _alert_rules()]


# --- The metricRelabelings of every example values file ----------------------------------

CHART = ROOT / "helm" / "webex-campaign-exporter"
# A ServiceMonitor's RelabelConfig fields and the Prometheus scrape config keys they become.
RELABEL_KEYS = {
    "sourceLabels": "source_labels",
    "separator": "separator",
    "targetLabel": "target_label",
    "regex": "regex",
    "modulus": "modulus",
    "replacement": "replacement",
    "action": "action",
}
# Appended to each example's relabelings, so that the rules and the dashboard queries (which
# never match a job) see only the main job's series.
RELABEL_PREFIX = "relabel_check:"
RENAME = {
    "source_labels": ["__name__"],
    "regex": "(.+)",
    "target_label": "__name__",
    "replacement": RELABEL_PREFIX + "$1",
}
# What the examples used to ship: keeps build_info only, so every panel goes blank.
BROKEN_EXAMPLE = [
    {"sourceLabels": ["__name__"], "regex": "webex_campaign_exporter_build_info", "action": "keep"}
]


def _yaml_blocks(markdown: Path, section: str | None = None) -> list[str]:
    text = markdown.read_text() if markdown.is_file() else ""
    if section is not None:
        text = text.partition(section)[2].partition("\n## ")[0]
    return re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)


def _example_values() -> dict[str, dict[str, Any]]:
    """Every values example users may copy: ci/*-values.yaml and the docs' yaml blocks."""
    examples = {p.name: yaml.safe_load(p.read_text()) for p in sorted(CHART.glob("ci/*.yaml"))}
    blocks = {
        "docs-deployment": _yaml_blocks(ROOT / "docs" / "deployment.md", "## Install with Helm"),
        "chart-README": _yaml_blocks(CHART / "README.md"),
    }
    for source, texts in blocks.items():
        for index, text in enumerate(texts):
            data = yaml.safe_load(text)
            if isinstance(data, dict) and "scrape_configs" not in data:
                examples[f"{source}-{index}"] = data
    return examples


def _metric_relabelings(values: dict[str, Any]) -> list[dict[str, Any]]:
    relabelings: list[dict[str, Any]] = (values.get("serviceMonitor") or {}).get(
        "metricRelabelings"
    ) or []
    return relabelings


def _scrape_relabel_configs(relabelings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # The Prometheus Operator writes each RelabelConfig with these keys, actions lower-cased.
    configs = []
    for relabeling in relabelings:
        unknown = set(relabeling) - set(RELABEL_KEYS)
        assert not unknown, f"not a RelabelConfig field: {unknown}"
        config = {RELABEL_KEYS[key]: value for key, value in relabeling.items()}
        if "action" in config:
            config["action"] = config["action"].lower()
        configs.append(config)
    return configs


EXAMPLES = _example_values()
RELABELLED_EXAMPLES = {
    name: _metric_relabelings(values)
    for name, values in EXAMPLES.items()
    if _metric_relabelings(values)
}


def _metrics_used() -> set[str]:
    """Metric names the alerting rules and the dashboard (queries and variables) read."""
    dashboard = json.loads(DASHBOARD.read_text())
    names: set[str] = set()
    for query in (*DASHBOARD_QUERIES, *ALERT_QUERIES):
        names |= promql_metric_names(query.expr)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            names |= set(re.findall(r"label_values\((\w+)", variable["query"]))
    # `up` is Prometheus's own per-target series; metric relabelings never touch it.
    return names - {"up"}


METRICS_USED = _metrics_used()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for(what: str, check: Callable[[], bool], logs: list[Path]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in logs if p.exists())
    pytest.fail(f"timed out after {STARTUP_TIMEOUT_S}s waiting for {what}\n{tails}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


class PrometheusAPI:
    def __init__(self, base_url: str) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=10)

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, str | float] = {"query": expr}
        if at is not None:
            params["time"] = at
        response = self.client.get("/api/v1/query", params=params)
        body = response.json()
        assert response.status_code == 200, f"{expr}: {body.get('error')}"
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def rules(self) -> list[dict[str, Any]]:
        body = self.client.get("/api/v1/rules").json()
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]


def _ready(address: str) -> Callable[[], bool]:
    return lambda: httpx.get(f"http://{address}/-/ready").status_code == 200


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusAPI]:
    prometheus_bin = require_tool("prometheus")
    exporter_bin = exporter_script()
    tmp = tmp_path_factory.mktemp("prometheus-e2e")
    prometheus_log = tmp / "prometheus.log"
    logs = [prometheus_log]
    exporter_addresses = [f"127.0.0.1:{_free_port()}" for _ in TENANTS]
    exporter_address = exporter_addresses[0]
    prometheus_url = f"http://127.0.0.1:{_free_port()}"
    config = tmp / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {
                        "job_name": JOB,
                        "static_configs": [{"targets": exporter_addresses}],
                    },
                    # The same exporter once more per example's metricRelabelings.
                    *(
                        {
                            "job_name": f"relabel-{name}",
                            "static_configs": [{"targets": [exporter_address]}],
                            "metric_relabel_configs": [
                                *_scrape_relabel_configs(relabelings),
                                RENAME,
                            ],
                        }
                        for name, relabelings in {
                            **RELABELLED_EXAMPLES,
                            "broken-example": BROKEN_EXAMPLE,
                        }.items()
                    ),
                ],
            }
        )
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for tenant, address in zip(TENANTS, exporter_addresses, strict=True):
            log = tmp / f"exporter-{tenant}.log"
            logs.append(log)
            processes.append(
                _start(
                    [
                        exporter_bin,
                        "--demo",
                        "--tenant",
                        tenant,
                        "--web.listen-address",
                        address,
                        "--poll-interval",
                        "1",
                    ],
                    log,
                )
            )
        for address in exporter_addresses:
            _wait_for(f"the exporter at {address} to be ready", _ready(address), logs)
        processes.append(
            _start(
                [
                    prometheus_bin,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp / 'data'}",
                    f"--web.listen-address={prometheus_url.removeprefix('http://')}",
                    "--log.level=warn",
                ],
                prometheus_log,
            )
        )
        _wait_for(
            "Prometheus to be ready",
            lambda: httpx.get(f"{prometheus_url}/-/ready").status_code == 200,
            logs,
        )
        api = PrometheusAPI(prometheus_url)
        # Enough scrapes for rate() over 4s to have two samples, and one rule evaluation.
        _wait_for(
            "scraped samples and evaluated rules",
            lambda: (
                len(api.query(f'rate(webex_campaign_api_requests_total{{job="{JOB}"}}[4s]) > 0'))
                == len(TENANTS)
                # both shards and every relabel job have scraped too
                and len(api.query("up == 1")) == len(TENANTS) + 1 + len(RELABELLED_EXAMPLES)
                # A rule never evaluated reports Go's zero time, 0001-01-01T00:00:00Z.
                and all(not r["lastEvaluation"].startswith("0001") for r in api.rules())
            ),
            logs,
        )
        yield api
    finally:
        for process in reversed(processes):
            _stop(process)


def test_targets_are_up(prometheus: PrometheusAPI) -> None:
    ups = prometheus.query(f'up{{job="{JOB}"}}')
    assert [up["value"][1] for up in ups] == ["1"] * len(TENANTS)
    api_ups = prometheus.query(f'webex_campaign_up{{job="{JOB}"}}')
    assert sorted(s["metric"]["tenant"] for s in api_ups) == sorted(TENANTS)
    assert len({s["metric"]["instance"] for s in api_ups}) == len(TENANTS), "one per shard"


def _not_served(prometheus: PrometheusAPI) -> set[str]:
    """The config reload series, where the exporter under test does not serve them yet."""
    result = prometheus.query(f'count by (__name__) ({{job="{JOB}"}})')
    return set(CONFIG_RELOAD_METRICS) - {s["metric"]["__name__"] for s in result}


def test_rules_load_and_evaluate_without_error(prometheus: PrometheusAPI) -> None:
    rules = prometheus.rules()
    assert {r["name"] for r in rules} == {q.name for q in ALERT_QUERIES}
    for rule in rules:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"


@pytest.mark.parametrize("query", DASHBOARD_QUERIES, ids=lambda q: q.name)
def test_dashboard_query_runs_and_shows_data(prometheus: PrometheusAPI, query: Query) -> None:
    result = prometheus.query(query.expr)
    if MAY_BE_EMPTY.search(query.expr) or promql_metric_names(query.expr) & _not_served(prometheus):
        return
    assert result, f"{query.name} shows no data for the demo tenants: {query.expr}"
    tenants = {s["metric"]["tenant"] for s in result if "tenant" in s["metric"]}
    # Every panel that tells tenants apart shows both (the top 10 groups may be one's).
    if tenants and "topk" not in query.expr:
        assert tenants == set(TENANTS), f"{query.name}: {tenants}"


@pytest.mark.parametrize("query", ALERT_QUERIES, ids=lambda q: q.name)
def test_alert_expression_runs(prometheus: PrometheusAPI, query: Query) -> None:
    result = prometheus.query(query.expr)
    if query.name in SILENT_ON_DEMO:
        assert result == [], f"{query.name} would fire on a healthy demo tenant: {result}"


def _alert(prometheus: PrometheusAPI, name: str) -> list[dict[str, Any]]:
    (query,) = (q for q in ALERT_QUERIES if q.name == name)
    return prometheus.query(query.expr)


def test_stuck_in_progress_finds_the_demo_stuck_group(prometheus: PrometheusAPI) -> None:
    result = _alert(prometheus, "WebexCampaignTargetGroupStuckInProgress")
    stuck = [s for s in result if s["metric"]["name"] == "demo_stuck_import"]
    # Both demo tenants hold the group, with the same id: one alert each.
    assert sorted(s["metric"]["tenant"] for s in stuck) == sorted(TENANTS)
    assert len({s["metric"]["id"] for s in stuck}) == 1
    for series in stuck:
        # The demo backdates it about 3 hours; the value is the time in progress.
        assert float(series["value"][1]) > 2 * 3600


def test_error_record_alerts_find_groups(prometheus: PrometheusAPI) -> None:
    # The demo creates its groups at start, so their error records are new: they fire.
    absolute = _alert(prometheus, "WebexCampaignTargetGroupErrorRecords")
    assert absolute, "the demo has new groups with error records"
    assert all(float(s["value"][1]) > 0 for s in absolute)
    # High ratios only on imports that finished within the hour, all of them new groups.
    ratio = _alert(prometheus, "WebexCampaignTargetGroupErrorRatioHigh")
    assert {s["metric"]["id"] for s in ratio} <= {s["metric"]["id"] for s in absolute}


def test_group_state_stats_count_the_demo_groups(prometheus: PrometheusAPI) -> None:
    by_name = {q.name: q.expr for q in DASHBOARD_QUERIES}
    ready = float(prometheus.query(by_name["Groups ready/A"])[0]["value"][1])
    in_progress = float(prometheus.query(by_name["Groups in progress/A"])[0]["value"][1])
    stuck = float(prometheus.query(by_name["Groups stuck in progress/A"])[0]["value"][1])
    assert ready >= 2, "the two example groups of the API description are Ready"
    assert in_progress >= stuck >= 1, "demo_stuck_import is in progress and stuck"


# The demo's first imports finish 3 steps of 15 s after its start (seeded), seen by the
# next poll; a generous deadline for a busy machine.
FIRST_IMPORTS_TIMEOUT_S = 150.0


def test_import_panels_show_the_demo_s_finished_imports(prometheus: PrometheusAPI) -> None:
    finished = (
        "min(sum by (tenant) (webex_campaign_target_group_state_transitions_total"
        '{from="in_progress", to="ready"}))'
    )
    deadline = time.monotonic() + FIRST_IMPORTS_TIMEOUT_S
    while float(prometheus.query(finished)[0]["value"][1]) < 1:
        assert time.monotonic() < deadline, "no import of each demo tenant finished in time"
        time.sleep(1)
    (observed,) = prometheus.query("sum(webex_campaign_target_group_import_duration_seconds_count)")
    assert float(observed["value"][1]) >= 1
    # A window wide enough to hold the first imports, as the panels' 5m minimum
    # interval would give in Grafana.
    panels = {
        q.name: q.expr.replace("[4s]", "[5m]")
        for q in DASHBOARD_QUERIES
        if q.name.startswith("Import")
    }
    assert set(panels) == {
        "Import duration by tenant and behaviour/A",
        "Import duration by tenant and behaviour/B",
        "Imports finished per hour by tenant and behaviour/A",
    }
    for name, expr in panels.items():
        values = {
            (s["metric"]["tenant"], s["metric"]["behaviour"]): float(s["value"][1])
            for s in prometheus.query(expr)
        }
        assert {tenant for tenant, _ in values} == set(TENANTS), name
        shown = [v for v in values.values() if v == v]  # NaN where none finished
        assert shown, f"{name} shows no number: {values}"
        assert all(v > 0 for v in shown), f"{name}: {values}"
    durations = [
        float(s["value"][1])
        for s in prometheus.query(panels["Import duration by tenant and behaviour/B"])
    ]
    # Demo imports take 3 steps of 15 s or more (45 s: p90 at least 0.9 of the first
    # bucket, 54 s); by the time of this query none that takes 5 minutes has finished.
    assert all(45 <= d <= 300 for d in durations if d == d), durations


MULTI_QUERY_TABLES = _multi_query_tables()


def test_the_dashboard_has_a_multi_query_table() -> None:
    assert {"Target groups", "Tenant health"} <= set(MULTI_QUERY_TABLES)


def test_tenant_health_has_one_row_per_tenant_with_its_shard(prometheus: PrometheusAPI) -> None:
    for query in MULTI_QUERY_TABLES["Tenant health"]:
        rows = [s["metric"] for s in prometheus.query(query.expr)]
        assert sorted(r["tenant"] for r in rows) == sorted(TENANTS), query.name
        assert len({r["instance"] for r in rows}) == len(TENANTS), query.name


@pytest.mark.parametrize("title", list(MULTI_QUERY_TABLES))
def test_table_queries_share_one_label_set_without_metric_name(
    prometheus: PrometheusAPI, title: str
) -> None:
    # Grafana's merge transformation joins the queries' rows on every label column: one row
    # per group only if each query returns exactly the same label sets, none with __name__.
    at = time.time()
    label_sets: dict[str, set[frozenset[tuple[str, str]]]] = {}
    for query in MULTI_QUERY_TABLES[title]:
        result = prometheus.query(query.expr, at=at)
        assert result, f"{query.name} shows no data: {query.expr}"
        for series in result:
            assert "__name__" not in series["metric"], f"{query.name} keeps __name__"
        label_sets[query.name] = {frozenset(s["metric"].items()) for s in result}
        assert len(label_sets[query.name]) == len(result)
    first, *others = label_sets
    for name in others:
        assert label_sets[name] == label_sets[first], f"{name} and {first} would not merge"


def _surviving_metrics(prometheus: PrometheusAPI, job: str) -> set[str]:
    result = prometheus.query(f'count by (__name__) ({{job="{job}"}})')
    names = {series["metric"]["__name__"] for series in result}
    # `up` and the other scrape_* series Prometheus adds are not relabelled.
    return {n.removeprefix(RELABEL_PREFIX) for n in names if n.startswith(RELABEL_PREFIX)}


def test_examples_with_metric_relabelings_are_checked() -> None:
    assert "monitoring-values.yaml" in RELABELLED_EXAMPLES
    assert len(METRICS_USED) >= 10, METRICS_USED


@pytest.mark.parametrize("example", list(RELABELLED_EXAMPLES))
def test_every_metric_of_rules_and_dashboard_survives_the_example_relabelings(
    prometheus: PrometheusAPI, example: str
) -> None:
    surviving = _surviving_metrics(prometheus, f"relabel-{example}")
    missing = METRICS_USED - surviving - _not_served(prometheus)
    assert not missing, f"{example}'s metricRelabelings drop {sorted(missing)}"


def test_the_relabel_check_catches_a_broken_example(prometheus: PrometheusAPI) -> None:
    # Guards the guard: Prometheus really applies the relabelings of these jobs.
    surviving = _surviving_metrics(prometheus, "relabel-broken-example")
    assert surviving == {"webex_campaign_exporter_build_info"}
    assert METRICS_USED - surviving
