"""--web.config.file: real TLS and basic auth on loopback, and the file's validation errors."""

from __future__ import annotations

import base64
import errno
import os
import select
import socket
import socketserver
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import bcrypt
import httpx
import pytest
import structlog
import structlog.testing
import trustme
from cryptography.hazmat.primitives import serialization
from helpers import FakeClock

from exporter import metrics as m
from exporter.server import Latest, MetricsServer, initial_published, make_server
from exporter.settings import ConfigError, ListenAddress
from exporter.webconfig import (
    HANDSHAKE_TIMEOUT,
    LiveWebConfig,
    WebConfigError,
    basic_auth,
    load_web_config,
    reload,
    wrap_server,
)
from exporter.webconfig import server as webconfig_server

PASSWORD = "correct horse battery staple"
# Cost 4 keeps the file fast; production hashes use 10 or more.
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
# htpasswd writes the $2y$ variant; it must work too.
HASH_2Y = "$2y$" + bcrypt.hashpw(b"other secret", bcrypt.gensalt(rounds=4)).decode()[4:]


@dataclass
class Pki:
    ca: trustme.CA
    folder: Path

    def server_files(self, name: str = "server") -> tuple[Path, Path]:
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        cert_path, key_path = self.folder / f"{name}.crt", self.folder / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_path))
        for pem in cert.cert_chain_pems[1:]:
            pem.write_to_path(str(cert_path), append=True)
        cert.private_key_pem.write_to_path(str(key_path))
        return cert_path, key_path

    def ca_file(self, name: str = "client-ca.crt") -> Path:
        path = self.folder / name
        self.ca.cert_pem.write_to_path(str(path))
        return path

    def client_context(
        self, client_cert: trustme.LeafCert | None = None, trust: bool = True
    ) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if trust:
            self.ca.configure_trust(context)
        if client_cert is not None:
            client_cert.configure_cert(context)
        return context


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(trustme.CA(), tmp_path)


