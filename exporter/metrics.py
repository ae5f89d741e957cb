"""The metric contract: every metric name, type, help text and label set.

This is the one home of the names that dashboards, alerts and users rely on
(see SPEC "Metrics"). The exposition renders from it; the README table, the
alert rules and the Grafana dashboard are checked against it by tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Literal

from .payload import text

if TYPE_CHECKING:  # the snapshot reads its bucket bounds from here
    from .records import TargetGroup
    from .snapshot import GroupSample

PREFIX = "webex_campaign_"


@dataclass(frozen=True)
class Label:
    """A label of the per-group series, and the group field its value is read from."""

    name: str
    field: str
    """The `TargetGroup` attribute holding the value."""
    as_text: bool = True
    """Normalised as text is exported (`records.text`: null and "null" are empty)."""
    source: str | None = None
    """The field a derived value (`field` a property) is computed from: read instead of
    it where only a key is needed."""

    def read(self, group: TargetGroup) -> str:
        value: str | None = getattr(group, self.field)
        return text(value) if self.as_text else str(value)


# Every per-group series carries `tenant` (the exporter's, not the group's) first.
TENANT = "tenant"
GROUP_IDENTITY: tuple[Label, ...] = (
    Label("id", "id", as_text=False),
    Label("name", "name"),
    Label("behaviour", "behaviour"),
)
INFO_ATTRIBUTES: tuple[Label, ...] = (
    Label("status", "status_value"),
    Label("user_group", "user_group"),
    Label("load_type", "load_type", source="load_type_sent"),
    Label("source", "source", source="source_sent"),
    Label("target_group_type", "target_group_type", source="target_group_type_sent"),
    Label("channels", "channels", source="supported_channels"),
)
GROUP_LABELS: tuple[str, ...] = (TENANT, *(label.name for label in GROUP_IDENTITY))
INFO_LABELS: tuple[str, ...] = tuple(label.name for label in INFO_ATTRIBUTES)
STATES: tuple[str, ...] = ("in_progress", "ready", "unknown")

# The documented failure pairs (status, code), exported at 0 from the start so
# that rate() and increase() see the first failure.
DOCUMENTED_FAILURES: tuple[tuple[str, str], ...] = (
    ("400", "400"),
    ("401", "430"),
    ("401", "498"),
    ("404", "404"),
    ("405", "405"),
    ("500", "500"),
)

_POLLED = (
    " The exporter polls the API on its own interval (the API is a rate-limited"
    " SaaS shared by many scrapers); scrapes read the last snapshot."
)


@dataclass(frozen=True)
class Metric:
    name: str
    type: Literal["gauge", "counter", "histogram"]
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    """Upper bounds of a histogram's buckets, `+Inf` left implicit."""
    value: Callable[[GroupSample], float | None] | None = None
    """A per-group series: how its value is read from a group's sample (None: no sample)."""
    attributes: tuple[Label, ...] = ()
    """A per-group series: the labels it carries after the group's identity."""

    @property
    def family(self) -> str:
        """The OpenMetrics family name (counters drop `_total`)."""
        if self.type == "counter":
            return self.name.removesuffix("_total")
        return self.name

    @property
    def series_names(self) -> tuple[str, ...]:
        """The names its samples carry: a histogram's `_bucket`, `_sum` and `_count`."""
        if self.type == "histogram":
            return tuple(self.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        return (self.name,)


def _group(
    suffix: str,
    help_text: str,
    value: Callable[[GroupSample], float | None],
    attributes: tuple[Label, ...] = (),
) -> Metric:
    """A per-group gauge: one series per target group, labelled by its identity."""
    labels = GROUP_LABELS + tuple(label.name for label in attributes)
    return Metric(PREFIX + suffix, "gauge", help_text, labels, value=value, attributes=attributes)


# Values are read with attrgetter where they can be: done in C, 800,000 times a
# poll at 100,000 groups.
TOTAL_RECORDS = _group(
    "target_group_total_records",
    "Records in the target group (totalCount).",
    attrgetter("group.total_count"),
)
VALID_RECORDS = _group(
    "target_group_valid_records",
    "Valid records in the target group (validcount).",
    attrgetter("group.valid_count"),
)
ERROR_RECORDS = _group(
    "target_group_error_records",
    "Error records in the target group (errorcount).",
    attrgetter("group.error_count"),
)
STATE = _group(
    "target_group_state",
    "State of the target group: 0 in progress, 1 ready (targetState).",
    attrgetter("state"),
)
INFO = _group(
    "target_group_info",
    "Descriptive attributes of the target group; the value is always 1.",
    lambda _sample: 1,
    INFO_ATTRIBUTES,
)
CREATED = _group(
    "target_group_created_timestamp_seconds",
    "When the target group was created (createdOn), as Unix time.",
    attrgetter("created"),
)
LAST_UPDATED = _group(
    "target_group_last_updated_timestamp_seconds",
    "When the target group was last updated (lastUpdatedOn), as Unix time.",
    attrgetter("last_updated"),
)
STATE_SINCE = _group(
    "target_group_state_since_timestamp_seconds",
    "When the target group entered its current state, as first seen by the exporter"
    " (after a restart: lastUpdatedOn where it is older), as Unix time.",
    attrgetter("state_since"),
)
GROUPS = Metric(
    PREFIX + "target_groups",
    "gauge",
    "Target groups in the last snapshot, by state (in_progress, ready, unknown).",
    ("tenant", "state"),
)
UP = Metric(
    PREFIX + "up",
    "gauge",
    "1 if the last poll of the target-groups API succeeded, else 0." + _POLLED,
    ("tenant",),
)
LAST_POLL_SUCCESS = Metric(
    PREFIX + "last_poll_success_timestamp_seconds",
    "gauge",
    "End of the last successful poll, as Unix time; time() minus this is the snapshot's age."
    + _POLLED,
    ("tenant",),
)
POLL_DURATION = Metric(
    PREFIX + "poll_duration_seconds",
    "gauge",
    "Length of the last poll, fetch and processing, in seconds." + _POLLED,
    ("tenant",),
)
API_REQUESTS = Metric(
    PREFIX + "api_requests_total",
    "counter",
    "Requests sent to the Webex Campaign API.",
    ("tenant",),
)
API_FAILURES = Metric(
    PREFIX + "api_failures_total",
    "counter",
    "Failed API requests by HTTP status (or none) and code (from the body when it is a"
    " number of up to 6 digits, other for any other code; else the status; else timeout,"
    " connection, tls, invalid_response, too_large).",
    ("tenant", "status", "code"),
)
INVALID_GROUPS = Metric(
    PREFIX + "invalid_target_groups",
    "gauge",
    "Records in the last API response that were skipped as malformed.",
    ("tenant",),
)
TRUNCATED_LABELS = Metric(
    PREFIX + "truncated_label_values",
    "gauge",
    "Label values in the served per-group series that were longer than the cap"
    " (WEBEX_CAMPAIGN_MAX_LABEL_LENGTH) and were cut to it.",
    ("tenant",),
)
BUILD_INFO = Metric(
    PREFIX + "exporter_build_info",
    "gauge",
    "Build of the exporter; the value is always 1.",
    ("tenant", "version", "python_version"),
)

# -- Import lifecycle: events the exporter sees between two successive polls -----------

# Behaviours exported at 0 from the start, so rate() and histogram_quantile() work at
# once; others appear when a group of that behaviour first changes state.
LIFECYCLE_BEHAVIOURS: tuple[str, ...] = ("S", "D")
# Every ordered pair of distinct states is exported at 0 per behaviour (6 pairs): the
# pairs are few and fixed, and an alert on a rare one (ready -> unknown: the API
# stopped saying) needs its series before the first event just as much.
TRANSITION_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (before, after) for before in STATES for after in STATES if before != after
)
# One minute to one day. The API dates to the minute and the default poll is a
# minute, so nothing shorter is measurable; an import still running after a day is
# stuck (the stuck alert fires after an hour), not slow. In between, steps of about
# 2x: histogram_quantile() interpolates within a bucket, so a doubling (what the
# slow-import alert looks for) moves the estimate by about one bucket.
IMPORT_DURATION_BUCKETS: tuple[float, ...] = (
    60.0,
    120.0,
    300.0,
    600.0,
    900.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    28800.0,
    43200.0,
    86400.0,
)

