"""The README's tables and commands agree with the code they describe."""

from __future__ import annotations

import re
from pathlib import Path

from exporter import metrics as m
from exporter.cli import build_parser
from exporter.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def table_rows(first_header: str) -> list[list[str]]:
    """Rows of the markdown table whose header starts with `first_header`."""
    lines = README.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_metrics_table_is_the_contract() -> None:
    rows = table_rows("metric")
    documented = {
        row[0].strip("`"): (row[1], tuple(label.strip() for label in row[2].split(",")))
        for row in rows
    }
    declared = (*m.ALL, *m.PROCESS)
    assert documented == {metric.name: (metric.type, metric.labels) for metric in declared}


def test_configuration_table_covers_every_setting_and_flag() -> None:
    rows = table_rows("env")
    envs = {row[0].strip("`") for row in rows if row[0] != "—"}
    assert envs == {ENV_PREFIX + name.upper() for name in Settings.model_fields if name != "demo"}
    flags = {row[1].strip("`") for row in rows if row[1] != "—"}
    parser_flags = {
        option
        for action in build_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option not in ("--help", "--version")
    }
    assert flags == parser_flags


def test_ci_runs_the_readme_test_command() -> None:
    commands = re.findall(r"```sh\n(.*?)\n```", README, re.S)
    test_command = next(c for c in commands if "pytest" in c)
    demo_command = next(c for c in commands if "--demo" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text()
    assert demo_command.endswith("webex-campaign-exporter --demo")
