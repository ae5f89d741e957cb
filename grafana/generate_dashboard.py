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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "webex-campaign-exporter.json"
UID = "webex-campaign-exporter"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Every selector is narrowed by the three variables: several releases (jobs, instances) may
# export the same tenant in one Prometheus, and several shards share the tenants out.
EXPORTERS = ('job=~"$job"', 'instance=~"$instance"')
SCOPE = (*EXPORTERS, 'tenant=~"$tenant"')
# What "All" stands for: any value, but never a missing label.
ALL_VALUE = ".+"
# Same threshold as the WebexCampaignTargetGroupStuckInProgress alert.
STUCK_AFTER_SECONDS = 3600
TOP_GROUPS = 10


def _m(name: str, *matchers: str) -> str:
    """A selector of `name` restricted to the chosen jobs, instances and tenants."""
    return f"webex_campaign_{name}{{{', '.join((*SCOPE, *matchers))}}}"


def _of_exporters_polling_chosen_tenants(name: str) -> str:
    """A process-wide series (no `tenant`) of the exporters that poll a chosen tenant.

    Filtering it by tenant directly would drop it; joining on the exporter's job and
    instance keeps, with shards, just the instances serving the chosen tenants.
    """
    return f"webex_campaign_{name}{{{', '.join(EXPORTERS)}}} and on (job, instance) {_m('up')}"


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


UP_MAPPINGS: list[model.ValueMapping] = [
    model.ValueMap(
        options={
            "0": model.ValueMappingResult(text="Down", color="red", index=0),
            "1": model.ValueMappingResult(text="Up", color="green", index=1),
        }
    )
]
# The WebexCampaignSnapshotStale alert fires at 900 s.
SNAPSHOT_AGE_THRESHOLDS = _thresholds((None, "green"), (300, "orange"), (900, "red"))


def _stat(title: str, description: str, expr: str, legend: str = "") -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(_query(expr, legend).instant())
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
        .mappings(UP_MAPPINGS)
        .thresholds(_thresholds((None, "red"), (1, "green"))),
        _stat(
            "Snapshot age",
            "Time since the last successful poll. The exporter polls the API on its own"
            " interval (a rate-limited SaaS shared by many scrapers), so this is how old"
            " the numbers on this dashboard are.",
            f"max(time() - {_m('last_poll_success_timestamp_seconds')})",
        )
        .unit("s")
        .thresholds(SNAPSHOT_AGE_THRESHOLDS),
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


def _color_text(*properties: model.DynamicConfigValue) -> list[model.DynamicConfigValue]:
    return [
        *properties,
        model.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"}),
    ]


def _merged_table(
    title: str,
    description: str,
    queries: Sequence[cogbuilder.Builder[cogvariants.Dataquery]],
    columns: dict[str, str],
    sort_desc: str,
    hidden: tuple[str, ...] = TABLE_HIDDEN,
) -> table.Panel:
    """A table of instant queries joined on their labels, one row per label set, sorted by
    the column `sort_desc`, largest first."""
    organize = {
        "excludeByName": dict.fromkeys(hidden, True),
        "indexByName": {field: index for index, field in enumerate(columns)},
        "renameByName": columns,
    }
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(list(queries))
        .with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(model.DataTransformerConfig(id_val="organize", options=organize))
        .sort_by([common_builder.TableSortByFieldState().display_name(sort_desc).desc(True)])
        .unit("short")
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
    return (
        _merged_table(
            "Target groups",
            "Every target group in the last snapshot: records, share of error records,"
            " import state and how long the group has been in that state.",
            queries,
            TABLE_COLUMNS,
            sort_desc="Error ratio",
        )
        .height(10)
        .span(24)
        .override_by_name(
            "State",
            _color_text(model.DynamicConfigValue(id_val="mappings", value=STATE_MAPPINGS)),
        )
        .override_by_name("Time in state", [model.DynamicConfigValue(id_val="unit", value="s")])
        .override_by_name(
            "Error ratio",
            _color_text(
                model.DynamicConfigValue(id_val="unit", value="percentunit"),
                model.DynamicConfigValue(id_val="decimals", value=1),
                model.DynamicConfigValue(
                    id_val="thresholds",
                    value=_thresholds((None, "green"), (0.000001, "orange"), (0.05, "red")).build(),
                ),
            ),
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


# Ids are unique within a tenant only.
GROUP_LEGEND = "{{tenant}} {{name}} ({{id}})"


def records_panels() -> list[timeseries.Panel]:
    return [
        _timeseries(
            f"Valid records, top {TOP_GROUPS} groups",
            f"Valid records of the {TOP_GROUPS} target groups with the most valid records"
            " in the time range.",
            "short",
        ).with_target(_query(_top_groups("target_group_valid_records"), GROUP_LEGEND)),
        _timeseries(
            f"Error records, top {TOP_GROUPS} groups",
            f"Error records of the {TOP_GROUPS} target groups with the most error records"
            " in the time range: records uploaded but not imported.",
            "short",
        ).with_target(_query(_top_groups("target_group_error_records"), GROUP_LEGEND)),
    ]


def _per_tenant(expr: str) -> str:
    """One line per tenant: while a restarted exporter's old and new series overlap, or
    a tenant moves to another shard, the worst of them."""
    return f"max by (tenant) ({expr})"


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
            _query(
                _per_tenant(f"time() - {_m('last_poll_success_timestamp_seconds')}"), "{{tenant}}"
            )
        ),
        _timeseries(
            "Poll duration",
            "How long the last poll took: the API request plus processing of the response.",
            "s",
        ).with_target(_query(_per_tenant(_m("poll_duration_seconds")), "{{tenant}}")),
        _timeseries(
            "Malformed records skipped",
            "Records of the last API response that were skipped as malformed; each is"
            " logged by the exporter.",
            "short",
        ).with_target(_query(_per_tenant(_m("invalid_target_groups")), "{{tenant}}")),
    ]


