"""The pollers in a process of their own, so that scrapes never wait for a poll.

Parsing and validating a large payload holds the GIL for a long while (about a
second at 100,000 groups); in the same interpreter every scrape would wait for
it. In a child process the pollers have their own GIL. There is one poller
thread per tenant, each with its own client and schedule, so a tenant that
hangs until its timeout delays no other. After each poll attempt a poller
renders and deflates its tenant's share of every family and sends it over
the pipe (about 0.25 KB a group); the parent only stitches the tenants
together family by family and swaps the published exposition.

The parent sends the tenants to poll on the child's stdin, again after each
reload: tenants kept (same key) go on polling with their state, removed ones
stop, new ones start.

If the child dies (a bug, the OOM killer), the parent keeps serving the last
values with `webex_campaign_up` 0, logs it, and starts a new child with
backoff; counters then restart from zero, which `rate()` handles.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import gc
import math
import mmap
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, BinaryIO, cast

import structlog

from . import metrics as m
from .api import Access, ApiClient, RequestStats, credentials, tls_verify
from .exposition import FamilyPart, TenantExposition, TenantShares
from .logs import configure_logging
from .poller import Poller, PollResult, PollTiming

if TYPE_CHECKING:  # the serving and settings processes' side: the poller never loads them
    from .server import Latest
    from .settings import Settings

log = structlog.get_logger("exporter.worker")

RESTART_BACKOFF_MAX = 60.0
POLLER_NICENESS = 10
"""Added to the poller process's nice value: under CPU contention, scrapes win."""


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, looked up the first time the poller process releases memory:
    the serving process never trims, nor loads ctypes."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    return trim


class _MemoryRelease:
    """In the poller process, after a poll: collect cycles, then hand the freed heap back.

    A large poll's objects are freed by then, but glibc keeps the pages for
    reuse; trimming keeps the steady RSS close to what is really held. The
    serving process does neither: a collection holds the GIL and a trim holds
    the allocator's lock, and either would stall a scrape. What it receives
    is one large buffer per poll, mapped on its own (`Pipe._read`), which goes
    back to the system when freed.

    A collection walks every object the tenants hold: with many tenants polling
    it would cost more than the polls, so it runs at most every SHARE-th of the
    time (its cost measured each time), whichever tenant's poll asks.
    """

    SHARE = 0.05

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = -math.inf

    def __call__(self) -> None:
        if time.monotonic() < self._next or not self._lock.acquire(blocking=False):
            return
        try:
            started = time.monotonic()
            gc.collect()
            trim = _malloc_trim()
            if trim is not None:
                trim(0)
            ended = time.monotonic()
            self._next = ended + (ended - started) / self.SHARE
        finally:
            self._lock.release()


release_memory = _MemoryRelease()


