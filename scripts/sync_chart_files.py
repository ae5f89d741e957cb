#!/usr/bin/env python3
"""Copy the canonical alert rules and dashboard into the Helm chart; write its values table.

A chart cannot read files outside its folder, so it carries byte-identical copies under
helm/webex-campaign-exporter/files/. The chart's README.md (what `helm show readme` prints)
holds a table of every value, made from values.yaml and its `# --` comments (the helm-docs
convention). Edit the canonical files or values.yaml, then run this script;
tests/test_helm.py fails while a copy or the table differs. `--check` only reports.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "webex-campaign-exporter"
CHART_FILES = CHART / "files"
CHART_README = CHART / "README.md"
VALUES = CHART / "values.yaml"
TABLE_START, TABLE_END = "<!-- values:start -->", "<!-- values:end -->"

# canonical file -> its copy inside the chart
COPIES: dict[Path, Path] = {
    ROOT / "prometheus" / "alerts.yaml": CHART_FILES / "alerts.yaml",
    ROOT / "grafana" / "dashboards" / "webex-campaign-exporter.json": (
        CHART_FILES / "webex-campaign-exporter.json"
    ),
}


COPY_SOURCES: dict[Path, Path] = {copy: source for source, copy in COPIES.items()}


# --- the values table ---------------------------------------------------------------------


def _description(lines: list[str], line: int) -> str:
    """The `# --` comment block right above `line`, as one line of text."""
    block: list[str] = []
    index = line - 1
    while index >= 0 and lines[index].strip().startswith("#"):
        block.insert(0, lines[index].strip())
        index -= 1
    starts = [i for i, text in enumerate(block) if text.startswith("# --")]
    if not starts:
        return ""
    words = (re.sub(r"^#( --)? ?", "", text) for text in block[starts[-1] :])
    return " ".join(word for word in words if word).strip()


def _documented(node: yaml.Node, lines: list[str]) -> bool:
    return isinstance(node, yaml.MappingNode) and any(
        _description(lines, key.start_mark.line) or _documented(value, lines)
        for key, value in node.value
    )


def _rows(node: yaml.MappingNode, lines: list[str], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, description) of every documented value: a mapping whose keys carry no
    comment of their own is one value, like a scalar or a list."""
    for key, value in node.value:
        path = prefix + key.value
        if isinstance(value, yaml.MappingNode) and value.value and _documented(value, lines):
            yield from _rows(value, lines, path + ".")
        else:
            yield path, _description(lines, key.start_mark.line)


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        value = value[part]
    return value


TYPE_NAMES = {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}


def values_rows(text: str) -> list[tuple[str, str, Any, str]]:
    """(key, type, default, description) of each value; ValueError when one is undocumented."""
    lines = text.splitlines()
    root = yaml.compose(text)
    data = yaml.safe_load(text)
    assert isinstance(root, yaml.MappingNode)
    rows = []
    undocumented = []
    for key, description in _rows(root, lines):
        default = _lookup(data, key)
        rows.append((key, TYPE_NAMES.get(type(default), "null"), default, description))
        if not description:
            undocumented.append(key)
    if undocumented:
        raise ValueError(f"values without a `# --` comment: {', '.join(undocumented)}")
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def values_table(text: str) -> str:
    header = "| Key | Type | Default | Description |\n|---|---|---|---|\n"
    return header + "".join(
        f"| `{key}` | {kind} | `{_cell(json.dumps(default))}` | {_cell(description)} |\n"
        for key, kind, default, description in values_rows(text)
    )


def readme_with_table(readme: str, table: str) -> str:
    before, start, rest = readme.partition(TABLE_START)
    _, end, after = rest.partition(TABLE_END)
    if not (start and end):
        raise ValueError(f"{CHART_README.name} lacks the {TABLE_START} ... {TABLE_END} markers")
    return f"{before}{TABLE_START}\n{table}{TABLE_END}{after}"


def readme_is_stale() -> bool:
    readme = CHART_README.read_text()
    return readme_with_table(readme, values_table(VALUES.read_text())) != readme


def stale_copies() -> list[Path]:
    """Copies that are missing or differ from their (existing) canonical file."""
    return [
        copy
        for source, copy in COPIES.items()
        if source.is_file() and (not copy.is_file() or copy.read_bytes() != source.read_bytes())
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale copies, change nothing")
    args = parser.parse_args(argv)

    missing = [source for source in COPIES if not source.is_file()]
    for source in missing:
        print(f"canonical file missing: {source.relative_to(ROOT)}", file=sys.stderr)
    stale = stale_copies()
    if readme_is_stale():
        stale.append(CHART_README)
    if args.check:
        for copy in stale:
            print(f"out of date: {copy.relative_to(ROOT)}", file=sys.stderr)
        return 1 if stale or missing else 0
    for copy in stale:
        if copy == CHART_README:
            table = values_table(VALUES.read_text())
            copy.write_text(readme_with_table(copy.read_text(), table))
        else:
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(COPY_SOURCES[copy].read_bytes())
        print(f"updated {copy.relative_to(ROOT)}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
