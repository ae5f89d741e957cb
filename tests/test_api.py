"""The API client: auth header, size cap, and failure classification into (status, code)."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import socket
import ssl
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import structlog.testing
import time_machine
import trustme
from helpers import FakeClock

from exporter import api as api_module
from exporter.api import (
    USER_AGENT,
    Access,
    ApiClient,
    ApiConnectionError,
    ApiError,
    ApiTimeout,
    ApiTlsError,
    ClientCredentials,
    HttpStatusError,
    InvalidResponse,
    KeyFile,
    RequestStats,
    SecretFile,
    StaticKey,
    _Deadline,
    _Decoder,
    check_tls,
    classify,
    credentials_from,
    tls_verify,
)
from exporter.pipeline import GroupPipeline
from exporter.poller import fetch_groups
from exporter.records import PayloadError, TargetGroup, parse_payload
from exporter.settings import ConfigError, load_settings
from exporter.simulator import DEMO_KEY, Fault, Simulator, error_fault

MakeClient = Callable[..., ApiClient]

# Generous: waits that end at once unless the code under test is broken.
PATIENCE = 60.0


def failure_of(client: ApiClient) -> ApiError:
    """The failure of one poll's request and parse, as the poller sees it."""
    with pytest.raises(ApiError) as caught:
        fetch_groups(client, GroupPipeline("acme"))
    return caught.value


def groups_of(client: ApiClient) -> list[TargetGroup]:
    return parse_payload(client.fetch().body).groups


def test_success_sends_bearer_and_user_agent(make_client: MakeClient) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"[]")

    client = make_client(key="s3cret", transport=httpx.MockTransport(handler))
    assert groups_of(client) == []
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
        (Fault(500, b' \n {"code": 1001}'), ("500", "1001")),  # leading blanks
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
    assert classify(error).labels == ("none", "tls")


def test_remote_protocol_error_is_invalid_response() -> None:
    error = httpx.RemoteProtocolError("garbage")
    assert classify(error, "200").labels == ("200", "invalid_response")


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
    assert len(groups_of(client)) > 0
    requests, failures = client.stats.read()
    assert requests == 2
    assert failures == {("401", "498"): 1}
    client.close()


def gzipped(data: bytes, layers: int = 1) -> bytes:
    for _ in range(layers):
        data = gzip.compress(data, compresslevel=1)
    return data


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "gzip, gzip", "gzip,identity, gzip"])
def test_compressed_bodies_are_decoded(make_client: MakeClient, encoding: str) -> None:
    layers = encoding.count("gzip")
    body = gzipped(b'[{"id": "1", "totalCount": 2, "validcount": 1, "errorcount": 1}]', layers)

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Accept-Encoding"] == "gzip, deflate"
        return httpx.Response(200, content=body, headers={"Content-Encoding": encoding})

    groups = groups_of(make_client(transport=httpx.MockTransport(handler)))
    assert [group.id for group in groups] == ["1"]


