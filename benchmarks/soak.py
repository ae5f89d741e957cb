"""Soak: thousands of polls with faults mixed in at random; nothing lost, nothing leaked.

Runs the exporter as it ships (the console script) against the simulator on
loopback. The simulator answers a share of requests with a random scenario
(every documented failure, throttling, HTML pages, truncated JSON, timeouts,
dropped connections, oversized bodies, malformed and duplicate records,
hostile names) and counts what it injected. At the end the exporter's own
counters must match, and its memory, file descriptors and threads must not
have grown.

    python -m benchmarks.soak --polls 2000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from exporter import metrics as m
from exporter.simulator import SCENARIOS, Simulator, Tenant

KEY = "soak-secret-key"


@dataclass
class Resources:
    rss_kib: int
    fds: int
    threads: int

    @classmethod
    def of(cls, pid: int) -> Resources:
        """The exporter and its poller process, added up."""
        total = cls(0, 0, 0)
        for process in (pid, *child_pids(pid)):
            status = Path(f"/proc/{process}/status").read_text()
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            total.rss_kib += int(fields["VmRSS"].split()[0])
            total.fds += len(os.listdir(f"/proc/{process}/fd"))
            total.threads += int(fields["Threads"])
        return total


def child_pids(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@dataclass
class Report:
    polls: int
    seconds: float
    failures_injected: dict[str, int]
    failures_counted: dict[str, int]
    invalid_records_scenarios: int
    start: Resources
    end: Resources
    crashes: int
    exit_code: int | None

    @property
    def nothing_lost(self) -> bool:
        return self.failures_injected == self.failures_counted

    @property
    def ok(self) -> bool:
        return self.nothing_lost and self.crashes == 0 and self.exit_code == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _script() -> str:
    beside = Path(sys.executable).with_name("webex-campaign-exporter")
    return str(beside) if beside.is_file() else shutil.which("webex-campaign-exporter") or "false"


def _counters(url: str) -> tuple[int, dict[str, int]]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    requests = 0
    failures: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == m.API_REQUESTS.name:
                requests = int(sample.value)
            elif sample.name == m.API_FAILURES.name and sample.value:
                key = f"{sample.labels['status']}/{sample.labels['code']}"
                failures[key] = int(sample.value)
    return requests, failures


def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def soak(
    polls: int, interval: float, fault_share: float, seed: int, timeout: float = 0.2
) -> Report:
    """`timeout` is the exporter's request timeout; a healthy poll that outlasts it is
    counted as a failure nobody injected, so give it room on a busy machine."""
    tenant = Tenant(seed=seed)
    tenant.slow_seconds = timeout + 0.3
    tenant.too_large_bytes = 5_000_001
    tenant.flaky_choices = tuple(SCENARIOS)
    with Simulator(tenant, keys=frozenset({KEY})) as simulator:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        # A file, not a pipe: a pipe nobody reads fills up and blocks the exporter's logging.
        log_file = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - read after the run
        process = subprocess.Popen(
            [
                _script(),
                "--base-url",
                simulator.base_url,
                "--web.listen-address",
                f"127.0.0.1:{port}",
                "--poll-interval",
                str(interval),
                "--timeout",
                str(timeout),
                "--max-response-bytes",
                "5000000",
            ],
            env={**os.environ, "WEBEX_CAMPAIGN_API_KEY": KEY},
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
        try:
            _wait(lambda: _ready(url), 20, "the exporter to be ready")
            warm = tenant.requests + 20
            _wait(lambda: tenant.requests >= warm, 30, "warm-up polls")
            start = Resources.of(process.pid)
            began = time.monotonic()
            tenant.flaky = fault_share
            target = tenant.requests + polls
            _wait(lambda: tenant.requests >= target, polls * (interval + 0.5) + 60, "the polls")
            tenant.flaky = 0.0
            settled = tenant.requests + 3  # a few clean polls publish the last failure
            # Until the exporter has counted (and published) every request made so far:
            # every fault is then in its counters.
            _wait(lambda: _counters(url)[0] >= settled, 60, "clean polls")
            elapsed = time.monotonic() - began
            requests, counted = _counters(url)
            end = Resources.of(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log_file.seek(0)
            stderr = log_file.read()
            log_file.close()
    injected: Counter[str] = Counter()
    invalid = 0
    for name, count in tenant.answered.items():
        expected = SCENARIOS[name].expected
        if expected is None:
            invalid += count
        else:
            injected[f"{expected[0]}/{expected[1]}"] += count
    crashes = stderr.count('"poll_crashed"') + stderr.count("Traceback")
    return Report(
        polls=requests,
        seconds=round(elapsed, 1),
        failures_injected=dict(sorted(injected.items())),
        failures_counted=dict(sorted(counted.items())),
        invalid_records_scenarios=invalid,
        start=start,
        end=end,
        crashes=crashes,
        exit_code=process.returncode,
    )


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--polls", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=0.01, help="poll interval, seconds")
    parser.add_argument("--fault-share", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, help="also write the report as JSON")
    args = parser.parse_args(argv)
    report = soak(args.polls, args.interval, args.fault_share, args.seed)
    injected = sum(report.failures_injected.values())
    counted = sum(report.failures_counted.values())
    lines = [
        f"polls done                 {report.polls} in {report.seconds} s",
        f"failures injected/counted  {injected} / {counted}"
        f" ({'equal' if report.nothing_lost else 'MISMATCH'})",
        f"  by status/code injected  {report.failures_injected}",
        f"  by status/code counted   {report.failures_counted}",
        f"bad-record scenarios       {report.invalid_records_scenarios} (polls that succeed)",
        "(exporter and poller processes added up)",
        f"RSS start/end              {report.start.rss_kib / 1024:.1f} / "
        f"{report.end.rss_kib / 1024:.1f} MiB",
        f"open fds start/end         {report.start.fds} / {report.end.fds}",
        f"threads start/end          {report.start.threads} / {report.end.threads}",
        f"crashes                    {report.crashes}",
        f"exit code on SIGTERM       {report.exit_code}",
    ]
    print("\n".join(lines))
    if args.output:
        data = asdict(report) | {"nothing_lost": report.nothing_lost, "ok": report.ok}
        args.output.write_text(json.dumps(data, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
