"""Basic auth: bcrypt checks, one at a time, with successful ones cached under an HMAC."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler

import bcrypt
import structlog

log = structlog.get_logger("exporter.webconfig")

REALM = "webex-campaign-exporter"

Authorizer = Callable[[BaseHTTPRequestHandler], bool]


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
    """The `authorize` hook for basic_auth_users (see the package docstring for the why)."""

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


def allow_all(_handler: BaseHTTPRequestHandler) -> bool:
    return True