def test_deflate_and_several_gzip_members_are_decoded(make_client: MakeClient) -> None:
    bodies = {
        "deflate": zlib.compress(b"[]"),
        "gzip": gzip.compress(b"[ ") + gzip.compress(b" ]"),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        encoding = request.headers["X-Encoding"]
        return httpx.Response(200, content=bodies[encoding], headers={"Content-Encoding": encoding})

    client = make_client(transport=httpx.MockTransport(handler))
    for encoding in bodies:
        client._client.headers["X-Encoding"] = encoding
        assert groups_of(client) == []


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_gzip_bomb_is_refused_by_its_decoded_size(make_client: MakeClient, layers: int) -> None:
    bomb = gzipped(bytes(64 << 20), layers)
    headers = {"Content-Encoding": ", ".join(["gzip"] * layers)}
    chunks = [bomb[i : i + 65536] for i in range(0, len(bomb), 65536)]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=iter(chunks), headers=headers)

    tracemalloc.start()
    try:
        failure = failure_of(
            make_client(max_response_bytes=1 << 20, transport=httpx.MockTransport(handler))
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert failure.labels == ("200", "too_large")
    assert peak < (1 << 20) + (4 << 20), f"decoding peaked at {peak} bytes"


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("br", b"\x0b\x01\x80[]\x03"),
        ("zstd", b"whatever"),
        ("compress", b"whatever"),
        ("gzip", b"not gzip at all"),
        ("gzip", gzip.compress(b"[]")[:-12]),
    ],
)
def test_unbounded_or_broken_encodings_are_refused(
    make_client: MakeClient, encoding: str, body: bytes
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        # A streamed body: httpx would decode one given as bytes at once.
        return httpx.Response(200, content=iter([body]), headers={"Content-Encoding": encoding})

    client = make_client(transport=httpx.MockTransport(handler))
    assert failure_of(client).labels == ("200", "invalid_response")


KEY = "sk-live-0123456789abcdefABCDEF"


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (401, KEY, "other"),
        (401, "498", "498"),
        (500, 1001.0, "1001"),
        (500, "<html>" * 1000, "other"),
        (500, "1234567", "other"),
        (500, True, "other"),
        (500, "١٢٣", "other"),  # digits, but not ASCII ones
        (200, KEY, "other"),
    ],
)
def test_failure_code_label_comes_from_a_bounded_vocabulary(
    make_client: MakeClient, status: int, code: object, expected: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"code": code, "description": KEY})

    client = make_client(key=KEY, transport=httpx.MockTransport(handler))
    failure = failure_of(client)
    assert failure.labels == (str(status), expected)
    assert KEY not in str(failure)


def test_newline_inside_a_key_file_is_a_bad_key_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("key-one\nkey-two\n")
    settings = load_settings(base_url="https://acme.example/v3", api_key_file=str(path))
    with pytest.raises(ConfigError, match=r"WEBEX_CAMPAIGN_API_KEY_FILE \(--api-key-file\).*line"):
        credentials_from(settings)


def test_rotation_to_a_key_file_with_a_newline_keeps_the_last_good_key(
    simulator: Simulator, tmp_path: Path
) -> None:
    path = tmp_path / "key"
    path.write_text(DEMO_KEY)
    key_file = KeyFile(path)
    client = ApiClient(simulator.base_url, key_file, 5.0, 10_000_000, RequestStats())
    replacement = tmp_path / "key.new"
    replacement.write_text("new key\nwith a line break")
    replacement.replace(path)
    with structlog.testing.capture_logs() as logs:
        assert groups_of(client)  # still authorised with the last good key
    assert key_file.problem is not None and "line break" in key_file.problem
    assert logs == [  # once, as a bad key file rather than a failing API
        {
            "event": "secret_file_invalid",
            "path": str(path),
            "problem": key_file.problem,
            "log_level": "error",
        }
    ]
    assert client.stats.read() == (1, {})
    client.close()


class DripServer:
    """A loopback server that sends its status line, then headers a byte at a time."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.gone = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self._listener.accept()
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                for _ in range(600):  # a minute at 0.1 s a byte
                    conn.sendall(b"X")
                    time.sleep(self._interval)
            except OSError:
                pass  # the client gave up: the point of the test
            self.gone.set()

    def close(self) -> None:
        self._listener.close()


def test_headers_dripped_slowly_hit_the_total_deadline(make_client: MakeClient) -> None:
    server = DripServer(interval=0.1)  # every read succeeds well within the timeout
    try:
        client = make_client(base_url=f"http://127.0.0.1:{server.port}", timeout=1.0)
        started = time.monotonic()
        failure = failure_of(client)
        elapsed = time.monotonic() - started
        assert failure.labels == ("none", "timeout")
        assert elapsed < 30, f"the request ran {elapsed:.1f} s against a 1 s timeout"
        assert server.gone.wait(30)
    finally:
        server.close()


def test_key_file_replaced_with_the_same_size_and_mtime_is_reread(tmp_path: Path) -> None:
    """A rename over the file (a Secret volume's symlink swap) changes only the inode."""
    path = tmp_path / "key"
    path.write_text("key-aaaa")
    key_file = KeyFile(path)
    assert key_file.authorization() == "Bearer key-aaaa"
    before = os.stat(path)
    replacement = tmp_path / "key.new"
    replacement.write_text("key-bbbb")
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    replacement.replace(path)
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert after.st_ino != before.st_ino
    assert key_file.authorization() == "Bearer key-bbbb"


def test_key_file_unchanged_is_not_reread(tmp_path: Path) -> None:
    """Same inode, size and mtime: the file is taken as unchanged (no read per request)."""
    path = tmp_path / "key"
    path.write_text("key-aaaa")
    key_file = KeyFile(path)
    before = os.stat(path)
    with path.open("r+") as handle:  # rewritten in place: same inode
        handle.write("key-bbbb")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert key_file.authorization() == "Bearer key-aaaa"


def throttled_with(retry_after: str) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429,
            json={"code": 429, "description": "slow down"},
            headers={"Retry-After": retry_after},
        )

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("42", 42.0),
        (" 7 ", 7.0),
        ("Wed, 02 Dec 2026 12:02:00 GMT", 120.0),  # an HTTP date, two minutes ahead
        ("Wed, 02 Dec 2026 11:00:00 GMT", 0.0),  # a date already past: retry now
        ("soon", None),
        ("", None),
    ],
)
def test_retry_after_seconds_or_http_date(
    make_client: MakeClient, header: str, expected: float | None
) -> None:
    client = make_client(transport=throttled_with(header))
    with time_machine.travel(datetime(2026, 12, 2, 12, 0, tzinfo=UTC), tick=False):
        failure = failure_of(client)
    assert failure.labels == ("429", "429")
    assert failure.retry_after == expected


