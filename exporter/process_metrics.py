"""`process_*` series of both of the exporter's processes, read at each scrape.

The exporter is two processes: the one that serves (and receives results)
and the poller child (`python -m exporter.worker`). Each is read from /proc
as prometheus_client's ProcessCollector reads it, and written as its
registry writes it (the same families, in the same order, the same
numbers); the series of both are exported in the same families, told apart
by the label `process` (`exporter` or `poller`). On systems without /proc
there are none.

prometheus_client itself is not loaded for it: in the serving process it
would be 1.8 MB held for good, for six lines of /proc a scrape.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable

from . import metrics as m
from .exposition import go_float, header

PROCESS_LABEL = "process"
SERVER, POLLER = "exporter", "poller"

_METRICS = {metric.name: metric for metric in m.PROCESS}
VIRTUAL, RESIDENT, START, CPU, OPEN_FDS, MAX_FDS = (
    _METRICS[name]
    for name in (  # in the order ProcessCollector yields them
        "process_virtual_memory_bytes",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
    )
)

Readings = list[tuple[m.Metric, float]]


def _ticks() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (ValueError, TypeError, AttributeError, OSError):
        return 100.0


def _boot_time(proc: str) -> float | None:
    """Boot time from /proc/stat (None without /proc: then no process series at all)."""
    try:
        with open(os.path.join(proc, "stat"), "rb") as stat:
            for line in stat:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


class ProcessReader:
    """ProcessCollector's readings of one process: its pid (or `self`) asked each time."""

    def __init__(self, pid: Callable[[], int | str] = lambda: "self", proc: str = "/proc") -> None:
        self._pid = pid
        self._proc = proc
        self._ticks = _ticks()
        self._pagesize = resource.getpagesize()
        self._btime = _boot_time(proc)

    def read(self) -> Readings:
        """What can be read, in ProcessCollector's order; nothing without /proc."""
        if not self._btime:
            return []
        pid = os.path.join(self._proc, str(self._pid()).strip())
        result: Readings = []
        try:
            with open(os.path.join(pid, "stat"), "rb") as stat:
                parts = stat.read().split(b")")[-1].split()
            start_time = float(parts[19]) / self._ticks
            utime = float(parts[11]) / self._ticks
            stime = float(parts[12]) / self._ticks
            result += [
                (VIRTUAL, float(parts[20])),
                (RESIDENT, float(parts[21]) * self._pagesize),
                (START, start_time + self._btime),
                (CPU, utime + stime),
            ]
        except OSError:
            pass
        try:
            max_fds = None
            with open(os.path.join(pid, "limits"), "rb") as limits:
                for line in limits:
                    if line.startswith(b"Max open file"):
                        max_fds = float(line.split()[3])
                        break
            open_fds = len(os.listdir(os.path.join(pid, "fd")))
            if max_fds is not None:
                result += [(OPEN_FDS, open_fds), (MAX_FDS, max_fds)]
        except OSError:
            pass
        return result


def render(processes: list[tuple[str, Readings]], openmetrics: bool) -> bytes:
    """The families of every process's readings, as prometheus_client's registry writes them
    (text format, or OpenMetrics without its `# EOF`): each family once, in the order of its
    first reading, with one sample per process that has it."""
    families: dict[m.Metric, list[str]] = {}
    for process, readings in processes:
        for metric, value in readings:
            families.setdefault(metric, []).append(
                f'{metric.name}{{{PROCESS_LABEL}="{process}"}} {go_float(value)}\n'
            )
    return "".join(
        header(metric, openmetrics) + "".join(lines) for metric, lines in families.items()
    ).encode()


class ProcessMetrics:
    """Renders the process series of this process and of the poller, whose pid may change."""

    def __init__(self, poller_pid: Callable[[], int | None]) -> None:
        self._poller_pid = poller_pid
        self._server = ProcessReader()
        self._poller = ProcessReader(pid=self._pid)

    def _pid(self) -> int:
        pid = self._poller_pid()
        assert pid is not None  # read() asks only when there is one
        return pid

    def readings(self) -> list[tuple[str, Readings]]:
        processes = [(SERVER, self._server.read())]
        if self._poller_pid() is not None:
            processes.append((POLLER, self._poller.read()))
        return processes

    def render(self, openmetrics: bool) -> bytes:
        return render(self.readings(), openmetrics)
