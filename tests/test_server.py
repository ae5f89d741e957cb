"""HTTP endpoints: /metrics negotiation and gzip, landing page, health, readiness, 404."""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from helpers import FakeClock

from exporter import server as server_module
from exporter.exposition import Health, TenantExposition, render_groups
from exporter.server import (
    Latest,
    Published,
    accepts_gzip,
    initial_published,
    make_server,
    wants_openmetrics,
)
from exporter.settings import ListenAddress

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@pytest.fixture
def latest() -> Latest:
    return Latest(initial_published("acme"))


@pytest.fixture
def base(latest: Latest) -> Iterator[str]:
    server = make_server(ListenAddress("127.0.0.1", 0), latest)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def ready(latest: Latest, last_success: float | None = 1.0) -> None:
    health = Health("acme", True, last_success, 0.1, 1, {}, 0)
    latest.set(Published.of(TenantExposition.of(render_groups("acme", ()), health)))


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (PROMETHEUS_ACCEPT, True),
        ("application/openmetrics-text; version=1.0.0", True),
        ("text/plain;version=0.0.4", False),
        ("*/*", False),
        ("", False),
        (None, False),
        ("application/openmetrics-text;q=0,text/plain", False),
        ("text/plain;q=0.9,application/openmetrics-text;q=0.5", False),
    ],
)
def test_wants_openmetrics(accept: str | None, expected: bool) -> None:
    assert wants_openmetrics(accept) is expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("gzip;q=0", False),
        ("identity", False),
        ("*", True),
        (None, False),
    ],
)
def test_accepts_gzip(header: str | None, expected: bool) -> None:
    assert accepts_gzip(header) is expected


def test_ready_is_503_until_the_first_poll(base: str, latest: Latest) -> None:
    assert httpx.get(f"{base}/-/ready").status_code == 503
    assert httpx.get(f"{base}/-/healthy").status_code == 200
    ready(latest)
    assert httpx.get(f"{base}/-/ready").status_code == 200


def test_metrics_text_by_default_uncompressed(base: str, latest: Latest) -> None:
    ready(latest)
    response = httpx.get(f"{base}/metrics", headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "Content-Encoding" not in response.headers
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert b'webex_campaign_up{tenant="acme"} 1\n' in response.content


def test_metrics_openmetrics_gzip_for_prometheus(base: str, latest: Latest) -> None:
    ready(latest)
    with httpx.Client() as client:
        request = client.build_request(
            "GET",
            f"{base}/metrics",
            headers={"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"},
        )
        response = client.send(request, stream=True)
        raw = b"".join(response.iter_raw())
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Content-Type"].startswith(
        "application/openmetrics-text; version=1.0.0"
    )
    assert int(response.headers["Content-Length"]) == len(raw)
    assert gzip.decompress(raw).endswith(b"# EOF\n")


def test_head_sends_headers_only(base: str, latest: Latest) -> None:
    ready(latest)
    response = httpx.head(f"{base}/metrics")
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) > 0
    assert response.content == b""


def test_landing_page_shows_version_and_age(base: str, latest: Latest) -> None:
    page = httpx.get(f"{base}/").text
    assert 'href="/metrics"' in page
    assert "no successful poll yet" in page
    ready(latest, last_success=0.0)
    page = httpx.get(f"{base}/").text
    assert "0.1.0" in page
    assert "Snapshot age" in page and " s</td>" in page


@pytest.mark.parametrize("path", ["/metricsx", "/favicon.ico", "/-/reload", "/metrics/"])
def test_unknown_paths_are_404(base: str, path: str) -> None:
    assert httpx.get(f"{base}{path}").status_code == 404


def test_other_methods_are_405(base: str) -> None:
    assert httpx.post(f"{base}/metrics").status_code == 405


def test_healthy_fails_when_polling_stops_making_progress(clock: FakeClock) -> None:
    latest = Latest(
        initial_published("acme"),
        stall_after=300.0,
        clock=clock,
    )
    server = make_server(ListenAddress("127.0.0.1", 0), latest)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/-/healthy"
    try:
        clock.advance(299)
        assert httpx.get(url).status_code == 200
        ready(latest)  # a poll result: progress
        clock.advance(299)
        assert httpx.get(url).status_code == 200
        clock.advance(2)
        response = httpx.get(url)
        assert response.status_code == 503
        assert "no poll result for 301 s" in response.text
        ready(latest)
        assert httpx.get(url).status_code == 200
    finally:
        server.shutdown()
        server.server_close()


def test_healthy_fails_when_the_thread_receiving_results_dies(base: str, latest: Latest) -> None:
    worker = threading.Thread(target=lambda: None)
    worker.start()
    latest.watch(worker)
    worker.join()
    response = httpx.get(f"{base}/-/healthy")
    assert response.status_code == 503
    assert "stopped" in response.text


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_other_methods_are_405_with_allow(base: str, method: str) -> None:
    response = httpx.request(method, f"{base}/metrics")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"


