"""The benchmark harness runs end to end in --quick mode and reports every row and column.

Timings are the benchmark's output, never assertions here (issue 4).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.run import CHURN_COLUMNS, COLUMNS

ROOT = Path(__file__).resolve().parent.parent
QUICK_SIZES = [200, 2_000]
TARGET_STATUSES = {"PASS", "FAIL", "SKIP"}


@pytest.fixture(scope="module")
def quick_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    output = tmp_path_factory.mktemp("bench") / "quick.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads(output.read_text(encoding="utf-8"))


def _finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.timeout(120)
def test_every_size_reports_every_column(
    quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    _, report = quick_run
    assert [row["groups"] for row in report["rows"]] == QUICK_SIZES
    for row in report["rows"]:
        missing = [key for key, _, _ in COLUMNS if not _finite_number(row.get(key))]
        assert not missing, f"{row['groups']} groups: no value for {missing}"
        assert row["processing_s"] > 0 and row["peak_rss_mb"] >= row["steady_rss_mb"] > 0
    for size in report["sizes"]:
        # The exporter served every generated group: it measured the payload it was given.
        assert size["exporter"]["groups_reported"] == size["groups"]
        assert size["scrape_idle"]["gzip_bytes"] > 0
        assert size["scrape_idle"]["count"] >= 30 and size["scrape_busy"]["count"] >= 30


@pytest.mark.timeout(120)
def test_churn_row_and_targets_are_reported(
    quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    _, report = quick_run
    churn = report["churn"]
    assert all(_finite_number(churn[key]) for key, _, _ in CHURN_COLUMNS)
    assert (churn["polls_first"], churn["polls_last"]) == (50, 500)
    targets = report["targets"]
    assert len(targets) == 7
    assert {t["status"] for t in targets} <= TARGET_STATUSES
    # Only the churn target can be evaluated at the quick sizes.
    assert [t["status"] for t in targets].count("SKIP") == 6


@pytest.mark.timeout(120)
def test_stdout_holds_the_table_and_machine_info(
    quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    result, report = quick_run
    machine = report["machine"]
    assert machine["cpu"] and machine["cores"] and machine["python"]
    assert machine["cpu"] in result.stdout and f"Python {machine['python']}" in result.stdout
    for _, title, _ in (*COLUMNS, *CHURN_COLUMNS):
        assert title in result.stdout
    for groups in QUICK_SIZES:
        assert f"\n| {groups:,} |" in result.stdout
    assert result.stdout.strip() == report["table"].strip()
