"""process_* series of the server process and of the poller process, in both formats."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from exporter_process import running_exporter, status_bytes
from helpers import samples

from exporter import metrics as m
from exporter.exposition import Health, render, render_groups
from exporter.process_metrics import ProcessMetrics

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def by_process(text: str, openmetrics: bool) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for sample in samples(text, openmetrics):
        if sample.name.startswith("process_"):
            found.setdefault(sample.labels["process"], {})[sample.name] = sample.value
    return found


@pytest.mark.parametrize("openmetrics", [False, True])
def test_both_processes_in_one_family_each(
    child: subprocess.Popen[bytes], openmetrics: bool
) -> None:
    processes = ProcessMetrics(lambda: child.pid)
    exposition = render(render_groups("acme", ()), Health("acme", True, 1.0, 0.1, 1, {}, 0))
    body = exposition.select(openmetrics, processes.render(openmetrics))
    text = body.plain().decode()
    assert body.length == len(body.plain())
    seen = by_process(text, openmetrics)  # the official parsers: one family each, EOF last
    assert set(seen) == {"exporter", "poller"}
    for process in seen.values():
        assert set(process) == {metric.name for metric in m.PROCESS}
    assert (
        seen["exporter"]["process_start_time_seconds"]
        != seen["poller"]["process_start_time_seconds"]
        or os.getpid() != child.pid
    )
    assert (
        seen["poller"]["process_resident_memory_bytes"]
        < seen["exporter"]["process_resident_memory_bytes"]
    )  # a sleeping interpreter against the test's


def test_without_a_poller_only_the_server_is_exported() -> None:
    text = ProcessMetrics(lambda: None).render(False).decode()
    assert set(by_process(text, False)) == {"exporter"}


def test_the_running_exporter_exports_its_poller() -> None:
    with running_exporter(["--demo", "--poll-interval", "0.5"]) as exporter:
        poller = exporter.poller_pid
        rss = exporter.value("process_resident_memory_bytes", process="poller")
        assert rss is not None
        assert abs(rss - status_bytes(poller, "VmRSS")) < 64 << 20
        assert (exporter.value("process_open_fds", process="exporter") or 0) > 3