def write_config(folder: Path, text: str, name: str = "web.yml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


Serve = Callable[..., str]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start make_server on 127.0.0.1:0 with the config applied as the CLI does; give the URL."""
    servers: list[tuple[MetricsServer, threading.Thread]] = []

    def start(config_path: Path, check_interval: float = 60.0) -> str:
        config = load_web_config(config_path)
        latest = Latest(initial_published("test"))
        server = make_server(ListenAddress("127.0.0.1", 0), latest)
        wrap_server(server, config, check_interval=check_interval)
        # a short poll interval keeps shutdown() in teardown quick
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        servers.append((server, thread))
        scheme = "https" if config.tls_enabled else "http"
        return f"{scheme}://127.0.0.1:{server.server_address[1]}"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(5)


# Generous: a request on loopback takes milliseconds, but the suite must stay green while
# other processes keep every core busy.
PATIENCE = 60.0


def get(url: str, verify: ssl.SSLContext | bool = True, **kwargs: object) -> httpx.Response:
    with httpx.Client(verify=verify, timeout=PATIENCE) as client:
        return client.get(url, **kwargs)  # type: ignore[arg-type]


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# --- TLS ---------------------------------------------------------------------------------


@pytest.fixture
def tls_url(pki: Pki, serve: Serve) -> str:
    cert, key = pki.server_files()
    path = write_config(pki.folder, f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    return serve(path)


def test_tls_with_the_right_ca_serves_metrics(pki: Pki, tls_url: str) -> None:
    response = get(f"{tls_url}/metrics", verify=pki.client_context())
    assert response.status_code == 200
    assert f"{m.UP.name}{{" in response.text
    assert response.http_version == "HTTP/1.1"


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> ssl.SSLObject:
    """A TLS handshake in memory; the client's end."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_end = server.wrap_bio(to_server, to_client, server_side=True)
    client_end = client.wrap_bio(to_client, to_server, server_hostname="localhost")
    for _ in range(10):
        done = 0
        for end in (client_end, server_end):
            try:
                end.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        if done == 2:
            return client_end
    raise AssertionError("the handshake did not finish")


@pytest.mark.parametrize("prefer", [True, False])
def test_tls_context_speaks_http_1_1_and_keeps_the_safe_defaults(pki: Pki, prefer: bool) -> None:
    cert, key = pki.server_files()
    path = write_config(
        pki.folder,
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        f"  client_auth_type: RequestClientCert\n"
        f"  prefer_server_cipher_suites: {str(prefer).lower()}\n",
    )
    context = load_web_config(path).ssl_context()
    assert context is not None
    assert context.verify_mode == ssl.CERT_NONE  # RequestClientCert is served as NoClientCert
    assert context.options & ssl.OP_NO_COMPRESSION
    assert bool(context.options & ssl.OP_CIPHER_SERVER_PREFERENCE) is prefer
    client = pki.client_context()
    client.set_alpn_protocols(["h2", "http/1.1"])
    assert handshake(context, client).selected_alpn_protocol() == "http/1.1"


def test_tls_without_the_ca_fails_verification(tls_url: str) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        get(f"{tls_url}/metrics")


def test_plain_http_to_the_tls_port_gets_no_answer(tls_url: str) -> None:
    with pytest.raises(httpx.TransportError):
        get(tls_url.replace("https://", "http://") + "/metrics")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_defaults_to_tls12_minimum(pki: Pki, tls_url: str) -> None:
    old = pki.client_context()
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(httpx.ConnectError):
        get(f"{tls_url}/metrics", verify=old)
    # and TLS 1.2 is still accepted
    tls12 = pki.client_context()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert get(f"{tls_url}/metrics", verify=tls12).status_code == 200


def test_server_context_defaults_to_tls12_through_tls13(pki: Pki) -> None:
    cert, key = pki.server_files()
    path = write_config(pki.folder, f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    context = load_web_config(path).ssl_context()
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.maximum_version == ssl.TLSVersion.TLSv1_3


@pytest.mark.filterwarnings("error")
def test_the_server_context_is_built_without_deprecated_ssl_calls(pki: Pki) -> None:
    """A deprecated call (a context without its protocol, say) warns today and fails on a
    later Python."""
    cert, key = pki.server_files()
    path = write_config(pki.folder, f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    context = load_web_config(path).ssl_context()
    assert context is not None
    assert context.protocol == ssl.PROTOCOL_TLS_SERVER


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_a_tls11_client_is_refused_for_its_version(pki: Pki, tls_url: str) -> None:
    """The client can speak TLS 1.0/1.1 (security level 0), so the server's refusal must be
    about the protocol version, not about ciphers: a server that allowed TLS 1.0 would fail
    this handshake with a cipher or handshake alert instead, or complete it."""
    old = pki.client_context()
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    host, port = tls_url.removeprefix("https://").rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=30) as raw,
        pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"),
    ):
        old.wrap_socket(raw, server_hostname=host)


def test_min_version_tls13_rejects_tls12_clients(pki: Pki, serve: Serve) -> None:
    cert, key = pki.server_files()
    path = write_config(
        pki.folder,
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  min_version: TLS13\n",
    )
    url = serve(path)
    tls12 = pki.client_context()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(httpx.ConnectError):
        get(f"{url}/metrics", verify=tls12)
    assert get(f"{url}/metrics", verify=pki.client_context()).status_code == 200


def test_a_silent_client_does_not_block_others(pki: Pki, tls_url: str) -> None:
    port = int(tls_url.rsplit(":", 1)[1])
    # Connects and never starts the handshake: must not hold up accept(). Had it, the
    # answer would come only once the silent client's handshake timed out.
    with socket.create_connection(("127.0.0.1", port)):
        started = time.monotonic()
        response = get(f"{tls_url}/-/healthy", verify=pki.client_context())
        assert response.status_code == 200
        assert time.monotonic() - started < HANDSHAKE_TIMEOUT


def test_relative_paths_resolve_against_the_config_folder(
    pki: Pki, serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki.server_files("relative")
    path = write_config(
        pki.folder, "tls_server_config:\n  cert_file: relative.crt\n  key_file: relative.key\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    url = serve(Path(os.path.relpath(path, elsewhere)))
    assert get(f"{url}/-/healthy", verify=pki.client_context()).status_code == 200


# --- client certificates -----------------------------------------------------------------


@pytest.fixture
def mtls_url(pki: Pki, serve: Serve) -> str:
    cert, key = pki.server_files()
    ca = pki.ca_file()
    path = write_config(
        pki.folder,
        f"""\
tls_server_config:
  cert_file: {cert}
  key_file: {key}
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: {ca}
""",
    )
    return serve(path)


def test_mtls_accepts_a_client_certificate_from_the_ca(pki: Pki, mtls_url: str) -> None:
    client = pki.ca.issue_cert("prometheus@example.com")
    response = get(f"{mtls_url}/metrics", verify=pki.client_context(client))
    assert response.status_code == 200
    assert m.UP.name in response.text


def test_mtls_rejects_a_client_without_certificate(pki: Pki, mtls_url: str) -> None:
    with pytest.raises(httpx.TransportError):
        get(f"{mtls_url}/metrics", verify=pki.client_context())


def test_mtls_rejects_a_certificate_from_another_ca(pki: Pki, mtls_url: str) -> None:
    stranger = trustme.CA().issue_cert("prometheus@example.com")
    with pytest.raises(httpx.TransportError):
        get(f"{mtls_url}/metrics", verify=pki.client_context(stranger))


def test_verify_if_given_accepts_no_certificate_but_rejects_a_bad_one(
    pki: Pki, serve: Serve
) -> None:
    cert, key = pki.server_files()
    path = write_config(
        pki.folder,
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        f"  client_auth_type: VerifyClientCertIfGiven\n  client_ca: |\n"
        + "".join(f"    {line}\n" for line in pki.ca.cert_pem.bytes().decode().splitlines()),
    )
    url = serve(path)
    assert get(f"{url}/metrics", verify=pki.client_context()).status_code == 200
    stranger = trustme.CA().issue_cert("x@example.com")
    with pytest.raises(httpx.TransportError):
        get(f"{url}/metrics", verify=pki.client_context(stranger))


# --- basic auth --------------------------------------------------------------------------


@pytest.fixture
def auth_url(tmp_path: Path, serve: Serve) -> str:
    path = write_config(
        tmp_path,
        f"""\
basic_auth_users:
  prometheus: '{HASH}'
  grafana: '{HASH_2Y}'
http_server_config:
  headers:
    X-Frame-Options: deny
    X-Content-Type-Options: nosniff
""",
    )
    return serve(path)


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="webex-campaign-exporter"'
    assert m.PREFIX not in response.text


def test_basic_auth_right_password(auth_url: str) -> None:
    response = get(f"{auth_url}/metrics", headers=basic("prometheus", PASSWORD))
    assert response.status_code == 200
    assert m.UP.name in response.text
    assert get(f"{auth_url}/metrics", headers=basic("grafana", "other secret")).status_code == 200


def test_basic_auth_wrong_password(auth_url: str) -> None:
    assert_unauthorized(get(f"{auth_url}/metrics", headers=basic("prometheus", "wrong")))
    # the other user's password does not open this user
    assert_unauthorized(get(f"{auth_url}/metrics", headers=basic("prometheus", "other secret")))


def test_basic_auth_no_header(auth_url: str) -> None:
    assert_unauthorized(get(f"{auth_url}/metrics"))


def test_basic_auth_unknown_user(auth_url: str) -> None:
    assert_unauthorized(get(f"{auth_url}/metrics", headers=basic("mallory", PASSWORD)))


@pytest.mark.parametrize(
    "header",
    [
        "Bearer abc",
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"prometheus").decode(),  # no colon
        "Basic " + base64.b64encode(b"prometheus:" + b"x" * 100).decode(),  # > 72 bytes
    ],
)
def test_basic_auth_malformed_header(auth_url: str, header: str) -> None:
    assert_unauthorized(get(f"{auth_url}/metrics", headers={"Authorization": header}))


def test_rejections_are_logged_without_the_password(auth_url: str) -> None:
    with structlog.testing.capture_logs() as logs:
        get(f"{auth_url}/metrics", headers=basic("prometheus", "hunter2-guess"))
        get(f"{auth_url}/metrics", headers=basic("prometheus", PASSWORD))
    rejected = [entry for entry in logs if entry["event"] == "web_auth_rejected"]
    assert [entry["reason"] for entry in rejected] == ["bad_credentials"]
    assert "hunter2-guess" not in repr(logs)
    assert PASSWORD not in repr(logs)


@pytest.mark.parametrize("path", ["/", "/nowhere", "/-/healthy/", "/-/ready?verbose=1", "/-/Ready"])
def test_every_path_but_the_probes_is_protected(auth_url: str, path: str) -> None:
    assert_unauthorized(get(auth_url + path))


def test_probe_endpoints_answer_without_credentials_and_reveal_only_a_status(
    auth_url: str,
) -> None:
    # Kubernetes probes cannot carry a password without it sitting in the pod spec.
    healthy = get(f"{auth_url}/-/healthy")
    assert (healthy.status_code, healthy.text) == (200, "Healthy\n")
    ready = get(f"{auth_url}/-/ready")  # no poll has completed in this server
    assert (ready.status_code, ready.text) == (503, "First poll pending: test\n")
    assert m.PREFIX not in healthy.text + ready.text
    assert ready.headers["X-Frame-Options"] == "deny", "configured headers still apply"
    with httpx.Client(timeout=5) as client:
        assert client.head(f"{auth_url}/-/healthy").status_code == 200
        assert_unauthorized(client.post(f"{auth_url}/-/ready"))


def test_head_request_gets_401_without_body(auth_url: str) -> None:
    with httpx.Client(timeout=PATIENCE) as client:
        response = client.head(f"{auth_url}/metrics")
    assert response.status_code == 401
    assert response.content == b""


def test_extra_headers_on_every_response(auth_url: str) -> None:
    for response in (
        get(f"{auth_url}/metrics"),
        get(f"{auth_url}/metrics", headers=basic("prometheus", PASSWORD)),
    ):
        assert response.headers["X-Frame-Options"] == "deny"
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_keep_alive_connection_survives_a_401(auth_url: str) -> None:
    with httpx.Client(timeout=PATIENCE) as client:
        assert client.get(f"{auth_url}/metrics").status_code == 401
        response = client.get(f"{auth_url}/metrics", headers=basic("prometheus", PASSWORD))
        assert response.status_code == 200


@pytest.fixture
def bcrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    calls: list[bytes] = []
    real = basic_auth._checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(basic_auth, "_checkpw", counting)
    return calls


def test_successful_verification_is_cached(bcrypt_calls: list[bytes], auth_url: str) -> None:
    for _ in range(3):
        response = get(f"{auth_url}/metrics", headers=basic("prometheus", PASSWORD))
        assert response.status_code == 200
    assert bcrypt_calls == [HASH.encode()]
    # a wrong password is never served from the cache
    for _ in range(2):
        assert get(f"{auth_url}/metrics", headers=basic("prometheus", "nope")).status_code == 401
    assert len(bcrypt_calls) == 3


def test_unknown_user_costs_a_bcrypt_check(bcrypt_calls: list[bytes], auth_url: str) -> None:
    assert get(f"{auth_url}/metrics", headers=basic("mallory", "x")).status_code == 401
    assert len(bcrypt_calls) == 1
    dummy = bcrypt_calls[0]
    assert dummy not in (HASH.encode(), HASH_2Y.encode())
    assert dummy[4:6] == b"04"  # same cost as the configured hashes: same timing


def test_tls_and_basic_auth_together(pki: Pki, serve: Serve) -> None:
    cert, key = pki.server_files()
    path = write_config(
        pki.folder,
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        f"basic_auth_users:\n  prometheus: '{HASH}'\n",
    )
    url = serve(path)
    context = pki.client_context()
    assert_unauthorized(get(f"{url}/metrics", verify=context))
    ok = get(f"{url}/metrics", verify=context, headers=basic("prometheus", PASSWORD))
    assert ok.status_code == 200


def test_empty_file_protects_nothing(tmp_path: Path, serve: Serve) -> None:
    url = serve(write_config(tmp_path, "# nothing configured yet\n"))
    assert url.startswith("http://")
    assert get(f"{url}/-/healthy").status_code == 200


# --- reloading ---------------------------------------------------------------------------


def rewrite(path: Path, text: str) -> None:
    before = path.stat().st_mtime_ns
    path.write_text(text)
    # coarse file-system clocks: make sure the change is visible
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


def test_changed_users_apply_without_restart(tmp_path: Path, serve: Serve) -> None:
    path = write_config(tmp_path, f"basic_auth_users:\n  prometheus: '{HASH}'\n")
    url = serve(path, check_interval=0.0)
    assert get(f"{url}/metrics", headers=basic("prometheus", PASSWORD)).status_code == 200
    rewrite(path, f"basic_auth_users:\n  grafana: '{HASH_2Y}'\n")
    assert get(f"{url}/metrics", headers=basic("prometheus", PASSWORD)).status_code == 401
    assert get(f"{url}/metrics", headers=basic("grafana", "other secret")).status_code == 200
    # a broken edit keeps the last good config in force
    rewrite(path, "basic_auth_users: [oops\n")
    assert get(f"{url}/metrics", headers=basic("grafana", "other secret")).status_code == 200
    assert get(f"{url}/metrics").status_code == 401


def test_rotated_certificate_is_served_to_new_connections(pki: Pki, serve: Serve) -> None:
    cert, key = pki.server_files()
    path = write_config(pki.folder, f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    url = serve(path, check_interval=0.0)
    assert get(f"{url}/-/healthy", verify=pki.client_context()).status_code == 200

    new_ca = trustme.CA()
    Pki(new_ca, pki.folder).server_files()  # overwrites server.crt / server.key
    os.utime(cert, ns=(time.time_ns() + 10**9,) * 2)
    assert get(f"{url}/-/healthy", verify=Pki(new_ca, pki.folder).client_context()).is_success
    with pytest.raises(httpx.ConnectError):
        get(f"{url}/-/healthy", verify=pki.client_context())


# --- validation --------------------------------------------------------------------------


def load_error(folder: Path, text: str) -> str:
    path = write_config(folder, text)
    with pytest.raises(WebConfigError) as info:
        load_web_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_web_config_error_is_a_config_error() -> None:
    # The CLI turns ConfigError into exit code 2.
    assert issubclass(WebConfigError, ConfigError)


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, "basic_auth_users:\n  prometheus: [unclosed\n")
    assert "invalid YAML at line 3" in message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "mapping" in load_error(tmp_path, "- a\n- b\n")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("tls_config:\n  cert_file: x\n", "unknown key tls_config"),
        ("tls_server_config:\n  cert_fiel: x\n", "unknown key tls_server_config.cert_fiel"),
        ("http_server_config:\n  header: {}\n", "unknown key http_server_config.header"),
    ],
)
def test_unknown_keys_are_named(tmp_path: Path, text: str, key: str) -> None:
    assert key in load_error(tmp_path, text)


