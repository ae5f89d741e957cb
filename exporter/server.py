"""HTTP endpoints: /metrics, /, /-/healthy, /-/ready; 404 for everything else.

A scrape only picks the pre-rendered body of the last poll and writes it out:
no API call, no rendering, no lock shared with the poller.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import html
import io
import itertools
import math
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Protocol

import structlog

from . import __version__
from . import metrics as m
from .exposition import Exposition, Health, TenantExposition, assemble, empty_group_block
from .plan import ListenAddress

log = structlog.get_logger("exporter.server")


@dataclass(frozen=True)
class TenantSlot:
    """What the server holds for one tenant: its share of the exposition."""

    key: int
    """Which poller this is (a tenant whose settings change by a reload gets a new one):
    a late result of a poller that was replaced or removed is dropped."""
    exposition: TenantExposition
    ready: bool
    """Its first poll has completed, successfully or not."""

    @property
    def health(self) -> Health:
        return self.exposition.health

    @classmethod
    def pending(cls, key: int, tenant: str) -> TenantSlot:
        preset = dict.fromkeys(m.DOCUMENTED_FAILURES, 0)
        health = Health(tenant, False, None, None, 0, preset, 0)
        return cls(key, TenantExposition.of(empty_group_block(), health), ready=False)

    def down(self) -> TenantSlot:
        """The same values with `webex_campaign_up` 0 (the poller process died)."""
        if not self.ready or not self.health.up:
            return self
        health = replace(self.health, up=False)
        return replace(self, exposition=self.exposition.with_health(health))


@dataclass(frozen=True)
class Published:
    """What the HTTP server reads: swapped atomically after each poll attempt."""

    exposition: Exposition
    tenants: tuple[TenantSlot, ...]

    @classmethod
    def of_slots(cls, slots: Sequence[TenantSlot]) -> Published:
        return cls(assemble([slot.exposition for slot in slots]), tuple(slots))

    @classmethod
    def of(cls, tenant: TenantExposition) -> Published:
        """One tenant, polled."""
        return cls.of_slots([TenantSlot(0, tenant, ready=True)])

    @property
    def ready(self) -> bool:
        """Every tenant's first poll has completed."""
        return all(slot.ready for slot in self.tenants)

    # One tenant's figures (the first one's), for single-tenant callers.
    @property
    def health(self) -> Health:
        return self.tenants[0].health

    @property
    def up(self) -> bool:
        return self.health.up

    @property
    def last_success(self) -> float | None:
        return self.health.last_success

    @property
    def groups(self) -> int:
        return self.tenants[0].exposition.groups

    def down(self) -> Published:
        """The same values with `webex_campaign_up` 0 for every tenant."""
        return Published.of_slots([slot.down() for slot in self.tenants])


def initial_published(tenant: str, key: int = 0) -> Published:
    return Published.of_slots([TenantSlot.pending(key, tenant)])


