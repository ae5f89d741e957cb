"""process_* series of the server process and of the poller process, in both formats."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from exporter_process import running_exporter, status_bytes
from helpers import samples

from exporter import metrics as m
from exporter.exposition import Health, render, render_groups
from exporter.process_metrics import (
    PROCESS_LABEL,
    ProcessMetrics,
    ProcessReader,
    Readings,
)
from exporter.process_metrics import render as render_processes

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


def test_readings_are_process_collectors(child: subprocess.Popen[bytes]) -> None:
    """The same series, in the same order, with the same values (a sleeping process's)."""
    from prometheus_client import ProcessCollector

    reader = ProcessReader(pid=lambda: child.pid)
    collector = ProcessCollector(pid=lambda: child.pid, registry=None)
    deadline = time.monotonic() + 10
    while True:  # until the child sleeps: its CPU time and memory no longer move
        before = [(metric.name, value) for metric, value in reader.read()]
        theirs = [(s.name, s.value) for family in collector.collect() for s in family.samples]
        after = [(metric.name, value) for metric, value in reader.read()]
        if before == after or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert before == theirs
    own = [s.name for f in ProcessCollector(registry=None).collect() for s in f.samples]
    assert [metric.name for metric, _ in ProcessReader().read()] == own
    assert ProcessReader(proc=str(Path(__file__).parent / "no-proc")).read() == []


def _as_prometheus_client_wrote_it(
    processes: list[tuple[str, Readings]], openmetrics: bool
) -> bytes:
    """How this module rendered with prometheus_client's registry (before it read /proc itself)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import generate_latest
    from prometheus_client.metrics_core import Metric
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
    from prometheus_client.samples import Sample

    class Collector:
        def collect(self) -> list[Metric]:
            merged: dict[str, Metric] = {}
            for process, readings in processes:
                for metric, value in readings:
                    into = merged.setdefault(
                        metric.family, Metric(metric.family, metric.help, metric.type)
                    )
                    into.samples.append(Sample(metric.name, {PROCESS_LABEL: process}, value))
            return list(merged.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())  # type: ignore[arg-type]
    if openmetrics:
        text: bytes = generate_openmetrics(registry)  # type: ignore[no-untyped-call]
        return text.removesuffix(b"# EOF\n")
    return generate_latest(registry)


@pytest.mark.parametrize("openmetrics", [False, True])
def test_rendered_as_prometheus_clients_registry_renders(
    child: subprocess.Popen[bytes], openmetrics: bool
) -> None:
    processes = ProcessMetrics(lambda: child.pid).readings()
    assert [process for process, _ in processes] == ["exporter", "poller"]
    # A process whose stat could not be read: its other families come first.
    partial = [("poller", processes[1][1][4:]), processes[0]]
    for case in (processes, partial, processes[:1], []):
        assert render_processes(case, openmetrics) == _as_prometheus_client_wrote_it(
            case, openmetrics
        )