def test_duplicate_keys_are_rejected(tmp_path: Path) -> None:
    text = f"basic_auth_users:\n  a: '{HASH}'\n  a: '{HASH}'\n"
    assert "duplicate key 'a'" in load_error(tmp_path, text)


def test_missing_cert_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "server.crt"
    message = load_error(
        tmp_path, f"tls_server_config:\n  cert_file: {missing}\n  key_file: {missing}\n"
    )
    assert f"tls_server_config.cert_file: cannot read {missing}" in message


def test_missing_key_file_names_the_path(pki: Pki) -> None:
    cert, _ = pki.server_files()
    missing = pki.folder / "gone.key"
    message = load_error(
        pki.folder, f"tls_server_config:\n  cert_file: {cert}\n  key_file: {missing}\n"
    )
    assert f"tls_server_config.key_file: cannot read {missing}" in message


def test_cert_without_key(pki: Pki) -> None:
    cert, _ = pki.server_files()
    message = load_error(pki.folder, f"tls_server_config:\n  cert_file: {cert}\n")
    assert "tls_server_config.key_file is required" in message


def test_mismatched_key(pki: Pki) -> None:
    cert, _ = pki.server_files("one")
    _, other_key = pki.server_files("two")
    message = load_error(
        pki.folder, f"tls_server_config:\n  cert_file: {cert}\n  key_file: {other_key}\n"
    )
    assert message == (
        f"{pki.folder / 'web.yml'}: tls_server_config.cert_file/key_file: cannot load {cert}"
        f" with {other_key}: KEY_VALUES_MISMATCH"
    )


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("  client_auth_type: RequireSomething\n", "tls_server_config.client_auth_type"),
        ("  min_version: TLS14\n", "tls_server_config.min_version"),
        ("  min_version: TLS13\n  max_version: TLS12\n", "is above max_version"),
        ("  client_auth_type: RequireAndVerifyClientCert\n", "client_ca_file is required"),
        ("  client_ca_file: CA\n", "client_auth_type is NoClientCert"),
        ("  cipher_suites: [TLS_AES_128_GCM_SHA256]\n", "tls_server_config.cipher_suites"),
        ("  client_allowed_sans: [a]\n", "tls_server_config.client_allowed_sans"),
    ],
)
def test_bad_tls_settings(pki: Pki, extra: str, expected: str) -> None:
    cert, key = pki.server_files()
    pki.ca_file("CA")
    text = f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n{extra}"
    assert expected in load_error(pki.folder, text)


