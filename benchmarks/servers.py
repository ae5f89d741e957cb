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

from benchmarks.payload import Churner, ChurningTenant, serialise


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A scraper or exporter hanging up mid-request is part of the run, not news."""


class Feed:
    """The bodies one tenant answers with, request after request.

    All of them are built before the fake API reports its port (`prebuilt`), so
    serving one costs a write and nothing else: no serialisation competes with the
    measured process for the CPU. A request beyond them gets the last two bodies in
    turn (counted in `replayed`): each still differs from the one before in the
    same share of groups, and building one (a second at 100,000 groups) would take
    a core from the exporter while its scrapes are timed. `rewind()` starts the same
    sequence again, so every implementation measured against this feed sees the
    very same bodies.
    """

    def __init__(self, tenant: ChurningTenant, prebuilt: int) -> None:
        self.tenant = tenant
        self.bodies = [tenant.body()]
        self.changed: list[int] = [0]
        self.replayed = 0
        self.served = 0
        self._lock = threading.Lock()
        # Unchanged: the one body serves every request.
        while tenant.changed_per_step and len(self.bodies) < prebuilt:
            self._grow()

    def _grow(self) -> None:
        self.changed.append(len(self.tenant.step()))
        self.bodies.append(self.tenant.body())

    def next_body(self) -> bytes:
        with self._lock:
            index = self.served
            self.served += 1
            if self.tenant.changed_per_step == 0:
                return self.bodies[0]
            if index >= len(self.bodies):
                self.replayed += 1
                if len(self.bodies) < 2:  # never the case once the tenant changes
                    self._grow()
                return self.bodies[len(self.bodies) - 2 + (index - len(self.bodies)) % 2]
            return self.bodies[index]

    def rewind(self) -> None:
        with self._lock:
            self.served = 0

    def state(self) -> dict[str, Any]:
        return {
            "served": self.served,
            "prebuilt_or_built": len(self.bodies),
            "replayed": self.replayed,
            "groups": self.tenant.groups,
            "changed_per_step": self.tenant.changed_per_step,
            "bytes": len(self.bodies[0]),
        }


class _LegacyFeed:
    """A fixed payload, optionally re-serialised with `Churner` every Nth request
    (the long RSS-under-churn run)."""

    def __init__(self, body: bytes, churn_every: int, churn_fraction: float) -> None:
        self.body = body
        self.served = 0
        self._churn_every = churn_every
        self._churner = (
            Churner(json.loads(body), churn_fraction) if churn_every and churn_fraction else None
        )

    def next_body(self) -> bytes:
        self.served += 1
        number = self.served
        if self._churner is not None and number > 1 and (number - 1) % self._churn_every == 0:
            self._churner.step()
            self.body = serialise(self._churner.records)
        return self.body

    def rewind(self) -> None:
        """Nothing to rewind: the legacy feed only moves forward."""

    def state(self) -> dict[str, Any]:
        return {"served": self.served, "bytes": len(self.body), "replayed": 0}


class FakeApi:
    """`GET /target-groups` answered from a feed; `GET /t/<name>/target-groups` from the
    named tenant's feed (several tenants in one process). Requests to `hang` never get
    an answer: the client must give up on its own timeout."""

    def __init__(
        self,
        feed: Feed | _LegacyFeed | None,
        tenants: dict[str, Feed] | None = None,
        hang: str | None = None,
    ) -> None:
        self.feed = feed
        self.tenants = tenants or {}
        self.hang = hang
        self.hung = 0
        self.requests = 0
        self.held = False
        self._hold_at: set[int] = set()
        self._hold_next = False
        self._release = threading.Event()
        self._never = threading.Event()
        self._lock = threading.Lock()

    def hold(self, at: list[int]) -> None:
        """Hold request numbers `at` (1-based), or the next one when `at` is empty."""
        with self._lock:
            self._hold_at.update(at)
            self._hold_next = self._hold_next or not at

    def release(self) -> None:
        self._release.set()

    def rewind(self) -> None:
        for feed in (self.feed, *self.tenants.values()):
            if feed is not None:
                feed.rewind()

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"requests": self.requests, "held": self.held, "hung": self.hung}
        if self.feed is not None:
            state.update(self.feed.state())
        if self.tenants:
            state["tenants"] = len(self.tenants)
            state["tenant_requests"] = sum(feed.served for feed in self.tenants.values())
            state["replayed"] = sum(feed.replayed for feed in self.tenants.values())
        return state

    def next_body(self) -> bytes | None:
        if self.feed is None:
            return None
        with self._lock:
            self.requests += 1
            number = self.requests
            hold = self._hold_next or number in self._hold_at
            self._hold_next = False
            body = self.feed.next_body()
        if hold:
            self._release.clear()
            self.held = True
            self._release.wait()
            self.held = False
        return body

    def tenant_body(self, name: str) -> bytes | None:
        if name == self.hang:
            with self._lock:
                self.hung += 1
            self._never.wait()
        feed = self.tenants.get(name)
        return None if feed is None else feed.next_body()


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
            if path.startswith("/t/") and path.endswith("/target-groups"):
                body = api.tenant_body(path.split("/")[2])
            elif path.endswith("/target-groups"):
                body = api.next_body()
            else:
                body = None
            if body is not None:
                self._send(body, "application/json")
            elif path.endswith("/target-groups"):
                self.send_error(404)
            elif path == "/-/state":
                self._send(json.dumps(api.state()).encode(), "application/json")
            elif path == "/-/hold":
                at = [int(part) for part in query.removeprefix("at=").split(",") if part]
                api.hold(at)
                self._send(b"ok\n", "text/plain")
            elif path == "/-/release":
                api.release()
                self._send(b"ok\n", "text/plain")
            elif path == "/-/rewind":
                api.rewind()
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


def tenant_names(count: int) -> list[str]:
    return [f"t{index:03d}" for index in range(count)]


def _fake_api(args: argparse.Namespace) -> FakeApi:
    feed: Feed | _LegacyFeed | None = None
    if args.payload is not None:
        feed = _LegacyFeed(args.payload.read_bytes(), args.churn_every, args.churn_fraction)
    elif args.groups:
        feed = Feed(ChurningTenant(args.groups, args.churn, args.seed), args.bodies)
    tenants = {
        name: Feed(ChurningTenant(args.tenant_groups, args.churn, args.seed + i), args.bodies)
        for i, name in enumerate(tenant_names(args.tenants))
    }
    return FakeApi(feed, tenants, args.hang)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.servers")
    sub = parser.add_subparsers(dest="kind", required=True)
    api = sub.add_parser("fake-api")
    api.add_argument("--payload", type=Path, help="serve this file (legacy churn options apply)")
    api.add_argument("--churn-every", type=int, default=0, help="churn before every Nth request")
    api.add_argument("--churn-fraction", type=float, default=0.01)
    api.add_argument("--groups", type=int, help="generate this many groups (instead of --payload)")
    api.add_argument("--churn", type=float, default=0.0, help="share of groups changed per body")
    api.add_argument("--bodies", type=int, default=1, help="bodies to build before listening")
    api.add_argument("--seed", type=int, default=4)
    api.add_argument("--tenants", type=int, default=0, help="also serve /t/tNNN/target-groups")
    api.add_argument("--tenant-groups", type=int, default=1_000)
    api.add_argument("--hang", help="tenant name whose requests never get an answer")
    api.add_argument("--hold-at", default="", help="request numbers to hold, comma-separated")
    limit = sub.add_parser("limit")
    limit.add_argument("--body", type=Path, required=True, help="the gzip body to serve")
    args = parser.parse_args(argv)
    if args.kind == "fake-api":
        fake = _fake_api(args)
        at = [int(part) for part in args.hold_at.split(",") if part]
        if at:
            fake.hold(at)
        _serve(_api_handler(fake))
    else:
        _serve(_static_handler(args.body.read_bytes()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
