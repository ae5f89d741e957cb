"""The poller process: pipe framing, partial writes, end of file, restart with backoff."""

from __future__ import annotations

import contextlib
import fcntl
import gc
import itertools
import json
import mmap
import os
import pickle
import platform
import queue
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import structlog
import structlog.testing
import trustme
from helpers import series, text_of

from exporter import metrics as m
from exporter import worker
from exporter.server import Latest, initial_published
from exporter.settings import load_settings
from exporter.simulator import DEMO_KEY, SEED_RECORDS, Simulator, error_fault
from exporter.worker import Logging, Pipe, PollerProcess, PollerSpec

# Generous: a child process starts in well under a second, but the suite must stay
# green on a machine whose cores are busy with something else.
PATIENCE = 60.0


@pytest.fixture
def pipe() -> Iterator[tuple[Pipe, Pipe]]:
    read_fd, write_fd = os.pipe()
    reader, writer = Pipe(read_fd), Pipe(write_fd)
    yield reader, writer
    reader.close()
    writer.close()


def send_in_background(
    writer: Pipe, messages: Sequence[tuple[object, list[bytes]]]
) -> threading.Thread:
    """Send from another thread: a message larger than the pipe's buffer blocks until read."""

    def send() -> None:
        try:
            for meta, parts in messages:
                writer.send(meta, parts)
        except OSError:
            writer.close()  # the reader sees end of file instead of waiting for ever
            raise

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def parts_of(count: int, seed: int) -> list[bytes]:
    """Segments of uneven sizes, empty ones too."""
    sizes = itertools.islice(itertools.cycle([0, 1, 7, 300, 4096, 13, 20_000]), count)
    return [bytes([(seed + index) % 256]) * size for index, size in enumerate(sizes)]


def test_messages_arrive_whole_and_in_order(pipe: tuple[Pipe, Pipe]) -> None:
    reader, writer = pipe
    first = parts_of(1500, seed=1)
    assert len(first) > worker._IOV_MAX  # more segments than one writev may carry
    second = [b"", bytearray(b"tail")]
    third: list[bytes] = []
    thread = send_in_background(
        writer, [({"poll": 1}, first), (("poll", 2), second), (None, third)]
    )
    meta, data = reader.receive()
    assert (meta, bytes(data)) == ({"poll": 1}, b"".join(first))
    assert reader.receive() == (("poll", 2), bytearray(b"tail"))
    assert reader.receive() == (None, bytearray())
    thread.join(PATIENCE)
    assert not thread.is_alive()


def test_a_large_result_lands_in_a_mapping_of_its_own(pipe: tuple[Pipe, Pipe]) -> None:
    """From MAP_AT bytes on, an anonymous mapping (back to the system once the last view
    of it goes, whatever glibc's heap holds); below it, a bytearray."""
    reader, writer = pipe
    large = parts_of(200, seed=3)
    size = sum(map(len, large))
    assert size >= worker.MAP_AT
    small = [b"s" * (worker.MAP_AT - 1)]
    thread = send_in_background(writer, [("large", large), ("small", small)])
    _, data = reader.receive()
    assert isinstance(data, mmap.mmap) and len(data) == size
    assert bytes(data) == b"".join(large)
    _, data = reader.receive()
    assert type(data) is bytearray and data == small[0]
    thread.join(PATIENCE)


def test_partial_writes_are_resumed_where_they_stopped(
    pipe: tuple[Pipe, Pipe], monkeypatch: pytest.MonkeyPatch
) -> None:
    """writev may take fewer bytes than given: the rest is sent, nothing twice, in order."""
    real_writev = os.writev
    limits = itertools.cycle([1, 2, 16, 17, 999, 5000])
    buffers_per_call: list[int] = []

    def partial_writev(fd: int, buffers: Sequence[memoryview]) -> int:
        buffers_per_call.append(len(buffers))
        room = next(limits)
        taken: list[memoryview] = []
        for buffer in buffers:
            if room <= 0:
                break
            taken.append(memoryview(buffer)[:room])
            room -= len(taken[-1])
        return real_writev(fd, taken)

    monkeypatch.setattr(worker.os, "writev", partial_writev)
    reader, writer = pipe
    parts = parts_of(200, seed=7)
    thread = send_in_background(writer, [("meta", parts), ("again", [b"x" * 33])])
    meta, data = reader.receive()
    assert (meta, bytes(data)) == ("meta", b"".join(parts))
    assert reader.receive() == ("again", bytearray(b"x" * 33))
    thread.join(PATIENCE)
    assert len(buffers_per_call) > 100
    assert max(buffers_per_call) <= worker._IOV_MAX


