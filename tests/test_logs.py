"""Logging: secrets redacted, and a log stream that breaks never stops polling or serving."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import structlog
from exporter_process import running_exporter

from exporter.logs import configure_logging


@pytest.fixture(autouse=True)
def structlog_defaults() -> Iterator[None]:
    """Each test configures structlog its way; later tests get the defaults back."""
    yield
    structlog.reset_defaults()


class ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_broken_log_stream_is_not_the_callers_problem() -> None:
    configure_logging("info", "json", stream=ClosedPipe())
    log = structlog.get_logger("test")
    log.info("event", tenant="acme")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("poll_crashed")


def test_secrets_are_redacted() -> None:
    out = io.StringIO()
    configure_logging("info", "json", lambda: ["s3cret-key"], stream=out)
    try:
        structlog.get_logger("test").error(
            "api_down", detail="sent s3cret-key", other=["s3cret-key"]
        )
    finally:
        configure_logging("info", "json")
    assert "s3cret-key" not in out.getvalue()
    assert out.getvalue().count("[REDACTED]") == 2


def test_polling_and_serving_go_on_after_the_log_reader_goes_away() -> None:
    """`exporter 2>&1 | head -1`: every later log line meets a closed pipe."""
    args = ["--demo", "--demo.scenario", "flaky", "--poll-interval", "0.2", "--log.level", "debug"]
    with running_exporter(args, stderr=subprocess.PIPE) as exporter:
        assert exporter.process.stderr is not None
        exporter.process.stderr.readline()
        exporter.process.stderr.close()  # the reader is gone
        requests = "webex_campaign_api_requests_total"
        before = exporter.value(requests) or 0.0
        # Each poll logs a line in each process (debug), so this many polls
        # have all met the closed pipe.
        exporter.wait_for(lambda: (exporter.value(requests) or 0) >= before + 20, "20 more polls")
        assert exporter.get("/-/healthy").status_code == 200
        assert exporter.process.poll() is None


class Writes(io.StringIO):
    """Records each write call apart."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return len(text)


@pytest.mark.parametrize("fmt", ["json", "logfmt", "console"])
def test_each_event_is_one_write_of_one_whole_line(fmt: str) -> None:
    """The poller process shares the serving process's stderr: a line written in two
    pieces (the text, then its newline) lets the other process's line in between."""
    out = Writes()
    configure_logging("info", fmt, stream=out)
    log = structlog.get_logger("test")
    log.info("poll_completed", tenant="acme", duration_s=0.25)
    log.warning("api_down", tenant="acme", code="498")
    assert len(out.calls) == 2
    for call, event in zip(out.calls, ["poll_completed", "api_down"], strict=True):
        assert call.endswith("\n") and call.count("\n") == 1
        assert event in call


# Two processes log at once to one pipe, as the serving and poller processes do.
_TWO_WRITERS = """
import structlog
from exporter.logs import configure_logging
configure_logging("info", "json")
log = structlog.get_logger("test")
for n in range(2000):
    log.info("tick", n=n, pad="x" * 200)
"""


def test_two_processes_logging_to_one_stderr_never_split_a_line() -> None:
    read, write = os.pipe()
    with os.fdopen(read, "rb") as reader:
        writers = [
            subprocess.Popen([sys.executable, "-c", _TWO_WRITERS], stderr=write) for _ in range(2)
        ]
        os.close(write)
        lines = reader.read().splitlines()
    assert [writer.wait(30) for writer in writers] == [0, 0]
    events = [json.loads(line) for line in lines]  # a line split by the other raises
    assert sorted(event["n"] for event in events) == sorted([*range(2000), *range(2000)])


def test_logfmt_output() -> None:
    out = io.StringIO()
    configure_logging("warn", "logfmt", stream=out)
    log = structlog.get_logger("test")
    log.info("quiet")
    log.warning("api_down", tenant="acme", code="498")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("timestamp=")
    assert " level=warning event=api_down " in lines[0]
    assert "tenant=acme" in lines[0] and "code=498" in lines[0]
