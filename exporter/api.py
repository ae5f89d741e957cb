"""The Webex Campaign API client: auth, one request, failure classification.

The client speaks HTTP only: it returns the body of a 200 answer and leaves
parsing to `records`. Every failure is one exception type of `ApiError`, each
of which knows its `(status, code)` labels for `webex_campaign_api_failures_total`
(SPEC "Metrics"): `status` is the HTTP status or `none`, `code` the body's
code, else the status, else a short reason. `classify` is the one place a
failure that is not an HTTP error status gets them, a body that does not parse
included.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

import structlog

from . import __version__
from .errors import ConfigError
from .payload import PayloadError, error_code

if TYPE_CHECKING:  # the settings (and pydantic) stay out of the poller process
    import httpx
    from pydantic import SecretStr

    from .settings import Settings

log = structlog.get_logger("exporter.api")

USER_AGENT = f"webex-campaign-exporter/{__version__}"
# Only the encodings `_Decoder` can bound by their output are asked for.
ACCEPT_ENCODING = "gzip, deflate"
T = TypeVar("T")


class ApiError(Exception):
    """A failed request; `status` and `code` are its failure labels."""

    code = "unknown"

    def __init__(self, detail: str, status: str = "none", retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.retry_after = retry_after

    @property
    def labels(self) -> tuple[str, str]:
        return self.status, self.code


class HttpStatusError(ApiError):
    """An HTTP error status, or an error object with HTTP 200: code from the body."""

    def __init__(
        self, detail: str, status: str, code: str, retry_after: float | None = None
    ) -> None:
        super().__init__(detail, status, retry_after)
        self.code = code


class ApiTimeout(ApiError):
    code = "timeout"


class ApiConnectionError(ApiError):
    code = "connection"


class ApiTlsError(ApiError):
    code = "tls"


class InvalidResponse(ApiError):
    code = "invalid_response"


class ResponseTooLarge(ApiError):
    code = "too_large"


class Credentials(Protocol):
    def authorization(self) -> str:
        """The Authorization header value for the next request."""

    def rejected(self, failure: HttpStatusError) -> bool:
        """Called on 401/403; True when fresh credentials are worth one retry now."""

    def secrets(self) -> list[str]:
        """Every secret this source has held, for log redaction."""


class SecretFile:
    """A secret read from a file, re-read whenever the file changes.

    Kubernetes swaps a mounted Secret by replacing a symlink, which changes the
    inode; an edit in place changes mtime or size. An empty or unreadable file
    (a rotation in progress) keeps the previous value, and so does a value with
    a line break, blank or control character inside (two keys in one file, a
    paste gone wrong): `problem` says what is wrong with the file, and the
    change is logged once, as a bad key file rather than a failing API.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._value = ""
        self.seen: list[str] = []
        self.problem: str | None = None
        self._lock = threading.Lock()
        self.value(force=True)

    def value(self, force: bool = False) -> str:
        with self._lock:
            self._load(force)
            return self._value

    def _load(self, force: bool) -> None:
        try:
            info = os.stat(self.path)
        except OSError:
            return
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        if not force and stamp == self._stamp:
            return
        try:
            value = self.path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return
        self._stamp = stamp
        if not value:
            return
        if not is_token(value):
            self.problem = "holds a line break, blank or control character inside the secret"
            if self._value:  # at start, the caller reports it as a bad setting
                log.error("secret_file_invalid", path=str(self.path), problem=self.problem)
            return
        self.problem = None
        self._value = value
        if value not in self.seen:
            self.seen.append(value)


def is_token(value: str) -> bool:
    """True when `value` can go into an HTTP header as one secret: printable, no blanks."""
    return value.isprintable() and not any(char.isspace() for char in value)


class StaticKey:
    """An API secret key given directly (WEBEX_CAMPAIGN_API_KEY)."""

    def __init__(self, key: str) -> None:
        self._key = key.strip()

    def authorization(self) -> str:
        return f"Bearer {self._key}"

    def rejected(self, failure: HttpStatusError) -> bool:
        return False

    def secrets(self) -> list[str]:
        return [self._key]