@pytest.fixture
def untrusted_https_url() -> Iterator[tuple[str, trustme.CA]]:
    """A real HTTPS server on loopback whose certificate comes from a CA nobody trusts."""
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"[]")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", ca
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_untrusted_certificate_on_loopback_is_a_tls_failure(
    untrusted_https_url: tuple[str, trustme.CA],
) -> None:
    url, ca = untrusted_https_url
    stats = RequestStats()
    client = ApiClient(url, StaticKey("k"), 30.0, 10_000_000, stats)
    try:
        failure = failure_of(client)
    finally:
        client.close()
    assert isinstance(failure, ApiTlsError)
    assert failure.labels == ("none", "tls")
    assert stats.read() == (1, {("none", "tls"): 1})
    # The same server with its CA trusted answers: the failure was the certificate.
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    client = ApiClient(url, StaticKey("k"), 30.0, 10_000_000, RequestStats(), verify=trusted)
    try:
        assert groups_of(client) == []
    finally:
        client.close()


# --- credentials and CA trust from the settings ------------------------------------------


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("WEBEX_CAMPAIGN_"):
            monkeypatch.delenv(name)


BASE = "https://acme.webexcampaign.io/campaignapi/resources/v3"


def test_demo_uses_the_demo_key(no_env: None) -> None:
    credentials = credentials_from(load_settings(demo=True), DEMO_KEY)
    assert isinstance(credentials, StaticKey)
    assert credentials.authorization() == f"Bearer {DEMO_KEY}"


def test_static_key_is_stripped(no_env: None) -> None:
    credentials = credentials_from(load_settings(base_url=BASE, api_key=" k-1 \n"))
    assert isinstance(credentials, StaticKey)
    assert credentials.authorization() == "Bearer k-1"
    assert credentials.secrets() == ["k-1"]
    assert not credentials.rejected(HttpStatusError("HTTP 401", "401", "498"))


