"""The API client: auth header, size cap, and failure classification into (status, code)."""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from exporter.api import (
    USER_AGENT,
    ApiClient,
    ApiError,
    ApiTimeout,
    KeyFile,
    RequestStats,
    classify_transport_error,
)
from exporter.simulator import Fault, Simulator, error_fault

MakeClient = Callable[..., ApiClient]


def failure_of(client: ApiClient) -> ApiError:
    with pytest.raises(ApiError) as caught:
        client.fetch()
    return caught.value


def test_success_sends_bearer_and_user_agent(make_client: MakeClient) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"[]")

    client = make_client(key="s3cret", transport=httpx.MockTransport(handler))
    fetched = client.fetch()
    assert fetched.payload.groups == []
    request = seen[0]
    assert request.headers["Authorization"] == "Bearer s3cret"
    assert request.headers["User-Agent"] == USER_AGENT
    assert request.url.path.endswith("/target-groups")
    assert client.stats.read()[0] == 1


@pytest.mark.parametrize(
    ("fault", "labels"),
    [
        (error_fault(400, 400), ("400", "400")),
        (error_fault(401, 430), ("401", "430")),
        (error_fault(401, 498), ("401", "498")),
        (error_fault(404, 404), ("404", "404")),
        (error_fault(405, 405), ("405", "405")),
        (error_fault(500, 500), ("500", "500")),
        (error_fault(429, 429), ("429", "429")),
        (error_fault(499, 499), ("499", "499")),
        (error_fault(500, 1001), ("500", "1001")),
        (error_fault(200, 1001), ("200", "1001")),
        (Fault(502, b"<html>Bad Gateway</html>", {"Content-Type": "text/html"}), ("502", "502")),
        (Fault(200, b'[{"id": "1", "na'), ("200", "invalid_response")),
        (Fault(200, b'{"items": []}'), ("200", "invalid_response")),
        (Fault(close=True), ("none", "connection")),
    ],
)
def test_failures_are_classified_and_counted_once(
    simulator: Simulator, make_client: MakeClient, fault: Fault, labels: tuple[str, str]
) -> None:
    client = make_client()
    simulator.tenant.inject(fault)
    assert failure_of(client).labels == labels
    requests, failures = client.stats.read()
    assert requests == 1
    assert failures[labels] == 1
    assert sum(failures.values()) == 1


def test_timeout(simulator: Simulator, make_client: MakeClient) -> None:
    simulator.tenant.inject(Fault(200, b"[]", delay=1.0))
    failure = failure_of(make_client(timeout=0.2))
    assert isinstance(failure, ApiTimeout)
    assert failure.labels == ("none", "timeout")


def test_body_over_the_cap(simulator: Simulator, make_client: MakeClient) -> None:
    assert failure_of(make_client(max_response_bytes=100)).labels == ("200", "too_large")


def test_body_over_the_cap_without_content_length(make_client: MakeClient) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=iter([b"[" + b" " * 60, b" " * 60 + b"]"]))

    client = make_client(max_response_bytes=100, transport=httpx.MockTransport(handler))
    assert failure_of(client).labels == ("200", "too_large")


def test_retry_after_is_read(simulator: Simulator, make_client: MakeClient) -> None:
    fault = error_fault(429, 429)
    fault.headers["Retry-After"] = "42"
    simulator.tenant.inject(fault)
    assert failure_of(make_client()).retry_after == 42


def test_connection_refused(make_client: MakeClient) -> None:
    client = make_client(base_url="http://127.0.0.1:1")
    assert failure_of(client).labels == ("none", "connection")


def test_tls_failure_is_classified() -> None:
    error = httpx.ConnectError("handshake")
    error.__context__ = ssl.SSLCertVerificationError("certificate verify failed")
    assert classify_transport_error(error).labels == ("none", "tls")


def test_remote_protocol_error_is_invalid_response() -> None:
    error = httpx.RemoteProtocolError("garbage")
    assert classify_transport_error(error, "200").labels == ("200", "invalid_response")


def test_key_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("key-one\n")
    key_file = KeyFile(path)
    assert key_file.authorization() == "Bearer key-one"
    replacement = tmp_path / "key.new"
    replacement.write_text("key-two")
    replacement.replace(path)  # how a Secret volume swaps its content
    assert key_file.authorization() == "Bearer key-two"
    path.write_text("")  # a rotation half done keeps the last good key
    assert key_file.authorization() == "Bearer key-two"
    assert key_file.secrets() == ["key-one", "key-two"]


def test_rotated_key_file_retries_once_after_401(simulator: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("old-secret-key!")
    key_file = KeyFile(path)
    client = ApiClient(simulator.base_url, key_file, 5.0, 10_000_000, RequestStats())
    # Rotated in place with the same size and mtime, so only the 401 reveals it.
    before = os.stat(path)
    path.write_text("demo-secret-key")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    fetched = client.fetch()
    assert len(fetched.payload.groups) > 0
    requests, failures = client.stats.read()
    assert requests == 2
    assert failures == {("401", "498"): 1}
    client.close()