# -- Health of each tenant and of each exporter (issue 13: several tenants, shards) --------

TENANT_COLUMNS: dict[str, str] = {
    "tenant": "Tenant",
    "instance": "Exporter",
    "Value #A": "API",
    "Value #B": "Snapshot age",
    "Value #C": "Failed requests",
}
# The counts over the whole time range, asked at its end: how often each tenant failed in
# the range the dashboard shows, whatever the step.
IN_RANGE = "[$__range]"


def tenant_health_table() -> table.Panel:
    """One row per tenant and the exporter (shard) that polls it."""
    by = "by (tenant, instance)"
    queries = [
        _instant_table(f"max {by} ({_m('up')})", "A"),
        _instant_table(f"max {by} (time() - {_m('last_poll_success_timestamp_seconds')})", "B"),
        _instant_table(f"sum {by} (increase({_m('api_failures_total')}{IN_RANGE}))", "C"),
    ]
    return (
        _merged_table(
            "Tenant health",
            "One row per tenant: the exporter (shard) that polls it, whether its last poll"
            " succeeded, the age of its snapshot and the API requests that failed in the"
            " time range; the oldest snapshots first.",
            queries,
            TENANT_COLUMNS,
            sort_desc="Snapshot age",
            hidden=("Time",),
        )
        .height(8)
        .span(12)
        .override_by_name(
            "API",
            _color_text(model.DynamicConfigValue(id_val="mappings", value=UP_MAPPINGS)),
        )
        .override_by_name(
            "Snapshot age",
            _color_text(
                model.DynamicConfigValue(id_val="unit", value="s"),
                model.DynamicConfigValue(
                    id_val="thresholds", value=SNAPSHOT_AGE_THRESHOLDS.build()
                ),
            ),
        )
        .override_by_name(
            "Failed requests",
            _color_text(
                model.DynamicConfigValue(
                    id_val="thresholds", value=_thresholds((None, "green"), (1, "orange")).build()
                ),
            ),
        )
    )


def failures_by_code() -> bargauge.Panel:
    expr = f"sum by (tenant, code) (increase({_m('api_failures_total')}{IN_RANGE})) > 0"
    return (
        bargauge.Panel()
        .title("API failures by tenant and code")
        .description(
            "Failed API requests in the time range, per tenant and code: the code of the"
            " response body, else the HTTP status, else timeout, connection, tls,"
            " invalid_response or too_large. Empty while every request succeeds."
        )
        .datasource(DATASOURCE)
        .with_target(_query(expr, "{{tenant}} {{code}}").instant())
        .height(8)
        .span(12)
        .unit("short")
        .no_value("no failures")
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.BASIC)
        .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]))
        .thresholds(_thresholds((None, "orange")))
    )


def exporter_stats() -> list[stat.Panel]:
    reloaded = _of_exporters_polling_chosen_tenants("config_last_reload_success_timestamp_seconds")
    return [
        _stat(
            "Config reload",
            "Whether the last reload of each exporter's tenants file (--config.file, on"
            " SIGHUP or POST /-/reload) succeeded. A failed reload changes nothing: the"
            " exporter keeps polling as the last valid file said. The"
            " WebexCampaignExporterConfigReloadFailed alert fires after 10 minutes.",
            "min by (instance) ("
            + _of_exporters_polling_chosen_tenants("config_last_reload_successful")
            + ")",
            "{{instance}}",
        )
        .span(12)
        .mappings(
            [
                model.ValueMap(
                    options={
                        "0": model.ValueMappingResult(text="Failed", color="red", index=0),
                        "1": model.ValueMappingResult(text="OK", color="green", index=1),
                    }
                )
            ]
        )
        .thresholds(_thresholds((None, "red"), (1, "green"))),
        _stat(
            "Config loaded",
            "When each exporter last loaded its tenants file successfully, at start or on"
            " a reload.",
            f"max by (instance) ({reloaded}) * 1000",
            "{{instance}}",
        )
        .span(12)
        .unit("dateTimeFromNow")
        .thresholds(_thresholds((None, "blue"))),
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
        .all_value(ALL_VALUE)
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
    rows: dict[str, Sequence[cogbuilder.Builder[model.Panel]]] = {
        "Overview": overview_stats(),
        "Tenant health": [tenant_health_table(), failures_by_code()],
        "Target groups": [groups_table(), *records_panels()],
        "API and polling": api_panels(),
        "Imports": import_panels(),
        "Exporter health": exporter_stats(),
    }
    for title, panels in rows.items():
        builder = builder.with_row(dash.Row(title))
        for panel in panels:
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
