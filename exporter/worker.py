"""The poller in a process of its own, so that scrapes never wait for a poll.

Parsing and validating a large payload is one long call into pydantic-core
that holds the GIL (about a second at 100,000 groups); in the same
interpreter every scrape would wait for it. In a child process the poller
has its own GIL: it fetches, parses, renders and deflates, then sends the
deflated group block and the health figures (a few MB at most) over a pipe.
The parent only stitches the small tail and swaps the published exposition.

If the child dies (a bug, the OOM killer), the parent keeps serving the last
values with `webex_campaign_up` 0, logs it, and starts a new child with
backoff; counters then restart from zero, which `rate()` handles.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection

import structlog

from . import metrics as m
from .api import ApiClient, RequestStats, credentials_from, tls_verify
from .exposition import GroupBlock, Health
from .logs import configure_logging
from .poller import Poller, PollTiming, Published
from .server import Latest
from .settings import Settings

log = structlog.get_logger("exporter.worker")

RESTART_BACKOFF_MAX = 60.0


@dataclass(frozen=True)
class PollerSpec:
    """All the child needs; picklable."""

    settings: Settings
    base_url: str


def run_poller(spec: PollerSpec, conn: Connection) -> None:
    """Entry point of the child process."""
    signal.signal(
        signal.SIGINT, signal.SIG_IGN
    )  # Ctrl-C reaches the whole group: the parent decides
    settings = spec.settings
    credentials = credentials_from(settings)
    configure_logging(settings.log_level, settings.log_format, credentials.secrets)
    client = ApiClient(
        spec.base_url,
        credentials,
        settings.timeout,
        settings.max_response_bytes,
        RequestStats(m.DOCUMENTED_FAILURES),
        verify=tls_verify(settings),
    )

    def publish(block: GroupBlock, health: Health, timing: PollTiming | None) -> None:
        try:
            conn.send((block, health, timing))
        except OSError:  # the exporter is gone: nobody left to poll for
            os._exit(0)

    # A poll allocates and drops a million objects, freed by reference counting;
    # the cyclic collector would walk them again and again (a third of a large
    # poll's time). It runs once after each poll instead, when they are gone.
    gc.freeze()
    gc.disable()
    Poller(
        client,
        settings.tenant_label,
        settings.timezone,
        settings.poll_interval,
        settings.effective_stale_after,
        publish,
    ).run(after_poll=gc.collect)


class PollerProcess:
    """Runs `run_poller` in a child, publishes what it sends, restarts it if it dies.

    The child is a plain `python -m exporter.worker` (no multiprocessing
    machinery, so no extra helper process): the spec arrives pickled on its
    stdin, results go back over an inherited pipe.
    """

    def __init__(self, spec: PollerSpec, latest: Latest) -> None:
        self._spec = spec
        self._latest = latest
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._thread: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> threading.Thread:
        self._spawn()
        self._thread = threading.Thread(target=self._receive, name="poller-pipe", daemon=True)
        self._thread.start()
        return self._thread

    def _spawn(self) -> None:
        read_fd, write_fd = os.pipe()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "exporter.worker", str(write_fd)],
                stdin=subprocess.PIPE,
                pass_fds=(write_fd,),
            )
        finally:
            os.close(write_fd)  # the child holds the only writing end: its death means EOF
        assert process.stdin is not None
        with process.stdin:
            process.stdin.write(pickle.dumps(self._spec))
        self._process, self._conn = process, Connection(read_fd, writable=False)

    def _receive(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            assert self._conn is not None
            try:
                block, health, timing = self._conn.recv()
            except (EOFError, OSError):
                if self._stopping.is_set():
                    return
                self._on_death(backoff)
                if self._stopping.wait(backoff):
                    return
                backoff = min(backoff * 2, RESTART_BACKOFF_MAX)
                self._spawn()
                continue
            backoff = 1.0
            self._latest.set(Published.of(block, health))
            if timing is not None:
                timing.log_published(health.tenant)

    def _on_death(self, backoff: float) -> None:
        assert self._process is not None and self._conn is not None
        self._conn.close()
        try:
            exit_code: int | None = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            exit_code = self._process.wait()
        published = self._latest.value
        if published.ready:
            self._latest.set(published.down())
        log.error(
            "poller_died",
            tenant=self._spec.settings.tenant_label,
            exit_code=exit_code,
            restart_in_s=backoff,
        )

    def stop(self) -> None:
        """End the child at once: an in-flight poll has nothing worth waiting for."""
        self._stopping.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=1)
        if self._conn is not None:
            self._conn.close()


def main() -> None:
    """`python -m exporter.worker FD`: the child's entry point."""
    spec = pickle.load(sys.stdin.buffer)  # noqa: S301 - written by our own parent
    run_poller(spec, Connection(int(sys.argv[1]), readable=False))


if __name__ == "__main__":
    main()