@pytest.fixture
def small_server(latest: Latest) -> Iterator[tuple[str, int]]:
    """A server that takes 2 connections at once and 1 s to read request headers."""
    server = make_server(
        ListenAddress("127.0.0.1", 0), latest, max_connections=2, read_header_timeout=1.0
    )
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield "127.0.0.1", server.server_address[1]
    server.shutdown()
    server.server_close()


def read_answer(sock: socket.socket) -> bytes:
    sock.settimeout(30)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        if b"\r\n\r\n" in data:
            break
    return data


def test_connections_beyond_the_cap_get_503(small_server: tuple[str, int]) -> None:
    held = [socket.create_connection(small_server) for _ in range(2)]
    try:
        for sock in held:  # each has its thread: a request that never ends
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        with socket.create_connection(small_server) as extra:
            extra.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_answer(extra).startswith(b"HTTP/1.1 503 ")
    finally:
        for sock in held:
            sock.close()


def test_request_headers_sent_slowly_hit_the_header_deadline(
    small_server: tuple[str, int],
) -> None:
    with socket.create_connection(small_server) as sock:
        started = time.monotonic()
        try:
            for byte in b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 600:
                sock.sendall(bytes([byte]))
                time.sleep(0.05)  # each byte well within any per-read timeout
        except OSError:
            pass  # disconnected mid-drip: what the deadline is for
        sock.settimeout(30)
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(65536) == b""  # closed without an answer
        elapsed = time.monotonic() - started
    assert elapsed < 25, f"a 1 s header deadline held the connection {elapsed:.1f} s"


def test_telemetry_path_and_several_listen_addresses(latest: Latest) -> None:
    servers = [
        make_server(ListenAddress("127.0.0.1", 0), latest, telemetry_path="/probe/metrics")
        for _ in range(2)
    ]
    for server in servers:
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        ready(latest)
        for server in servers:
            base = f"http://127.0.0.1:{server.server_address[1]}"
            assert "webex_campaign_up" in httpx.get(f"{base}/probe/metrics").text
            assert httpx.get(f"{base}/metrics").status_code == 404
            assert 'href="/probe/metrics"' in httpx.get(f"{base}/").text
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_results_are_batched_when_stitching_is_slow_and_none_is_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stitching many large tenants takes time: results arriving faster than a fifth of a
    core allows are stitched together, and the last one is always served."""
    stitches = 0
    real = Published.of_slots.__func__  # type: ignore[attr-defined]

    def slow(cls: type[Published], slots: object) -> Published:
        nonlocal stitches
        stitches += 1
        time.sleep(0.01)
        return real(cls, slots)  # type: ignore[no-any-return]

    monkeypatch.setattr(Published, "of_slots", classmethod(slow))
    latest = Latest(initial_published("acme", key=1))
    for requests in range(1, 31):
        health = Health("acme", True, 1.0, 0.1, requests, {}, 0)
        assert latest.update(1, TenantExposition.of(render_groups("acme", ()), health))
    assert not latest.update(2, TenantExposition.of(render_groups("x", ()), health))
    deadline = time.monotonic() + 10
    while latest.value.health.requests != 30:
        assert time.monotonic() < deadline, "the last result was never served"
        time.sleep(0.01)
    assert stitches < 15  # 30 results, each stitch 10 ms: at most one per 50 ms


@pytest.mark.parametrize("take", [1, 3, 7, 1000])
def test_gathered_sends_survive_partial_writes(take: int) -> None:
    """sendmsg may take part of what it is given: the rest goes next, in order, whether
    the cut falls inside a piece or on its end (3: the pieces of 3 bytes)."""
    sent = bytearray()

    class Trickle:
        def sendmsg(self, buffers: list[memoryview]) -> int:
            assert len(buffers) <= server_module._GATHER
            taken = b"".join(bytes(buffer) for buffer in buffers)[:take]
            sent.extend(taken)
            return len(taken)

    pieces = [b"", b"abc", memoryview(b"defghijkl"), bytearray(b"m"), *[b"xyz"] * 600]
    server_module._send_gathered(Trickle(), pieces)  # type: ignore[arg-type]
    assert bytes(sent) == b"abcdefghijklm" + b"xyz" * 600


def test_gathered_sends_take_whole_batches_in_one_call_each() -> None:
    """A socket that takes all it is given gets one sendmsg per _GATHER pieces."""
    calls: list[int] = []
    sent = bytearray()

    class Whole:
        def sendmsg(self, buffers: list[memoryview]) -> int:
            calls.append(len(buffers))
            taken = b"".join(bytes(buffer) for buffer in buffers)
            sent.extend(taken)
            return len(taken)

    pieces = [str(i).encode() for i in range(2 * server_module._GATHER + 3)]
    server_module._send_gathered(Whole(), pieces)  # type: ignore[arg-type]
    assert calls == [server_module._GATHER, server_module._GATHER, 3]
    assert bytes(sent) == b"".join(pieces)