TRANSITIONS = Metric(
    PREFIX + "target_group_state_transitions_total",
    "counter",
    "Target groups seen changing state (in_progress, ready, unknown) between two"
    " successive successful polls. The first poll after a start, groups that appear and"
    " groups that disappear count none.",
    ("tenant", "behaviour", "from", "to"),
)
IMPORT_DURATION = Metric(
    PREFIX + "target_group_import_duration_seconds",
    "histogram",
    "For each target group seen going from in progress to ready: seconds from when it"
    " entered in progress (state-since) to the poll that saw it ready. Not observed"
    " when polls failed for longer than the stale-after period in between.",
    ("tenant", "behaviour"),
    IMPORT_DURATION_BUCKETS,
)

# Process-wide, with --config.file only: read at scrape time in the serving process.
CONFIG_RELOAD_SUCCESSFUL = Metric(
    PREFIX + "config_last_reload_successful",
    "gauge",
    "1 if the last reload of --config.file succeeded (or none was tried since the start), else 0.",
    (),
)
CONFIG_RELOAD_SUCCESS_TIME = Metric(
    PREFIX + "config_last_reload_success_timestamp_seconds",
    "gauge",
    "When --config.file was last loaded successfully (at start or by a reload), as Unix time.",
    (),
)
CONFIG: tuple[Metric, ...] = (CONFIG_RELOAD_SUCCESSFUL, CONFIG_RELOAD_SUCCESS_TIME)

# Read at scrape time from /proc for both processes (exporter.process_metrics):
# the names prometheus_client's ProcessCollector writes, with the label `process`.
PROCESS: tuple[Metric, ...] = (
    Metric(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        ("process",),
    ),
    Metric(
        "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", ("process",)
    ),
    Metric("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", ("process",)),
    Metric(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        ("process",),
    ),
    Metric("process_open_fds", "gauge", "Number of open file descriptors.", ("process",)),
    Metric("process_max_fds", "gauge", "Maximum number of open file descriptors.", ("process",)),
)

PER_GROUP: tuple[Metric, ...] = (  # in the order they are exposed
    TOTAL_RECORDS,
    VALID_RECORDS,
    ERROR_RECORDS,
    STATE,
    INFO,
    CREATED,
    LAST_UPDATED,
    STATE_SINCE,
)

# A tenant's own series outside the per-group ones, in the order they are exposed.
PER_TENANT: tuple[Metric, ...] = (
    GROUPS,
    UP,
    LAST_POLL_SUCCESS,
    POLL_DURATION,
    INVALID_GROUPS,
    TRUNCATED_LABELS,
    BUILD_INFO,
    API_REQUESTS,
    API_FAILURES,
    TRANSITIONS,
    IMPORT_DURATION,
)

# Every family a tenant has samples in, in exposition order: with several tenants each
# family is written once, every tenant's samples of it together.
TENANT_FAMILIES: tuple[Metric, ...] = (*PER_GROUP, *PER_TENANT)

ALL: tuple[Metric, ...] = (*TENANT_FAMILIES, *CONFIG)