def test_bad_bcrypt_hash_names_the_user_not_the_hash(tmp_path: Path) -> None:
    message = load_error(tmp_path, "basic_auth_users:\n  prometheus: plaintext-secret\n")
    assert "basic_auth_users: user 'prometheus'" in message
    assert "plaintext-secret" not in message


def test_unsupported_header_is_named(tmp_path: Path) -> None:
    message = load_error(tmp_path, "http_server_config:\n  headers:\n    X-Powered-By: me\n")
    assert "http_server_config.headers" in message
    assert "X-Powered-By" in message


def test_unsupported_rate_limit_is_refused(tmp_path: Path) -> None:
    assert "rate_limit" in load_error(tmp_path, "rate_limit:\n  interval: 1s\n  burst: 5\n")


def test_an_inline_client_ca_that_is_no_certificate_is_named(pki: Pki) -> None:
    cert, key = pki.server_files()
    message = load_error(
        pki.folder,
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca: not a certificate\n",
    )
    assert message.startswith(
        f"{pki.folder}/web.yml: tls_server_config.client_ca: no usable CA certificate ("
    )


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "No such file or directory"),
        (b"\xff", "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
    ],
)
def test_missing_or_undecodable_config_file(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    path = tmp_path / "web.yml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)
    assert str(caught.value) == f"web config file {path}: cannot read: {reason}"


def _encrypted_key_file(pki: Pki) -> None:
    cert = pki.ca.issue_cert("127.0.0.1")
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    (pki.folder / "encrypted.key").write_bytes(encrypted)


# Exactly what the operator reads (<dir> is the config file's folder).
@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "tls_config:\n  cert_file: x\n",
            "<dir>/web.yml: unknown key tls_config",
        ),
        (
            "tls_server_config:\n  cert_fiel: x\n",
            "<dir>/web.yml: unknown key tls_server_config.cert_fiel",
        ),
        (
            "tls_config: 1\nrate_limits: 2\n",
            "<dir>/web.yml: unknown key tls_config (and 1 more error)",
        ),
        (
            "tls_config: 1\nrate_limits: 2\nhttp2: 3\n",
            "<dir>/web.yml: unknown key tls_config (and 2 more errors)",
        ),
        (
            "- a\n- b\n",
            "<dir>/web.yml: the top level must be a mapping of keys",
        ),
        (
            "basic_auth_users:\n  prometheus: [unclosed\n",
            "<dir>/web.yml: invalid YAML at line 3, column 1: expected ',' or ']',"
            " but got '<stream end>'",
        ),
        (
            "basic_auth_users:\n  a: x\n  a: y\n",
            "<dir>/web.yml: invalid YAML at line 3, column 3: duplicate key 'a'",
        ),
        (
            "tls_server_config:\n  cert_file: <dir>/server.crt\n",
            "<dir>/web.yml: tls_server_config.key_file is required when TLS is on",
        ),
        (
            "tls_server_config:\n  key_file: <dir>/server.key\n",
            "<dir>/web.yml: tls_server_config.cert_file is required when TLS is on",
        ),
        (
            "tls_server_config:\n"
            "  cert_file: <dir>/server.crt\n"
            "  key_file: <dir>/server.key\n"
            "  client_ca_file: <dir>/CA\n"
            "  client_ca: x\n"
            "  client_auth_type: RequireAndVerifyClientCert\n",
            "<dir>/web.yml: tls_server_config: set client_ca_file or client_ca, not both",
        ),
        (
            "tls_server_config:\n"
            "  cert_file: <dir>/server.crt\n"
            "  key_file: <dir>/server.key\n"
            "  min_version: TLS14\n",
            "<dir>/web.yml: tls_server_config.min_version: Input should be 'TLS10',"
            " 'TLS11', 'TLS12' or 'TLS13'",
        ),
        (
            "tls_server_config:\n"
            "  cert_file: <dir>/server.crt\n"
            "  key_file: <dir>/server.key\n"
            "  min_version: TLS13\n"
            "  max_version: TLS12\n",
            "<dir>/web.yml: tls_server_config.min_version TLS13 is above max_version TLS12",
        ),
        (
            "tls_server_config:\n"
            "  cert_file: <dir>/server.crt\n"
            "  key_file: <dir>/server.key\n"
            "  client_auth_type: RequireAndVerifyClientCert\n",
            "<dir>/web.yml: tls_server_config.client_ca_file is required with"
            " client_auth_type RequireAndVerifyClientCert (client certificates are"
            " verified against it)",
        ),
        (
            "tls_server_config:\n"
            "  cert_file: <dir>/server.crt\n"
            "  key_file: <dir>/server.key\n"
            "  client_ca_file: <dir>/CA\n",
            "<dir>/web.yml: tls_server_config.client_auth_type: a client CA is"
            " configured but client_auth_type is NoClientCert; use"
            " RequireAndVerifyClientCert",
        ),
        (
            "tls_server_config:\n"
            "  cert_file: <dir>/server.crt\n"
            "  key_file: <dir>/server.key\n"
            "  client_auth_type: RequireAndVerifyClientCert\n"
            "  client_ca_file: <dir>/server.key\n",
            "<dir>/web.yml: tls_server_config.client_ca_file: no usable CA"
            " certificate (NO_CERTIFICATE_OR_CRL_FOUND)",
        ),
        (
            "tls_server_config:\n"
            "  cert_file: <dir>/server.crt\n"
            "  key_file: <dir>/server.key\n"
            "  client_auth_type: RequireAndVerifyClientCert\n"
            "  client_ca_file: <dir>/absent-ca\n",
            "<dir>/web.yml: tls_server_config.client_ca_file: cannot read"
            " <dir>/absent-ca: No such file or directory",
        ),
        (
            "tls_server_config:\n  cert_file: <dir>/server.crt\n  key_file: <dir>/encrypted.key\n",
            "<dir>/web.yml: tls_server_config.key_file: <dir>/encrypted.key is"
            " encrypted; give an unencrypted key",
        ),
        (
            "tls_server_config:\n  cert_file: <dir>/absent.crt\n  key_file: <dir>/server.key\n",
            "<dir>/web.yml: tls_server_config.cert_file: cannot read"
            " <dir>/absent.crt: No such file or directory",
        ),
        (
            "tls_server_config:\n  cert_file: <dir>/server.crt\n  key_file: <dir>/absent.key\n",
            "<dir>/web.yml: tls_server_config.key_file: cannot read"
            " <dir>/absent.key: No such file or directory",
        ),
        (
            "basic_auth_users:\n  prometheus: plaintext-secret\n",
            "<dir>/web.yml: basic_auth_users: user 'prometheus': password must be a"
            " bcrypt hash ($2y$10$...)",
        ),
        (
            "http_server_config:\n  headers:\n    X-Powered-By: me\n",
            "<dir>/web.yml: http_server_config.headers: header 'X-Powered-By' cannot"
            " be configured (allowed: Strict-Transport-Security,"
            " X-Content-Type-Options, X-Frame-Options, X-XSS-Protection,"
            " Content-Security-Policy)",
        ),
        (
            "rate_limit:\n  interval: 1s\n",
            "<dir>/web.yml: rate_limit: not supported by this exporter",
        ),
        (
            "tls_server_config:\n  cert: inline\n",
            "<dir>/web.yml: tls_server_config.cert: inline certificates are not supported:"
            " use cert_file",
        ),
        (
            "basic_auth_users:\n  a: \x07\n",
            "<dir>/web.yml: invalid YAML: unacceptable character #x0007:"
            " special characters are not allowed",
        ),
    ],
)
def test_config_error_messages_exactly(pki: Pki, text: str, message: str) -> None:
    pki.server_files()
    pki.ca_file("CA")
    _encrypted_key_file(pki)
    folder = str(pki.folder)
    assert load_error(pki.folder, text.replace("<dir>", folder)) == message.replace("<dir>", folder)