def test_key_file_mode(no_env: None, tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("from-file\n")
    credentials = credentials_from(load_settings(base_url=BASE, api_key_file=path))
    assert isinstance(credentials, KeyFile)
    assert credentials.authorization() == "Bearer from-file"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (" \n", "is empty or unreadable: it must hold the API secret key"),
        *(
            (
                bad,
                "holds a line break, blank or control character inside the secret:"
                " it must hold exactly one API secret key",
            )
            for bad in ("two\nkeys", "two keys", "key\x07")
        ),
    ],
)
def test_empty_or_bad_key_file_is_a_config_error(
    no_env: None, tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "key"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        credentials_from(load_settings(base_url=BASE, api_key_file=path))
    assert str(caught.value) == f"WEBEX_CAMPAIGN_API_KEY_FILE (--api-key-file): {path} {problem}"


def test_demo_mode_needs_the_demo_key(no_env: None) -> None:
    with pytest.raises(ConfigError, match=r"^demo mode needs the demo tenant's key$"):
        credentials_from(load_settings(demo=True))


def test_token_flow_mode_reads_secrets_from_files_and_values(no_env: None, tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("secret-from-file\n")
    credentials = credentials_from(
        load_settings(
            base_url=BASE, client_id="cid", client_secret_file=secret_file, auth_key=" ak \n"
        )
    )
    assert isinstance(credentials, ClientCredentials)
    assert credentials.token_url == f"{BASE}/oauth/token"
    assert credentials.secrets() == ["secret-from-file", "ak"]
    secret_file.write_text("rotated")
    assert credentials.secrets()[0] == "rotated"  # files are re-read when they change


@pytest.mark.parametrize(
    ("field", "setting"),
    [
        ("client_secret_file", "WEBEX_CAMPAIGN_CLIENT_SECRET_FILE (--client-secret-file)"),
        ("auth_key_file", "WEBEX_CAMPAIGN_AUTH_KEY_FILE (--auth-key-file)"),
    ],
)
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "is empty or unreadable"),
        ("two\nsecrets", "holds a line break, blank or control character inside the secret"),
    ],
)
def test_token_flow_empty_or_bad_secret_file_is_a_config_error(
    no_env: None, tmp_path: Path, field: str, setting: str, content: str, problem: str
) -> None:
    path = tmp_path / "secret"
    path.write_text(content)
    values: dict[str, object] = {"client_secret": "s", "auth_key": "a", field: path}
    values.pop(field.removesuffix("_file"))
    with pytest.raises(ConfigError) as caught:
        credentials_from(load_settings(base_url=BASE, client_id="cid", **values))
    assert str(caught.value) == f"{setting}: {path} {problem}"


def test_tls_verify_uses_the_system_cas_or_the_ca_file(no_env: None, tmp_path: Path) -> None:
    system = tls_verify(load_settings(demo=True))
    assert system.verify_mode == ssl.CERT_REQUIRED and system.check_hostname
    assert len(system.get_ca_certs()) > 10  # certifi's bundle (or SSL_CERT_FILE's)
    assert tls_verify(load_settings(demo=True, tenant="other")) is system  # one, shared
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = tls_verify(load_settings(demo=True, ca_file=ca_file))
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert len(context.get_ca_certs()) == 1
    assert tls_verify(load_settings(demo=True, ca_file=ca_file)) is context
    ca_file.write_text(ca_file.read_text() + trustme.CA().cert_pem.bytes().decode())
    renewed = tls_verify(load_settings(demo=True, ca_file=ca_file))
    assert len(renewed.get_ca_certs()) == 2  # a changed bundle is read again


def test_a_ca_bundle_replaced_by_one_of_the_same_size_or_time_is_read_again(
    no_env: None, tmp_path: Path
) -> None:
    """The shared context is keyed by the file's modification time and size: a renewed
    bundle is read again even when one of the two happens to be unchanged."""
    ca_file = tmp_path / "ca.pem"
    first, second = trustme.CA(), trustme.CA()
    size = 2 * len(first.cert_pem.bytes())

    def padded(pem: bytes) -> bytes:  # text outside the PEM block is ignored
        return pem + b"#" * (size - len(pem)) + b"\n"

    ca_file.write_bytes(padded(first.cert_pem.bytes()))
    settings = load_settings(demo=True, ca_file=ca_file)
    before = tls_verify(settings)
    stamp = ca_file.stat()
    ca_file.write_bytes(padded(second.cert_pem.bytes()))  # the same size, another time
    os.utime(ca_file, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000_000))
    same_size = tls_verify(settings)
    assert same_size is not before
    assert same_size.get_ca_certs() != before.get_ca_certs()
    # Two bundles at the same time: another size.
    ca_file.write_bytes(first.cert_pem.bytes() + second.cert_pem.bytes())
    os.utime(ca_file, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    same_time = tls_verify(settings)
    assert len(same_time.get_ca_certs()) == 2


def test_tls_verify_refuses_a_file_that_is_no_ca_bundle(no_env: None, tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(
        ConfigError, match=r"^WEBEX_CAMPAIGN_CA_FILE \(--ca-file\): .* is not a PEM"
    ):
        tls_verify(load_settings(demo=True, ca_file=bad))


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "SSL_CERT_DIR", None])
def test_check_tls_loads_the_default_bundle_as_httpx_does_without_keeping_it(
    no_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str | None
) -> None:
    """The serving process checks what the poller will trust, without httpx's context."""
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    loaded: list[dict[str, object]] = []
    monkeypatch.setattr(
        api_module.ssl, "create_default_context", lambda **kwargs: loaded.append(kwargs)
    )
    if variable is not None:
        monkeypatch.setenv(variable, str(tmp_path))
    api_module._check_default_bundle.cache_clear()
    for tenant in ("one", "two"):
        assert check_tls(load_settings(demo=True, tenant=tenant)) is None
    api_module._check_default_bundle.cache_clear()
    expected = {
        "SSL_CERT_FILE": [{"cafile": str(tmp_path)}],
        "SSL_CERT_DIR": [{"capath": str(tmp_path)}],
    }
    assert loaded == expected.get(variable or "", [])  # once; certifi's is part of the install


