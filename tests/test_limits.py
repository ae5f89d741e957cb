"""Bounds that hold against a hostile API and hostile scrapers, measured on the real processes.

The exporter runs as users run it (the console script, its poller child
process); a loopback server in the test plays the API. Memory is read from
/proc: VmHWM is a process's peak resident set, exact however short the peak.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from exporter_process import Exporter, running_exporter, status_bytes

from exporter import metrics as m
from exporter.simulator import SEED_RECORDS

KEY = "limits-secret-key-0123456789"
MIB = 1 << 20


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class HostileApi:
    """A loopback API that answers every request with `answer`, whatever it is now."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                api.requests += 1
                answer = api.answer
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the exporter stopped reading: a cap
                    self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.handle_error = lambda *_: None  # type: ignore[method-assign]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v3"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def api() -> Iterator[HostileApi]:
    server = HostileApi(Answer(200, b"[]"))
    yield server
    server.close()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "key"
    path.write_text(KEY)
    return path


def exporter_args(api: HostileApi, key_file: Path, *extra: str) -> list[str]:
    return ["--base-url", api.base_url, "--api-key-file", str(key_file), *extra]


def gzip_of_zeros(size: int) -> bytes:
    """A gzip member of `size` zero bytes, built without holding them."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MIB)
    parts = [compressor.compress(zeros) for _ in range(size // MIB)]
    return b"".join([*parts, compressor.flush()])


def failures(exporter: Exporter, code: str) -> float:
    return exporter.value(m.API_FAILURES.name, code=code) or 0.0


@pytest.mark.parametrize("layers", [1, 2], ids=["gzip", "gzip, gzip"])
def test_gzip_bombs_stay_within_the_size_cap(api: HostileApi, key_file: Path, layers: int) -> None:
    bomb = gzip_of_zeros(256 * MIB)  # 256 MiB inflated, 250 KB as sent
    if layers == 2:
        bomb = gzip.compress(bomb, 9)  # a few KB as sent
    cap = MIB
    args = exporter_args(api, key_file, "--poll-interval", "0.5", "--max-response-bytes", str(cap))
    with running_exporter(args) as exporter:
        poller = exporter.poller_pid
        before = status_bytes(poller, "VmHWM")  # after a poll of an empty list
        api.answer = Answer(200, bomb, {"Content-Encoding": ", ".join(["gzip"] * layers)})
        exporter.wait_for(lambda: failures(exporter, "too_large") >= 3, "three bombs refused")
        assert exporter.value(m.UP.name) == 0
        growth = status_bytes(poller, "VmHWM") - before
    assert growth < cap + 16 * MIB, f"the poller's peak grew {growth / MIB:.1f} MiB"


def test_an_api_echoing_the_key_reaches_no_label(api: HostileApi, key_file: Path) -> None:
    with running_exporter(exporter_args(api, key_file, "--poll-interval", "0.5")) as exporter:
        api.answer = Answer(401, json.dumps({"code": KEY, "description": KEY}).encode())
        exporter.wait_for(lambda: failures(exporter, "other") >= 1, "the failure counted")
        api.answer = Answer(200, json.dumps([{**SEED_RECORDS[0], "name": f"x {KEY} y"}]).encode())
        exporter.wait_for(lambda: exporter.value(m.UP.name) == 1, "a good poll")
        for path in ("/metrics", "/"):
            assert KEY not in exporter.get(path).text
        assert "[REDACTED]" in exporter.get("/metrics").text


def test_a_5_mb_group_name_is_cut(api: HostileApi, key_file: Path) -> None:
    record = {**SEED_RECORDS[0], "name": "n" * 5_000_000}
    api.answer = Answer(200, json.dumps([record]).encode())
    with running_exporter(exporter_args(api, key_file)) as exporter:
        response = exporter.get("/metrics")
        assert len(response.content) < 100_000
        assert exporter.value(m.TRUNCATED_LABELS.name) == 1


def big_tenant(groups: int) -> bytes:
    seed = SEED_RECORDS[0]
    return json.dumps(
        [{**seed, "id": f"g{i}", "name": f"group {i} {'x' * (i % 50)}"} for i in range(groups)]
    ).encode()


def stall_scrapers(url: str, count: int) -> list[socket.socket]:
    """`count` clients that ask for /metrics without gzip and never read."""
    host, port = url.removeprefix("http://").split(":")
    stalled = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: exporter\r\n\r\n")
        stalled.append(sock)
    return stalled


def settled_rss(pid: int) -> int:
    """RSS once it stops growing (three readings within 1 MiB), at most 60 s on."""
    readings = [status_bytes(pid, "VmRSS")]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.5)
        readings.append(status_bytes(pid, "VmRSS"))
        if max(readings[-3:]) - min(readings[-3:]) < MIB and len(readings) >= 3:
            break
    return readings[-1]


def test_stalled_plain_scrapers_cost_little_each(api: HostileApi, key_file: Path) -> None:
    api.answer = Answer(200, big_tenant(20_000))
    count = 300
    args = exporter_args(api, key_file, "--web.max-connections", str(count + 10))
    with running_exporter(args) as exporter:
        plain = exporter.get("/metrics", headers={"Accept-Encoding": "identity"}).content
        assert len(plain) > 20 * MIB  # an exposition a stalled scrape would hold whole
        server = exporter.process.pid
        before = settled_rss(server)
        stalled = stall_scrapers(exporter.url, count)
        try:
            for sock in stalled:  # every one is being answered
                sock.settimeout(60)
                assert sock.recv(1, socket.MSG_PEEK) == b"H"
            growth = settled_rss(server) - before
            assert exporter.get("/-/healthy").status_code == 200
        finally:
            for sock in stalled:
                sock.close()
    per_scrape = growth / count
    assert per_scrape < 512 * 1024, f"{per_scrape / 1024:.0f} KiB per stalled scrape"