class KeyFile:
    """An API secret key in a file (WEBEX_CAMPAIGN_API_KEY_FILE), re-read when it changes.

    After a 401 the file is re-read at once, and the request is worth retrying
    when that found a new key: rotating between a tenant's two keys needs no restart.
    """

    def __init__(self, path: Path) -> None:
        self._file = SecretFile(path)

    @property
    def loaded(self) -> bool:
        return bool(self._file.value())

    @property
    def problem(self) -> str | None:
        return self._file.problem

    def authorization(self) -> str:
        return f"Bearer {self._file.value()}"

    def rejected(self, failure: HttpStatusError) -> bool:
        before = self._file.value()
        return self._file.value(force=True) != before

    def secrets(self) -> list[str]:
        return list(self._file.seen)


class TokenSender(Protocol):
    def request_token(self, url: str, headers: dict[str, str], body: bytes) -> dict[str, object]:
        """POST to the token endpoint; counted and classified like every request."""


class ClientCredentials:
    """The API hub's client-credentials flow (deprecated by Webex in favour of secret keys).

    `POST {base}/oauth/token?grant_type=client_credentials` with `isGoldenAuthkey:
    true`, `Authorization: Basic <auth key>` and a JSON body of clientId,
    clientSecret and grantType. The token is cached until `expires_in` (less a
    margin) when the answer gives one, else until the API rejects it with
    401/498, which fetches a new token and retries the request once.
    """

    EXPIRY_MARGIN = 60.0

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: Callable[[], str],
        auth_key: Callable[[], str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._auth_key = auth_key
        self._clock = clock
        self._sender: TokenSender | None = None
        self._token: str | None = None
        self._expires_at = 0.0
        self._tokens: list[str] = []
        self._lock = threading.Lock()

    def bind(self, sender: TokenSender) -> None:
        self._sender = sender

    def authorization(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at:
                self._refresh()
            return f"Bearer {self._token}"

    def rejected(self, failure: HttpStatusError) -> bool:
        if failure.labels != ("401", "498"):
            return False
        with self._lock:
            self._token = None
        return True

    def secrets(self) -> list[str]:
        return [self._client_secret(), self._auth_key(), *self._tokens]

    def _refresh(self) -> None:
        assert self._sender is not None, "bind() the client first"
        body = json.dumps(
            {
                "clientId": self._client_id,
                "clientSecret": self._client_secret(),
                "grantType": "client_credentials",
            }
        ).encode()
        headers = {
            "isGoldenAuthkey": "true",
            "Authorization": f"Basic {self._auth_key()}",
            "Content-Type": "application/json",
        }
        answer = self._sender.request_token(self.token_url, headers, body)
        token = token_of(answer)
        if token is None:
            raise InvalidResponse("token answer without access_token", "200")
        self._tokens = [*self._tokens[-4:], token]
        expires_in = answer.get("expires_in") or answer.get("expiresIn")
        lifetime = float(expires_in) if isinstance(expires_in, int | float | str) else None
        now = self._clock()
        if lifetime is None or lifetime <= 0:
            self._expires_at = float("inf")
        else:
            self._expires_at = now + max(lifetime - self.EXPIRY_MARGIN, lifetime / 2)
        self._token = token


def token_of(answer: dict[str, object]) -> str | None:
    """The access token of a token endpoint's answer, if it holds one."""
    token = answer.get("access_token") or answer.get("accessToken") or answer.get("token")
    return token if isinstance(token, str) and token else None


class RequestStats:
    """Counts every request sent and every failure by (status, code); thread-safe."""

    def __init__(self, preset: tuple[tuple[str, str], ...] = ()) -> None:
        self._lock = threading.Lock()
        self._requests = 0
        self._failures: dict[tuple[str, str], int] = dict.fromkeys(preset, 0)

    def request(self) -> None:
        with self._lock:
            self._requests += 1

    def failure(self, labels: tuple[str, str]) -> None:
        with self._lock:
            self._failures[labels] = self._failures.get(labels, 0) + 1

    def read(self) -> tuple[int, dict[tuple[str, str], int]]:
        with self._lock:
            return self._requests, dict(self._failures)


@dataclass(frozen=True)
class Response:
    """The body of a successful (HTTP 200) answer, not yet parsed."""

    body: bytearray
    fetch_seconds: float
    """From sending the request to the whole body received."""


def _body_code(body: bytes | bytearray) -> str | None:
    """The `code` of an error object, if the body is one."""
    if not body.lstrip().startswith(b"{"):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    return error_code(data.get("code"))


def _retry_after(value: str | None, now: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _is_tls(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError | ssl.CertificateError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "SSL" in str(exc) or "certificate" in str(exc).lower()


def classify(exc: httpx.TransportError | PayloadError, status: str = "none") -> ApiError:
    """Map a transport failure, or a 200 body that does not parse, to its ApiError.

    The one place that does (HTTP error statuses are read off the answer in
    `ApiClient`): a body holding an error object keeps its code, any other
    unparseable body is an invalid response.
    """
    if isinstance(exc, PayloadError):
        if exc.code is not None:
            return HttpStatusError(exc.reason, "200", exc.code)
        return InvalidResponse(exc.reason, "200")
    import httpx  # only the poller process talks to the API: the serving process never loads it

    detail = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return ApiTimeout(f"request timed out ({detail})", status)
    if _is_tls(exc):
        return ApiTlsError("TLS handshake or certificate verification failed", status)
    if (
        isinstance(exc, httpx.RemoteProtocolError)
        and status == "none"
        and "disconnected" in str(exc)
    ):
        return ApiConnectionError("connection closed without an answer", status)
    if isinstance(exc, httpx.ProtocolError | httpx.DecodingError):
        return InvalidResponse(f"malformed HTTP response ({detail})", status)
    return ApiConnectionError(f"could not connect or connection lost ({detail})", status)


class _Deadline:
    """A total deadline for one exchange: connect, headers and body.

    httpx's timeouts apply to each socket operation, so a server that drips its
    headers a byte at a time never trips them. httpcore reports each new
    connection's socket through its `trace` extension; when the deadline passes,
    the socket is shut down, which ends whatever read is waiting on it.
    """

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._timer.cancel()

    def trace(self, name: str, info: dict[str, object]) -> None:
        if name not in (
            "connection.connect_tcp.complete",
            "connection.connect_unix_socket.complete",
        ):
            return
        stream = info.get("return_value")
        sock = getattr(stream, "get_extra_info", lambda _name: None)("socket")
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


_ZLIB_WBITS = {
    "gzip": 16 + zlib.MAX_WBITS,
    "x-gzip": 16 + zlib.MAX_WBITS,
    "deflate": zlib.MAX_WBITS,
}


class _Decoder:
    """Undoes a Content-Encoding chain (`gzip, gzip`, ...) with bounded output.

    httpx inflates each network read in full, so a small bomb becomes
    gigabytes before any size cap can look at it. Here every layer hands at
    most PIECE bytes at a time to the next, so memory stays within the body
    cap plus a few pieces whatever the chain. Encodings that cannot be bounded
    this way (or that are unknown) are refused.
    """

    PIECE = 64 * 1024

    def __init__(self, content_encoding: str, status: str) -> None:
        self._status = status
        codings = [c.strip().lower() for c in content_encoding.split(",")]
        codings = [c for c in codings if c and c != "identity"]
        self._wbits: list[int] = []
        for coding in reversed(codings):  # the last one applied is undone first
            if coding not in _ZLIB_WBITS:
                raise InvalidResponse(f"unsupported Content-Encoding {coding[:32]!r}", status)
            self._wbits.append(_ZLIB_WBITS[coding])
        self._layers = [zlib.decompressobj(wbits) for wbits in self._wbits]

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            yield from self._through(0, data)
        except zlib.error:
            raise InvalidResponse("malformed compressed body", self._status) from None

    def finish(self) -> None:
        if any(not layer.eof for layer in self._layers):
            raise InvalidResponse("compressed body ends early", self._status)

    def _through(self, level: int, data: bytes) -> Iterator[bytes]:
        if level == len(self._layers):
            if data:
                yield data
            return
        while True:
            layer = self._layers[level]
            out = layer.decompress(data, self.PIECE)
            data = layer.unconsumed_tail
            if out:
                yield from self._through(level + 1, out)
            if layer.eof:
                data = layer.unused_data
                if not data:
                    return
                # Another gzip member follows (RFC 1952 allows several).
                self._layers[level] = zlib.decompressobj(self._wbits[level])
                continue
            if not data and len(out) < self.PIECE:
                return


class ApiClient:
    """GETs `{base}/target-groups`, counts the request, and returns the body or classifies
    the failure."""

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        timeout: float,
        max_response_bytes: int,
        stats: RequestStats,
        transport: httpx.BaseTransport | None = None,
        verify: ssl.SSLContext | str | bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/target-groups"
        self.stats = stats
        self._credentials = credentials
        self._timeout = timeout
        self._max_bytes = max_response_bytes
        self._clock = clock
        if isinstance(credentials, ClientCredentials):
            credentials.bind(self)
        import httpx  # see classify

        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
                "Accept-Encoding": ACCEPT_ENCODING,
            },
            # One connection per request: each is watched by its own deadline,
            # and a poll a minute gains nothing from keep-alive.
            limits=httpx.Limits(max_keepalive_connections=0),
            follow_redirects=False,
            trust_env=True,
            transport=transport,
            verify=verify,
        )

    def close(self) -> None:
        self._client.close()

    def fetch(self) -> Response:
        """One poll's request; after a 401 that fresh credentials may fix, one retry."""
        try:
            return self._attempt()
        except HttpStatusError as failure:
            if failure.status in ("401", "403") and self._credentials.rejected(failure):
                return self._attempt()
            raise

    def _attempt(self) -> Response:
        # May send (and count) a token request first.
        authorization = self._credentials.authorization()
        return self._counted(lambda: self._get(authorization))

    def _counted(self, send: Callable[[], T]) -> T:
        """Send one request: count it, and count its failure once if it fails."""
        self.stats.request()
        try:
            return send()
        except ApiError as failure:
            self.stats.failure(failure.labels)
            raise

    def _exchange(
        self, method: str, url: str, headers: dict[str, str], content: bytes | None = None
    ) -> bytearray:
        """One HTTP exchange: the body, read under the size cap and the deadline."""
        import httpx  # see classify

        started = self._clock()
        status = "none"
        with _Deadline(self._timeout) as deadline:
            try:
                with self._client.stream(
                    method,
                    url,
                    headers=headers,
                    content=content,
                    extensions={"trace": deadline.trace},
                ) as response:
                    status = str(response.status_code)
                    body = self._read_capped(response, started + self._timeout, status)
            except httpx.TransportError as exc:
                if deadline.expired:
                    raise ApiTimeout("response slower than the timeout", status) from None
                raise classify(exc, status) from None
            except InvalidResponse:
                if deadline.expired:  # cut short by the deadline, not malformed
                    raise ApiTimeout("response slower than the timeout", status) from None
                raise
        if deadline.expired:
            raise ApiTimeout("response slower than the timeout", status)
        body = self._redacted(body)
        if response.status_code != 200:
            raise HttpStatusError(
                f"HTTP {status}",
                status,
                _body_code(body) or status,
                _retry_after(response.headers.get("Retry-After"), time.time()),
            )
        return body

    def _redacted(self, body: bytearray) -> bytearray:
        """The body without any secret the exporter holds, should the API echo one.

        Whatever the API sends can reach a label, a log line or the landing
        page; a key it echoes (in a group name, say) must reach none of them.
        """
        for secret in self._credentials.secrets():
            if len(secret) >= 8 and secret.encode() in body:
                body = body.replace(secret.encode(), b"[REDACTED]")
        return body

    def _get(self, authorization: str) -> Response:
        started = self._clock()
        headers = {"Authorization": authorization, "Content-Type": "application/json"}
        body = self._exchange("GET", self.url, headers)
        return Response(body, self._clock() - started)

    def count_failure(self, failure: ApiError) -> None:
        """Count a failure found in a body this client returned (it did not parse)."""
        self.stats.failure(failure.labels)

    def request_token(self, url: str, headers: dict[str, str], body: bytes) -> dict[str, object]:
        def send() -> dict[str, object]:
            answer = self._exchange("POST", f"{url}?grant_type=client_credentials", headers, body)
            try:
                data = json.loads(answer)
            except ValueError:
                raise InvalidResponse("token answer is not JSON", "200") from None
            if not isinstance(data, dict):
                raise InvalidResponse("token answer is not a JSON object", "200")
            if "code" in data and not any(k in data for k in ("access_token", "accessToken")):
                code = error_code(data["code"]) or "invalid_response"
                raise HttpStatusError("error object from the token endpoint", "200", code)
            if token_of(data) is None:  # here, so that it is counted as this request's failure
                raise InvalidResponse("token answer without access_token", "200")
            return data

        return self._counted(send)

    def _read_capped(self, response: httpx.Response, deadline: float, status: str) -> bytearray:
        """The body, decoded, refused past the size cap (before and after decoding)
        or the deadline.

        Grown in place: a large bytearray is resized by the allocator without a
        copy, so a 65 MB body never needs twice its size, as a list of chunks
        joined at the end would.
        """
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise ResponseTooLarge(f"Content-Length {declared} over the cap", status)
        decoder = _Decoder(response.headers.get("Content-Encoding", ""), status)
        body = bytearray()
        received = 0
        for chunk in _raw_chunks(response):
            received += len(chunk)
            if received > self._max_bytes:
                raise ResponseTooLarge(f"body over the cap of {self._max_bytes} bytes", status)
            for piece in decoder.feed(chunk):
                if len(body) + len(piece) > self._max_bytes:
                    raise ResponseTooLarge(
                        f"decoded body over the cap of {self._max_bytes} bytes", status
                    )
                if self._clock() > deadline:
                    raise ApiTimeout("response slower than the timeout", status)
                body += piece
        decoder.finish()
        return body


def _raw_chunks(response: httpx.Response) -> Iterator[bytes]:
    """The body as sent (still encoded), as it arrives."""
    if response.is_stream_consumed:
        # Built in memory (httpx.MockTransport) and read already; its stream replays.
        yield from cast("httpx.SyncByteStream", response.stream)
        return
    yield from response.iter_raw()


@dataclass(frozen=True)
class Secret:
    """A secret as plain data (picklable without pydantic), never shown by its repr."""

    value: str = field(repr=False)


@dataclass(frozen=True)
class Access:
    """How a poller reaches one tenant's API: the auth mode and the CA bundle, as data.

    The settings process builds it from the settings (`of`), the serving process
    sends it on to the poller process, which makes the credentials from it
    (`credentials`): neither of those two loads the settings, nor pydantic.
    """

    api_key: Secret | None = None
    api_key_file: Path | None = None
    token_url: str | None = None
    """Set with the client-credentials flow (client_id)."""
    client_id: str | None = None
    client_secret: Secret | None = None
    client_secret_file: Path | None = None
    auth_key: Secret | None = None
    auth_key_file: Path | None = None
    ca_file: Path | None = None

    @classmethod
    def of(cls, settings: Settings, demo_key: str | None = None) -> Access:
        """The settings' auth mode (validated: exactly one is complete). In demo mode the
        key is the demo tenant's, passed in by whoever runs it: the simulator stays at the
        edge, out of the modules that ship to production."""
        if settings.demo:
            if demo_key is None:
                raise ConfigError("demo mode needs the demo tenant's key")
            return cls(api_key=Secret(demo_key), ca_file=settings.ca_file)
        if settings.uses_token_flow:
            return cls(
                token_url=settings.effective_token_url,
                client_id=settings.client_id,
                client_secret=_plain(settings.client_secret),
                client_secret_file=settings.client_secret_file,
                auth_key=_plain(settings.auth_key),
                auth_key_file=settings.auth_key_file,
                ca_file=settings.ca_file,
            )
        return cls(
            api_key=_plain(settings.api_key),
            api_key_file=settings.api_key_file,
            ca_file=settings.ca_file,
        )


def _plain(value: SecretStr | None) -> Secret | None:
    return None if value is None else Secret(value.get_secret_value())


def _config_error(setting: str, problem: str) -> Exception:
    """A setting found bad here (a key file, the CA bundle), worded by the settings
    module: imported only then, so that neither process loads it (nor pydantic) unless a
    secret file or CA bundle goes bad."""
    from .settings import describe_setting

    return ConfigError(f"{describe_setting(setting)}: {problem}")


def credentials(access: Access) -> Credentials:
    """The credentials of an auth mode; a ConfigError when a secret file is unusable."""
    if access.client_id is not None:
        assert access.token_url is not None
        return ClientCredentials(
            access.token_url,
            access.client_id,
            _secret(access.client_secret, access.client_secret_file, "client_secret_file"),
            _secret(access.auth_key, access.auth_key_file, "auth_key_file"),
        )
    if access.api_key_file is not None:
        key_file = KeyFile(access.api_key_file)
        if key_file.problem is not None:
            raise _config_error(
                "api_key_file",
                f"{access.api_key_file} {key_file.problem}:"
                " it must hold exactly one API secret key",
            )
        if not key_file.loaded:
            raise _config_error(
                "api_key_file",
                f"{access.api_key_file} is empty or unreadable: it must hold the API secret key",
            )
        return key_file
    assert access.api_key is not None
    return StaticKey(access.api_key.value)


def credentials_from(settings: Settings, demo_key: str | None = None) -> Credentials:
    """The credentials of the settings' auth mode (see `Access.of`)."""
    return credentials(Access.of(settings, demo_key))


def _secret(value: Secret | None, path: Path | None, setting: str) -> Callable[[], str]:
    if path is None:
        assert value is not None
        secret = value.value.strip()
        return lambda: secret
    source = SecretFile(path)
    if source.problem is not None:
        raise _config_error(setting, f"{path} {source.problem}")
    if not source.value():
        raise _config_error(setting, f"{path} is empty or unreadable")
    return source.value


class _CaFile(Protocol):
    @property
    def ca_file(self) -> Path | None: ...


def tls_verify(source: _CaFile) -> ssl.SSLContext:
    """Certificate verification for the API: always on, with the system's CAs or the
    `ca_file` of the settings or the `Access`.

    One context per CA bundle, shared by every tenant's client: a context holds its
    parsed CAs (about 1 MB), and a hundred tenants need not hold a hundred copies.
    """
    ca_file = source.ca_file
    if ca_file is None:
        return _context(None, 0, 0)
    try:
        stat = ca_file.stat()
        return _context(str(ca_file), stat.st_mtime_ns, stat.st_size)
    except (ssl.SSLError, OSError) as exc:
        raise _config_error("ca_file", f"{ca_file} is not a PEM CA bundle ({exc})") from None


def check_tls(source: _CaFile) -> None:
    """`tls_verify`'s check at start and reload, in the settings process, which never talks
    to the API: the bundle the poller process will trust is loaded as it will load it.

    Without a `ca_file` that is httpx's default, loaded here without httpx (a check has no
    use for it, nor for the context: 2.5 MB together) and once.
    """
    if source.ca_file is not None:
        tls_verify(source)
    else:
        _check_default_bundle()


@functools.cache
def _check_default_bundle() -> None:
    """Load and drop what httpx's `create_ssl_context(trust_env=True)` loads: the bundle
    SSL_CERT_FILE or SSL_CERT_DIR names, if any (a broken one fails here, as it would
    have failed in the poller); else certifi's, which is part of the install."""
    if cafile := os.environ.get("SSL_CERT_FILE"):
        ssl.create_default_context(cafile=cafile)
    elif capath := os.environ.get("SSL_CERT_DIR"):
        ssl.create_default_context(capath=capath)


@functools.lru_cache(maxsize=64)
def _context(ca_file: str | None, _mtime_ns: int, _size: int) -> ssl.SSLContext:
    """A verifying context: httpx's default (certifi, or SSL_CERT_FILE / SSL_CERT_DIR from
    the environment), or one trusting the bundle `ca_file` (as it is now: a changed file
    is a new key)."""
    if ca_file is None:
        import httpx  # see classify

        return httpx.create_ssl_context(trust_env=True)
    return ssl.create_default_context(cafile=ca_file)