def test_check_tls_refuses_what_tls_verify_refuses(
    no_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(
        ConfigError, match=r"^WEBEX_CAMPAIGN_CA_FILE \(--ca-file\): .* is not a PEM"
    ):
        check_tls(load_settings(demo=True, ca_file=bad))
    monkeypatch.setenv("SSL_CERT_FILE", str(bad))
    api_module._check_default_bundle.cache_clear()
    try:
        with pytest.raises(ssl.SSLError):
            check_tls(load_settings(demo=True))
        with pytest.raises(ssl.SSLError):  # as the poller's context would have
            httpx.create_ssl_context(trust_env=True)
    finally:
        api_module._check_default_bundle.cache_clear()


def with_cause(error: httpx.TransportError, cause: BaseException, explicit: bool) -> Exception:
    if explicit:
        error.__cause__ = cause
    else:
        error.__context__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "status", "kind", "labels", "detail"),
    [
        (
            httpx.ReadTimeout("slow"),
            "200",
            ApiTimeout,
            ("200", "timeout"),
            "request timed out (ReadTimeout)",
        ),
        (
            httpx.ConnectTimeout("slow"),
            "none",
            ApiTimeout,
            ("none", "timeout"),
            "request timed out (ConnectTimeout)",
        ),
        (
            with_cause(httpx.ConnectError("x"), ssl.SSLError(1, "bad record mac"), True),
            "none",
            ApiTlsError,
            ("none", "tls"),
            "TLS handshake or certificate verification failed",
        ),
        (
            with_cause(httpx.ReadError("x"), ssl.SSLError(1, "bad record mac"), True),
            "200",
            ApiTlsError,
            ("200", "tls"),
            "TLS handshake or certificate verification failed",
        ),
        (
            with_cause(httpx.ConnectError("x"), OSError("wrapped"), False),
            "none",
            ApiConnectionError,
            ("none", "connection"),
            "could not connect or connection lost (ConnectError)",
        ),
        (
            httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number"),
            "none",
            ApiTlsError,
            ("none", "tls"),
            "TLS handshake or certificate verification failed",
        ),
        (
            httpx.ConnectError("Hostname mismatch, Certificate is not valid"),
            "none",
            ApiTlsError,
            ("none", "tls"),
            "TLS handshake or certificate verification failed",
        ),
        (
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            "none",
            ApiConnectionError,
            ("none", "connection"),
            "connection closed without an answer",
        ),
        (
            httpx.RemoteProtocolError("peer closed connection; disconnected"),
            "200",
            InvalidResponse,
            ("200", "invalid_response"),
            "malformed HTTP response (RemoteProtocolError)",
        ),
        (
            httpx.DecodingError("bad gzip"),
            "200",
            InvalidResponse,
            ("200", "invalid_response"),
            "malformed HTTP response (DecodingError)",
        ),
        (
            httpx.ReadError("reset"),
            "200",
            ApiConnectionError,
            ("200", "connection"),
            "could not connect or connection lost (ReadError)",
        ),
    ],
)
def test_transport_errors_are_classified_exactly(
    error: httpx.TransportError,
    status: str,
    kind: type[ApiError],
    labels: tuple[str, str],
    detail: str,
) -> None:
    failure = classify(error, status)
    assert type(failure) is kind
    assert failure.labels == labels
    assert failure.detail == detail
    assert str(failure) == detail
    assert failure.retry_after is None


