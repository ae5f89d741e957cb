"""HTTP endpoints: /metrics, /, /-/healthy, /-/ready; 404 for everything else.

A scrape only picks the pre-rendered body of the last poll and writes it out:
no API call, no rendering, no lock shared with the poller.
"""

from __future__ import annotations

import contextlib
import errno
import html
import io
import math
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import structlog

from . import __version__
from .exposition import Exposition, GroupBlock, Health, empty_group_block, render
from .process_metrics import ProcessMetrics
from .settings import ListenAddress

log = structlog.get_logger("exporter.server")


@dataclass(frozen=True)
class Published:
    """What the HTTP server reads: swapped atomically after each poll attempt."""

    exposition: Exposition
    block: GroupBlock
    health: Health
    ready: bool = True

    @classmethod
    def of(cls, block: GroupBlock, health: Health) -> Published:
        return cls(render(block, health), block, health)

    @property
    def up(self) -> bool:
        return self.health.up

    @property
    def last_success(self) -> float | None:
        return self.health.last_success

    @property
    def groups(self) -> int:
        return self.block.groups

    def down(self) -> Published:
        """The same values with `webex_campaign_up` 0 (the poller itself failed)."""
        return Published.of(self.block, replace(self.health, up=False))


def initial_published(tenant: str, stats_preset: dict[tuple[str, str], int]) -> Published:
    health = Health(tenant, False, None, None, 0, stats_preset, 0)
    block = empty_group_block()
    return Published(render(block, health), block, health, ready=False)


class Latest:
    """Holds the last Published; a plain attribute swap is atomic under the GIL.

    It also tells whether polling still makes progress, for `/-/healthy`: every
    poll attempt publishes (success or failure), so a result older than
    `stall_after` seconds, or a dead thread that delivers results, means the
    poller is stuck and the process is worth restarting.
    """

    def __init__(
        self,
        initial: Published,
        stall_after: float = math.inf,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.value = initial
        self.stall_after = stall_after
        self._clock = clock
        self._progress = clock()
        self._workers: list[threading.Thread] = []

    def set(self, value: Published) -> None:
        self.value = value
        self._progress = self._clock()

    def watch(self, worker: threading.Thread) -> None:
        """Count `worker` dying as polling stopped."""
        self._workers.append(worker)

    def stalled(self) -> str | None:
        """Why polling is not making progress, or None while it is."""
        if any(not worker.is_alive() for worker in self._workers):
            return "the thread receiving poll results has stopped"
        idle = self._clock() - self._progress
        if idle > self.stall_after:
            return f"no poll result for {idle:.0f} s"
        return None


def _q(params: str) -> float:
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def _media_weights(header: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for part in header.split(","):
        media, _, params = part.strip().partition(";")
        media = media.strip().lower()
        if media:
            weights[media] = max(weights.get(media, 0.0), _q(params))
    return weights


def wants_openmetrics(accept: str | None) -> bool:
    """True when the Accept header prefers OpenMetrics to the text format."""
    if not accept:
        return False
    weights = _media_weights(accept)
    openmetrics = weights.get("application/openmetrics-text", 0.0)
    text = max(weights.get(k, 0.0) for k in ("text/plain", "text/*", "*/*"))
    return openmetrics > 0 and openmetrics >= text


def accepts_gzip(accept_encoding: str | None) -> bool:
    if not accept_encoding:
        return False
    weights = _media_weights(accept_encoding)
    return weights.get("gzip", weights.get("*", 0.0)) > 0


_LANDING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Webex Campaign exporter</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:48em}}
td{{padding:.2em 1em .2em 0}}</style></head>
<body><h1>Webex Campaign exporter</h1>
<p>Prometheus exporter for Webex Campaign target groups.</p>
<table>
<tr><td>Version</td><td>{version}</td></tr>
<tr><td>Tenant</td><td>{tenant}</td></tr>
<tr><td>API</td><td>{up}</td></tr>
<tr><td>Target groups</td><td>{groups}</td></tr>
<tr><td>Snapshot age</td><td>{age}</td></tr>
</table>
<p><a href="{metrics}">Metrics</a> &middot; <a href="/-/healthy">Health</a>
&middot; <a href="/-/ready">Readiness</a></p>
</body></html>
"""


def landing_page(published: Published, now: float, telemetry_path: str = "/metrics") -> bytes:
    if published.last_success is None:
        age = "no successful poll yet"
    else:
        age = f"{max(0.0, now - published.last_success):.0f} s"
    if not published.ready:
        up = "first poll pending"
    else:
        up = "up" if published.up else "down (serving the last good values)"
    return _LANDING.format(
        version=html.escape(__version__),
        tenant=html.escape(published.health.tenant),
        up=up,
        groups=published.groups,
        age=age,
        metrics=html.escape(telemetry_path, quote=True),
    ).encode()


DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_READ_HEADER_TIMEOUT = 10.0
# What one plain-text scrape holds at a time, whatever the size of the exposition.
PLAIN_PIECE_BYTES = 64 * 1024


class _HeaderDeadlineReader(io.RawIOBase):
    """The connection's reading side, under one deadline for the whole request head.

    A socket timeout applies to each read, so a client sending its request a
    byte at a time would hold a thread for ever; here every read gets only what
    is left of the deadline that `handle_one_request` sets for each request
    (which also bounds how long an idle keep-alive connection is kept).
    """

    def __init__(self, sock: socket.socket, write_timeout: float | None) -> None:
        self._sock = sock
        self._write_timeout = write_timeout
        self.deadline = math.inf

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request headers slower than the deadline")
        self._sock.settimeout(left)
        try:
            return self._sock.recv_into(buffer)
        finally:
            self._sock.settimeout(self._write_timeout)


class Handler(BaseHTTPRequestHandler):
    # A scrape is written in a few pieces; without this the last small one waits
    # for the client's delayed ACK (40 ms on Linux).
    disable_nagle_algorithm = True
    server_version = f"webex-campaign-exporter/{__version__}"
    protocol_version = "HTTP/1.1"
    timeout = 60  # a client that stops reading frees its thread
    read_header_timeout: ClassVar[float] = DEFAULT_READ_HEADER_TIMEOUT
    telemetry_path: ClassVar[str] = "/metrics"
    process_metrics: ClassVar[ProcessMetrics | None] = None
    latest: ClassVar[Latest]
    authorize: ClassVar[Callable[[BaseHTTPRequestHandler], bool]] = staticmethod(lambda _h: True)

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the plain reader is replaced before anything was read
        self._reader = _HeaderDeadlineReader(self.connection, self.timeout)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        self._reader.deadline = time.monotonic() + self.read_header_timeout
        super().handle_one_request()

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def _other(self) -> None:
        if not type(self).authorize(self):
            return
        self._send(
            HTTPStatus.METHOD_NOT_ALLOWED,
            b"Method not allowed\n",
            head=False,
            extra={"Allow": "GET, HEAD"},
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _other

    def _respond(self, head: bool) -> None:
        if not type(self).authorize(self):
            return
        path = self.path.split("?", 1)[0]
        published = self.latest.value
        if path == self.telemetry_path:
            self._metrics(published, head)
        elif path == "/":
            page = landing_page(published, time.time(), self.telemetry_path)
            self._send(HTTPStatus.OK, page, head, content_type="text/html; charset=utf-8")
        elif path == "/-/healthy":
            stalled = self.latest.stalled()
            if stalled is None:
                self._send(HTTPStatus.OK, b"Healthy\n", head)
            else:
                message = f"Unhealthy: polling has stopped ({stalled})\n".encode()
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, message, head)
        elif path == "/-/ready":
            if published.ready:
                self._send(HTTPStatus.OK, b"Ready\n", head)
            else:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"First poll pending\n", head)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"Not found\n", head)

    def _metrics(self, published: Published, head: bool) -> None:
        openmetrics = wants_openmetrics(self.headers.get("Accept"))
        extra = b"" if self.process_metrics is None else self.process_metrics.render(openmetrics)
        body = published.exposition.select(openmetrics, extra)
        gzip = accepts_gzip(self.headers.get("Accept-Encoding"))
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", body.content_type)
        self.send_header("Vary", "Accept, Accept-Encoding")
        self.send_header("Cache-Control", "no-store")
        if gzip:
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(body.gzip_length))
        else:
            self.send_header("Content-Length", str(body.length))
        self.end_headers()
        if head:
            return
        for piece in body.gzip_parts if gzip else body.plain_pieces(PLAIN_PIECE_BYTES):
            self.wfile.write(piece)

    def _send(
        self,
        status: HTTPStatus,
        payload: bytes,
        head: bool,
        content_type: str = "text/plain; charset=utf-8",
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Access logs are off: scrapes are frequent and carry nothing an operator needs."""


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 25\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    b"Too many connections now\n"
)


