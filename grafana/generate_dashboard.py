"""Build the Grafana dashboard of webex-campaign-exporter from code.

Uses grafana-foundation-sdk (pinned in the test extras), so the JSON is valid for
Grafana's dashboard schema by construction. The output is committed as
grafana/dashboards/webex-campaign-exporter.json; tests/test_dashboard.py checks that
this script still produces exactly that file.

    python grafana/generate_dashboard.py          # rewrite the JSON
    python grafana/generate_dashboard.py --check  # exit 1 if the JSON is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "webex-campaign-exporter.json"
UID = "webex-campaign-exporter"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Every selector is narrowed by the three variables: several releases (jobs, instances) may
# export the same tenant in one Prometheus.
SCOPE = ('job=~"$job"', 'instance=~"$instance"', 'tenant=~"$tenant"')
# Same threshold as the WebexCampaignTargetGroupStuckInProgress alert.
STUCK_AFTER_SECONDS = 3600
TOP_GROUPS = 10


def _m(name: str, *matchers: str) -> str:
    """A selector of `name` restricted to the chosen jobs, instances and tenants."""
    return f"webex_campaign_{name}{{{', '.join((*SCOPE, *matchers))}}}"


def _unnamed(expr: str) -> str:
    """`expr` with all its labels but without __name__ (aggregating `without ()` drops it).

    Grafana's merge joins the table queries on every label column, so a query that keeps
    __name__ would give each group one row per metric.
    """
    return f"sum without () ({expr})"


def _query(expr: str, legend: str = "", ref_id: str = "A") -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).ref_id(ref_id).datasource(DATASOURCE)
    if legend:
        query = query.legend_format(legend)
    return query


def _instant_table(expr: str, ref_id: str) -> prometheus.Dataquery:
    return _query(expr, ref_id=ref_id).instant().format(PromQueryFormat.TABLE)


def _thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in steps])
    )


STATE_MAPPINGS: list[model.ValueMapping] = [
    model.ValueMap(
        options={
            "0": model.ValueMappingResult(text="In progress", color="orange", index=0),
            "1": model.ValueMappingResult(text="Ready", color="green", index=1),
        }
    )
]


def _stat(title: str, description: str, expr: str) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(_query(expr).instant())
        .height(4)
        .span(4)
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]))
    )


def overview_stats() -> list[stat.Panel]:
    stuck = (
        f"count((time() - {_m('target_group_state_since_timestamp_seconds')})"
        f" > {STUCK_AFTER_SECONDS} and {_m('target_group_state')} == 0) or vector(0)"
    )
    return [
        _stat(
            "Groups ready",
            "Target groups whose import has finished (targetState 1).",
            "sum(" + _m("target_groups", 'state="ready"') + ")",
        )
        .unit("short")
        .thresholds(_thresholds((None, "green"))),
        _stat(
            "Groups in progress",
            "Target groups still importing records (targetState 0).",
            "sum(" + _m("target_groups", 'state="in_progress"') + ")",
        )
        .unit("short")
        .thresholds(_thresholds((None, "blue"))),
        _stat(
            "Groups stuck in progress",
            f"Target groups in progress for more than {STUCK_AFTER_SECONDS // 60} minutes,"
            " the threshold of the WebexCampaignTargetGroupStuckInProgress alert.",
            stuck,
        )
        .unit("short")
        .thresholds(_thresholds((None, "green"), (1, "orange"))),
        _stat(
            "Groups with errors",
            "Target groups holding at least one error record (uploaded but not imported).",
            f"count({_m('target_group_error_records')} > 0) or vector(0)",
        )
        .unit("short")
        .thresholds(_thresholds((None, "green"), (1, "orange"))),
        _stat(
            "API up",
            "Whether the last poll of the Webex Campaign API succeeded (the worst tenant"
            " when several are selected).",
            f"min({_m('up')})",
        )
        .mappings(
            [
                model.ValueMap(
                    options={
                        "0": model.ValueMappingResult(text="Down", color="red", index=0),
                        "1": model.ValueMappingResult(text="Up", color="green", index=1),
                    }
                )
            ]
        )
        .thresholds(_thresholds((None, "red"), (1, "green"))),
        _stat(
            "Snapshot age",
            "Time since the last successful poll. The exporter polls the API on its own"
            " interval (a rate-limited SaaS shared by many scrapers), so this is how old"
            " the numbers on this dashboard are.",
            f"max(time() - {_m('last_poll_success_timestamp_seconds')})",
        )
        .unit("s")
        .thresholds(_thresholds((None, "green"), (300, "orange"), (900, "red"))),
    ]


# Column order and titles of the groups table; the keys are the fields Grafana
# produces from instant table queries ("Value #<refId>" per query).
TABLE_COLUMNS: dict[str, str] = {
    "tenant": "Tenant",
    "name": "Name",
    "id": "ID",
    "behaviour": "Behaviour",
    "Value #E": "State",
    "Value #F": "Time in state",
    "Value #A": "Total records",
    "Value #B": "Valid records",
    "Value #C": "Error records",
    "Value #D": "Error ratio",
}
# Time, and the target labels a Kubernetes scrape (ServiceMonitor) adds: they identify the
# exporter, not the group. Hidden after the merge, so rows of two exporters stay apart.
TABLE_HIDDEN = (
    "Time",
    "__name__",
    "job",
    "instance",
    "namespace",
    "pod",
    "service",
    "endpoint",
    "container",
)


def groups_table() -> table.Panel:
    queries = [
        _instant_table(_unnamed(_m("target_group_total_records")), "A"),
        _instant_table(_unnamed(_m("target_group_valid_records")), "B"),
        _instant_table(_unnamed(_m("target_group_error_records")), "C"),
        # clamp_min keeps empty groups in the table at ratio 0 instead of NaN.
        _instant_table(
            f"{_m('target_group_error_records')}"
            f" / clamp_min({_m('target_group_total_records')}, 1)",
            "D",
        ),
        _instant_table(_unnamed(_m("target_group_state")), "E"),
        _instant_table(f"time() - {_m('target_group_state_since_timestamp_seconds')}", "F"),
    ]
    organize = {
        "excludeByName": dict.fromkeys(TABLE_HIDDEN, True),
        "indexByName": {field: index for index, field in enumerate(TABLE_COLUMNS)},
        "renameByName": TABLE_COLUMNS,
    }
    return (
        table.Panel()
        .title("Target groups")
        .description(
            "Every target group in the last snapshot: records, share of error records,"
            " import state and how long the group has been in that state."
        )
        .datasource(DATASOURCE)
        .targets(queries)
        .height(10)
        .span(24)
        .with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(model.DataTransformerConfig(id_val="organize", options=organize))
        .sort_by([common_builder.TableSortByFieldState().display_name("Error ratio").desc(True)])
        .unit("short")
        .override_by_name(
            "State",
            [
                model.DynamicConfigValue(id_val="mappings", value=STATE_MAPPINGS),
                model.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"}),
            ],
        )
        .override_by_name("Time in state", [model.DynamicConfigValue(id_val="unit", value="s")])
        .override_by_name(
            "Error ratio",
            [
                model.DynamicConfigValue(id_val="unit", value="percentunit"),
                model.DynamicConfigValue(id_val="decimals", value=1),
                model.DynamicConfigValue(
                    id_val="thresholds",
                    value=_thresholds((None, "green"), (0.000001, "orange"), (0.05, "red")).build(),
                ),
                model.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"}),
            ],
        )
    )


def _top_groups(metric: str) -> str:
    """The series of the groups with the highest values over the whole range.

    A plain topk() picks groups per step, so a range would show more than N
    lines; ranking max_over_time at end() keeps the same N groups throughout.
    """
    selector = _m(metric)
    return (
        f"{selector} and on (tenant, id)"
        f" topk({TOP_GROUPS}, max_over_time({selector}[$__range] @ end()))"
    )


def _timeseries(title: str, description: str, unit: str) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(8)
        .span(12)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
        .legend(
            common_builder.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.RIGHT)
            .calcs(["lastNotNull"])
        )
        .tooltip(
            common_builder.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )


def records_panels() -> list[timeseries.Panel]:
    return [
        _timeseries(
            f"Valid records, top {TOP_GROUPS} groups",
            f"Valid records of the {TOP_GROUPS} target groups with the most valid records"
            " in the time range.",
            "short",
        ).with_target(_query(_top_groups("target_group_valid_records"), "{{name}} ({{id}})")),
        _timeseries(
            f"Error records, top {TOP_GROUPS} groups",
            f"Error records of the {TOP_GROUPS} target groups with the most error records"
            " in the time range: records uploaded but not imported.",
            "short",
        ).with_target(_query(_top_groups("target_group_error_records"), "{{name}} ({{id}})")),
    ]


def api_panels() -> list[timeseries.Panel]:
    rate = "[$__rate_interval]"
    return [
        _timeseries(
            "API requests and failures",
            "Requests the exporter sent to the Webex Campaign API per second, and failed"
            " requests by HTTP status (none: no response) and code from the body.",
            "reqps",
        )
        .with_target(
            _query(
                f"sum by (tenant) (rate({_m('api_requests_total')}{rate}))",
                "{{tenant}} requests",
                "A",
            )
        )
        .with_target(
            _query(
                f"sum by (tenant, status, code) (rate({_m('api_failures_total')}{rate})) > 0",
                "{{tenant}} failed {{status}}/{{code}}",
                "B",
            )
        ),
        _timeseries(
            "Snapshot age",
            "Seconds since the last successful poll; it saw-tooths up to the poll interval"
            " while polls succeed and climbs steadily while they fail.",
            "s",
        ).with_target(
            _query(f"time() - {_m('last_poll_success_timestamp_seconds')}", "{{tenant}}")
        ),
        _timeseries(
            "Poll duration",
            "How long the last poll took: the API request plus processing of the response.",
            "s",
        ).with_target(_query(_m("poll_duration_seconds"), "{{tenant}}")),
        _timeseries(
            "Malformed records skipped",
            "Records of the last API response that were skipped as malformed; each is"
            " logged by the exporter.",
            "short",
        ).with_target(_query(_m("invalid_target_groups"), "{{tenant}}")),
    ]


# -- Imports: the lifecycle metrics (issue 15) -----------------------------------------

# Imports finish a few times an hour: quantiles over a scrape interval or two would be
# mostly empty, so these panels ask for at least this step (and $__rate_interval follows).
IMPORTS_MIN_INTERVAL = "5m"
IMPORT_QUANTILES = (0.5, 0.9)


def import_panels() -> list[timeseries.Panel]:
    rate = "[$__rate_interval]"
    buckets = f"rate({_m('target_group_import_duration_seconds_bucket')}{rate})"
    duration = _timeseries(
        "Import duration by tenant and behaviour",
        "How long imports took: from when a group was seen entering in progress to the"
        " poll that saw it ready (50th and 90th percentile of the imports that finished"
        " in each interval; empty where none finished). Behaviour S is static, D dynamic."
        " The WebexCampaignImportsSlow alert compares the 6-hour 90th percentile with"
        " its 7-day level.",
        "s",
    ).interval(IMPORTS_MIN_INTERVAL)
    for ref_id, quantile in zip("AB", IMPORT_QUANTILES, strict=True):
        duration = duration.with_target(
            _query(
                f"histogram_quantile({quantile}, sum by (tenant, behaviour, le) ({buckets}))",
                f"{{{{tenant}}}} {{{{behaviour}}}} p{round(quantile * 100)}",
                ref_id,
            )
        )
    finished = _m("target_group_state_transitions_total", 'from="in_progress"', 'to="ready"')
    per_hour = _timeseries(
        "Imports finished per hour by tenant and behaviour",
        "Target groups seen going from in progress to ready, as an hourly rate. Groups"
        " that appear already ready are not counted (the exporter did not see them"
        " import).",
        "short",
    ).interval(IMPORTS_MIN_INTERVAL)
    per_hour = per_hour.with_target(
        _query(
            f"sum by (tenant, behaviour) (rate({finished}{rate})) * 3600",
            "{{tenant}} {{behaviour}}",
        )
    )
    return [duration, per_hour]


def _multi_variable(name: str, label: str, query: str) -> dash.QueryVariable:
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def build() -> dash.Dashboard:
    builder = (
        dash.Dashboard("Webex Campaign target groups")
        .uid(UID)
        .description(
            "Target groups of Webex Campaign tenants, as polled by webex-campaign-exporter."
        )
        .tags(["webex-campaign", "prometheus-exporter"])
        .editable()
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("browser")
        # Grafana adds its built-in "Annotations & Alerts" query to this list on load.
        .annotations([])
        .with_variable(
            dash.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(
            _multi_variable("job", "Job", "label_values(webex_campaign_exporter_build_info, job)")
        )
        .with_variable(
            _multi_variable(
                "instance",
                "Instance",
                'label_values(webex_campaign_exporter_build_info{job=~"$job"}, instance)',
            )
        )
        .with_variable(
            _multi_variable(
                "tenant",
                "Tenant",
                'label_values(webex_campaign_up{job=~"$job", instance=~"$instance"}, tenant)',
            )
        )
    )
    builder = builder.with_row(dash.Row("Overview"))
    for panel in overview_stats():
        builder = builder.with_panel(panel)
    builder = builder.with_row(dash.Row("Target groups")).with_panel(groups_table())
    for panel in records_panels():
        builder = builder.with_panel(panel)
    builder = builder.with_row(dash.Row("API and polling"))
    for panel in api_panels():
        builder = builder.with_panel(panel)
    builder = builder.with_row(dash.Row("Imports"))
    for panel in import_panels():
        builder = builder.with_panel(panel)
    return builder


def _number_panels(panels: list[dict[str, Any]]) -> None:
    # Grafana keys panel state (links, repeats) on ids; give them stable ones.
    for number, panel in enumerate(panels, start=1):
        panel["id"] = number


def render() -> str:
    data: dict[str, Any] = json.loads(json.dumps(build().build(), cls=JSONEncoder))
    _number_panels(data["panels"])
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the JSON is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