class _Stream:
    """What httpcore's trace hands over for a new connection: a stream with its socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def get_extra_info(self, name: str) -> socket.socket | None:
        return self._sock if name == "socket" else None


def test_a_connection_opened_after_the_deadline_is_shut_and_a_closed_one_ignored() -> None:
    """A socket httpcore reports once the deadline has passed is shut at once (its peer
    reads the end); one already closed by then is no error."""
    deadline = _Deadline(PATIENCE)
    deadline.expired = True  # as the timer leaves it
    ours, peer = socket.socketpair()
    closed = socket.socket()
    closed.close()
    with ours, peer:
        deadline.trace("connection.connect_tcp.complete", {"return_value": _Stream(closed)})
        deadline.trace("connection.connect_tcp.complete", {"return_value": _Stream(ours)})
        peer.settimeout(PATIENCE)
        assert peer.recv(1) == b""


def test_classification_defaults_to_no_status() -> None:
    assert classify(httpx.ConnectError("refused")).labels == ("none", "connection")


def test_a_401_with_an_unchanged_key_file_is_not_retried(
    simulator: Simulator, tmp_path: Path
) -> None:
    path = tmp_path / "key"
    path.write_text("not-the-key")
    client = ApiClient(simulator.base_url, KeyFile(path), 30.0, 10_000_000, RequestStats())
    try:
        assert failure_of(client).labels == ("401", "498")
    finally:
        client.close()
    assert client.stats.read() == (1, {("401", "498"): 1})


def test_a_secret_file_missing_at_start_reads_as_empty_until_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "later"
    secret = SecretFile(path)
    assert secret.value() == ""
    path.write_text("arrived\n")
    assert secret.value() == "arrived"


# --- the body's deadline and size cap, on a clock the test moves --------------------------


def trickle(clock: FakeClock, pause: float) -> httpx.MockTransport:
    """Answers `[]` in two chunks, `pause` seconds apart on the client's clock."""

    def chunks() -> Iterator[bytes]:
        yield b"["
        clock.advance(pause)
        yield b"]"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks())

    return httpx.MockTransport(handler)


def clocked_client(transport: httpx.MockTransport, clock: FakeClock, cap: int = 100) -> ApiClient:
    return ApiClient(
        "https://x.example/v1", StaticKey("k"), 30.0, cap, RequestStats(), transport, clock=clock
    )


def test_a_body_arriving_within_the_timeout_is_taken() -> None:
    clock = FakeClock(start=100.0)
    fetched = clocked_client(trickle(clock, pause=30.0), clock).fetch()
    assert parse_payload(fetched.body).groups == []
    assert fetched.fetch_seconds == 30.0


def test_a_body_trickling_past_the_timeout_is_a_timeout() -> None:
    clock = FakeClock(start=100.0)
    client = clocked_client(trickle(clock, pause=30.5), clock)
    failure = failure_of(client)
    assert isinstance(failure, ApiTimeout)
    assert failure.labels == ("200", "timeout")
    assert failure.detail == "response slower than the timeout"


@pytest.mark.parametrize("declared", [True, False])
def test_a_body_exactly_at_the_cap_is_taken(declared: bool) -> None:
    body = b"[" + b" " * 98 + b"]"

    def handler(request: httpx.Request) -> httpx.Response:
        if declared:
            return httpx.Response(200, content=body)
        return httpx.Response(200, content=iter([body[:50], body[50:]]))

    client = clocked_client(httpx.MockTransport(handler), FakeClock(), cap=len(body))
    assert groups_of(client) == []
    over = clocked_client(httpx.MockTransport(handler), FakeClock(), cap=len(body) - 1)
    failure = failure_of(over)
    assert failure.labels == ("200", "too_large")
    expected = (
        f"Content-Length {len(body)} over the cap"
        if declared
        else f"body over the cap of {len(body) - 1} bytes"
    )
    assert failure.detail == expected