# --- log events: stable names and keys -----------------------------------------------------


def test_rejections_log_the_reason_and_the_remote(auth_url: str) -> None:
    with structlog.testing.capture_logs() as logs:
        get(f"{auth_url}/metrics")
        get(f"{auth_url}/metrics", headers=basic("nobody", "guess"))
    rejected = [
        {key: entry[key] for key in ("event", "remote", "reason", "log_level")}
        for entry in logs
        if entry["event"] == "web_auth_rejected"
    ]
    assert rejected == [
        {
            "event": "web_auth_rejected",
            "remote": "127.0.0.1",
            "reason": reason,
            "log_level": "debug",
        }
        for reason in ("no_credentials", "bad_credentials")
    ]


def test_reloads_are_logged(tmp_path: Path) -> None:
    path = write_config(tmp_path, f"basic_auth_users:\n  prometheus: '{HASH}'\n")
    live = LiveWebConfig(load_web_config(path), check_interval=0.0)
    first = live.current()
    with structlog.testing.capture_logs() as logs:
        rewrite(path, "basic_auth_users: [oops\n")
        assert live.current() is first
        assert live.current() is first  # a broken file is reported once, not per request
        rewrite(path, f"basic_auth_users:\n  grafana: '{HASH_2Y}'\n")
        second = live.current()
        assert live.current() is second  # reloaded once, not on every later check
    assert second is not first
    assert [entry["event"] for entry in logs] == ["web_config_reload_failed", "web_config_reloaded"]
    failed, reloaded = logs
    assert failed["error"].startswith(f"{path}: invalid YAML at line 2")
    assert failed["keeping"] == "previous config"
    assert failed["log_level"] == "error"
    assert reloaded == {
        "event": "web_config_reloaded",
        "path": str(path),
        "tls": False,
        "basic_auth": True,
        "log_level": "info",
    }


