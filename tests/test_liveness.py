"""/-/healthy of the wired exporter: it fails while the poller is stuck, and recovers."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest
import structlog
from helpers import free_port

from exporter.app import Exporter
from exporter.cli import build
from exporter.settings import load_settings


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    settings = load_settings(
        demo=True, poll_interval="0.2", listen_address=f"127.0.0.1:{free_port()}"
    )
    running = build(settings)
    running.start()
    yield running
    running.stop()
    structlog.reset_defaults()  # build() configured logging for this process


def healthy_status(exporter: Exporter) -> int:
    port = exporter.servers[0].server_address[1]
    return httpx.get(f"http://127.0.0.1:{port}/-/healthy", timeout=10).status_code


def wait_for_status(exporter: Exporter, status: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while healthy_status(exporter) != status:
        assert time.monotonic() < deadline, f"/-/healthy never answered {status}"
        time.sleep(0.1)


def test_healthy_fails_while_the_poller_is_stuck(exporter: Exporter) -> None:
    wait_for_status(exporter, 200)
    exporter.latest.stall_after = 2.0  # polls every 0.2 s: two seconds without one is stuck
    pid = exporter.poller.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # a poll loop that never comes back
    try:
        wait_for_status(exporter, 503)
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for_status(exporter, 200)