def test_end_of_file_before_a_message(pipe: tuple[Pipe, Pipe]) -> None:
    reader, writer = pipe
    writer.close()
    with pytest.raises(EOFError):
        reader.receive()


def test_end_of_file_inside_a_message(pipe: tuple[Pipe, Pipe]) -> None:
    """A child that dies mid-message: the half message is not taken for a whole one."""
    reader, writer = pipe
    header = pickle.dumps("meta")
    os.write(writer._fd, worker._HEADER.pack(len(header), 100) + header + b"a" * 40)
    writer.close()
    with pytest.raises(EOFError):
        reader.receive()


def test_sending_to_a_closed_reader_fails_instead_of_blocking(pipe: tuple[Pipe, Pipe]) -> None:
    reader, writer = pipe
    reader.close()
    with pytest.raises(BrokenPipeError):
        writer.send("meta", [b"data"])


def test_close_is_idempotent(pipe: tuple[Pipe, Pipe]) -> None:
    reader, _writer = pipe
    reader.close()
    reader.close()
    assert reader._fd == -1


# --- the child process -----------------------------------------------------------------


class RecordedWaits(threading.Event):
    """The restart delays the parent asks for, returned at once: a clock the test owns."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: queue.Queue[float] = queue.Queue()

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.put(timeout)
        return self.is_set()


def poller_process(settings_overrides: dict[str, object], base_url: str) -> PollerProcess:
    settings = load_settings(**settings_overrides)
    latest = Latest(initial_published(settings.tenant_label, key=1))
    spec = PollerSpec.of(settings, base_url, key=1)
    return PollerProcess(Logging(settings.log_level, settings.log_format), [spec], latest)


@contextlib.contextmanager
def running_demo_poller(simulator: Simulator) -> Iterator[PollerProcess]:
    """A poller process polling the simulator with the demo key, stopped on the way out."""
    process = poller_process(
        {"base_url": simulator.base_url, "api_key": DEMO_KEY, "log_level": "error"},
        simulator.base_url,
    )
    thread = process.start()
    try:
        yield process
    finally:
        process.stop()
        thread.join(PATIENCE)


def test_a_child_that_keeps_dying_is_restarted_with_doubling_capped_backoff(
    tmp_path: Path, simulator: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "key"
    key.write_text(DEMO_KEY)
    process = poller_process(
        {"base_url": simulator.base_url, "api_key_file": key, "log_level": "error"},
        simulator.base_url,
    )
    key.unlink()  # every child now stops at start: its key file is gone
    monkeypatch.setattr(worker, "RESTART_BACKOFF_MAX", 4.0)
    waits = RecordedWaits()
    process._stopping = waits
    with structlog.testing.capture_logs() as logs:
        thread = process.start()
        delays = [waits.waits.get(timeout=PATIENCE) for _ in range(5)]
        process.stop()
        thread.join(PATIENCE)
    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0]
    died = [entry for entry in logs if entry["event"] == "poller_died"]
    assert [entry["restart_in_s"] for entry in died[:5]] == delays
    assert all(entry["exit_code"] != 0 for entry in died)
    assert all(entry["exit_code"] == 1 for entry in died[:5])  # an uncaught ConfigError
    assert not process._latest.value.ready  # it never published anything


def test_a_killed_child_is_replaced_and_the_last_values_served_as_down(
    simulator: Simulator,
) -> None:
    process = poller_process(
        {"base_url": simulator.base_url, "api_key": DEMO_KEY, "log_level": "error"},
        simulator.base_url,
    )
    latest = process._latest
    waits = RecordedWaits()
    process._stopping = waits

    def until(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + PATIENCE
        while not condition():
            assert time.monotonic() < deadline, "not in time"
            time.sleep(0.01)

    thread = process.start()
    try:
        for _ in range(2):  # twice: the backoff starts over after a good message
            until(lambda: latest.value.ready and latest.value.up)
            first = latest.value
            assert process._process is not None
            process._process.kill()
            until(lambda: not latest.value.up)
            down = latest.value
            assert not down.up
            text = text_of(down.exposition)  # type: ignore[attr-defined]
            assert list(series(text, m.UP.name).values()) == [0]  # the exposition says so too
            assert series(text, m.TOTAL_RECORDS.name) == series(
                text_of(first.exposition), m.TOTAL_RECORDS.name
            )
            assert waits.waits.get(timeout=PATIENCE) == 1.0
    finally:
        process.stop()
        thread.join(PATIENCE)
    assert not thread.is_alive()


def test_updated_tenants_are_polled_now_and_after_a_restart(simulator: Simulator) -> None:
    """`update` tells the running child its new tenants, and a restarted child gets the
    updated ones, not those it started with."""
    process = poller_process(
        {"base_url": simulator.base_url, "api_key": DEMO_KEY, "log_level": "error"},
        simulator.base_url,
    )
    keys: queue.Queue[int] = queue.Queue()
    original_update = process._latest.update

    def observed_update(key: int, tenant: object) -> bool:
        keys.put(key)
        return original_update(key, tenant)  # type: ignore[arg-type]

    process._latest.update = observed_update  # type: ignore[method-assign]
    process._stopping = RecordedWaits()
    settings = load_settings(base_url=simulator.base_url, api_key=DEMO_KEY, log_level="error")
    thread = process.start()
    try:
        assert keys.get(timeout=PATIENCE) == 1
        child = process.pid
        process.update([PollerSpec.of(settings, simulator.base_url, key=2)])
        while keys.get(timeout=PATIENCE) != 2:
            pass
        assert process.pid == child  # told, not restarted
        assert process._process is not None
        process._process.kill()
        while not keys.empty():
            keys.get()
        assert keys.get(timeout=PATIENCE) == 2  # the new child polls the updated tenants
    finally:
        process.stop()
        thread.join(PATIENCE)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_malloc_trim_is_found_on_glibc_and_callable() -> None:
    trim = worker._malloc_trim()
    assert trim is not None
    assert trim(0) in (0, 1)  # 1: memory was released, 0: there was none to release
    worker.release_memory()  # a collection and a trim, without error


@pytest.fixture
def child_state() -> Iterator[None]:
    """What the child's entry point changes for its whole process, put back afterwards."""
    sigint = signal.getsignal(signal.SIGINT)
    config = structlog.get_config()
    yield
    signal.signal(signal.SIGINT, sigint)
    structlog.configure(**config)
    gc.unfreeze()
    gc.enable()


