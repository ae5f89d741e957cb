"""Child processes of the benchmark: helper servers, the exporter, /proc readings."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Self

ROOT = Path(__file__).resolve().parent.parent
CONSOLE_SCRIPT = "webex-campaign-exporter"


class HarnessError(RuntimeError):
    """The benchmark itself broke (not a slow exporter): exit non-zero."""


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBEX_CAMPAIGN_")}
    # Everything here talks to 127.0.0.1: a proxy from the environment must not interfere.
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    # After any PYTHONPATH given: `PYTHONPATH=/other/checkout python -m benchmarks` measures
    # that checkout's exporter (the console script imports `exporter` from there too).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (env.get("PYTHONPATH"), str(ROOT))))
    env.update(extra or {})
    return env


def run_json(module: str, *args: str, timeout: float) -> dict[str, Any]:
    """Run `python -m module args` to completion and parse its one JSON line."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise HarnessError(f"{module} exited {result.returncode}: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def get(port: int, path: str, timeout: float = 30) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process, in MB (10^6 bytes); {} once it is gone."""
    values: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0]) * 1024 / 1e6
    except (FileNotFoundError, ProcessLookupError):
        return {}
    return values


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU of these processes and of their reaped children, from /proc."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        # fields[0] is field 3 (state): utime, stime, cutime, cstime are fields 14-17.
        total += sum(int(value) for value in fields[11:15])
    return total / _TICK


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (the exporter may run its poller in a child)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                # The command name may hold spaces and parentheses: ppid follows the last ")".
                ppid = int(stat.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    tree, queue = [], [pid]
    while queue:
        current = queue.pop()
        tree.append(current)
        queue.extend(parents.get(current, ()))
    return tree


class TreeMemory:
    """RSS of a process tree: sampled total (for a peak across processes) and per-process VmHWM.

    One process's VmHWM is exact; the peaks of several processes need not coincide,
    so their sum only bounds the tree's peak. The sampled total (every 20 ms) is the
    estimate when there are several; the largest single VmHWM is a floor for it.
    """

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.sampled_peak = 0.0
        self._hwm: dict[int, float] = {}
        self._pids = [pid]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        rounds = 0
        while not self._stop.wait(interval):
            if rounds % 25 == 0:
                self._pids = descendants(self.pid)
            rounds += 1
            self.read()

    def read(self) -> dict[str, float]:
        total = 0.0
        alive = 0
        for pid in self._pids:
            status = proc_status(pid)
            if status:
                alive += 1
                total += status["VmRSS"]
                self._hwm[pid] = max(self._hwm.get(pid, 0.0), status["VmHWM"])
        self.sampled_peak = max(self.sampled_peak, total)
        return {
            "rss_mb": total,
            "processes": alive,
            "peak_mb": max(self.sampled_peak, max(self._hwm.values(), default=0.0)),
            "hwm_sum_mb": sum(self._hwm.values()),
        }

    def cpu(self) -> float:
        """CPU seconds used so far by the whole tree, children looked up again."""
        return cpu_seconds(descendants(self.pid))

    def now(self) -> dict[str, float]:
        """A fresh reading, children looked up again."""
        self._pids = descendants(self.pid)
        return self.read()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def _stop(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


class Server:
    """A helper server from benchmarks.servers, listening once its port is printed."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.servers", *args],
            stdout=subprocess.PIPE,
            text=True,
            env=_env(),
            cwd=ROOT,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(5)
            raise HarnessError(f"benchmarks.servers {args[0]} exited {self.process.returncode}")
        self.port: int = json.loads(line)["port"]

    def stop(self) -> None:
        _stop(self.process, grace=3)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FakeApi(Server):
    """The fake tenant(s) of `benchmarks.servers fake-api`; see there for the options."""

    def __init__(
        self,
        payload: Path | None = None,
        churn_every: int = 0,
        hold_at: Sequence[int] = (),
        *,
        groups: int = 0,
        churn: float = 0.0,
        bodies: int = 1,
        tenants: int = 0,
        tenant_groups: int = 1_000,
        hang: str | None = None,
    ) -> None:
        args = ["fake-api"]
        if payload is not None:
            args += ["--payload", str(payload)]
        if churn_every:
            args += ["--churn-every", str(churn_every)]
        if hold_at:
            args += ["--hold-at", ",".join(map(str, hold_at))]
        if groups:
            args += ["--groups", str(groups), "--bodies", str(bodies)]
        args += ["--churn", repr(churn)]
        if tenants:
            args += ["--tenants", str(tenants), "--tenant-groups", str(tenant_groups)]
            args += ["--bodies", str(bodies)]
        if hang:
            args += ["--hang", hang]
        super().__init__(*args)

    def rewind(self) -> None:
        """The next client gets the same bodies, in the same order, as the first one."""
        get(self.port, "/-/rewind")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def state(self) -> dict[str, Any]:
        return json.loads(get(self.port, "/-/state")[1])  # type: ignore[no-any-return]

    def hold_next(self) -> None:
        get(self.port, "/-/hold")

    def release(self) -> None:
        get(self.port, "/-/release")

    def wait_held(self, timeout: float, alive: Measured | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            if state["held"]:
                return state
            if alive is not None:
                alive.check_alive()
            time.sleep(0.02)
        raise HarnessError(f"the exporter's request was not held within {timeout:.0f} s")


def exporter_command() -> list[str]:
    """The console script as installed next to this interpreter (or on PATH)."""
    beside = Path(sys.executable).with_name(CONSOLE_SCRIPT)
    found = str(beside) if beside.exists() else shutil.which(CONSOLE_SCRIPT)
    if found is None:
        raise HarnessError(
            f"console script {CONSOLE_SCRIPT!r} not found: run `pip install -e '.[test]'`"
        )
    return [found]


def measured_exporter() -> tuple[str, Path]:
    """Version and package directory of the `exporter` that the console script imports."""
    probe = "import exporter, pathlib; print(exporter.__version__); print(exporter.__file__)"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=Path(tempfile.gettempdir()),  # not ROOT: the console script has no cwd on sys.path
        check=True,
    )
    version, path = result.stdout.split()
    return version, Path(path).resolve().parent


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Measured:
    """A process under measurement whose JSON log lines on stderr report each poll.

    Each `poll_completed` event gets `_at` (monotonic time the line was read) and,
    unless `cpu_per_event` is off, `_cpu_s` (CPU seconds of the process tree then).
    Lines that are not JSON are counted in `unparsed`: a poll whose line was lost
    would read as a tenant polled late.
    """

    name = "process"

    def __init__(
        self,
        command: list[str],
        env: dict[str, str],
        port: int,
        log_path: Path,
        cpu_per_event: bool = True,
    ) -> None:
        self.command = command
        self.port = port
        self.polls: list[dict[str, Any]] = []
        self.unparsed = 0
        self._cpu_per_event = cpu_per_event
        self._cond = threading.Condition()
        self._log = log_path.open("w", encoding="utf-8")
        self.process = subprocess.Popen(
            self.command,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.pid = self.process.pid
        self.tree = TreeMemory(self.pid)
        assert self.process.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stderr,), daemon=True)
        self._reader.start()
        self.log_path = log_path

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._log.write(line)
            try:
                event = json.loads(line)
            except ValueError:
                self.unparsed += bool(line.strip())
                continue
            if isinstance(event, dict) and event.get("event") == "poll_completed":
                event["_at"] = time.monotonic()
                if self._cpu_per_event:
                    event["_cpu_s"] = self.tree.cpu()
                with self._cond:
                    self.polls.append(event)
                    self._cond.notify_all()
        self._log.flush()

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            self._reader.join(2)
            self._log.flush()
            tail = self.log_path.read_text(encoding="utf-8")[-3000:]
            raise HarnessError(f"{self.name} exited {self.process.returncode}:\n{tail}")

    def wait_polls(self, count: int, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.polls) < count:
                self.check_alive()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HarnessError(
                        f"only {len(self.polls)} of {count} polls within {timeout:.0f} s"
                        f" (log: {self.log_path})"
                    )
                self._cond.wait(min(left, 0.5))
            return list(self.polls)

    def memory(self) -> dict[str, float]:
        """RSS now (all the exporter's processes) and the peak so far, in MB."""
        return self.tree.now()

    def stop(self) -> None:
        self.tree.stop()
        _stop(self.process)
        self._reader.join(5)
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Exporter(Measured):
    """The exporter as it ships (its console script), polling `api` back to back."""

    name = "the exporter"

    def __init__(self, api: FakeApi, poll_interval: float, log_path: Path) -> None:
        port = free_port()
        command = [
            *exporter_command(),
            "--base-url",
            api.base_url,
            "--tenant",
            "bench",
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--log.level",
            "debug",
            "--log.format",
            "json",
            "--poll-interval",
            str(poll_interval),
            "--stale-after",
            "86400",
            "--timeout",
            "900",
            "--max-response-bytes",
            str(1 << 30),
        ]
        super().__init__(command, _env({"WEBEX_CAMPAIGN_API_KEY": "bench"}), port, log_path)