class MetricsServer(ThreadingHTTPServer):
    """One thread per connection, at most `max_connections` at once; beyond it, 503."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: ListenAddress,
        handler: type[Handler],
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self.max_connections = max_connections
        self._active = 0
        self._active_lock = threading.Lock()
        host = address.host
        self.address_family = socket.AF_INET6 if ":" in host or host == "" else socket.AF_INET
        if host == "" and not socket.has_ipv6:
            self.address_family = socket.AF_INET
            host = "0.0.0.0"
        self._dual_stack = host == ""
        super().__init__((host or "::", address.port), handler)

    def handle_error(self, request: object, client_address: object) -> None:
        """A scraper that hangs up mid-answer is its business: note it, never print a traceback."""
        log.debug("scrape_aborted", client=str(client_address), error=str(sys.exc_info()[1]))

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._active_lock:
            busy = self._active >= self.max_connections
            if not busy:
                self._active += 1
        if busy:
            self._refuse(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._active_lock:
                self._active -= 1

    def _refuse(self, request: socket.socket) -> None:
        """Answer 503 from the accepting thread, never waiting on the client."""
        with contextlib.suppress(OSError):
            request.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                request.recv(65536)  # what the client sent: unread, closing would reset
            request.send(_BUSY)
        self.shutdown_request(request)

    def server_bind(self) -> None:
        if self._dual_stack:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def make_server(
    address: ListenAddress,
    latest: Latest,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    read_header_timeout: float = DEFAULT_READ_HEADER_TIMEOUT,
    telemetry_path: str = "/metrics",
    process_metrics: ProcessMetrics | None = None,
) -> MetricsServer:
    handler = type(
        "BoundHandler",
        (Handler,),
        {
            "latest": latest,
            "read_header_timeout": read_header_timeout,
            "telemetry_path": telemetry_path,
            "process_metrics": process_metrics,
        },
    )
    try:
        return MetricsServer(address, handler, max_connections)
    except OSError as exc:
        # All interfaces on a host (or container) without IPv6: IPv4 only.
        if address.host or exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
            raise
        return MetricsServer(ListenAddress("0.0.0.0", address.port), handler, max_connections)
