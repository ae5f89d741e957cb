#!/usr/bin/env python3
"""Copy the canonical alert rules and dashboard into the Helm chart.

A chart cannot read files outside its folder, so it carries byte-identical copies under
helm/webex-campaign-exporter/files/. Edit the canonical files, then run this script;
tests/test_helm.py fails while a copy differs. `--check` only reports.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHART_FILES = ROOT / "helm" / "webex-campaign-exporter" / "files"

# canonical file -> its copy inside the chart
COPIES: dict[Path, Path] = {
    ROOT / "prometheus" / "alerts.yaml": CHART_FILES / "alerts.yaml",
    ROOT / "grafana" / "dashboards" / "webex-campaign-exporter.json": (
        CHART_FILES / "webex-campaign-exporter.json"
    ),
}


COPY_SOURCES: dict[Path, Path] = {copy: source for source, copy in COPIES.items()}


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
    if args.check:
        for copy in stale:
            print(f"out of date: {copy.relative_to(ROOT)}", file=sys.stderr)
        return 1 if stale or missing else 0
    for copy in stale:
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(COPY_SOURCES[copy].read_bytes())
        print(f"updated {copy.relative_to(ROOT)}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
