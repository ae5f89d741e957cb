"""Helpers shared by tests: external tools (promtool, prometheus, helm, hadolint), PromQL names."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import pytest

from exporter import metrics


def require_tool(name: str) -> str:
    """Return the path of `name`, or skip the test when it is missing.

    Looks beside the running interpreter first: tools that come as wheels (hadolint,
    actionlint, uv) live in the venv under test, which need not be on PATH. Then PATH,
    for system tools (promtool, podman).

    In CI (env CI=true) a missing tool is a broken environment, not a reason to
    skip: the test fails so that a green run always means the tool was exercised.
    """
    beside = Path(sys.executable).with_name(name)
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    path = shutil.which(name)
    if path is not None:
        return path
    unavailable(f"required tool {name!r} is in neither {beside.parent} nor PATH")


def unavailable(message: str) -> NoReturn:
    """Skip for a missing prerequisite; in CI (env CI=true), fail instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


# PromQL words that look like identifiers but are not metric names.
_PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "inf", "nan"}
)


def promql_metric_names(expr: str) -> set[str]:
    """Return the metric names an expression selects, by stripping what is not one.

    A regex scan rather than a parser: it is enough for the rules and dashboard we
    write, and tests check its result against exporter.metrics, so a miss shows up
    as an unknown name rather than passing silently.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    # Label lists of grouping and vector matching clauses.
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\w+", " ", text)  # Grafana variables
    names: set[str] = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names


# Process-wide series of several tenants in one exporter (SPEC, issue 13), which the rules
# and the dashboard read: known even before exporter/metrics.py declares them.
CONFIG_RELOAD_METRICS = frozenset(
    {
        "webex_campaign_config_last_reload_successful",
        "webex_campaign_config_last_reload_success_timestamp_seconds",
    }
)
# Series about the exporter process, not about a tenant: they carry no `tenant` label.
PROCESS_WIDE = re.compile(r"\bwebex_campaign_(?:exporter|config)_\w+")


def known_metric_names() -> set[str]:
    """Every series name the exporter declares, plus the config reload metrics."""
    declared = {name for metric in metrics.ALL for name in metric.series_names}
    return declared | CONFIG_RELOAD_METRICS


def exporter_script() -> str:
    """The console script installed next to the running interpreter (the venv under test).

    Preferred over PATH, where an older install elsewhere could shadow the code under test.
    """
    beside = Path(sys.executable).with_name("webex-campaign-exporter")
    if beside.is_file():
        return str(beside)
    found = shutil.which("webex-campaign-exporter")
    assert found, "console script missing: pip install -e '.[test]'"
    return found