def as_child(
    monkeypatch: pytest.MonkeyPatch,
    stdin_fd: int,
    write_fd: int,
    nice: Callable[[int], int] = lambda _increment: 0,
) -> queue.Queue[object]:
    """Make `worker.main()` read `stdin_fd`, send on `write_fd`, and raise on os._exit;
    the exit codes asked for, from any thread, in the queue returned."""
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=os.fdopen(stdin_fd, "rb")))
    monkeypatch.setattr(sys, "argv", ["exporter.worker", str(write_fd)])
    exits: queue.Queue[object] = queue.Queue()

    def exit_(code: int) -> None:
        exits.put(code)
        raise SystemExit(code)

    monkeypatch.setattr(worker.os, "_exit", exit_)
    # Not this test process: the real child is checked by the next test.
    monkeypatch.setattr(worker.os, "nice", nice)
    return exits


def exit_code_of_main(write_fd: int) -> object:
    """Run the child's entry point until it exits; its end of the pipe is closed after."""
    try:
        with pytest.raises(SystemExit) as exited:
            worker.main()
    finally:
        os.close(write_fd)
    return exited.value.code


def run_child(
    spec: PollerSpec,
    monkeypatch: pytest.MonkeyPatch,
    messages: int = 1,
    then: Sequence[PollerSpec] = (),
    nice: Callable[[int], int] = lambda _increment: 0,
) -> list[tuple[tuple[Any, ...], bytearray]]:
    """`python -m exporter.worker FD`, run in this process with `spec` on its stdin (then
    `then`, if any, in place of it): the first messages it sends; it must then exit 0,
    its parent's end of the pipe closed."""
    read_fd, write_fd = os.pipe()
    stdin_read, stdin_write = os.pipe()
    os.write(stdin_write, pickle.dumps(Logging("error", "json")) + pickle.dumps([spec]))
    if then:
        os.write(stdin_write, pickle.dumps(list(then)))
    as_child(monkeypatch, stdin_read, write_fd, nice)
    received: list[tuple[object, bytearray]] = []

    def parent() -> None:
        reader = Pipe(read_fd)
        for _ in range(messages):
            received.append(reader.receive())
        reader.close()  # the exporter is gone: its pipes close
        os.close(stdin_write)

    thread = threading.Thread(target=parent, daemon=True)
    thread.start()
    assert exit_code_of_main(write_fd) == 0
    thread.join(PATIENCE)
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # Ctrl-C is the parent's call
    assert len(received) == messages
    return [(cast(tuple[Any, ...], meta), data) for meta, data in received]