def test_demo_mode_uses_the_key_it_is_given_and_needs_one() -> None:
    settings = load_settings(demo=True)
    assert credentials_from(settings, "demo-key").authorization() == "Bearer demo-key"
    with pytest.raises(ConfigError, match="demo"):
        credentials_from(settings)


def test_payload_failures_are_classified_in_one_place() -> None:
    coded, uncoded = classify(PayloadError("error object", "1001")), classify(PayloadError("x"))
    assert (coded.labels, coded.detail) == (("200", "1001"), "error object")
    assert (uncoded.labels, uncoded.detail) == (("200", "invalid_response"), "x")


def test_a_body_that_decodes_past_the_cap_in_one_piece_is_refused(make_client: MakeClient) -> None:
    """The cap holds for the decoded bytes of a single piece too, not only across pieces."""
    cap = 1000
    body = gzip.compress(bytes(cap + 1))  # 1,001 decoded bytes in one piece, ~30 sent

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Content-Encoding": "gzip"})

    failure = failure_of(
        make_client(max_response_bytes=cap, transport=httpx.MockTransport(handler))
    )
    assert failure.labels == ("200", "too_large")
    assert failure.detail == f"decoded body over the cap of {cap} bytes"


def test_decoding_failures_say_what_was_wrong() -> None:
    coding = "x-" + "b" * 40
    with pytest.raises(InvalidResponse) as unknown:
        _Decoder(coding, "200")
    assert unknown.value.detail == f"unsupported Content-Encoding {coding[:32]!r}"
    decoder = _Decoder("gzip", "200")
    with pytest.raises(InvalidResponse) as malformed:
        list(decoder.feed(b"\x1f\x8b not gzip at all"))
    assert malformed.value.detail == "malformed compressed body"
    assert malformed.value.labels == ("200", "invalid_response")


def test_access_carries_the_ca_file_in_every_auth_mode(no_env: None, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    modes = [
        (load_settings(demo=True, ca_file=ca_file), DEMO_KEY),
        (load_settings(base_url=BASE, api_key="k-1", ca_file=ca_file), None),
        (
            load_settings(
                base_url=BASE, client_id="cid", client_secret="s", auth_key="a", ca_file=ca_file
            ),
            None,
        ),
    ]
    for settings, demo_key in modes:
        assert Access.of(settings, demo_key).ca_file == ca_file


class ExpiredDeadline:
    """Stands in for `_Deadline`: the total deadline has passed during the exchange."""

    expired = True

    def __init__(self, _seconds: float) -> None:
        pass

    def __enter__(self) -> ExpiredDeadline:
        return self

    def __exit__(self, *_exc: object) -> None:
        pass

    def trace(self, name: str, info: dict[str, object]) -> None:
        pass


def dripping(first: bytes, then: Exception | None) -> Callable[[httpx.Request], httpx.Response]:
    """An answer with status 200 whose body starts with `first`, then fails with `then`."""

    def chunks() -> Iterator[bytes]:
        yield first
        if then is not None:
            raise then

    return lambda request: httpx.Response(200, content=chunks())


@pytest.mark.parametrize(
    ("first", "then", "encoding"),
    [
        (b"[", httpx.ReadError("socket shut by the deadline"), None),  # a transport error
        (b"\x1f\x8b not gzip", None, "gzip"),  # cut short: looks malformed
        (b"[]", None, None),  # complete, but after the deadline
    ],
)
def test_whatever_ends_an_exchange_past_its_deadline_is_a_timeout_with_its_status(
    make_client: MakeClient,
    monkeypatch: pytest.MonkeyPatch,
    first: bytes,
    then: Exception | None,
    encoding: str | None,
) -> None:
    monkeypatch.setattr(api_module, "_Deadline", ExpiredDeadline)
    answer = dripping(first, then)

    def handler(request: httpx.Request) -> httpx.Response:
        response = answer(request)
        if encoding:
            response.headers["Content-Encoding"] = encoding
        return response

    failure = failure_of(make_client(transport=httpx.MockTransport(handler)))
    assert isinstance(failure, ApiTimeout)
    assert failure.labels == ("200", "timeout")
    assert failure.detail == "response slower than the timeout"


def test_a_body_cut_by_a_transport_error_keeps_the_status_already_received(
    make_client: MakeClient,
) -> None:
    handler = dripping(b"[", httpx.ReadError("connection reset"))
    failure = failure_of(make_client(transport=httpx.MockTransport(handler)))
    assert failure.labels == ("200", "connection")


def test_the_request_is_exactly_the_documented_one_and_redirects_are_not_followed(
    make_client: MakeClient,
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"Location": "https://elsewhere.example/"})

    client = make_client(
        key="k-12345678", transport=httpx.MockTransport(handler), base_url="https://a.example/X/"
    )
    failure = failure_of(client)
    assert failure.labels == ("302", "302")  # counted as the answer it is, never followed
    (request,) = seen
    assert (request.method, str(request.url)) == ("GET", "https://a.example/X/target-groups")
    assert dict(request.headers) == {
        "host": "a.example",
        "accept": "application/json",
        "accept-encoding": "gzip, deflate",
        "connection": "keep-alive",
        "user-agent": USER_AGENT,
        "authorization": "Bearer k-12345678",
        "content-type": "application/json",
    }