@dataclass(frozen=True)
class PollerSpec:
    """All a tenant's poller needs, as plain data: pickled to the poller process, which
    never loads the settings nor pydantic (it starts at 34 MB instead of 46)."""

    tenant: str
    base_url: str
    access: Access
    timeout: float
    max_response_bytes: int
    max_label_length: int
    timezone: str
    poll_interval: float
    stale_after: float
    stall_after: float
    """The serving process's: how long /-/healthy waits for this tenant's results."""
    key: int = 0
    """Names this poller: the serving process drops results of keys it no longer serves."""

    @classmethod
    def of(
        cls, settings: Settings, base_url: str, demo_key: str | None = None, key: int = 0
    ) -> PollerSpec:
        """A tenant's settings as its poller's spec; `demo_key` is the demo tenant's key in
        demo mode (the simulator stays at the edge)."""
        return cls(
            tenant=settings.tenant_label,
            base_url=base_url,
            access=Access.of(settings, demo_key),
            timeout=settings.timeout,
            max_response_bytes=settings.max_response_bytes,
            max_label_length=settings.max_label_length,
            timezone=settings.timezone,
            poll_interval=settings.poll_interval,
            stale_after=settings.effective_stale_after,
            stall_after=settings.stall_after,
            key=key,
        )


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

    def send(self, meta: object, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        header = pickle.dumps(meta)
        size = sum(len(part) for part in parts)
        pending = [memoryview(b) for b in (_HEADER.pack(len(header), size), header, *parts)]
        while pending:
            written = os.writev(self._fd, pending[:_IOV_MAX])
            while written and written >= len(pending[0]):
                written -= len(pending.pop(0))
            if written:
                pending[0] = pending[0][written:]

    def receive(self) -> tuple[object, Buffer]:
        header_size, size = _HEADER.unpack(self._read(_HEADER.size))
        meta = pickle.loads(self._read(header_size))  # noqa: S301 - our own child's
        return meta, self._read(size)

    def _read(self, size: int) -> Buffer:
        """`size` bytes, in a buffer of their own. From MAP_AT on, an anonymous mapping:
        glibc serves a large block from its heap once one of that size was freed (its
        mmap threshold follows the blocks freed), and a freed block of the heap stays in
        the process: at 100,000 groups the serving process held one 22 MB result more
        than it used. A mapping goes back to the system when the last scrape lets go of
        it, and its pages are first touched by the read, with the GIL released."""
        buffer: Buffer = mmap.mmap(-1, size) if size >= MAP_AT else bytearray(size)
        view = memoryview(buffer)
        got = 0
        while got < size:
            count = os.readv(self._fd, [view[got:]])
            if count == 0:
                raise EOFError("the poller process closed its pipe")
            got += count
        return buffer


_IOV_MAX = 512
MAP_AT = 1 << 17
"""Results from this size on are received into an anonymous mapping (`Pipe._read`): glibc's
own threshold for mapping a block, before it moves."""
Buffer = bytearray | mmap.mmap
PIPE_SIZE = 1 << 20
"""Bytes the results pipe holds (Linux; the system's default 64 KiB elsewhere): a poll of
100,000 groups sends ~20 MB, in 20 writes and reads instead of 300 (14 ms to send instead
of 37). 1 MiB is what an unprivileged process may ask for by default."""


def _widen(fd: int) -> None:
    """The pipe holds PIPE_SIZE bytes when the system allows it; as it is otherwise."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None:
        with contextlib.suppress(OSError):  # over the limit or the user's pipe quota
            fcntl.fcntl(fd, set_size, PIPE_SIZE)


def _wire(
    tenant: TenantExposition,
) -> tuple[TenantExposition, list[int], list[bytes | bytearray | memoryview]]:
    """The tenant's exposition without its deflate data, the data's lengths per family,
    and the data, which travels raw after the pickled rest."""
    lengths = [len(family.parts) for family in tenant.families]
    parts = [part for family in tenant.families for part in family.parts]
    bare = tuple(FamilyPart((), family.crc, family.size) for family in tenant.families)
    return replace(tenant, families=bare), lengths, parts


def _unwire(
    tenant: TenantExposition, lengths: list[int], parts: list[int], data: Buffer
) -> TenantExposition:
    """`_wire` undone: each family's parts, which travel one after the other, are one
    view of the one buffer received (a family of a large tenant is thousands of
    segments: the parent keeps and serves one piece instead)."""
    view = memoryview(data)
    offset = 0
    families = []
    sizes = iter(parts)
    for family, count in zip(tenant.families, lengths, strict=True):
        size = sum(next(sizes) for _ in range(count))
        piece = (view[offset : offset + size],) if size else ()
        families.append(FamilyPart(piece, family.crc, family.size))
        offset += size
    return replace(tenant, families=tuple(families))


class _TenantPoller:
    """One tenant's poller thread in the child."""

    def __init__(
        self,
        spec: PollerSpec,
        send: Callable[[PollerSpec, TenantExposition, PollTiming | None], None],
    ) -> None:
        self._stopped = False
        source = credentials(spec.access)
        client = ApiClient(
            spec.base_url,
            source,
            spec.timeout,
            spec.max_response_bytes,
            RequestStats(m.DOCUMENTED_FAILURES),
            verify=tls_verify(spec.access),
        )
        shares = TenantShares()

        def publish(result: PollResult) -> None:
            if not self._stopped:
                send(spec, shares.of(result.block, result.health), result.timing)

        self._poller = Poller(
            client,
            spec.tenant,
            spec.timezone,
            spec.poll_interval,
            spec.stale_after,
            publish,
            max_label_length=spec.max_label_length,
        )
        self._client = client
        self.secrets = source.secrets
        self._thread = threading.Thread(target=self._run, name=f"poll-{spec.key}", daemon=True)

    def _run(self) -> None:
        try:
            self._poller.run(after_poll=release_memory)
        finally:
            self._client.close()

    def start(self) -> _TenantPoller:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ends after the poll in flight, whose result is not sent."""
        self._stopped = True
        self._poller.stop()


@dataclass(frozen=True)
class Logging:
    """How the child logs: the process-wide settings, sent first on its stdin."""

    level: str
    format: str


def run_poller(control: BinaryIO, conn: Pipe) -> None:
    """Entry point of the child process: a `Logging`, then lists of `PollerSpec` on
    `control`: each list is every tenant to poll from then on. Ends when it closes."""
    # Ctrl-C reaches the whole process group: the parent decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # When the cores are busy, the process answering scrapes goes first: polls can wait.
    with contextlib.suppress(OSError):
        os.nice(POLLER_NICENESS)
    running: dict[int, _TenantPoller] = {}
    sending = threading.Lock()

    def secrets() -> list[str]:
        return [secret for poller in list(running.values()) for secret in poller.secrets()]

    def send(spec: PollerSpec, tenant: TenantExposition, timing: PollTiming | None) -> None:
        bare, lengths, parts = _wire(tenant)
        # The data travels as raw bytes (no pickled copy) and lands in one buffer in
        # the parent, which goes back to the system whole when replaced.
        try:
            with sending:
                conn.send((spec.key, bare, lengths, [len(p) for p in parts], timing), parts)
        except OSError:  # the exporter is gone: nobody left to poll for
            os._exit(0)

    try:
        logging = cast(Logging, pickle.load(control))  # noqa: S301 - our own parent's
    except (EOFError, OSError, pickle.UnpicklingError):
        os._exit(0)
    configure_logging(logging.level, logging.format, secrets)
    _malloc_trim()  # looked up now (ctypes runs ldconfig), not in the first poll's release
    # A poll allocates and drops a million objects, freed by reference counting;
    # the cyclic collector would walk them again and again (a third of a large
    # poll's time). It runs once after each poll instead, when they are gone.
    gc.freeze()
    gc.disable()
    while True:
        try:
            wanted = cast(list[PollerSpec], pickle.load(control))  # noqa: S301 - our parent's
        except (EOFError, OSError, pickle.UnpicklingError):
            for poller in running.values():
                poller.stop()
            os._exit(0)  # the exporter is gone
        keys = {spec.key for spec in wanted}
        for key in set(running) - keys:
            running.pop(key).stop()
        for spec in wanted:
            if spec.key not in running:
                # A tenant that cannot start (its key file gone since the parent checked
                # it) ends this process: restarted with backoff, it tries again.
                running[spec.key] = _TenantPoller(spec, send).start()


class PollerProcess:
    """Runs `run_poller` in a child, publishes what it sends, restarts it if it dies.

    The child is a plain `python -m exporter.worker` (no multiprocessing
    machinery, so no extra helper process): the tenants arrive pickled on its
    stdin (again after each reload), results come back over an inherited pipe.
    """

    def __init__(self, logging: Logging, specs: Sequence[PollerSpec], latest: Latest) -> None:
        self._logging = logging
        self._specs = list(specs)
        self._latest = latest
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Pipe | None = None
        self._control = threading.Lock()

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

    def update(self, specs: Sequence[PollerSpec]) -> None:
        """Poll these tenants from now on (kept keys keep their pollers' state)."""
        with self._control:
            self._specs = list(specs)
            self._tell(self._specs)

    def _tell(self, message: object) -> None:
        process = self._process
        if process is None or process.stdin is None:
            return
        try:
            pickle.dump(message, process.stdin)
            process.stdin.flush()
        except (OSError, ValueError):  # it died: the restart sends the tenants again
            pass

    def _spawn(self) -> None:
        read_fd, write_fd = os.pipe()
        _widen(write_fd)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "exporter.worker", str(write_fd)],
                stdin=subprocess.PIPE,
                pass_fds=(write_fd,),
            )
        finally:
            os.close(write_fd)  # the child holds the only writing end: its death means EOF
        with self._control:
            old = self._process
            if old is not None and old.stdin is not None:
                with contextlib.suppress(OSError):
                    old.stdin.close()
            self._process, self._conn = process, Pipe(read_fd)
            self._tell(self._logging)
            self._tell(self._specs)

    def _receive(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            assert self._conn is not None
            try:
                meta, data = self._conn.receive()
                key, bare, lengths, sizes, timing = cast(
                    tuple[int, TenantExposition, list[int], list[int], PollTiming | None], meta
                )
                tenant = _unwire(bare, lengths, sizes, data)
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
            if self._latest.update(key, tenant) and timing is not None:
                timing.log_published(tenant.tenant)

    def _on_death(self, backoff: float) -> None:
        assert self._process is not None and self._conn is not None
        self._conn.close()
        try:
            exit_code: int | None = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            exit_code = self._process.wait()
        self._latest.down()
        log.error(
            "poller_died",
            tenants=[spec.tenant for spec in self._specs],
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
        if process is not None and process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        if self._conn is not None:
            self._conn.close()


def main() -> None:
    """`python -m exporter.worker FD`: the child's entry point."""
    run_poller(sys.stdin.buffer, Pipe(int(sys.argv[1])))


if __name__ == "__main__":
    main()