class Obvious(Measured):
    """`benchmarks.obvious` (one of its variants), polling `api` back to back."""

    def __init__(self, api: FakeApi, variant: str, log_path: Path) -> None:
        port = free_port()
        self.name = f"the obvious exporter ({variant})"
        command = [sys.executable, "-m", "benchmarks.obvious", "--variant", variant]
        command += ["--base-url", api.base_url, "--port", str(port)]
        super().__init__(command, _env(), port, log_path)


def exporter_help() -> str:
    """The console script's `--help`: what this exporter build can be asked to do."""
    result = subprocess.run(
        [*exporter_command(), "--help"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=False,
    )
    return result.stdout


class MultiTenantExporter(Measured):
    """The exporter with SPEC's `--config.file`: one YAML file naming every tenant."""

    name = "the exporter (several tenants)"

    def __init__(
        self,
        api: FakeApi,
        names: Sequence[str],
        defaults: dict[str, float],
        config_path: Path,
        log_path: Path,
    ) -> None:
        port = free_port()
        lines = ["defaults:"]
        lines += [f"  {key}: {value}" for key, value in defaults.items()]
        lines.append("tenants:")
        for name in names:
            lines += [
                f"  - name: {name}",
                f"    base_url: {api.base_url}/t/{name}",
                "    api_key_env: BENCH_API_KEY",
            ]
        config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        command = [
            *exporter_command(),
            "--config.file",
            str(config_path),
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--log.level",
            "debug",
            "--log.format",
            "json",
        ]
        env = _env({"BENCH_API_KEY": "bench"})
        # Per-event CPU readings would cost the harness a /proc walk per tenant poll.
        super().__init__(command, env, port, log_path, cpu_per_event=False)