def test_the_child_entry_point_polls_sends_and_exits_when_the_parent_is_gone(
    simulator: Simulator, monkeypatch: pytest.MonkeyPatch, child_state: None
) -> None:
    """The spec arrives on stdin, the first poll's result comes through the pipe, and once
    the parent's end is closed the child exits 0 instead of polling for nobody."""
    settings = load_settings(
        base_url=simulator.base_url, api_key=DEMO_KEY, poll_interval=0.01, log_level="error"
    )
    ((meta, data),) = run_child(PollerSpec.of(settings, simulator.base_url, key=7), monkeypatch)
    key, tenant, lengths, sizes, timing = meta
    assert key == 7
    assert all(family.parts == () for family in tenant.families)  # the bytes travel raw
    assert sum(sizes) == len(data) and sum(lengths) == len(sizes)
    health = tenant.health
    assert health.up and health.tenant == "127.0.0.1"
    assert timing.groups == len(simulator.tenant.records())
    assert data  # the deflated group block
    text = zlib.decompressobj(wbits=-zlib.MAX_WBITS).decompress(bytes(data)).decode()
    assert text.count(f"{m.TOTAL_RECORDS.name}{{") == len(simulator.tenant.records())


def test_memory_is_released_at_most_a_twentieth_of_the_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many tenants finish polls every few milliseconds: a collection after each would
    walk every tenant's objects each time."""
    collections: list[float] = []
    clock = [100.0]

    def collect() -> int:
        collections.append(clock[0])
        clock[0] += 0.5  # a collection of many tenants' objects takes half a second
        return 0

    monkeypatch.setattr(worker.gc, "collect", collect)
    monkeypatch.setattr(worker, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    release = worker._MemoryRelease()
    release()
    release()  # right after: skipped
    clock[0] += 9.0  # 9.5 s after the collection began: still within 20 x 0.5 s
    release()
    clock[0] += 1.0
    release()
    assert collections == [100.0, 110.5]


def test_the_poller_process_runs_at_a_lower_cpu_priority(simulator: Simulator) -> None:
    with running_demo_poller(simulator) as process:
        deadline = time.monotonic() + PATIENCE
        while not process._latest.value.ready:
            assert time.monotonic() < deadline, "no first poll"
            time.sleep(0.01)
        assert process.pid is not None
        with open(f"/proc/{process.pid}/stat", encoding="ascii") as stat:
            nice = int(stat.read().rsplit(")", 1)[1].split()[16])
        assert nice == min(19, os.getpriority(os.PRIO_PROCESS, 0) + worker.POLLER_NICENESS)


@pytest.mark.skipif(not hasattr(fcntl, "F_GETPIPE_SZ"), reason="pipe sizes are Linux's")
def test_the_results_pipe_holds_a_mebibyte_so_a_large_poll_crosses_in_few_writes(
    simulator: Simulator,
) -> None:
    with running_demo_poller(simulator) as process:
        assert process._conn is not None
        size = fcntl.fcntl(process._conn._fd, fcntl.F_GETPIPE_SZ)
        assert size == worker.PIPE_SIZE == 1 << 20


def test_a_pipe_the_system_will_not_widen_stays_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the user's pipe quota the system refuses (EPERM): the pipe works as it was."""
    asked: list[tuple[int, int]] = []

    def refuse(fd: int, command: int, size: int) -> int:
        asked.append((command, size))
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(fcntl, "F_SETPIPE_SZ", 1031, raising=False)
    monkeypatch.setattr(worker.fcntl, "fcntl", refuse)
    read_fd, write_fd = os.pipe()
    try:
        worker._widen(write_fd)
        assert asked == [(1031, 1 << 20)]
        os.write(write_fd, b"x")
        assert os.read(read_fd, 1) == b"x"
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_a_demo_child_polls_with_the_demo_key_and_sends_each_familys_crc_and_size(
    simulator: Simulator,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    child_state: None,
) -> None:
    """In demo mode the child authenticates with the key in its spec and polls again after
    the interval; it logs JSON lines, the key redacted; each family's CRC-32 and length,
    which the serving process puts in the gzip trailer, travel with it."""
    simulator.tenant.inject(error_fault(401, 430, f"key {DEMO_KEY} refused"))
    settings = load_settings(demo=True, poll_interval=0.01, log_level="error")
    spec = PollerSpec.of(settings, simulator.base_url, demo_key=DEMO_KEY, key=3)
    refused, (meta, data) = run_child(spec, monkeypatch, messages=2)
    assert not refused[0][1].health.up
    # Whatever carries the key into a log line, the child's logging redacts it.
    structlog.get_logger("exporter.worker").error("probe", detail=f"key {DEMO_KEY}")
    logged = [json.loads(line) for line in capfd.readouterr().err.splitlines()]
    assert [entry["event"] for entry in logged] == ["api_down", "probe"]
    assert logged[1]["detail"] == "key [REDACTED]"
    _key, tenant, lengths, sizes, _timing = meta
    assert tenant.health.up
    offsets = list(itertools.accumulate(sizes, initial=0))
    first = 0
    for family, count in zip(tenant.families, lengths, strict=True):
        raw = bytes(data[offsets[first] : offsets[first + count]])
        first += count
        text = zlib.decompressobj(wbits=-zlib.MAX_WBITS).decompress(raw)
        assert (family.crc, family.size) == (zlib.crc32(text), len(text))
    assert first == len(sizes)
    assert any(family.size for family in tenant.families)


def test_a_child_stops_polling_a_tenant_no_longer_listed(
    simulator: Simulator, monkeypatch: pytest.MonkeyPatch, child_state: None
) -> None:
    settings = load_settings(
        base_url=simulator.base_url, api_key=DEMO_KEY, poll_interval=60, log_level="error"
    )
    dropped = PollerSpec.of(settings, simulator.base_url, key=1)
    kept = PollerSpec.of(
        settings.model_copy(update={"poll_interval": 0.01}), simulator.base_url, key=2
    )
    received = run_child(dropped, monkeypatch, messages=2, then=[kept])
    assert received[-1][0][0] == 2  # key 1 sends at most its first poll, from before


def test_a_child_whose_parent_is_gone_before_it_starts_exits_0(
    monkeypatch: pytest.MonkeyPatch, child_state: None
) -> None:
    read_fd, write_fd = os.pipe()
    stdin_read, stdin_write = os.pipe()
    os.close(stdin_write)  # not even the logging settings arrive
    as_child(monkeypatch, stdin_read, write_fd)
    assert exit_code_of_main(write_fd) == 0
    os.close(read_fd)


def test_the_poller_process_never_loads_the_settings_nor_pydantic(tmp_path: Path) -> None:
    """The child is a separate interpreter: what it imports is memory it holds for good
    (prometheus_client neither: the serving process writes the process metrics).
    Its spec pickles without pydantic, and a well-formed body parses without the lax
    schema; a malformed record loads it then (and only then)."""
    key = tmp_path / "key"
    key.write_text("k-1\n")
    settings = load_settings(base_url="https://api.example", api_key_file=key, ca_file=None)
    spec = PollerSpec.of(settings, "https://api.example", key=4)
    assert b"pydantic" not in pickle.dumps(spec)
    assert "k-1" not in repr(spec)  # the secret travels, but never shows
    script = (
        "import json, sys\n"
        "import exporter.worker\n"
        "from exporter.records import parse_payload\n"
        "watched = ('pydantic', 'pydantic_core', 'pydantic_settings', 'exporter.schema',"
        " 'exporter.server', 'exporter.settings', 'prometheus_client')\n"
        "loaded = lambda: [name for name in watched if name in sys.modules]\n"
        "parse_payload(sys.stdin.buffer.read())\n"
        "print(json.dumps(loaded()))\n"
        "parse_payload(json.dumps([{'id': ' 1 ', 'totalCount': '2'}]).encode())\n"
        "print(json.dumps(loaded()))\n"
    )
    body = json.dumps(list(SEED_RECORDS)).encode()
    out = subprocess.run(
        [sys.executable, "-c", script], input=body, capture_output=True, check=True, timeout=60
    ).stdout.splitlines()
    assert json.loads(out[0]) == []
    assert json.loads(out[1]) == ["pydantic", "pydantic_core", "exporter.schema"]


def test_the_child_asks_for_a_lower_priority_and_polls_on_when_refused(
    simulator: Simulator, monkeypatch: pytest.MonkeyPatch, child_state: None
) -> None:
    """A container may forbid even lowering one's priority: the child polls all the same."""
    asked: list[int] = []

    def refuse(increment: int) -> int:
        asked.append(increment)
        raise PermissionError("not permitted")

    settings = load_settings(
        base_url=simulator.base_url, api_key=DEMO_KEY, poll_interval=0.01, log_level="error"
    )
    ((meta, _data),) = run_child(
        PollerSpec.of(settings, simulator.base_url, key=3), monkeypatch, nice=refuse
    )
    assert meta[0] == 3
    assert asked == [worker.POLLER_NICENESS]


# The stand-in os._exit raises SystemExit in the poller thread too, which pytest reports.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_child_whose_parent_is_gone_by_its_first_result_exits_0(
    simulator: Simulator, monkeypatch: pytest.MonkeyPatch, child_state: None
) -> None:
    """The pipe's reader is gone when a poller thread sends: nobody is left to poll for."""
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    stdin_read, stdin_write = os.pipe()
    settings = load_settings(
        base_url=simulator.base_url, api_key=DEMO_KEY, poll_interval=60, log_level="error"
    )
    spec = PollerSpec.of(settings, simulator.base_url, key=1)
    os.write(stdin_write, pickle.dumps(Logging("error", "json")) + pickle.dumps([spec]))
    exits = as_child(monkeypatch, stdin_read, write_fd)
    from_poller: list[object] = []

    def parent() -> None:
        from_poller.append(exits.get(timeout=PATIENCE))  # the poller thread's failed send
        os.close(stdin_write)  # then the main loop's end of input

    thread = threading.Thread(target=parent, daemon=True)
    thread.start()
    assert exit_code_of_main(write_fd) == 0
    thread.join(PATIENCE)
    assert from_poller == [0]


