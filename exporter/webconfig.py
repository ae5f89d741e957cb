"""Protect the HTTP endpoints with `--web.config.file` (TLS, client certificates, basic auth).

The file uses the YAML format of Prometheus's exporter-toolkit
(https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md), so a
file written for node_exporter works here unchanged, with two kinds of exceptions that fail
loudly at start rather than being silently ignored (an ignored security setting is worse than
a refused one):

- toolkit keys this exporter does not implement (`cert`/`key` inline, `cipher_suites`,
  `curve_preferences`, `client_allowed_sans`, `rate_limit`) raise WebConfigError;
- `client_auth_type: RequireAnyClientCert` (Go: any certificate, unverified) needs a client CA
  here and verifies the certificate, because Python's ssl cannot ask for a certificate
  without verifying it. `RequestClientCert` (ask, never check) grants nothing, so it is served
  as `NoClientCert`.

`http_server_config.http2` is accepted and has no effect: the server speaks HTTP/1.1 only.

Design
------
`load_web_config` parses and validates everything up front, including loading the certificate
and key into an `ssl.SSLContext`, so a broken file stops the exporter at start (WebConfigError
is a ConfigError: the CLI exits 2 with the one-line message).

`wrap_server(server, config)` applies a config to a server built by `make_server`, without
changing its class:

- it replaces `server.RequestHandlerClass` with a subclass whose `authorize` hook checks
  basic auth (on every path but the probe endpoints, see PROBE_PATHS) and whose
  `end_headers` adds `http_server_config.headers` to every response (401s and 404s included);
- with TLS it installs a per-instance `finish_request`: the accept loop hands over the plain
  socket as before, and the TLS handshake runs in the connection's own thread (socketserver
  calls `finish_request` from `process_request_thread`), with a timeout. A client that
  connects and never speaks therefore costs one thread for at most HANDSHAKE_TIMEOUT seconds
  and never blocks `accept`. Wrapping the listening socket instead would run handshakes in
  whatever thread first reads, and handshake errors would surface as tracebacks.

Like exporter-toolkit, which re-reads the file on every request, the file is re-read when it
or a file it names (certificate, key, client CA) changes (checked at most once per
`check_interval`), so certificate rotation and user changes need no restart. A reload that
fails is logged and the last good config stays in force; switching TLS on or off needs a
restart, because the listening socket's protocol cannot change under connected clients.

Basic auth verifies with bcrypt, which is deliberately slow (cost 10 is ~70 ms) while
Prometheus scrapes every 15 s: successful verifications are cached under an HMAC (random
per-process key) of user, stored hash and password, so neither passwords nor fast hashes of
them are kept. Unknown users still cost one bcrypt check against a dummy hash of the same cost
as the configured ones, so response times do not reveal which user names exist. bcrypt checks
run one at a time, as in exporter-toolkit: a flood of wrong passwords uses one core, and
cached scrapes never wait for it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal, cast

import bcrypt
import structlog
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .settings import ConfigError

log = structlog.get_logger("exporter.webconfig")

REALM = "webex-campaign-exporter"
HANDSHAKE_TIMEOUT = 10.0  # seconds a client gets to finish the TLS handshake
DEFAULT_CHECK_INTERVAL = 1.0  # seconds between checks whether the files changed

Authorizer = Callable[[BaseHTTPRequestHandler], bool]

ClientAuthType = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "RequireClientCert",  # exporter-toolkit keeps this old spelling of RequireAnyClientCert
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]
TLSVersionName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]

_TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

# Same policy as exporter-toolkit: only these headers, and enumerated values where the header
# has a closed set. Anything else would let a config file break the HTTP responses.
_ALLOWED_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}

# exporter-toolkit keys we refuse rather than ignore, with the reason shown to the operator.
_UNSUPPORTED: dict[tuple[str, str], str] = {
    ("tls_server_config", "cert"): "inline certificates are not supported: use cert_file",
    ("tls_server_config", "key"): "inline keys are not supported: use key_file",
    ("tls_server_config", "cipher_suites"): "not supported: the OpenSSL defaults apply",
    ("tls_server_config", "curve_preferences"): "not supported: the OpenSSL defaults apply",
    ("tls_server_config", "client_allowed_sans"): "not supported: use a dedicated client CA",
    ("", "rate_limit"): "not supported by this exporter",
}

_BCRYPT_HASH = re.compile(r"^\$2[aby]?\$(\d\d)\$[./A-Za-z0-9]{53}$")


class WebConfigError(ConfigError):
    """The web config file is unreadable or invalid; one line naming the file and the key."""


# --- file format --------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TLSServerModel(_Model):
    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None
    client_ca: str | None = None
    client_auth_type: ClientAuthType | None = None
    min_version: TLSVersionName = "TLS12"
    max_version: TLSVersionName = "TLS13"
    prefer_server_cipher_suites: bool = True

    @field_validator("cert_file", "key_file", "client_ca_file", "client_ca")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        # exporter-toolkit treats an empty string as "not set"
        return value or None

    @property
    def enabled(self) -> bool:
        """exporter-toolkit's rule: any certificate-related key turns TLS on."""
        return any(
            value is not None
            for value in (
                self.cert_file,
                self.key_file,
                self.client_ca_file,
                self.client_ca,
                self.client_auth_type,
            )
        )


