"""`process_*` series of both of the exporter's processes, read at each scrape.

The exporter is two processes: the one that serves (and receives results)
and the poller child (`python -m exporter.worker`). prometheus_client's
ProcessCollector reads each from /proc; the series of both are exported in
the same families, told apart by the label `process` (`exporter` or
`poller`). On systems without /proc there are none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.samples import Sample

PROCESS_LABEL = "process"
SERVER, POLLER = "exporter", "poller"


class ProcessMetrics:
    """Renders the process series of this process and of the poller, whose pid may change."""

    def __init__(self, poller_pid: Callable[[], int | None]) -> None:
        self._poller_pid = poller_pid
        self._server = ProcessCollector(registry=None)
        self._poller = ProcessCollector(pid=self._pid, registry=None)
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)

    def _pid(self) -> int:
        pid = self._poller_pid()
        assert pid is not None  # collect() asks only when there is one
        return pid

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        collectors = [(SERVER, self._server)]
        if self._poller_pid() is not None:
            collectors.append((POLLER, self._poller))
        for process, collector in collectors:
            for family in collector.collect():
                into = merged.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                into.samples.extend(
                    Sample(s.name, {PROCESS_LABEL: process, **s.labels}, s.value)
                    for s in family.samples
                )
        return list(merged.values())

    def render(self, openmetrics: bool) -> bytes:
        if openmetrics:
            text: bytes = generate_openmetrics(self._registry)  # type: ignore[no-untyped-call]
            return text.removesuffix(b"# EOF\n")
        return generate_latest(self._registry)