class Latest:
    """Holds the last Published; a plain attribute swap is atomic under the GIL.

    Tenants are kept in the order they were configured; results update their
    tenant's slot and the exposition is stitched again (results and reloads come
    from different threads; scrapes take no lock). Stitching costs time in
    proportion to all tenants' text (the CRCs are combined over it), so with
    many large tenants results are batched: stitching takes at most a fifth of a
    core (a result waits at most four times the last stitch's duration). The
    stitching runs in a thread of its own, so the thread receiving results never
    stops reading them (a full pipe would hold up the pollers).

    It also tells whether polling still makes progress, for `/-/healthy`: every
    poll attempt publishes (success or failure), so a result older than
    `stall_after` seconds, or a dead thread that delivers results, means the
    poller is stuck and the process is worth restarting.
    """

    STITCH_SHARE = 0.2
    """At most this share of a core goes to stitching tenants together."""

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
        self._lock = threading.Lock()
        self._slots = list(initial.tenants)
        """The tenants as they are now; `value` has them as last stitched."""
        self._next_stitch = -math.inf
        self._dirty = threading.Event()
        self._changes = 0
        """Counts stitches made under the lock: a slower one begun before is dropped."""
        self._stitcher: threading.Thread | None = None

    def set(self, value: Published) -> None:
        with self._lock:
            self._changes += 1
            self._slots = list(value.tenants)
            self.value = value
        self._progress = self._clock()

    def configure(self, tenants: Sequence[tuple[int, str]], stall_after: float) -> None:
        """Serve these tenants (key, name), in this order: kept keys keep their values,
        new ones wait for their first poll, the others are gone from the next scrape."""
        with self._lock:
            slots = {slot.key: slot for slot in self._slots}
            self.stall_after = stall_after
            self._slots = [slots.get(key) or TenantSlot.pending(key, name) for key, name in tenants]
            self._stitch()  # at once: a removed tenant must not be served again
        self._progress = self._clock()

    def update(self, key: int, tenant: TenantExposition) -> bool:
        """A poll result of the tenant polled as `key`; False (dropped) if it is no longer
        served."""
        with self._lock:
            index = next((i for i, slot in enumerate(self._slots) if slot.key == key), None)
            if index is None:
                return False
            self._slots[index] = TenantSlot(key, tenant, ready=True)
            self._progress = self._clock()
            if self._stitcher is None:
                self._stitcher = threading.Thread(target=self._stitch_loop, daemon=True)
                self._stitcher.start()
        self._dirty.set()  # stitched by the stitcher thread: the receiver reads on
        return True

    def down(self) -> None:
        """The poller process died: every tenant's `webex_campaign_up` goes to 0."""
        with self._lock:
            self._slots = [slot.down() for slot in self._slots]
            self._stitch()

    def _stitch_loop(self) -> None:
        while True:
            self._dirty.wait()
            time.sleep(max(0.0, self._next_stitch - time.monotonic()))
            self._dirty.clear()  # results arriving while stitching set it again
            with self._lock:
                slots, changes = list(self._slots), self._changes
            value, spent = self._stitched(slots)  # without the lock: results go on arriving
            with self._lock:
                if self._changes == changes:  # else a reload or a death came in between
                    self.value = value
                self._next_stitch = time.monotonic() + spent * (1 / self.STITCH_SHARE - 1)

    def _stitch(self) -> None:
        """Stitch now, holding the lock (the set of tenants or their state changed)."""
        self._changes += 1
        self.value, spent = self._stitched(self._slots)
        self._next_stitch = time.monotonic() + spent * (1 / self.STITCH_SHARE - 1)

    @staticmethod
    def _stitched(slots: Sequence[TenantSlot]) -> tuple[Published, float]:
        started = time.monotonic()
        value = Published.of_slots(slots)
        return value, time.monotonic() - started

    def watch(self, worker: threading.Thread) -> None:
        """Count `worker` dying as polling stopped."""
        self._workers.append(worker)

    def stalled(self) -> str | None:
        """Why polling is not making progress, or None while it is."""
        if any(not worker.is_alive() for worker in self._workers):
            return "the thread receiving poll results has stopped"
        if not self.value.tenants:
            return None  # nothing to poll (a shard without tenants)
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
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:60em}}
td,th{{padding:.2em 1em .2em 0;text-align:left}}</style></head>
<body><h1>Webex Campaign exporter</h1>
<p>Prometheus exporter for Webex Campaign target groups. Version {version}.</p>
<table>
<tr><th>Tenant</th><th>API</th><th>Target groups</th><th>Snapshot age</th></tr>
{rows}
</table>
<p><a href="{metrics}">Metrics</a> &middot; <a href="/-/healthy">Health</a>
&middot; <a href="/-/ready">Readiness</a></p>
</body></html>
"""


def _row(slot: TenantSlot, now: float) -> str:
    health = slot.health
    if health.last_success is None:
        age = "no successful poll yet"
    else:
        age = f"{max(0.0, now - health.last_success):.0f} s"
    if not slot.ready:
        up = "first poll pending"
    else:
        up = "up" if health.up else "down (serving the last good values)"
    cells = (html.escape(health.tenant), up, str(slot.exposition.groups), age)
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def landing_page(published: Published, now: float, telemetry_path: str = "/metrics") -> bytes:
    rows = "\n".join(_row(slot, now) for slot in published.tenants)
    return _LANDING.format(
        version=html.escape(__version__),
        rows=rows or '<tr><td colspan="4">no tenant to poll</td></tr>',
        metrics=html.escape(telemetry_path, quote=True),
    ).encode()


_GATHER = 512  # buffers per sendmsg, below the system's IOV_MAX (1024 on Linux)


def _send_gathered(sock: socket.socket, pieces: Sequence[bytes | bytearray | memoryview]) -> None:
    """Send every piece, in order, with one sendmsg per _GATHER of them.

    Nothing is done per piece in Python: a body stitched from many tenants is thousands
    of pieces, and a loop over them would hold the GIL the other threads want. A socket
    with a timeout (ours) takes what its buffer holds at each call, so a batch is mostly
    sent in part: the rest starts where the bytes sent end (found by bisection), the
    piece cut there as a view.
    """
    for start in range(0, len(pieces), _GATHER):
        batch = pieces[start : start + _GATHER]
        ends = list(itertools.accumulate(map(len, batch)))
        done = sock.sendmsg(batch)
        while done < ends[-1]:
            cut = bisect.bisect_right(ends, done)  # the first piece not wholly sent
            head = memoryview(batch[cut]).cast("B")[done - (ends[cut - 1] if cut else 0) :]
            done += sock.sendmsg([head, *batch[cut + 1 :]])


class ScrapeSeries(Protocol):
    """Series read at scrape time, after the tenants' (process metrics, reload status)."""

    def render(self, openmetrics: bool) -> bytes: ...