class HTTPServerModel(_Model):
    http2: bool = True  # accepted for compatibility; the server speaks HTTP/1.1 only
    headers: dict[str, str] | None = None

    @field_validator("headers")
    @classmethod
    def _known_headers(cls, headers: dict[str, str] | None) -> dict[str, str] | None:
        for name, value in (headers or {}).items():
            allowed = _ALLOWED_HEADERS.get(name)
            if allowed is None:
                raise ValueError(
                    f"header {name!r} cannot be configured (allowed: {', '.join(_ALLOWED_HEADERS)})"
                )
            if allowed and value and value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}")
            if any(ch in value for ch in "\r\n\0"):
                raise ValueError(f"{name} must be a single line")
        return headers


class WebConfigModel(_Model):
    tls_server_config: TLSServerModel | None = None
    http_server_config: HTTPServerModel | None = None
    basic_auth_users: dict[str, str] | None = None

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt_hashes(cls, users: dict[str, str] | None) -> dict[str, str] | None:
        for name, hashed in (users or {}).items():
            if not name or ":" in name:
                raise ValueError(f"user name {name!r} must be non-empty and contain no ':'")
            # Never echo the hash: it is what an attacker would brute-force.
            if not _BCRYPT_HASH.match(hashed) or not 4 <= int(hashed[4:6]) <= 31:
                raise ValueError(f"user {name!r}: password must be a bcrypt hash ($2y$10$...)")
        return users


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, like the Go YAML decoder in strict mode.

    A silently-dropped duplicate user or TLS key is a security surprise.
    """


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _validation_message(path: Path, exc: ValidationError) -> str:
    errors = exc.errors(include_input=False, include_url=False)
    first = errors[0]
    where = _dotted(first["loc"])
    if first["type"] == "extra_forbidden":
        text = f"{path}: unknown key {where}"
    else:
        msg = first["msg"].removeprefix("Value error, ")
        text = f"{path}: {where}: {msg}" if where else f"{path}: {msg}"
    more = len(errors) - 1
    return text + (f" (and {more} more error{'s' if more > 1 else ''})" if more else "")


def _parse(path: Path) -> WebConfigModel:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise WebConfigError(f"web config file {path}: cannot read: {reason}") from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise WebConfigError(f"{path}: invalid YAML{at}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise WebConfigError(f"{path}: the top level must be a mapping of keys")
    for (section, key), reason in _UNSUPPORTED.items():
        holder = raw.get(section) if section else raw
        if isinstance(holder, dict) and holder.get(key) is not None:
            raise WebConfigError(f"{path}: {_dotted((section, key)).lstrip('.')}: {reason}")
    try:
        return WebConfigModel.model_validate(raw)
    except ValidationError as exc:
        raise WebConfigError(_validation_message(path, exc)) from None


# --- TLS ---------------------------------------------------------------------------------


def _resolve(base: Path, value: str | None) -> Path | None:
    # Relative to the config file's folder, as exporter-toolkit does.
    return None if value is None else base / Path(value).expanduser()


def _encrypted_key() -> bytes:
    raise _EncryptedKeyError


class _EncryptedKeyError(Exception):
    """Raised by the password callback: prompting on a terminal would hang a service."""


def _readable(path: Path, config: Path, key: str) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise WebConfigError(
            f"{config}: tls_server_config.{key}: cannot read {path}: {exc.strerror or exc}"
        ) from None


def _build_ssl_context(config: Path, tls: TLSServerModel) -> tuple[ssl.SSLContext, list[Path]]:
    base = config.parent
    cert = _resolve(base, tls.cert_file)
    key = _resolve(base, tls.key_file)
    ca_file = _resolve(base, tls.client_ca_file)
    if cert is None:
        raise WebConfigError(f"{config}: tls_server_config.cert_file is required when TLS is on")
    if key is None:
        raise WebConfigError(f"{config}: tls_server_config.key_file is required when TLS is on")
    if ca_file is not None and tls.client_ca is not None:
        raise WebConfigError(
            f"{config}: tls_server_config: set client_ca_file or client_ca, not both"
        )
    _readable(cert, config, "cert_file")
    _readable(key, config, "key_file")

    minimum, maximum = _TLS_VERSIONS[tls.min_version], _TLS_VERSIONS[tls.max_version]
    if minimum > maximum:
        raise WebConfigError(
            f"{config}: tls_server_config.min_version {tls.min_version} is above"
            f" max_version {tls.max_version}"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.minimum_version = minimum
        context.maximum_version = maximum
    except (ValueError, ssl.SSLError) as exc:
        raise WebConfigError(f"{config}: tls_server_config.min_version: {exc}") from None
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    # HTTP/2 clients must fall back: the server speaks HTTP/1.1 only.
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert, key, password=_encrypted_key)
    except _EncryptedKeyError:
        raise WebConfigError(
            f"{config}: tls_server_config.key_file: {key} is encrypted; give an unencrypted key"
        ) from None
    except ssl.SSLError as exc:
        raise WebConfigError(
            f"{config}: tls_server_config.cert_file/key_file: cannot load {cert} with {key}:"
            f" {exc.reason or exc}"
        ) from None

    auth = tls.client_auth_type or "NoClientCert"
    has_ca = ca_file is not None or tls.client_ca is not None
    if has_ca and auth == "NoClientCert":
        raise WebConfigError(
            f"{config}: tls_server_config.client_auth_type: a client CA is configured but"
            " client_auth_type is NoClientCert; use RequireAndVerifyClientCert"
        )
    if auth in ("NoClientCert", "RequestClientCert"):
        # RequestClientCert asks for a certificate and never checks it: no protection at all,
        # and Python's ssl cannot ask without verifying, so it is served as NoClientCert.
        context.verify_mode = ssl.CERT_NONE
    else:
        if not has_ca:
            raise WebConfigError(
                f"{config}: tls_server_config.client_ca_file is required with"
                f" client_auth_type {auth} (client certificates are verified against it)"
            )
        try:
            if ca_file is not None:
                _readable(ca_file, config, "client_ca_file")
                context.load_verify_locations(cafile=ca_file)
            else:
                context.load_verify_locations(cadata=tls.client_ca)
        except ssl.SSLError as exc:
            name = "client_ca_file" if ca_file is not None else "client_ca"
            raise WebConfigError(
                f"{config}: tls_server_config.{name}: no usable CA certificate"
                f" ({exc.reason or exc})"
            ) from None
        optional = auth == "VerifyClientCertIfGiven"
        context.verify_mode = ssl.CERT_OPTIONAL if optional else ssl.CERT_REQUIRED
    watched = [path for path in (cert, key, ca_file) if path is not None]
    return context, watched


# --- basic auth --------------------------------------------------------------------------


class _VerifiedCache:
    """Successful verifications, keyed by an HMAC under a per-process random key."""

    MAX_ENTRIES = 256

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._entries: set[bytes] = set()
        self._lock = threading.Lock()

    def key(self, user: bytes, hashed: bytes, password: bytes) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (user, hashed, password):  # length-prefixed: no ambiguity between parts
            mac.update(len(part).to_bytes(4, "big"))
            mac.update(part)
        return mac.digest()

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def add(self, key: bytes) -> None:
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                # Bounded memory; legitimate clients re-verify once.
                self._entries.clear()
            self._entries.add(key)


_BCRYPT_LOCK = threading.Lock()


def _credentials(header: str | None) -> tuple[bytes, bytes] | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # longer than bcrypt's 72 bytes, or a hash bcrypt cannot read
        return False


def _unauthorized(handler: BaseHTTPRequestHandler) -> None:
    body = b"Unauthorized\n"
    handler.send_response(HTTPStatus.UNAUTHORIZED)
    handler.send_header("WWW-Authenticate", f'Basic realm="{REALM}"')
    handler.send_header("Content-Type", "text/plain; charset=utf-8")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


class BasicAuth:
    """The `authorize` hook for basic_auth_users (see the module docstring for the why)."""

    def __init__(self, users: Mapping[str, str], cache: _VerifiedCache | None = None) -> None:
        self._users = tuple((name.encode(), hashed.encode()) for name, hashed in users.items())
        # Per config: a reload re-verifies each client once, which is cheap.
        self._cache = cache or _VerifiedCache()
        # Unknown users are checked against this so they take as long as known ones.
        cost = max(int(hashed[4:6]) for _, hashed in self._users)
        self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=cost))

    def verify(self, user: bytes, password: bytes) -> bool:
        stored: bytes | None = None
        for name, hashed in self._users:  # no early exit: same work whichever user matches
            if hmac.compare_digest(name, user):
                stored = hashed
        hashed = stored if stored is not None else self._dummy
        key = self._cache.key(user, hashed, password)
        if stored is not None and key in self._cache:
            return True
        with _BCRYPT_LOCK:
            ok = _checkpw(password, hashed)
        if ok and stored is not None:
            self._cache.add(key)
            return True
        return False

    def __call__(self, handler: BaseHTTPRequestHandler) -> bool:
        credentials = _credentials(handler.headers.get("Authorization"))
        if credentials is not None and self.verify(*credentials):
            return True
        log.debug(
            "web_auth_rejected",
            remote=handler.client_address[0],
            reason="bad_credentials" if credentials else "no_credentials",
        )
        _unauthorized(handler)
        return False


def _allow_all(_handler: BaseHTTPRequestHandler) -> bool:
    return True


# --- the loaded config -------------------------------------------------------------------


class WebConfig:
    """A loaded, validated web config; cheap to query from request threads."""

    def __init__(self, path: Path, model: WebConfigModel) -> None:
        self.path = path
        self.model = model
        tls = model.tls_server_config
        self._ssl: ssl.SSLContext | None = None
        self._tls_files: list[Path] = []
        if tls is not None and tls.enabled:
            self._ssl, self._tls_files = _build_ssl_context(path, tls)
        http = model.http_server_config
        self.headers: dict[str, str] = {
            name: value for name, value in ((http and http.headers) or {}).items() if value
        }
        users = model.basic_auth_users or {}
        self._authorizer: Authorizer = BasicAuth(users) if users else _allow_all

    @property
    def tls_enabled(self) -> bool:
        return self._ssl is not None

    @property
    def basic_auth_enabled(self) -> bool:
        return bool(self.model.basic_auth_users)

    def ssl_context(self) -> ssl.SSLContext | None:
        """Server-side context (TLS 1.2+ unless the file says otherwise), None without TLS."""
        return self._ssl

    def authorizer(self) -> Authorizer:
        """The Handler.authorize hook: True to serve, False after sending a 401."""
        return self._authorizer

    def watched_files(self) -> list[Path]:
        return [self.path, *self._tls_files]


def load_web_config(path: Path) -> WebConfig:
    """Parse and validate `path`, loading certificates; raises WebConfigError."""
    path = Path(path).expanduser().absolute()
    return WebConfig(path, _parse(path))


# --- live reloading ----------------------------------------------------------------------


def _signature(paths: list[Path]) -> tuple[tuple[int, int, int, int] | None, ...]:
    result: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)  # follows symlinks: Kubernetes secret updates swap a link
        except OSError:
            result.append(None)
        else:
            result.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
    return tuple(result)


class LiveWebConfig:
    """The current WebConfig, re-read when the file or a certificate it names changes."""

    def __init__(self, config: WebConfig, check_interval: float = DEFAULT_CHECK_INTERVAL) -> None:
        self._config = config
        self._interval = check_interval
        self._signature = _signature(config.watched_files())
        self._next_check = time.monotonic() + check_interval
        self._lock = threading.Lock()

    def current(self) -> WebConfig:
        if time.monotonic() < self._next_check:
            return self._config
        with self._lock:
            now = time.monotonic()
            if now < self._next_check:
                return self._config
            self._next_check = now + self._interval
            old = self._config
            signature = _signature(old.watched_files())
            if signature == self._signature:
                return old
            # Remember the broken state too: retry when the files change again, not every call.
            self._signature = signature
            try:
                new = load_web_config(old.path)
            except WebConfigError as exc:
                log.error("web_config_reload_failed", error=str(exc), keeping="previous config")
                return old
            if new.tls_enabled != old.tls_enabled:
                log.error(
                    "web_config_reload_failed",
                    error=f"{old.path}: switching TLS on or off needs a restart",
                    keeping="previous config",
                )
                return old
            self._config = new
            self._signature = _signature(new.watched_files())
            log.info(
                "web_config_reloaded",
                path=str(new.path),
                tls=new.tls_enabled,
                basic_auth=new.basic_auth_enabled,
            )
            return new


# --- applying it to the server -----------------------------------------------------------

# Served without basic auth (TLS still applies): Kubernetes probes cannot send credentials
# without putting them in the pod spec, and these answer only 200 or 503, never data.
# Exact paths only: "/-/ready?x" or "/-/healthy/" still need the password.
PROBE_PATHS = frozenset({"/-/healthy", "/-/ready"})


def _protected_handler(
    base: type[socketserver.BaseRequestHandler], live: LiveWebConfig
) -> type[BaseHTTPRequestHandler]:
    if not issubclass(base, BaseHTTPRequestHandler):
        raise TypeError(f"{base.__name__} is not an HTTP request handler")

    def authorize(handler: BaseHTTPRequestHandler) -> bool:
        if handler.command in ("GET", "HEAD") and handler.path in PROBE_PATHS:
            return True
        return live.current().authorizer()(handler)

    def end_headers(self: BaseHTTPRequestHandler) -> None:
        for name, value in live.current().headers.items():
            self.send_header(name, value)
        base.end_headers(self)

    return type(
        f"Protected{base.__name__}",
        (base,),
        {"authorize": staticmethod(authorize), "end_headers": end_headers},
    )


def _tls_finish_request(
    server: socketserver.BaseServer, live: LiveWebConfig
) -> Callable[[Any, Any], None]:
    finish_plain = type(server).finish_request

    def finish_request(request: socket.socket, client_address: Any) -> None:
        context = live.current().ssl_context()
        assert context is not None  # LiveWebConfig never switches TLS off
        remote = client_address[0] if isinstance(client_address, tuple) else str(client_address)
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            # wrap_socket detaches `request`; socketserver's later shutdown_request on it is
            # then a harmless no-op, so the TLS socket is closed here.
            conn = context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        except OSError as exc:
            log.debug("tls_wrap_failed", remote=remote, error=str(exc))
            request.close()
            return
        try:
            try:
                conn.do_handshake()
            except (OSError, ValueError) as exc:  # ssl.SSLError and timeouts are OSErrors
                log.debug("tls_handshake_failed", remote=remote, error=str(exc))
                return
            try:
                finish_plain(server, conn, client_address)
            except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
                # A client vanishing mid-request is not the exporter's fault: no traceback.
                log.debug("tls_connection_error", remote=remote, error=str(exc))
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)
            conn.close()

    return finish_request


def wrap_server(
    server: socketserver.BaseServer,
    config: WebConfig,
    *,
    check_interval: float = DEFAULT_CHECK_INTERVAL,
) -> LiveWebConfig:
    """Apply `config` to a server from make_server (before serve_forever); see module doc."""
    live = LiveWebConfig(config, check_interval)
    base = cast(type[socketserver.BaseRequestHandler], server.RequestHandlerClass)
    server.RequestHandlerClass = _protected_handler(base, live)
    if config.tls_enabled:
        # An instance attribute, so make_server's class and other servers stay untouched.
        setattr(server, "finish_request", _tls_finish_request(server, live))  # noqa: B010
    return live
