"""HTTP endpoints: /metrics negotiation and gzip, landing page, health, readiness, 404."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator

import httpx
import pytest
from helpers import FakeClock

from exporter import metrics as m
from exporter.exposition import Health, render_groups
from exporter.poller import Published, initial_published
from exporter.server import Latest, accepts_gzip, make_server, wants_openmetrics
from exporter.settings import ListenAddress

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@pytest.fixture
def latest() -> Latest:
    return Latest(initial_published("acme", dict.fromkeys(m.DOCUMENTED_FAILURES, 0)))


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
    latest.set(Published.of(render_groups("acme", ()), health))


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
        initial_published("acme", dict.fromkeys(m.DOCUMENTED_FAILURES, 0)),
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