def test_the_client_bounds_connect_keeps_no_connection_and_reads_the_environment(
    make_client: MakeClient,
) -> None:
    """One connection per request (each under its own deadline); connecting gets at most
    10 s of the timeout; proxies and CA bundles from the environment apply."""
    slow, quick = make_client(timeout=30.0), make_client(timeout=4.0)
    assert slow._client.timeout == httpx.Timeout(30.0, connect=10.0)
    assert quick._client.timeout == httpx.Timeout(4.0, connect=4.0)
    assert slow._client.trust_env is True
    pool = slow._client._transport._pool  # type: ignore[attr-defined]
    assert pool._max_keepalive_connections == 0


class RejectOnce:
    """Credentials whose first key is refused: a retry with fresh ones is worth it."""

    def __init__(self) -> None:
        self.keys = iter(["old-key", "new-key"])
        self.key = next(self.keys)

    def authorization(self) -> str:
        return f"Bearer {self.key}"

    def rejected(self, failure: HttpStatusError) -> bool:
        self.key = next(self.keys)
        return True

    def secrets(self) -> list[str]:
        return []


@pytest.mark.parametrize("status", [401, 403])
def test_a_401_or_403_is_retried_once_with_fresh_credentials(status: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == "Bearer old-key":
            return httpx.Response(status)
        return httpx.Response(200, json=[])

    client = ApiClient(
        "https://a.example",
        RejectOnce(),
        5.0,
        1000,
        RequestStats(),
        transport=httpx.MockTransport(handler),
    )
    assert groups_of(client) == []
    assert client.stats.read()[0] == 2
    client.close()


def test_a_body_cut_inside_its_gzip_stream_is_invalid(make_client: MakeClient) -> None:
    body = gzip.compress(b"[]" * 1000)[:-12]  # the stream's end never arrives

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Content-Encoding": "gzip"})

    failure = failure_of(make_client(transport=httpx.MockTransport(handler)))
    assert failure.labels == ("200", "invalid_response")
    assert failure.detail == "compressed body ends early"


@pytest.mark.parametrize(("secret", "redacted"), [("k-123456", True), ("k-12345", False)])
def test_a_secret_of_eight_characters_or_more_echoed_by_the_api_is_redacted(
    make_client: MakeClient, secret: str, redacted: bool
) -> None:
    """Shorter values are left alone: they would match too much of an ordinary body."""
    echoed = json.dumps(
        [{"id": "1", "name": f"list {secret}", "totalCount": 1, "validcount": 1, "errorcount": 0}]
    ).encode()
    client = make_client(
        key=secret, transport=httpx.MockTransport(lambda r: httpx.Response(200, content=echoed))
    )
    body = bytes(client.fetch().body)
    assert (secret.encode() in body) is not redacted
    assert (b"list [REDACTED]" in body) is redacted
