"""The two servers of the benchmark, each run in its own process.

`fake-api`: serves `GET /target-groups` from pre-serialised bytes, optionally
churning groups between requests, and can hold chosen requests open so the
exporter sits idle between two known polls (to read its steady RSS).

`limit`: a plain threaded http.server returning one fixed gzip body for any
GET, the floor any Python exporter serving pre-rendered bytes can reach.

Both print one JSON line `{"port": N}` on stdout once listening.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from benchmarks.payload import Churner, serialise


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A scraper or exporter hanging up mid-request is part of the run, not news."""


class FakeApi:
    def __init__(self, body: bytes, churn_every: int, churn_fraction: float) -> None:
        self.body = body
        self.requests = 0
        self.held = False
        self._hold_at: set[int] = set()
        self._hold_next = False
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._churn_every = churn_every
        self._churner = (
            Churner(json.loads(body), churn_fraction) if churn_every and churn_fraction else None
        )

    def hold(self, at: list[int]) -> None:
        """Hold request numbers `at` (1-based), or the next one when `at` is empty."""
        with self._lock:
            self._hold_at.update(at)
            self._hold_next = self._hold_next or not at

    def release(self) -> None:
        self._release.set()

    def state(self) -> dict[str, Any]:
        return {"requests": self.requests, "held": self.held, "bytes": len(self.body)}

    def next_body(self) -> bytes:
        with self._lock:
            self.requests += 1
            number = self.requests
            hold = self._hold_next or number in self._hold_at
            self._hold_next = False
            if self._churner is not None and number > 1 and (number - 1) % self._churn_every == 0:
                self._churner.step()
                self.body = serialise(self._churner.records)
            body = self.body
        if hold:
            self._release.clear()
            self.held = True
            self._release.wait()
            self.held = False
        return body


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY a small body waits
    # for the client's delayed ACK (~40 ms on Linux), which is no limit worth measuring.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def _api_handler(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(_Quiet):
        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            if path.endswith("/target-groups"):
                self._send(api.next_body(), "application/json")
            elif path == "/-/state":
                self._send(json.dumps(api.state()).encode(), "application/json")
            elif path == "/-/hold":
                at = [int(part) for part in query.removeprefix("at=").split(",") if part]
                api.hold(at)
                self._send(b"ok\n", "text/plain")
            elif path == "/-/release":
                api.release()
                self._send(b"ok\n", "text/plain")
            else:
                self.send_error(404)

    return Handler


def _static_handler(body: bytes) -> type[BaseHTTPRequestHandler]:
    class Handler(_Quiet):
        def do_GET(self) -> None:
            self._send(
                body,
                "text/plain; version=0.0.4; charset=utf-8",
                {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"},
            )

    return Handler


def _serve(handler: type[BaseHTTPRequestHandler]) -> None:
    server = _QuietServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.servers")
    sub = parser.add_subparsers(dest="kind", required=True)
    api = sub.add_parser("fake-api")
    api.add_argument("--payload", type=Path, required=True)
    api.add_argument("--churn-every", type=int, default=0, help="churn before every Nth request")
    api.add_argument("--churn-fraction", type=float, default=0.01)
    api.add_argument("--hold-at", default="", help="request numbers to hold, comma-separated")
    limit = sub.add_parser("limit")
    limit.add_argument("--body", type=Path, required=True, help="the gzip body to serve")
    args = parser.parse_args(argv)
    if args.kind == "fake-api":
        fake = FakeApi(args.payload.read_bytes(), args.churn_every, args.churn_fraction)
        at = [int(part) for part in args.hold_at.split(",") if part]
        if at:
            fake.hold(at)
        _serve(_api_handler(fake))
    else:
        _serve(_static_handler(args.body.read_bytes()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
