"""The Webex Campaign API client: auth, one request, failure classification.

Every failure is one exception type of `ApiError`, each of which knows its
`(status, code)` labels for `webex_campaign_api_failures_total` (SPEC "Metrics"):
`status` is the HTTP status or `none`, `code` the body's code, else the
status, else a short reason.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Protocol

import httpx
import pydantic_core

from . import __version__
from .records import ParsedPayload, PayloadError, parse_payload

USER_AGENT = f"webex-campaign-exporter/{__version__}"


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
    """An API secret key read from a file, re-read whenever the file changes.

    Kubernetes swaps a mounted Secret by replacing a symlink, which changes the
    inode; an edit in place changes mtime or size. An empty file (a rotation in
    progress) keeps the previous key.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self._key = ""
        self._seen: list[str] = []
        self._lock = threading.Lock()
        self._load(force=True)

    @property
    def loaded(self) -> bool:
        return bool(self._key)

    def _load(self, force: bool = False) -> None:
        try:
            info = os.stat(self._path)
        except OSError:
            return
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        if not force and stamp == self._stamp:
            return
        try:
            key = self._path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return
        self._stamp = stamp
        if key:
            self._key = key
            if key not in self._seen:
                self._seen.append(key)

    def authorization(self) -> str:
        with self._lock:
            self._load()
            return f"Bearer {self._key}"

    def rejected(self, failure: HttpStatusError) -> bool:
        with self._lock:
            before = self._key
            self._load(force=True)
            return self._key != before

    def secrets(self) -> list[str]:
        return list(self._seen)


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
class Fetched:
    """A successful response, parsed."""

    payload: ParsedPayload
    fetch_seconds: float
    """From sending the request to the whole body received."""


def _body_code(body: bytes) -> str | None:
    """The `code` of an error object, if the body is one."""
    if not body.lstrip().startswith(b"{"):
        return None
    try:
        data = pydantic_core.from_json(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    code = data.get("code")
    if code is None or isinstance(code, dict | list):
        return None
    if isinstance(code, float) and code.is_integer():
        code = int(code)
    text = str(code).strip()
    return text[:40] or None


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


def classify_transport_error(exc: httpx.TransportError, status: str = "none") -> ApiError:
    """Map an httpx transport failure to its ApiError (the one place that does)."""
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


class ApiClient:
    """GETs `{base}/target-groups`, counts the request, and parses or classifies the answer."""

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
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            follow_redirects=False,
            trust_env=True,
            transport=transport,
            verify=verify,
        )

    def close(self) -> None:
        self._client.close()

    def fetch(self) -> Fetched:
        """One poll's request; after a 401 that fresh credentials may fix, one retry."""
        try:
            return self._attempt()
        except HttpStatusError as failure:
            if failure.status in ("401", "403") and self._credentials.rejected(failure):
                return self._attempt()
            raise

    def _attempt(self) -> Fetched:
        self.stats.request()
        try:
            return self._get()
        except ApiError as failure:
            self.stats.failure(failure.labels)
            raise

    def _get(self) -> Fetched:
        started = self._clock()
        headers = {
            "Authorization": self._credentials.authorization(),
            "Content-Type": "application/json",
        }
        status = "none"
        try:
            with self._client.stream("GET", self.url, headers=headers) as response:
                status = str(response.status_code)
                body = self._read_capped(response, started + self._timeout, status)
        except httpx.TransportError as exc:
            raise classify_transport_error(exc, status) from None
        if response.status_code != 200:
            raise HttpStatusError(
                f"HTTP {status}",
                status,
                _body_code(body) or status,
                _retry_after(response.headers.get("Retry-After"), time.time()),
            )
        fetch_seconds = self._clock() - started
        try:
            payload = parse_payload(body)
        except PayloadError as exc:
            if exc.code is not None:
                raise HttpStatusError(exc.reason, status, exc.code) from None
            raise InvalidResponse(exc.reason, status) from None
        return Fetched(payload, fetch_seconds)

    def _read_capped(self, response: httpx.Response, deadline: float, status: str) -> bytes:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise ResponseTooLarge(f"Content-Length {declared} over the cap", status)
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > self._max_bytes:
                raise ResponseTooLarge(f"body over the cap of {self._max_bytes} bytes", status)
            if self._clock() > deadline:
                raise ApiTimeout("response slower than the timeout", status)
            chunks.append(chunk)
        return b"".join(chunks)
