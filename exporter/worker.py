"""The poller in a process of its own, so that scrapes never wait for a poll.

Parsing and validating a large payload is one long call into pydantic-core
that holds the GIL (about a second at 100,000 groups); in the same
interpreter every scrape would wait for it. In a child process the poller
has its own GIL: it fetches, parses, renders and deflates, then sends the
deflated group block (about 0.25 KB a group) and the health figures over a pipe.
The parent only stitches the small tail and swaps the published exposition.

If the child dies (a bug, the OOM killer), the parent keeps serving the last
values with `webex_campaign_up` 0, logs it, and starts a new child with
backoff; counters then restart from zero, which `rate()` handles.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import cast

import structlog

from . import metrics as m
from .api import ApiClient, RequestStats, credentials_from, tls_verify
from .exposition import BlockRenderer, GroupBlock, Health
from .logs import configure_logging
from .poller import Poller, PollResult, PollTiming
from .server import Latest, Published
from .settings import Settings

log = structlog.get_logger("exporter.worker")

RESTART_BACKOFF_MAX = 60.0


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    return trim


_TRIM = _malloc_trim()


def release_memory() -> None:
    """In the poller, after a poll: collect cycles, then hand the freed heap back.

    A large poll's objects are freed by then, but glibc keeps the pages for
    reuse; trimming keeps the steady RSS close to what is really held. The
    serving process does neither: a collection holds the GIL and a trim holds
    the allocator's lock, and either would stall a scrape. What it receives
    is one large buffer per poll, which goes back to the system when freed.
    """
    gc.collect()
    if _TRIM is not None:
        _TRIM(0)


@dataclass(frozen=True)
class PollerSpec:
    """All the child needs; picklable."""

    settings: Settings
    base_url: str
    demo_key: str | None = None
    """The demo tenant's key in demo mode (the simulator stays at the edge)."""


_HEADER = struct.Struct("!QQ")


class Pipe:
    """Messages from the poller: a pickled header, then the block's deflate data raw.

    The data is gathered from its segments with one writev and read straight
    into one buffer: no joined copy in the child, no pickled copy in the parent.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def close(self) -> None:
        fd, self._fd = self._fd, -1  # never close a number the system may have reused
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def send(self, meta: object, parts: Sequence[bytes | bytearray]) -> None:
        header = pickle.dumps(meta)
        size = sum(len(part) for part in parts)
        pending = [memoryview(b) for b in (_HEADER.pack(len(header), size), header, *parts)]
        while pending:
            written = os.writev(self._fd, pending[:_IOV_MAX])
            while written and written >= len(pending[0]):
                written -= len(pending.pop(0))
            if written:
                pending[0] = pending[0][written:]

    def receive(self) -> tuple[object, bytearray]:
        header_size, size = _HEADER.unpack(self._read(_HEADER.size))
        meta = pickle.loads(self._read(header_size))  # noqa: S301 - our own child's
        return meta, self._read(size)

    def _read(self, size: int) -> bytearray:
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        while got < size:
            count = os.readv(self._fd, [view[got:]])
            if count == 0:
                raise EOFError("the poller process closed its pipe")
            got += count
        return buffer


_IOV_MAX = 512


def run_poller(spec: PollerSpec, conn: Pipe) -> None:
    """Entry point of the child process."""
    # Ctrl-C reaches the whole process group: the parent decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = spec.settings
    credentials = credentials_from(settings, spec.demo_key)
    configure_logging(settings.log_level, settings.log_format, credentials.secrets)
    client = ApiClient(
        spec.base_url,
        credentials,
        settings.timeout,
        settings.max_response_bytes,
        RequestStats(m.DOCUMENTED_FAILURES),
        verify=tls_verify(settings),
    )

    renderer = BlockRenderer(settings.tenant_label, settings.max_label_length)

    def publish(result: PollResult) -> None:
        block, health = renderer.render_with(result.samples, result.health)
        # The block travels as raw bytes (no pickled copy) and lands in one buffer
        # in the parent, which goes back to the system whole when replaced.
        try:
            conn.send((replace(block, parts=()), health, result.timing), block.parts)
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
    ).run(after_poll=release_memory)


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
        self._conn: Pipe | None = None

    @property
    def pid(self) -> int | None:
        """The poller process's id, None before the first start."""
        process = self._process
        return None if process is None else process.pid

    def start(self) -> threading.Thread:
        self._spawn()
        thread = threading.Thread(target=self._receive, name="poller-pipe", daemon=True)
        thread.start()
        return thread

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
        self._process, self._conn = process, Pipe(read_fd)

    def _receive(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            assert self._conn is not None
            try:
                meta, data = self._conn.receive()
                block, health, timing = cast(tuple[GroupBlock, Health, PollTiming | None], meta)
                block = replace(block, parts=(data,))
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
    run_poller(spec, Pipe(int(sys.argv[1])))


if __name__ == "__main__":
    main()
