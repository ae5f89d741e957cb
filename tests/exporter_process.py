"""The installed exporter run as a separate process, for tests that measure or break it."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

import httpx
import pytest
from helpers import free_port, samples
from tools import exporter_script

from benchmarks.soak import child_pids


@dataclass
class Exporter:
    process: subprocess.Popen[bytes]
    url: str

    def get(self, path: str, **options: object) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=10, **options)  # type: ignore[arg-type]

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the first sample of `name` whose labels include `labels`."""
        for sample in samples(self.get("/metrics").text):
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
        return None

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                pytest.fail(f"exporter exited with {self.process.returncode} while waiting: {what}")
            if time.monotonic() > deadline:
                pytest.fail(f"not within {timeout} s: {what}")
            time.sleep(0.1)

    @property
    def poller_pid(self) -> int:
        pids = [
            pid
            for pid in child_pids(self.process.pid)
            if b"exporter.worker" in open(f"/proc/{pid}/cmdline", "rb").read()  # noqa: SIM115
        ]
        assert len(pids) == 1, pids
        return pids[0]


def status_bytes(pid: int, key: str) -> int:
    """A /proc/PID/status figure in bytes: VmRSS (resident), VmHWM (peak resident)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name == key:
                return int(rest.split()[0]) * 1024
    raise KeyError(key)


@contextmanager
def running_exporter(
    args: list[str],
    env: dict[str, str] | None = None,
    stderr: int | IO[bytes] | None = subprocess.DEVNULL,
    ready: bool = True,
) -> Iterator[Exporter]:
    port = free_port()
    process = subprocess.Popen(
        [exporter_script(), "--web.listen-address", f"127.0.0.1:{port}", *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    exporter = Exporter(process, f"http://127.0.0.1:{port}")

    def answers() -> bool:
        try:
            wanted = "/-/ready" if ready else "/-/healthy"
            return exporter.get(wanted).status_code == 200
        except httpx.TransportError:
            return False

    try:
        exporter.wait_for(answers, "the exporter answers", timeout=60)
        yield exporter
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