class StandIn:
    """Stands in for a class: records how it was built and what was called."""

    built: list[StandIn]

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.args, self.kwargs = args, kwargs
        self.calls: list[str] = []
        type(self).built.append(self)

    def of(self, block: object, health: object) -> str:
        return "shares"

    def run(self, after_poll: Callable[[], object]) -> None:
        self.calls.append("run")

    def stop(self) -> None:
        self.calls.append("stop")

    def close(self) -> None:
        self.calls.append("close")


def test_a_tenant_poller_is_built_from_its_spec_and_sends_nothing_once_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    settings = load_settings(
        base_url="https://api.example",
        tenant="acme",
        api_key="k-1",
        ca_file=ca_file,
        max_label_length=64,
        poll_interval=7,
        stale_after=42,
        timeout=3,
        max_response_bytes=1000,
        timezone="Europe/Paris",
    )
    spec = PollerSpec.of(settings, "https://api.example", key=5)
    built: dict[str, list[StandIn]] = {}
    for name in ("ApiClient", "TenantShares", "Poller"):
        recorder = type(name, (StandIn,), {"built": []})
        built[name] = recorder.built
        monkeypatch.setattr(worker, name, recorder)
    sent: list[tuple[object, ...]] = []
    tenant = worker._TenantPoller(spec, lambda *args: sent.append(args))
    ((client,), (shares,), (poller,)) = built.values()
    assert shares.args == ()
    assert client.args[0] == "https://api.example"
    assert client.args[2:4] == (3.0, 1000)
    assert client.kwargs["verify"] is worker.tls_verify(spec.access)
    assert len(client.kwargs["verify"].get_ca_certs()) == 1  # the CA file's, not the system's
    assert poller.args[1:5] == ("acme", "Europe/Paris", 7.0, 42.0)
    assert poller.kwargs["max_label_length"] == 64
    thread = tenant._thread
    assert (thread.name, thread.daemon) == ("poll-5", True)
    publish = cast(Callable[[object], None], poller.args[5])
    result = SimpleNamespace(block=None, health=None, timing=None)
    publish(result)
    assert sent == [(spec, "shares", None)]
    tenant.stop()
    publish(result)  # the poll in flight when it was stopped: its result is not sent
    assert len(sent) == 1
    assert poller.calls == ["stop"]
    tenant._run()
    assert client.calls == ["close"]  # the poll loop's end closes the client