def test_switching_tls_on_needs_a_restart(pki: Pki) -> None:
    path = write_config(pki.folder, "")
    live = LiveWebConfig(load_web_config(path), check_interval=0.0)
    first = live.current()
    cert, key = pki.server_files()
    with structlog.testing.capture_logs() as logs:
        rewrite(path, f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
        assert live.current() is first
    assert logs == [
        {
            "event": "web_config_reload_failed",
            "error": f"{path}: switching TLS on or off needs a restart",
            "keeping": "previous config",
            "log_level": "error",
        }
    ]


def test_an_unchanged_file_is_not_reloaded(tmp_path: Path) -> None:
    path = write_config(tmp_path, f"basic_auth_users:\n  prometheus: '{HASH}'\n")
    first = load_web_config(path)
    live = LiveWebConfig(first, check_interval=0.0)
    with structlog.testing.capture_logs() as logs:
        assert live.current() is first
        assert live.current() is first
    assert logs == []


def test_a_change_is_seen_only_once_the_check_interval_has_passed(tmp_path: Path) -> None:
    path = write_config(tmp_path, f"basic_auth_users:\n  prometheus: '{HASH}'\n")
    first = load_web_config(path)
    live = LiveWebConfig(first, check_interval=3600.0)
    rewrite(path, f"basic_auth_users:\n  grafana: '{HASH_2Y}'\n")
    assert live.current() is first


def logged_once(logs: list[dict[str, Any]], event: str) -> dict[str, Any]:
    """The one `event` the server thread logs, once it has."""
    deadline = time.monotonic() + 60
    while not any(entry["event"] == event for entry in logs):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    (entry,) = [entry for entry in logs if entry["event"] == event]
    return entry


def test_failed_handshakes_are_logged_with_the_remote(tls_url: str) -> None:
    with structlog.testing.capture_logs() as logs:
        with pytest.raises(httpx.ConnectError):
            get(f"{tls_url}/metrics")  # the client does not trust the server's CA
        failed = logged_once(logs, "tls_handshake_failed")
    assert failed["remote"] == "127.0.0.1"
    assert "ALERT_UNKNOWN_CA" in failed["error"]


def test_a_client_resetting_mid_request_is_logged_with_the_remote(pki: Pki, tls_url: str) -> None:
    host, port = tls_url.removeprefix("https://").rsplit(":", 1)
    with structlog.testing.capture_logs() as logs:
        raw = socket.create_connection((host, int(port)), timeout=60)
        conn = pki.client_context().wrap_socket(raw, server_hostname=host)
        conn.sendall(b"GET /metrics HTTP/1.1\r\n")  # and nothing more
        time.sleep(0.2)  # the server is reading the headers
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # a reset, no close_notify
        error = logged_once(logs, "tls_connection_error")
    assert error["remote"] == "127.0.0.1"
    assert "EOF occurred" in error["error"] or "reset" in error["error"].lower()


# --- one TLS connection, handed to finish_request by the test ------------------------------


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[MetricsServer]:
    """A TLS server that is not serving: each test accepts a connection and hands it to
    `finish_request` itself, as socketserver's connection thread does."""
    cert, key = pki.server_files()
    path = write_config(pki.folder, f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    server = make_server(ListenAddress("127.0.0.1", 0), Latest(initial_published("test")))
    wrap_server(server, load_web_config(path))
    yield server
    server.server_close()


def connect(server: MetricsServer) -> tuple[socket.socket, socket.socket, Any]:
    """A client socket and the server's end of it, with the client's address."""
    client = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=PATIENCE)
    request, address = server.socket.accept()
    return client, request, address


def finish_in_thread(
    server: MetricsServer, request: socket.socket, address: Any
) -> Callable[[], BaseException | None]:
    """Start `finish_request` in a thread; join it and get what it raised (None if nothing)."""
    raised: list[BaseException] = []

    def finish() -> None:
        try:
            server.finish_request(request, address)
        except BaseException as exc:  # the test reads it from join()
            raised.append(exc)

    thread = threading.Thread(target=finish, daemon=True)
    thread.start()

    def join() -> BaseException | None:
        thread.join(PATIENCE)
        assert not thread.is_alive(), "finish_request did not return"
        return raised[0] if raised else None

    return join


def reset(sock: socket.socket) -> None:
    """Close with a reset (RST), not an orderly shutdown."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_a_client_that_never_starts_the_handshake_is_dropped_after_the_timeout(
    tls_server: MetricsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webconfig_server, "HANDSHAKE_TIMEOUT", 0.05)
    client, request, address = connect(tls_server)
    with client, structlog.testing.capture_logs() as logs:
        join = finish_in_thread(tls_server, request, address)
        assert join() is None
        assert client.recv(1) == b""  # the server's end is shut down and closed
    assert [(entry["event"], entry["remote"]) for entry in logs] == [
        ("tls_handshake_failed", "127.0.0.1")
    ]
    assert "timed out" in logs[0]["error"]


def test_a_client_resetting_mid_handshake_ends_the_connection_quietly(
    pki: Pki, tls_server: MetricsServer
) -> None:
    """The server's end is already gone when it is shut down: no error, one log line."""
    client, request, address = connect(tls_server)
    with structlog.testing.capture_logs() as logs:
        join = finish_in_thread(tls_server, request, address)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        hello = pki.client_context().wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
        with pytest.raises(ssl.SSLWantReadError):
            hello.do_handshake()
        client.sendall(outgoing.read())
        assert client.recv(65536)  # the server's answer: it is inside the handshake
        reset(client)
        assert join() is None
    assert [(entry["event"], entry["remote"]) for entry in logs] == [
        ("tls_handshake_failed", "127.0.0.1")
    ]
    assert "reset" in logs[0]["error"].lower()


@pytest.mark.parametrize(
    ("unix_address", "remote"),
    [(False, "127.0.0.1"), (True, "/run/exporter.sock")],
    ids=["tcp", "unix socket path"],
)
def test_a_client_gone_before_tls_starts_is_logged_and_closed(
    tls_server: MetricsServer, unix_address: bool, remote: str
) -> None:
    """A reset between accept and the TLS wrap; a Unix socket server names its client by
    a path rather than a (host, port) pair."""
    client, request, address = connect(tls_server)
    reset(client)
    select.select([request], [], [], PATIENCE)  # the reset has arrived
    with structlog.testing.capture_logs() as logs:
        tls_server.finish_request(request, remote if unix_address else address)
    assert logs == [
        {
            "event": "tls_wrap_failed",
            "remote": remote,
            "error": f"[Errno {errno.ECONNRESET}] {os.strerror(errno.ECONNRESET)}",
            "log_level": "debug",
        }
    ]
    assert request.fileno() == -1


def test_only_an_http_server_can_be_wrapped(tmp_path: Path) -> None:
    config = load_web_config(write_config(tmp_path, ""))
    with (
        socketserver.TCPServer(
            ("127.0.0.1", 0), socketserver.StreamRequestHandler, bind_and_activate=False
        ) as server,
        pytest.raises(TypeError) as caught,
    ):
        wrap_server(server, config)
    assert str(caught.value) == "StreamRequestHandler is not an HTTP request handler"


def test_a_401_says_so_in_plain_text(auth_url: str) -> None:
    response = get(f"{auth_url}/metrics")
    assert_unauthorized(response)
    assert response.content == b"Unauthorized\n"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["Content-Length"] == "13"


def test_a_401_to_head_has_no_body_on_the_wire(auth_url: str) -> None:
    """Read the raw bytes: a body after a HEAD answer would be taken for the next response."""
    host, port = auth_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    assert raw.startswith(b"HTTP/1.0 401") or raw.startswith(b"HTTP/1.1 401")
    assert raw.endswith(b"\r\n\r\n")


def test_a_cost_10_hash_is_served(tmp_path: Path, serve: Serve) -> None:
    """The decoy hash for unknown users takes the users' cost, two digits of it."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    url = serve(write_config(tmp_path, f"basic_auth_users:\n  prometheus: '{hashed}'\n"))
    assert get(f"{url}/metrics", headers=basic("prometheus", PASSWORD)).status_code == 200


def test_header_forms_that_are_still_basic_auth(tmp_path: Path, serve: Serve) -> None:
    with_colon = "pass:word"
    hashed = bcrypt.hashpw(with_colon.encode(), bcrypt.gensalt(rounds=4)).decode()
    url = serve(write_config(tmp_path, f"basic_auth_users:\n  prometheus: '{hashed}'\n"))
    token = base64.b64encode(f"prometheus:{with_colon}".encode()).decode()
    for header in (f"Basic {token}", f"basic  {token}", f"BASIC {token}"):
        response = get(f"{url}/metrics", headers={"Authorization": header})
        assert response.status_code == 200, header


def test_a_token_with_stray_characters_is_refused(auth_url: str) -> None:
    token = base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
    for bad in (f"Basic {token[:4]}*{token[4:]}", f"Basic {token}!"):
        assert_unauthorized(get(f"{auth_url}/metrics", headers={"Authorization": bad}))


def test_a_token_without_colon_counts_as_no_credentials(auth_url: str) -> None:
    no_colon = "Basic " + base64.b64encode(b"prometheus").decode()
    with structlog.testing.capture_logs() as logs:
        get(f"{auth_url}/metrics", headers={"Authorization": no_colon})
    (entry,) = [e for e in logs if e["event"] == "web_auth_rejected"]
    assert entry["reason"] == "no_credentials"


def test_verified_cache_is_bounded() -> None:
    cache = basic_auth._VerifiedCache()
    keys = [cache.key(b"user", b"hash", str(n).encode()) for n in range(cache.MAX_ENTRIES + 1)]
    for key in keys[: cache.MAX_ENTRIES]:
        cache.add(key)
    assert all(key in cache for key in keys[: cache.MAX_ENTRIES])
    cache.add(keys[-1])  # one too many: start over
    assert keys[-1] in cache
    assert keys[0] not in cache
    # Keys tell their parts apart (length-prefixed): no collision by shifting bytes.
    assert cache.key(b"ab", b"c", b"") != cache.key(b"a", b"bc", b"")


def test_files_are_checked_once_per_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(start=1000.0)
    monkeypatch.setattr(reload, "time", SimpleNamespace(monotonic=clock))
    path = write_config(tmp_path, f"basic_auth_users:\n  prometheus: '{HASH}'\n")
    live = LiveWebConfig(load_web_config(path), check_interval=10.0)
    first = live.current()
    rewrite(path, f"basic_auth_users:\n  grafana: '{HASH_2Y}'\n")
    clock.advance(9.0)
    assert live.current() is first  # not yet: the check is due at 1010
    clock.advance(1.0)
    second = live.current()
    assert second is not first
    assert second.model.basic_auth_users == {"grafana": HASH_2Y}
    rewrite(path, f"basic_auth_users:\n  prometheus: '{HASH}'\n")
    clock.advance(9.0)
    assert live.current() is second  # the next check is due 10 s after the last one
    clock.advance(1.0)
    assert live.current() is not second


@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_a_401_is_the_only_answer_on_the_wire(auth_url: str, method: bytes) -> None:
    """After the 401 nothing else is sent: no page for a client that did not authenticate."""
    host, port = auth_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=PATIENCE) as sock:
        sock.sendall(method + b" /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    assert raw.count(b"HTTP/1.") == 1
    assert m.PREFIX.encode() not in raw
    assert raw.endswith(b"\r\n\r\nUnauthorized\n" if method == b"GET" else b"\r\n\r\n")