RELOAD_PATH = "/-/reload"
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_READ_HEADER_TIMEOUT = 10.0
# What one plain-text scrape holds at a time, whatever the size of the exposition.
PLAIN_PIECE_BYTES = 64 * 1024
WRITE_BYTES = 64 * 1024


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
    scrape_series: ClassVar[tuple[ScrapeSeries, ...]] = ()
    reload: ClassVar[Callable[[], str | None] | None] = None
    """POST /-/reload (--web.enable-lifecycle): reloads and returns the error, if any."""
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

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != RELOAD_PATH:
            self._other()
            return
        if not type(self).authorize(self):
            return
        self._discard_body()
        reload = type(self).reload
        if reload is None:
            message = b"Lifecycle API is not enabled: start with --web.enable-lifecycle\n"
            self._send(HTTPStatus.FORBIDDEN, message, head=False)
            return
        error = reload()
        if error is None:
            self._send(HTTPStatus.OK, b"Reloaded\n", head=False)
        else:
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, f"{error}\n".encode(), head=False)

    def _discard_body(self) -> None:
        """Read what the client sent with the POST (nothing is expected), up to a bound."""
        try:
            length = min(int(self.headers.get("Content-Length") or 0), 65536)
        except ValueError:
            length = 0
        if length > 0:
            self.rfile.read(length)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _other

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
            pending = [slot.health.tenant for slot in published.tenants if not slot.ready]
            if not pending:
                self._send(HTTPStatus.OK, b"Ready\n", head)
            else:
                message = f"First poll pending: {', '.join(pending)}\n".encode()
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, message, head)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"Not found\n", head)

    def _metrics(self, published: Published, head: bool) -> None:
        openmetrics = wants_openmetrics(self.headers.get("Accept"))
        extra = b"".join(series.render(openmetrics) for series in self.scrape_series)
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
        if gzip:
            self._write_held(body.gzip_parts)
        else:
            self._write_all(body.plain_pieces(PLAIN_PIECE_BYTES))

    def _write_held(self, pieces: Sequence[bytes | bytearray | memoryview]) -> None:
        """Pieces held in memory anyway go out as they are on a plain socket, gathered
        (sendmsg, no copy); through TLS, as `_write_all` writes them."""
        if type(self.connection) is socket.socket:
            _send_gathered(self.connection, pieces)
        else:
            self._write_all(pieces)

    def _write_all(self, pieces: Iterable[bytes | bytearray | memoryview]) -> None:
        """Write `pieces` in few system calls: a body stitched from many tenants is
        thousands of small parts. They are copied into writes of at least WRITE_BYTES
        (pieces made as they are written are never gathered: a stalled client would hold
        them all)."""
        pending = bytearray()
        for piece in pieces:
            if not pending and len(piece) >= WRITE_BYTES:
                self.wfile.write(piece)
                continue
            pending += piece
            if len(pending) >= WRITE_BYTES:
                self.wfile.write(pending)
                pending = bytearray()
        if pending:
            self.wfile.write(pending)

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
    scrape_series: Sequence[ScrapeSeries] = (),
    reload: Callable[[], str | None] | None = None,
) -> MetricsServer:
    handler = type(
        "BoundHandler",
        (Handler,),
        {
            "latest": latest,
            "read_header_timeout": read_header_timeout,
            "telemetry_path": telemetry_path,
            "scrape_series": tuple(scrape_series),
            "reload": staticmethod(reload) if reload is not None else None,
        },
    )
    try:
        return MetricsServer(address, handler, max_connections)
    except OSError as exc:
        # All interfaces on a host (or container) without IPv6: IPv4 only.
        if address.host or exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
            raise
        return MetricsServer(ListenAddress("0.0.0.0", address.port), handler, max_connections)