def test_memory_release_never_waits_for_another_tenants_and_trims_all_arenas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trims: list[int] = []
    monkeypatch.setattr(worker, "_malloc_trim", lambda: trims.append)
    release = worker._MemoryRelease()
    with release._lock:  # another tenant's poll is releasing: this one goes on at once
        release()
    assert trims == []
    release()
    assert trims == [0]  # malloc_trim(0): keep no padding, trim every arena


def test_a_poller_process_logs_each_published_poll_and_stops_its_child(
    simulator: Simulator,
) -> None:
    """Told about tenants or stopped before it starts, it does nothing; started, it logs
    `poll_completed` for each result it publishes (what the benchmark reads); stopped, its
    child has exited and its stdin is closed."""
    process = poller_process(
        {"base_url": simulator.base_url, "api_key": DEMO_KEY, "log_level": "debug"},
        simulator.base_url,
    )
    process.update(process._specs)  # before start: nobody to tell yet
    idle = poller_process({"base_url": simulator.base_url, "api_key": DEMO_KEY}, "x")
    idle.stop()  # never started: nothing to end
    with structlog.testing.capture_logs() as logs:
        thread = process.start()
        assert (thread.name, thread.daemon) == ("poller-pipe", True)
        deadline = time.monotonic() + PATIENCE
        while not any(entry["event"] == "poll_completed" for entry in list(logs)):
            assert time.monotonic() < deadline, "no poll_completed in time"
            time.sleep(0.01)
        child = process._process
        process.stop()
        thread.join(PATIENCE)
    (first, *_) = [entry for entry in logs if entry["event"] == "poll_completed"]
    assert first["tenant"] == process._specs[0].tenant
    assert child is not None and child.poll() is not None
    assert child.stdin is not None and child.stdin.closed
